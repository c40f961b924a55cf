"""The CLI explains itself (#13): list/help/--help, runner-owned keys, typed errors that name
their key, run folders named from the settings, quiet labelled output, early video refusal,
and no side effects on `import jaxdiff`."""
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import TINY

import jaxdiff
from jaxdiff import cli, config
from jaxdiff.algos import base as algos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- jaxdiff list / help / --help -------------------------------------------------------------

def test_list_algos_names_every_registered_algorithm_with_its_doc(capsys):
    assert cli.main(["list", "algos"]) == 0
    out = capsys.readouterr().out
    usable = sorted(set(algos.names()) & set(config.options("algo")))
    assert usable and "mappo" in usable
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:]}
    assert sorted(lines) == usable
    for name in usable:
        doc = algos.get(name).doc.strip().splitlines()[0]
        assert doc in lines[name]


def test_list_envs_and_sweeps(capsys):
    from jaxdiff import envs
    assert cli.main(["list", "envs"]) == 0
    out = capsys.readouterr().out
    listed = [ln.split()[0] for ln in out.splitlines()[1:]]
    assert listed == envs.names()
    spread = next(ln for ln in out.splitlines() if ln.split()[0] == "mpe_simple_spread")
    assert spread.split(None, 1)[1].startswith("MPE simple_spread")  # the factory's docstring
    assert cli.main(["list", "sweeps"]) == 0
    out = capsys.readouterr().out
    for name in config.options("sweep"):
        first = next(x for x in open(os.path.join(ROOT, "configs", "sweep", f"{name}.yaml"))
                     if x.startswith("#"))
        assert f"{name}" in out and first.lstrip("#").strip() in out


def test_list_unknown_gives_close_match(capsys):
    assert cli.main(["list", "algoz"]) == 2
    assert "Did you mean `jaxdiff list algos`" in capsys.readouterr().err


def test_help_algo_shows_every_key_default_range_and_preset(capsys):
    assert cli.main(["help", "algo=mappo"]) == 0
    out = capsys.readouterr().out
    cls = algos.get("mappo").Config
    fields = algos.config_fields(cls)
    for name, field in fields.items():
        assert f"algo.{name} = {field.default!r}" in out
        if field.metadata.get("doc"):
            assert field.metadata["doc"] in out
    lr = next(ln for ln in out.splitlines() if ln.strip().startswith("algo.lr ="))
    lo, hi = fields["lr"].metadata["lo"], fields["lr"].metadata["hi"]
    assert f"[{lo}, {hi if hi is not None else 'inf'}]" in lr
    presets = yaml.safe_load(open(os.path.join(ROOT, "configs", "algo", "mappo.yaml")))["presets"]
    assert f"smax: {presets['smax']['lr']!r}" in lr
    assert "total_steps" in out.splitlines()[-1]  # the runner-owned keys are named


def test_help_env_shows_options_with_yaml_defaults_and_docs(capsys):
    from jaxdiff import envs
    assert cli.main(["help", "env=smax_3m"]) == 0
    out = capsys.readouterr().out
    for key in envs.options("smax_3m"):
        assert f"env.{key} = " in out
    assert "env.max_steps = 100" in out and "episode length" in out


@pytest.mark.parametrize("argv, needle", [
    (["help", "algo=mapo"], "Did you mean `algo=mappo`"),
    (["help", "env=smax_3n"], "smax_3m"),
    (["trian"], "Did you mean `train`"),
    (["help", "foo=1"], "algo=<name>"),
])
def test_help_unknown_names_get_a_hint(argv, needle, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("cmd", ["train", "eval", "sweep", "bench", "collect", "list", "help"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(cmd, flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a command that ran anyway would write here
    assert cli.main([cmd, flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: jaxdiff {cmd}")
    assert not os.listdir(tmp_path)


# ---- runner-owned keys, typed errors ----------------------------------------------------------

@pytest.mark.parametrize("arg, needle", [
    ("algo.total_steps=5000", "`total_steps=<value>`"),
    ("algo.seed=3", "`seed=<value>`"),
    ("algo.seeds=3", "`seeds=<value>`"),
    ("algo.chunks=2", "`chunks=<value>`"),
    ("env.total_steps=5000", "`total_steps=<value>`"),
    ("env.seed=1", "`seed=<value>`"),
])
def test_runner_owned_keys_are_refused_naming_the_top_level_setting(arg, needle, capsys,
                                                                    tmp_path):
    rc = cli.main(["train", "algo=mappo", "env=mpe_simple_spread", arg, f"run_dir={tmp_path}/r"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"`{arg.split('=')[0]}` is set by the runner" in err and needle in err
    assert not (tmp_path / "r").exists()  # refused before anything was written or compiled


def test_runner_owned_key_refused_by_make_config_too():
    with pytest.raises(algos.ConfigError, match="top-level setting `total_steps=<value>`"):
        algos.make_config(algos.get("mappo").Config, {"total_steps": 5000})


@pytest.mark.parametrize("arg", ["seed=abc", "seeds=two", "total_steps=1.5", "chunks=x",
                                 "eval_episodes=[1]", "progress=maybe", "tensorboard=2"])
def test_type_errors_name_their_key(arg, capsys, tmp_path):
    rc = cli.main(["train", arg, f"run_dir={tmp_path}/r"])
    err = capsys.readouterr().err
    assert rc == 2
    key, value = arg.split("=")
    assert f"`{key}=" in err and "invalid literal" not in err
    assert not (tmp_path / "r").exists()


def test_total_steps_accepts_scientific_notation():
    spec = config.run_spec(config.compose(["total_steps=1e5"]))
    assert spec.total_steps == 100_000


def test_eval_type_error_names_key(capsys, tmp_path):
    assert cli.main(["eval", f"run_dir={tmp_path}", "episodes=lots"]) == 2
    assert "`episodes=lots`" in capsys.readouterr().err


# ---- run folders --------------------------------------------------------------------------------

def test_default_run_dir_named_from_the_changed_settings():
    plain = config.default_run_dir(config.compose(["algo=happo", "env=mpe_simple_spread"]))
    cont = config.default_run_dir(config.compose(["algo=happo", "env=mpe_simple_spread",
                                                  "env.action_type=continuous"]))
    assert plain == os.path.join("runs", "happo-mpe_simple_spread")
    assert cont == os.path.join("runs", "happo-mpe_simple_spread-action_type=continuous")
    # a value equal to the default (however written) names the same folder
    same = config.default_run_dir(config.compose(["algo=happo", "env=mpe_simple_spread",
                                                  "env.action_type=discrete", "seeds=3",
                                                  "total_steps=1e6"]))
    assert same == plain
    # an SMAX preset is the default there: only a different value shows
    lr = algos.get("mappo").Config.__dataclass_fields__["lr"].default
    smax = config.default_run_dir(config.compose(["algo=mappo", "env=smax_3m", f"algo.lr={lr}",
                                                  "seeds=2"]))
    assert smax == os.path.join("runs", f"mappo-smax_3m-lr={lr:g}-seeds=2")


def test_default_run_dir_hashes_only_when_too_long():
    over = [f"algo.{k}={v}" for k, v in TINY.items()]
    a = config.default_run_dir(config.compose(["algo=mappo", *over, "algo.gamma=0.9"]))
    b = config.default_run_dir(config.compose(["algo=mappo", *over, "algo.gamma=0.8"]))
    name_a, name_b = os.path.basename(a), os.path.basename(b)
    assert len(name_a) <= config.MAX_RUN_NAME and len(name_b) <= config.MAX_RUN_NAME
    assert name_a != name_b and name_a.startswith("mappo-mpe_simple_spread-")
    assert "-h" in name_a[-10:]


def test_resume_mismatch_names_each_key_with_both_values(tmp_path, capsys):
    run = tmp_path / "r"
    first = ["train", "algo=happo", "env=mpe_simple_spread", f"run_dir={run}", "seeds=1"]
    spec = config.run_spec(config.compose(first[1:]))
    run.mkdir()
    (run / "config.json").write_text(json.dumps(spec.identity()))  # as a first run leaves it
    rc = cli.main(first[:-1] + ["seeds=2", "env.action_type=continuous"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "env_kwargs.action_type: saved 'discrete', now 'continuous'" in err
    assert "seeds: saved 1, now 2" in err
    assert not list(run.glob("checkpoints/*")) and not (run / "metrics.jsonl").exists()


# ---- quiet, labelled output ---------------------------------------------------------------------

def test_messages_progress_rate_rounding_interrupt_resume_complete(tmp_path, capsys, monkeypatch):
    """One tiny run, interrupted after its first chunk, resumed, then rerun when complete."""
    from jaxdiff.run import runner

    class InterruptedAtOnce(runner._Interrupt):
        def __enter__(self):
            super().__enter__()
            self.hit = True  # as if Ctrl-C arrived during the first chunk
            return self

    spec = runner.RunSpec(algo="mappo", env="coordination_game", env_kwargs={},
                          algo_overrides=dict(TINY), seeds=1, total_steps=100, chunks=2,
                          eval_episodes=2)
    per_iter = TINY["num_envs"] * TINY["num_steps"]  # one env step per env per rollout step
    iters = -(-spec.total_steps // per_iter)
    k = -(-iters // spec.chunks)
    expected = k * spec.chunks * per_iter
    assert expected != spec.total_steps

    monkeypatch.setattr(runner, "_Interrupt", InterruptedAtOnce)
    s1 = runner.train(spec, str(tmp_path), progress=True)
    err = capsys.readouterr().err
    assert s1["complete"] is False
    assert err.count(f"total_steps=100 runs as {expected:,} env-steps per seed") == 1
    assert "interrupted at chunk 1/2" in err and "rerun the same command to resume" in err
    assert "env-steps/s" in err and "sps=" not in err and "it/s" not in err
    assert "env-step/s" not in err  # tqdm's own rate is not shown

    monkeypatch.setattr(runner, "_Interrupt", InterruptedAtOnce.__mro__[1])
    s2 = runner.train(spec, str(tmp_path), progress=False)
    err = capsys.readouterr().err
    assert s2["complete"] is True and "resuming from chunk 1/2" in err
    runner.train(spec, str(tmp_path), progress=False)
    assert "already complete (2/2 chunks)" in capsys.readouterr().err


def test_cli_interrupted_run_prints_no_final_return(tmp_path, capsys, monkeypatch):
    from jaxdiff.run import runner
    monkeypatch.setattr(runner, "train", lambda *a, **k: dict(complete=False, final={}, best={}))
    rc = cli.main(["train", f"run_dir={tmp_path}", "progress=false"])
    out = capsys.readouterr().out
    assert rc == 130 and "final eval return" not in out


def _captured_figure(monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    return figs


def test_curves_have_axis_labels_readable_ticks_and_band_legend(tmp_path, monkeypatch):
    from jaxdiff.run import logging as runlog
    figs = _captured_figure(monkeypatch)
    rows = [dict(step=s, seed=seed, grid=0, eval_return=-70.0 + s / 1e5 + seed)
            for s in range(100_000, 400_001, 50_000) for seed in range(2)]
    runlog.plot_curves(rows, str(tmp_path / "c.png"))
    (ax,) = [a for a in figs[0].axes if a.get_visible() and a.get_title()]
    figs[0].canvas.draw()
    assert ax.get_ylabel() == "eval return" and "env steps" in ax.get_xlabel()
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert ticks and all(t.endswith("k") or t == "0" for t in ticks)
    assert len(ticks) <= 6
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "mean ± std over 2 seeds" in legend


def test_steps_label():
    from jaxdiff.run.logging import steps_label
    assert [steps_label(x) for x in (0, 500, 100_000, 1_500_000, 2e9)] == [
        "0", "500", "100k", "1.5M", "2G"]


def test_sweep_bar_plot_zooms_when_every_value_is_negative(tmp_path, monkeypatch):
    from jaxdiff.run import sweep
    figs = _captured_figure(monkeypatch)
    rows = [dict(point={"algo.lr": lr}, final=dict(return_mean=m, return_std=1.0))
            for lr, m in ((1e-4, -69.0), (1e-3, -63.0))]
    sweep._plot(rows, str(tmp_path / "s.png"), "t")
    lo, hi = figs[0].axes[0].get_ylim()
    assert hi < 0 and -75 < lo < -70  # -69 vs -63 fills the axis
    assert sweep.bar_limits([2.0, 5.0], [0.5, 0.5])[0] == 0.0  # positive bars start at zero


# ---- eval video ---------------------------------------------------------------------------------

def test_video_on_unsupported_env_refused_before_evaluating(tmp_path, capsys, monkeypatch):
    from jaxdiff.run import runner
    (tmp_path / "config.json").write_text(json.dumps(dict(algo="mappo", env="mabrax_ant_4x2")))
    called = []
    monkeypatch.setattr(runner, "restore_state", lambda *a: called.append(a))
    rc = cli.main(["eval", f"run_dir={tmp_path}", "video=x.gif"])
    err = capsys.readouterr().err
    assert rc == 2 and "MPE and SMAX" in err and "mabrax_ant_4x2" in err
    assert not called  # nothing was restored or evaluated


@pytest.mark.slow
def test_smax_video_expansion_and_drawing_match_jaxmarls():
    """The jitted expansion gives JaxMARL's eager states; drawing without jit the same artists."""
    import jax
    import jax.numpy as jnp
    import matplotlib
    import numpy as np
    matplotlib.use("Agg")
    from jaxdiff import envs
    from jaxdiff.run import evaluate
    env = envs.make("smax_3m", max_steps=3)
    raw = env.unwrapped.jaxmarl_env if hasattr(env, "unwrapped") else env.jaxmarl_env
    from jaxmarl.viz.visualizer import SMAXVisualizer
    key = jax.random.PRNGKey(0)
    _, es = env.reset(key)
    acts = {a: jnp.int32(4) for a in raw.agents}
    seq = [(jax.random.fold_in(key, 1), es.env_state, acts)]
    eager, fast = SMAXVisualizer(raw, list(seq)), SMAXVisualizer(raw, list(seq))
    eager.expand_state_seq()
    evaluate.expand_smax(fast, raw)
    assert "step_env" not in vars(raw)
    assert len(eager.state_seq) == len(fast.state_seq)
    for (_, a, _), (_, b, _) in zip(eager.state_seq, fast.state_seq):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)

    def artists(viz, frame):
        viz.init()
        viz.update(frame)
        return [np.asarray(p.center if hasattr(p, "center") else p.get_xy(), dtype=float)
                for p in viz.ax.patches]

    ref = artists(eager, 2)
    with jax.disable_jit():
        got = artists(fast, 2)
    assert len(ref) == len(got) > 0
    for x, y in zip(ref, got):
        np.testing.assert_allclose(x, y, atol=1e-5)


# ---- no side effects on import ------------------------------------------------------------------

def test_use_host_devices(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("JAXDIFF_HOST_DEVICES", "3")
    jaxdiff.use_host_devices()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=3"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=5")
    jaxdiff.use_host_devices(2)  # an explicit flag wins
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=5"
    monkeypatch.delenv("XLA_FLAGS")
    jaxdiff.use_host_devices(1)  # one device: nothing to set
    assert "XLA_FLAGS" not in os.environ


_IMPORT_PROBE = r"""
import io, os, sys
before = dict(os.environ)
import jaxdiff
print(os.environ.get("XLA_FLAGS"))
assert dict(os.environ) == before, "import jaxdiff changed os.environ"
import jax
config_before = {k: repr(v) for k, v in jax.config.values.items()}
from jaxdiff import losses, diffusion
assert dict(os.environ) == before, "importing losses/diffusion changed os.environ"
assert {k: repr(v) for k, v in jax.config.values.items()} == config_before
print(len(jax.devices("cpu")))
err = sys.stderr
from jaxdiff import envs
envs.make("mpe_simple_spread")
assert sys.stderr is err, "the jaxmarl import replaced sys.stderr"
# JaxMARL's package __init__ (every env it ships) has not run: only MPE was imported ...
assert not any(m.startswith(("jaxmarl.environments.storm", "jaxmarl.environments.hanabi",
                             "jaxmarl.registration")) for m in sys.modules), "full jaxmarl import"
# (that the rest of JaxMARL still loads on first use: tests/envs/test_jaxmarl_import.py)
print("end")
"""


def test_import_has_no_side_effects_and_jaxmarl_is_quiet_and_lazy():
    env = {k: v for k, v in os.environ.items()
           if k != "XLA_FLAGS" and not k.startswith("JAXDIFF_")}
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["None", "1", "end"]  # nothing else: no JaxMARL chatter
    assert "Importing submoduled" not in out.stderr


def test_exponent_floats_on_the_command_line_are_floats():
    # YAML 1.1 reads `1e-3` as a string; a learning rate written that way must still be 0.001
    from jaxdiff import config
    composed = config.compose(["algo=mappo", "algo.lr=1e-3"])
    assert composed["algo"]["lr"] == pytest.approx(1e-3)
    assert config.yaml_value("-2.5E+2") == -250.0 and config.yaml_value("e5") == "e5"
