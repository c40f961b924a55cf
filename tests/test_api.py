"""The Python entry point composes exactly as the command line: same presets, same run, same
summary; `import jaxdiff` stays cheap (the API loads on first use)."""
import json
import os
import subprocess
import sys

import pytest
import yaml

import jaxdiff
from jaxdiff import api, config
from conftest import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_python_call_composes_the_yaml_preset_like_the_cli():
    """MAPPO on smax_3m gets the SMAX preset of configs/algo/mappo.yaml (GRU, lr, envs), read
    here straight from the file, and an override wins over it, as on the command line."""
    with open(os.path.join(ROOT, "configs", "algo", "mappo.yaml")) as f:
        preset = yaml.safe_load(f)["presets"]["smax"]
    got = api.compose(algo="mappo", env="smax_3m")
    assert {k: got["algo"][k] for k in preset} == preset and preset["recurrent"] is True
    assert got == config.compose(["algo=mappo", "env=smax_3m"])
    over = api.compose(algo="mappo", env="smax_3m", seeds=2, lr=1e-3, **{"algo.hidden": 32})
    assert over == config.compose(["algo=mappo", "env=smax_3m", "seeds=2", "algo.lr=0.001",
                                   "algo.hidden=32"])
    assert over["algo"]["lr"] == 1e-3 and over["algo"]["num_envs"] == preset["num_envs"]
    spec = config.run_spec(over)
    assert spec.seeds == 2 and spec.algo_overrides["recurrent"] is True


def test_bad_keyword_names_the_setting():
    with pytest.raises(config.UsageError, match="algo.lrr"):
        api.compose(algo="mappo", env="mpe_simple_spread", lrr=1e-3)
    with pytest.raises(config.UsageError, match="seedz"):
        api.compose(algo="mappo", env="mpe_simple_spread", **{"seedz": 2})


def test_import_is_lazy_and_help_shows_an_example():
    code = ("import sys, jaxdiff; assert 'jax' not in sys.modules and 'jaxdiff.api' not in "
            "sys.modules; d = jaxdiff.__doc__; assert 'jaxdiff.train(' in d; "
            "f = jaxdiff.train; assert 'jaxdiff.api' in sys.modules; print(f.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "jaxdiff.api", out.stderr[-2000:]
    assert jaxdiff.train is api.train and "train" in dir(jaxdiff)
    with pytest.raises(AttributeError):
        jaxdiff.not_a_thing


@pytest.mark.slow
def test_cli_and_python_call_write_the_same_summary(tmp_path):
    from jaxdiff import cli
    settings = dict(seeds=2, total_steps=256, chunks=2, eval_episodes=2, **TINY)
    a, b = tmp_path / "cli", tmp_path / "py"
    argv = ["train", "algo=mappo", "env=mpe_simple_spread", "progress=false", f"run_dir={a}"]
    argv += [f"{k}={v}" for k, v in settings.items() if k not in TINY]
    argv += [f"algo.{k}={v}" for k, v in TINY.items()]
    assert cli.main(argv) == 0
    res = jaxdiff.train(algo="mappo", env="mpe_simple_spread", run_dir=str(b), **settings)
    want = json.loads((a / "summary.json").read_text())
    got = json.loads((b / "summary.json").read_text())
    assert res.summary["final"] == got["final"] == want["final"]
    assert got["per_seed"] == want["per_seed"]
    assert res.run_dir == str(b) and res.spec.seeds == 2
    leaves = __import__("jax").tree.leaves(res.state)
    assert leaves and all(x.shape[0] == 2 for x in leaves)     # one row per seed
