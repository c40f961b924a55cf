"""Paper 000, Table 1 at the scale this machine allows: true-state PSNR of individual and
composite diffusion on SMACv2-style SMAX tasks, one factor varied at a time.

    python experiments/state_reconstruction/table1.py --quick          # random policy, ~11 min CPU
    python experiments/state_reconstruction/table1.py                  # --scale cpu, ~45 min
    python experiments/state_reconstruction/table1.py --scale paper    # the paper's sizes (GPU)
    python experiments/state_reconstruction/table1.py --scale paper --plan  # print, run nothing

Pipeline (every stage reuses what an earlier invocation left on disk):

1. Policies: MAPPO-RNN (configs/algo/mappo.yaml's smax preset, on the runner) per data-collection
   config: zerg sight 9, zerg sight 5, terran sight 9, protoss sight 9. `--quick` uses the
   uniform random policy instead (the output says so). A finished run dir is reused as is; an
   interrupted one resumes.
2. Datasets (`jaxdiff.data.collect.collect`): zerg sight 9 once at H = max(H sweep) with the
   largest N of the sweep -- the N sweep subsamples it (`algo.max_train_rows`), the H sweep
   reads shorter windows from it (`algo.history`); zerg sight 5, terran and protoss are their
   own collections at the default N and H.
3. Denoisers (`algo=state_diffusion` on the runner, seeds vmapped): the paper's five column
   groups (width W, samples N, history H, sight range, race), each varying one factor from the
   defaults (the largest W, the middle N, H = 5, sight 9, zerg); 10 distinct runs. PSNR of
   individual and composite diffusion (L flow steps each) on the first `eval_samples` joint
   samples of the test split and of the train split (spec §5.3-5.4).
4. Output, in results/: table1.json, table1.md and table1.png (also kept as
   table1_<scale>.*): our table in the paper's layout with two baseline rows that need no
   training (constant mean of the column's training states; the privileged last state
   s^(t-1)), the paper's numbers (spec §5.6), the composite - individual gaps of both, and one
   check line per trend of spec §5.6 (plus composite > individual > constant mean), each with
   comparisons computed from the run, and the commit and command that produced it.

Scales [CHOICE] (paper's values: spec §5.8):

| | quick | cpu | paper (config only; a GPU) |
|---|---|---|---|
| policy | random | MAPPO 1e5 steps, 32 envs x 64 | MAPPO 1e7 steps, 128 x 128 |
| W | 64 / 256 / 512 | 64 / 256 / 1024 | 1024 / 4096 / 8192 |
| N (joint samples) | 2K / 10K / 50K | 2K / 10K / 50K | 10K / 100K / 500K |
| Adam steps x batch, lr | 200 x 256, 1e-3 | 600 x 256, 1e-3 | 100K x 1024, 3e-4 |
| eval joint samples / seeds | 256 / 1 | 512 / 3 | 10K / 3 |
| measured on a shared 2-core CPU | 11 min (load 7-8) | 44 min: policies 20, data 2, denoisers 22 | -- |

The learning rate is constant (state_diffusion has no cosine schedule); the CPU scales use a
larger one because they train for a few hundred steps. Run dirs and datasets go to
results/runs/<scale>/ and results/datasets/<scale>/ (git-ignored).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shutil
import sys
import time

import jaxdiff

jaxdiff.use_host_devices()  # one XLA host device per core, before JAX starts

# isort: split
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sensor_common import provenance  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

RACE_ENV = {r: f"smax_{r}_5v5" for r in ("zerg", "terran", "protoss")}
GROUPS = ("W", "N", "H", "Sight", "Race")
GROUP_KEY = dict(W="width", N="samples", H="history", Sight="sight", Race="race")
ROWS = (("train", "individual"), ("train", "composite"), ("test", "individual"),
        ("test", "composite"))
# Estimators without training (`baselines`): one estimate per joint sample.
BASELINE_ROWS = (("train", "constant_mean"), ("test", "constant_mean"), ("train", "last_state"),
                 ("test", "last_state"))
ALG_TITLE = {"individual": "Individual", "composite": "Composite",
             "constant_mean": "Constant mean (baseline)",
             "last_state": "Last state s^(t-1) (privileged baseline)"}

# Spec §5.6 (transcribed from the paper). Defaults: W 8192, N 100K, H 5, sight 9, zerg.
PAPER_COLUMNS = (("W", 1024), ("W", 4096), ("W", 8192), ("N", 10_000), ("N", 100_000),
                 ("N", 500_000), ("H", 1), ("H", 5), ("H", 10), ("Sight", 5), ("Sight", 9),
                 ("Race", "zerg"), ("Race", "terran"), ("Race", "protoss"))
PAPER = {
    ("train", "individual"): (13.28, 18.71, 28.20, 56.45, 28.20, 35.29, 26.39, 28.20, 31.86,
                              26.29, 28.20, 28.20, 29.01, 27.79),
    ("train", "composite"): (15.98, 22.18, 30.77, 56.77, 30.77, 36.39, 27.88, 30.77, 33.13,
                             27.92, 30.77, 30.77, 30.68, 30.20),
    ("test", "individual"): (13.37, 15.37, 17.42, 11.32, 17.43, 23.22, 20.77, 17.43, 16.54,
                             15.94, 17.43, 17.42, 17.28, 17.24),
    ("test", "composite"): (16.07, 18.49, 20.40, 12.38, 20.40, 25.49, 23.54, 20.40, 18.94,
                            17.90, 20.40, 20.40, 18.59, 20.08),
}


@dataclasses.dataclass(frozen=True)
class Scale:
    name: str
    policy: str                       # "random" or "mappo"
    mappo: dict                       # `jaxdiff train` overrides for the policies
    collect: dict                     # collect() keywords besides samples/history
    widths: tuple
    samples: tuple                    # N sweep (joint samples)
    histories: tuple
    sights: tuple
    races: tuple
    default: dict                     # width, samples, history, sight, race
    train: dict                       # state_diffusion overrides (batch_size, lr, ...)
    steps: int                        # Adam steps per denoiser run
    seeds: int
    chunks: int = 1


SCALES = {
    "quick": Scale(
        "quick", "random", {}, dict(test_samples=1024, num_envs=64),
        widths=(64, 256, 512), samples=(2_000, 10_000, 50_000), histories=(1, 5, 10),
        sights=(5, 9), races=("zerg", "terran", "protoss"),
        default=dict(width=512, samples=10_000, history=5, sight=9, race="zerg"),
        train=dict(batch_size=256, lr=1e-3, flow_steps=10, eval_samples=256),
        steps=200, seeds=1),
    "cpu": Scale(
        "cpu", "mappo",
        dict(total_steps=100_000, chunks=4, eval_episodes=16, seeds=1,
             **{"algo.num_envs": 32, "algo.num_steps": 64}),
        dict(test_samples=2048, num_envs=64),
        widths=(64, 256, 1024), samples=(2_000, 10_000, 50_000), histories=(1, 5, 10),
        sights=(5, 9), races=("zerg", "terran", "protoss"),
        default=dict(width=1024, samples=10_000, history=5, sight=9, race="zerg"),
        train=dict(batch_size=256, lr=1e-3, flow_steps=10, eval_samples=512),
        steps=600, seeds=3),
    "paper": Scale(
        "paper", "mappo", dict(total_steps=10_000_000, chunks=20, eval_episodes=32, seeds=1),
        dict(test_samples=10_000, num_envs=128),
        widths=(1024, 4096, 8192), samples=(10_000, 100_000, 500_000), histories=(1, 5, 10),
        sights=(5, 9), races=("zerg", "terran", "protoss"),
        default=dict(width=8192, samples=100_000, history=5, sight=9, race="zerg"),
        train=dict(batch_size=1024, lr=3e-4, flow_steps=10, eval_samples=10_000),
        steps=100_000, seeds=3, chunks=5),
    # a pipeline check in about 3 minutes (numbers meaningless)
    "smoke": Scale(
        "smoke", "random", {}, dict(test_samples=256, num_envs=32, burn_in=20),
        widths=(16, 32, 64), samples=(500, 1_000, 2_000), histories=(1, 2, 3),
        sights=(5, 9), races=("zerg", "terran", "protoss"),
        default=dict(width=64, samples=1_000, history=2, sight=9, race="zerg"),
        train=dict(batch_size=64, lr=1e-3, flow_steps=3, eval_samples=32),
        steps=20, seeds=2),
}


def log(msg: str) -> None:
    print(f"[table1 {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt_n(n) -> str:
    if isinstance(n, str):
        return n
    return f"{n // 1000}K" if n >= 1000 and n % 1000 == 0 else str(n)


# ----------------------------------------------------------------------------- columns
def columns(sc: Scale) -> list[tuple[str, object, dict]]:
    """(group, value, full setting) for the 14 columns, in the paper's order."""
    vals = dict(W=sc.widths, N=sc.samples, H=sc.histories, Sight=sc.sights, Race=sc.races)
    out = []
    for g in GROUPS:
        for v in vals[g]:
            out.append((g, v, {**sc.default, GROUP_KEY[g]: v}))
    return out


def collection_configs(sc: Scale) -> dict[str, dict]:
    """The data-collection configs: name -> race, sight, samples, history."""
    d = sc.default
    configs = {f"{d['race']}_s{d['sight']}": dict(race=d["race"], sight=d["sight"],
                                                  samples=max(sc.samples),
                                                  history=max(sc.histories))}
    for s in sc.sights:
        configs.setdefault(f"{d['race']}_s{s}", dict(race=d["race"], sight=s,
                                                     samples=d["samples"], history=d["history"]))
    for r in sc.races:
        configs.setdefault(f"{r}_s{d['sight']}", dict(race=r, sight=d["sight"],
                                                      samples=d["samples"],
                                                      history=d["history"]))
    return configs


def setting_name(s: dict) -> str:
    return f"{s['race']}_s{s['sight']}_W{s['width']}_N{fmt_n(s['samples'])}_H{s['history']}"


# ----------------------------------------------------------------------------- stage 1
def train_policy(sc: Scale, name: str, cfg: dict, root: str) -> dict:
    """MAPPO on the runner for one collection config; reuses a finished run dir."""
    from jaxdiff.config import compose, run_spec
    from jaxdiff.run import runner

    run_dir = os.path.join(root, "policies", f"mappo_{name}")
    summary_path = os.path.join(run_dir, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        if summary.get("complete", True):
            log(f"policy {name}: reusing {run_dir}")
            return dict(run_dir=run_dir, reused=True,
                        wall_s=_read_wall(os.path.join(run_dir, "table1_wall.json")),
                        **_policy_info(summary))
    argv = ["algo=mappo", f"env={RACE_ENV[cfg['race']]}", f"env.sight_range={cfg['sight']}",
            "progress=false"] + [f"{k}={v}" for k, v in sc.mappo.items()]
    spec = run_spec(compose(argv))
    log(f"policy {name}: MAPPO {spec.total_steps:,} steps -> {run_dir}")
    t = time.time()
    summary = runner.train(spec, run_dir, progress=True)
    info = _policy_info(summary)
    wall = time.time() - t
    _write_wall(os.path.join(run_dir, "table1_wall.json"), wall)
    log(f"policy {name}: win rate {info['win_rate']}, {wall:.0f} s")
    return dict(run_dir=run_dir, reused=False, wall_s=round(wall, 1), **info)


def _policy_info(summary: dict) -> dict:
    f = summary.get("final", {})
    return dict(total_steps=summary.get("total_steps"), win_rate=f.get("win_rate_mean"),
                eval_return=f.get("return_mean"))


# ----------------------------------------------------------------------------- stage 2
def collect_dataset(sc: Scale, name: str, cfg: dict, root: str, policy_dir: str | None) -> dict:
    from jaxdiff import envs as envs_lib
    from jaxdiff.data import collect as col
    from jaxdiff.run.policy import run_policy
    from jaxdiff.data import dataset as ds_lib

    out = os.path.join(root, name)
    want = dict(samples=cfg["samples"], history=cfg["history"], **sc.collect)
    try:
        meta = ds_lib.load_meta(out)
        same = (meta["history"] == cfg["history"] and meta["splits"]["train"]["samples"]
                == cfg["samples"] and meta["policy"] == ("random" if policy_dir is None else "run")
                and meta["splits"]["test"]["samples"] == sc.collect["test_samples"])
        if same:
            log(f"dataset {name}: reusing {out}")
            return dict(path=out, reused=True, wall_s=meta.get("collect_s"))
        log(f"dataset {name}: settings changed, collecting again")
    except ds_lib.DatasetError:
        pass
    env_name = RACE_ENV[cfg["race"]]
    env_kwargs = dict(sight_range=cfg["sight"])
    if policy_dir is None:
        env = envs_lib.make(env_name, **env_kwargs)
        policy = col.random_policy(env)
    else:
        policy, env, spec = run_policy(policy_dir)
        env_name, env_kwargs = spec.env, dict(spec.env_kwargs)
    log(f"dataset {name}: {policy.name} policy, {cfg['samples']:,} train joint samples, "
        f"H={cfg['history']} -> {out}")
    t = time.time()
    col.collect(env, policy, out, overwrite=True, progress=False, env_name=env_name,
                env_kwargs=env_kwargs, **want)
    log(f"dataset {name}: {time.time() - t:.0f} s")
    return dict(path=out, reused=False, wall_s=ds_lib.load_meta(out).get("collect_s"))


# ----------------------------------------------------------------------------- stage 3
def run_denoiser(sc: Scale, setting: dict, dataset: str, root: str) -> dict:
    from jaxdiff.data import dataset as ds_lib
    from jaxdiff.run import runner

    meta = ds_lib.load_meta(dataset)
    n_data = meta["splits"]["train"]["samples"]
    over = dict(dataset=dataset, width=setting["width"], history=setting["history"],
                max_train_rows=0 if setting["samples"] >= n_data else setting["samples"],
                **sc.train)
    spec = runner.RunSpec(algo="state_diffusion", env=meta["env"],
                          env_kwargs=dict(meta.get("env_kwargs") or {}), algo_overrides=over,
                          seeds=sc.seeds, total_steps=sc.steps * sc.train["batch_size"],
                          chunks=sc.chunks)
    run_dir = os.path.join(root, "denoiser", setting_name(setting))
    identity = json.loads(json.dumps(spec.identity()))
    cfg_path, summary_path = (os.path.join(run_dir, n) for n in ("config.json", "summary.json"))
    done = False
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            same = json.load(f) == identity
        if not same:
            log(f"denoiser {setting_name(setting)}: settings changed, training again")
            shutil.rmtree(run_dir)
        elif os.path.exists(summary_path):
            with open(summary_path) as f:
                done = json.load(f).get("complete", False)
    t = time.time()
    wall_path = os.path.join(run_dir, "table1_wall.json")
    if done:
        log(f"denoiser {setting_name(setting)}: reusing {run_dir}")
        with open(summary_path) as f:
            summary = json.load(f)
        wall = _read_wall(wall_path)
    else:
        log(f"denoiser {setting_name(setting)}: {sc.steps} steps x {sc.seeds} seed(s)")
        summary = runner.train(spec, run_dir, progress=False)
        wall = time.time() - t
        _write_wall(wall_path, wall)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    last = max(r["chunk"] for r in rows)
    final = [r for r in rows if r["chunk"] == last]
    keys = {("test", "individual"): "eval_psnr_individual",
            ("test", "composite"): "eval_psnr_composite",
            ("train", "individual"): "eval_train_psnr_individual",
            ("train", "composite"): "eval_train_psnr_composite"}
    out = {}
    for (split, alg), k in keys.items():
        v = np.array([r[k] for r in final], np.float64)
        out[f"{split}_{alg}"] = dict(mean=float(v.mean()), std=float(v.std()),
                                     per_seed=[float(x) for x in v])
    from jaxdiff.algos import state_diffusion as sd_algo
    sd_algo._load.cache_clear()
    jax.clear_caches()
    res = dict(setting=setting, run_dir=run_dir, dataset=dataset, reused=done,
               wall_s=None if wall is None else round(wall, 1),
               compile_s=summary.get("compile_s"),
               mean_loss=float(np.mean([r["loss"] for r in final])),
               train_rows=over["max_train_rows"] or n_data, **out)
    log(f"denoiser {setting_name(setting)}: test ind {out['test_individual']['mean']:.2f} "
        f"comp {out['test_composite']['mean']:.2f} | train ind "
        f"{out['train_individual']['mean']:.2f} comp {out['train_composite']['mean']:.2f}"
        + (f" ({wall:.0f} s)" if wall is not None else ""))
    return res


def baselines(setting: dict, dataset: str, eval_samples: int) -> dict:
    """PSNR of two estimators that need no training, on the same eval samples as the denoisers
    (spec §5.4 PSNR, per-sample mean):

    * constant mean: the mean state of the column's training samples (the first N joint
      samples of its collection), the same estimate for every sample;
    * last state: s^{t-1}, the true global state one step earlier in the same episode (the
      constant mean at an episode's first step). Privileged: no agent observes s^{t-1}; it is
      the persistence reference (how much the state changes in one step)."""
    from jaxdiff.data import dataset as ds_lib
    from jaxdiff.statediff import metrics

    ds = ds_lib.load_dataset(dataset)
    n = min(setting["samples"], ds.train.samples)
    mean = ds.train.states(np.arange(n)).astype(np.float64).mean(0)
    out = {}
    for name in ("train", "test"):
        split = ds[name]
        idx = np.arange(min(eval_samples, split.samples))
        e, t = split.index()
        e, t = e[idx], t[idx]
        s = split.state[e, t]
        prev = np.where(split.first[e, t][:, None], mean[None], split.state[e, t - 1])
        for label, est in (("constant_mean", np.broadcast_to(mean, s.shape)), ("last_state", prev)):
            out[f"{name}_{label}"] = dict(
                mean=float(np.mean(metrics.psnr(np.asarray(est, np.float32), s))), std=0.0)
        out[f"{name}_episode_starts"] = float(np.mean(split.first[e, t]))
    return out


def _write_wall(path: str, wall: float) -> None:
    with open(path, "w") as f:
        json.dump(dict(wall_s=round(wall, 1)), f)


def _read_wall(path: str):
    """Wall time of the invocation that produced a reused run/policy (None if unknown)."""
    try:
        with open(path) as f:
            return json.load(f)["wall_s"]
    except (OSError, ValueError, KeyError):
        return None


# ----------------------------------------------------------------------------- trends
def _mono(xs, strict_tol=0.0) -> bool:
    return all(b > a + strict_tol for a, b in itertools.pairwise(xs))


def _direction(xs) -> str:
    """'rises', 'falls' or 'is not monotone' for a series (strict)."""
    if _mono(xs):
        return "rises"
    if _mono(xs[::-1]):
        return "falls"
    return "is not monotone"


def trends(table: dict, sc: Scale, losses: dict, noise: dict | None = None) -> list[dict]:
    """One check per trend of spec §5.6 (plus the trivial-baseline check 0);
    table[(split, alg)][(group, value)] = mean PSNR (alg also "constant_mean" / "last_state"),
    losses[(group, value)] = mean training loss of that column's run.

    Each check has a status, the numbers it rests on ("detail") and "evidence": further
    comparisons computed from the same run (training loss, epochs, train - test gaps, margins
    over the constant-mean baseline). No sentence is chosen from a fixed list of causes."""
    vals = dict(W=sc.widths, N=sc.samples, H=sc.histories, Sight=sc.sights, Race=sc.races)

    def series(split, alg, group):
        return [table[(split, alg)][(group, v)] for v in vals[group]]

    def arrow(xs):
        return " -> ".join(f"{x:.2f}" for x in xs)

    def signed(xs):
        return ", ".join(f"{x:+.2f}" for x in xs)

    rows_per_step = sc.steps * sc.train["batch_size"]
    epochs = {n: rows_per_step / (5 * n) for n in sc.samples}   # ~5 alive agents per sample
    budget = (f"{sc.steps} Adam steps x {sc.train['batch_size']} rows = "
              + ", ".join(f"~{e:.1f} epochs at N {fmt_n(n)}" for n, e in epochs.items()))
    has_base = ("test", "constant_mean") in table
    cells = [(split, g, v) for split in ("train", "test") for g, v, _ in columns(sc)]

    def margin(split, alg, g, v):
        return table[(split, alg)][(g, v)] - table[(split, "constant_mean")][(g, v)]

    checks = []

    # 0. the denoisers beat the trivial constant-mean estimate
    if has_base:
        bad_i = [f"{sp} {g} {fmt_n(v)}" for sp, g, v in cells if margin(sp, "individual", g, v) <= 0]
        bad_c = [f"{sp} {g} {fmt_n(v)}" for sp, g, v in cells if margin(sp, "composite", g, v) <= 0]
        mi = [margin(sp, "individual", g, v) for sp, g, v in cells]
        mc = [margin(sp, "composite", g, v) for sp, g, v in cells]
        last = [table[(sp, "last_state")][(g, v)] - table[(sp, "composite")][(g, v)]
                for sp, g, v in cells]
        checks.append(dict(
            trend="0. composite > individual > constant-mean baseline in every cell",
            status="holds" if not bad_i and not bad_c else "does not hold",
            detail=(f"individual - constant mean {min(mi):+.2f} to {max(mi):+.2f} dB "
                    f"({len(cells) - len(bad_i)}/{len(cells)} cells above), composite - "
                    f"constant mean {min(mc):+.2f} to {max(mc):+.2f} dB "
                    f"({len(cells) - len(bad_c)}/{len(cells)} above)"
                    + (f"; individual not above the baseline at {', '.join(bad_i)}" if bad_i else "")
                    + (f"; composite not above it at {', '.join(bad_c)}" if bad_c else "")),
            evidence=(f"the privileged last-state estimate s^(t-1) minus composite diffusion: "
                      f"{min(last):+.2f} to {max(last):+.2f} dB")))

    # 1. composite > individual in every cell
    bad = [f"{split} {g} {fmt_n(v)}" for split, g, v in cells
           if not table[(split, "composite")][(g, v)] > table[(split, "individual")][(g, v)]]
    gaps = [table[(split, "composite")][(g, v)] - table[(split, "individual")][(g, v)]
            for split, g, v in cells]
    checks.append(dict(
        trend="1. composite > individual in every cell",
        status="reproduced" if not bad else "not reproduced",
        detail=f"{len(cells) - len(bad)}/{len(cells)} cells; gaps {min(gaps):+.2f} to "
               f"{max(gaps):+.2f} dB (paper +0.32 to +3.47)"
               + (f"; fails at {', '.join(bad)}" if bad else ""),
        evidence=""))

    # 2. width
    rows = {f"{sp} {a}": series(sp, a, "W") for sp, a in ROWS}
    ok = all(_mono(v) for v in rows.values())
    ends = all(v[-1] > v[0] for v in rows.values())
    wl = [losses[("W", w)] for w in sc.widths]
    wgap = [r - t for r, t in zip(series("train", "individual", "W"),
                                  series("test", "individual", "W"))]
    status = "reproduced" if ok else "partly reproduced" if ends else "not reproduced"
    ev = [f"mean training loss {_direction(wl)} with width ({arrow(wl)})",
          f"train individual PSNR {_direction(rows['train individual'])} with width",
          f"train - test individual {signed(wgap)} dB",
          f"every width trains {budget.split(' = ')[0]}"]
    if has_base:
        ev.append("test individual - constant mean "
                  + signed([margin("test", "individual", "W", w) for w in sc.widths]) + " dB")
    checks.append(dict(
        trend="2. PSNR rises with width (train and test)", status=status,
        detail="; ".join(f"{k}: {arrow(v)}" for k, v in rows.items()),
        evidence="; ".join(ev)))

    # 3. data
    ti, tc = series("test", "individual", "N"), series("test", "composite", "N")
    ri = series("train", "individual", "N")
    nl = [losses[("N", n)] for n in sc.samples]
    ok = _mono(ti) and _mono(tc)
    ends = ti[-1] > ti[0] and tc[-1] > tc[0]
    overfit = [r - t for r, t in zip(ri, ti)]
    overfits = overfit[0] > overfit[-1] + 1.0
    status = ("reproduced" if ok and overfits else
              "partly reproduced" if ok or ends or overfits else "not reproduced")
    checks.append(dict(
        trend="3. test PSNR rises with data; the smallest N overfits", status=status,
        detail=(f"test individual {arrow(ti)}; test composite {arrow(tc)}; "
                f"train - test (individual) {signed(overfit)}"),
        evidence=(f"{budget}; mean training loss {arrow(nl)}"
                  + ("; test individual - constant mean "
                     + signed([margin("test", "individual", "N", n) for n in sc.samples]) + " dB"
                     if has_base else ""))))

    # 4. history: train up, test down
    ri, rc = series("train", "individual", "H"), series("train", "composite", "H")
    ti, tc = series("test", "individual", "H"), series("test", "composite", "H")
    train_up = ri[-1] > ri[0] and rc[-1] > rc[0]
    test_down = ti[-1] < ti[0] and tc[-1] < tc[0]
    status = ("reproduced" if train_up and test_down else
              "partly reproduced" if train_up or test_down else "not reproduced")
    gen = [r - t for r, t in zip(ri, ti)]
    hl = [losses[("H", h)] for h in sc.histories]
    checks.append(dict(
        trend="4. longer history raises train PSNR but lowers test PSNR", status=status,
        detail=(f"train ind {arrow(ri)}; train comp {arrow(rc)}; test ind {arrow(ti)}; "
                f"test comp {arrow(tc)}"),
        evidence=(f"train - test individual {signed(gen)} dB ({_direction(gen)} with H); "
                  f"mean training loss {arrow(hl)}")))

    # 5. sight 9 > sight 5
    lo, hi = min(sc.sights), max(sc.sights)
    pairs = {f"{sp} {a}": (table[(sp, a)][("Sight", lo)], table[(sp, a)][("Sight", hi)])
             for sp, a in ROWS}
    test_ok = all(b > a for k, (a, b) in pairs.items() if k.startswith("test"))
    all_ok = all(b > a for a, b in pairs.values())
    status = "reproduced" if all_ok else "partly reproduced" if test_ok else "not reproduced"
    ev = ""
    if has_base:
        ev = ("test constant mean " + " vs ".join(
            f"{table[('test', 'constant_mean')][('Sight', x)]:.2f}" for x in (lo, hi))
            + f" (sight {lo} vs {hi}: different collections); test individual - constant mean "
            + " vs ".join(f"{margin('test', 'individual', 'Sight', x):+.2f}" for x in (lo, hi)))
    checks.append(dict(
        trend=f"5. sight {hi} > sight {lo}", status=status,
        detail="; ".join(f"{k}: {a:.2f} vs {b:.2f}" for k, (a, b) in pairs.items()),
        evidence=ev))

    # 6. races similar, terran the smallest composite gain
    rgaps = {r: table[("test", "composite")][("Race", r)]
             - table[("test", "individual")][("Race", r)] for r in sc.races}
    ind = [table[("test", "individual")][("Race", r)] for r in sc.races]
    spread = max(ind) - min(ind)
    smallest = min(rgaps, key=rgaps.get)
    similar = spread < 3.0
    ranked = sorted(rgaps.values())
    gap_margin = ranked[1] - ranked[0]
    clear = noise is not None and gap_margin > noise["max"]   # one seed: no noise estimate
    status = ("reproduced" if similar and smallest == "terran" and clear else
              "partly reproduced" if similar else "not reproduced")
    checks.append(dict(
        trend="6. races similar; terran has the smallest composite gain", status=status,
        detail=(f"test individual spread {spread:.2f} dB (paper 0.19); test gaps "
                + ", ".join(f"{r} {g:+.2f}" for r, g in rgaps.items())
                + f" (paper zerg +2.98, terran +1.31, protoss +2.84); smallest: {smallest}, "
                  f"by {gap_margin:.2f} dB"),
        evidence=(f"one seed, so the {gap_margin:.2f} dB margin has no noise estimate and "
                  f"counts as partly reproduced at most" if noise is None else
                  f"that margin is {'above' if clear else 'within'} the largest seed std "
                  f"({noise['max']:.2f} dB)")))
    for c in checks:
        c["detail"] += (f"; seed std up to {noise['max']:.2f} dB (median "
                        f"{noise['median']:.2f}) over {sc.seeds} seeds" if noise else
                        "; one seed, so no noise estimate")
    return checks


# ----------------------------------------------------------------------------- output
def col_label(g, v) -> str:
    return f"{g} {fmt_n(v) if g == 'N' else v}".replace("Race ", "")


def md_table(values: dict, cols, title_cell="Setting | Alg", std: dict | None = None,
             rows=ROWS) -> str:
    head = "| Setting | Alg | " + " | ".join(col_label(g, v).title() if g == "Race" else
                                             col_label(g, v) for g, v in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for split, alg in rows:
        cells = []
        for c in cols:
            x = values[(split, alg)][c]
            s = "" if std is None or std[(split, alg)][c] == 0 else f" ± {std[(split, alg)][c]:.2f}"
            cells.append(f"{x:.2f}{s}")
        lines.append(f"| {split.title()} | {ALG_TITLE[alg]} | " + " | ".join(cells) + " |")
    for split in ("train", "test"):
        gaps = [values[(split, "composite")][c] - values[(split, "individual")][c] for c in cols]
        lines.append(f"| {split.title()} | gap (C - I) | " + " | ".join(f"{g:+.2f}" for g in gaps)
                     + " |")
    return "\n".join(lines)


def plot(table: dict, sc: Scale, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vals = dict(W=sc.widths, N=sc.samples, H=sc.histories, Sight=sc.sights, Race=sc.races)
    paper_vals = {g: [v for gg, v in PAPER_COLUMNS if gg == g] for g in GROUPS}
    styles = {("train", "individual"): ("tab:blue", "--"), ("train", "composite"): ("tab:red", "--"),
              ("test", "individual"): ("tab:blue", "-"), ("test", "composite"): ("tab:red", "-")}
    fig, axes = plt.subplots(2, 5, figsize=(19, 7.5))
    for j, g in enumerate(GROUPS):
        xs = np.arange(len(vals[g]))
        for row, (src, labels) in enumerate(((None, vals[g]), (PAPER, paper_vals[g]))):
            ax = axes[row, j]
            for (split, alg), (color, ls) in styles.items():
                if src is None:
                    ys = [table[(split, alg)][(g, v)] for v in vals[g]]
                else:
                    ys = [src[(split, alg)][PAPER_COLUMNS.index((g, v))] for v in labels]
                marker = "o" if alg == "composite" else "s"
                if g in ("Sight", "Race"):
                    k = ROWS.index((split, alg))
                    ax.bar(xs + (k - 1.5) * 0.2, ys, 0.2, color=color,
                           alpha=0.9 if split == "test" else 0.45,
                           hatch="" if split == "test" else "//", label=f"{split} {alg}")
                else:
                    ax.plot(xs, ys, ls, color=color, marker=marker, label=f"{split} {alg}")
            if src is None and ("test", "constant_mean") in table:
                ax.plot(xs, [table[("test", "constant_mean")][(g, v)] for v in vals[g]], ":x",
                        color="0.3", label="test constant mean (baseline)")
            ax.set_xticks(xs, [fmt_n(v) if g == "N" else str(v) for v in labels])
            ax.set_title(("ours" if src is None else "paper") + f": {g}")
            ax.set_ylabel("PSNR (dB)")
            ax.grid(alpha=0.3)
            if g in ("Sight", "Race"):
                lo = min(min(p.get_height() for p in ax.patches) - 3, 10)
                ax.set_ylim(bottom=max(lo, 0))
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Table 1 sweeps, scale `{sc.name}` (top: ours; bottom: paper, spec §5.6). "
                 f"Solid/dark: test; dashed/hatched: train")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(sc: Scale, results: dict, out_dir: str) -> dict:
    cols = [(g, v) for g, v, _ in columns(sc)]
    by_setting = {setting_name(r["setting"]): r for r in results["runs"]}
    rows = ROWS + BASELINE_ROWS
    table = {k: {} for k in rows}
    std = {k: {} for k in rows}
    for g, v, s in columns(sc):
        r = by_setting[setting_name(s)]
        for split, alg in rows:
            table[(split, alg)][(g, v)] = r[f"{split}_{alg}"]["mean"]
            std[(split, alg)][(g, v)] = r[f"{split}_{alg}"]["std"]
    paper = {k: dict(zip(PAPER_COLUMNS, v)) for k, v in PAPER.items()}
    losses = {(g, v): by_setting[setting_name(st)]["mean_loss"] for g, v, st in columns(sc)}
    stds = [x for k, row in std.items() if k in ROWS for x in row.values()]
    noise = (dict(max=float(np.max(stds)), median=float(np.median(stds)))
             if sc.seeds > 1 else None)
    checks = trends(table, sc, losses, noise)
    results["table"] = {f"{split} {alg}": {col_label(g, v): table[(split, alg)][(g, v)]
                                           for g, v in cols} for split, alg in rows}
    results["table_std"] = {f"{split} {alg}": {col_label(g, v): std[(split, alg)][(g, v)]
                                               for g, v in cols} for split, alg in rows}
    default_cols = [col_label(g, v) for g, v, st in columns(sc)
                    if setting_name(st) == setting_name(sc.default)]
    results["default_run_columns"] = default_cols
    results["paper"] = {f"{split} {alg}": {col_label(g, v): paper[(split, alg)][(g, v)]
                                           for g, v in PAPER_COLUMNS} for split, alg in ROWS}
    results["gaps"] = {split: {col_label(g, v): table[(split, "composite")][(g, v)]
                               - table[(split, "individual")][(g, v)] for g, v in cols}
                       for split in ("train", "test")}
    results["paper_gaps"] = {split: {col_label(g, v): paper[(split, "composite")][(g, v)]
                                     - paper[(split, "individual")][(g, v)]
                                     for g, v in PAPER_COLUMNS} for split in ("train", "test")}
    results["trends"] = checks

    policy_line = ("**uniform random policy** (`--quick`; the paper rolls out trained MAPPO)"
                   if sc.policy == "random" else
                   "MAPPO-RNN policies trained on the runner, one per collection config: "
                   + ", ".join(f"{k} ({p['total_steps']:,} steps, deterministic eval win rate "
                               f"{p['win_rate'] if p['win_rate'] is None else round(p['win_rate'], 2)})"
                               for k, p in results["policies"].items()))
    tr = sc.train
    md = [
        f"# Table 1 (paper 000): true-state PSNR on SMAX, scale `{sc.name}`",
        "",
        f"Generated by `{results['command']}` at commit {results['commit']} "
        f"on {results['machine']}: {results['compute_s']['total'] / 60:.1f} min of runs.",
        "",
        f"* Data: {policy_line}. Collections: "
        + ", ".join(f"{k} (N {fmt_n(c['samples'])}, H {c['history']})"
                    for k, c in results["collections"].items())
        + f"; test split {fmt_n(sc.collect['test_samples'])} joint samples from fresh seeds, "
          f"{sc.collect['num_envs']} envs.",
        f"* Denoiser: shared MLP, depth 3, SiLU; {sc.steps} Adam steps x batch "
        f"{tr['batch_size']}, constant lr {tr['lr']:g}, clip 1.0; sigma log-uniform [0.01, 2]; "
        f"L = {tr['flow_steps']} flow steps for both individual and composite diffusion; "
        f"{sc.seeds} seed(s)" + (" (mean ± std over seeds)" if sc.seeds > 1 else
                                 " (one seed: no error bars)") + ".",
        f"* PSNR (MAX = 1, per-sample mean, alive agents only) on the first "
        f"{tr['eval_samples']} joint samples of the test split (Test) and of the train split "
        f"(Train).",
        f"* Defaults (the column value shared by every group): W {sc.default['width']}, "
        f"N {fmt_n(sc.default['samples'])}, H {sc.default['history']}, sight "
        f"{sc.default['sight']}, {sc.default['race']}. The paper's: W 8192, N 100K, H 5, sight "
        f"9, zerg. Our W/N columns are smaller values in the same positions "
        f"(small / default / large); compare trends, not dB. The default run fills "
        f"{len(default_cols)} of the 14 columns ({', '.join(default_cols)}): those columns "
        f"repeat one run, they are not independent measurements.",
        "* Baselines (no training, same eval samples): constant mean = the mean state of the "
        "column's training samples for every sample; last state = s^(t-1), the true state one "
        "step earlier in the episode (the constant mean at an episode's first step), which no "
        "agent observes, so it is a privileged persistence reference, not a competitor.",
        "",
        "## Ours",
        "",
        md_table(table, cols, std=std if sc.seeds > 1 else None, rows=rows),
        "",
        "## Paper (spec §5.6)",
        "",
        md_table(paper, list(PAPER_COLUMNS)),
        "",
        "## Trends of spec §5.6",
        "",
    ]
    for c in checks:
        md.append(f"* **{c['trend']}: {c['status']}.** {c['detail']}."
                  + (f" Numbers from this run: {c['evidence']}." if c["evidence"] else ""))
    md += ["", "## Runs", "",
           "| setting | train joint samples | mean training loss | wall s | run dir |",
           "|---|---|---|---|---|"]
    for r in results["runs"]:
        wall = "?" if r["wall_s"] is None else f"{r['wall_s']:.0f}"
        md.append(f"| {setting_name(r['setting'])} | {r['train_rows']:,} | "
                  f"{r['mean_loss']:.4f} | {wall} | "
                  f"{os.path.relpath(r['run_dir'], HERE)} |")
    comp = results["compute_s"]
    md += ["", "Wall times of the runs behind these numbers (s, on the machine above): "
           + ", ".join(f"{k} {v:.0f}" for k, v in comp.items())
           + f". This invocation: {results['wall_s']:.0f} s (stages reuse finished work).",
           "", f"![sweeps](table1_{sc.name}.png)", ""]
    text = "\n".join(md)
    for stem in ("table1", f"table1_{sc.name}"):
        with open(os.path.join(out_dir, stem + ".md"), "w") as f:
            f.write(text.replace(f"(table1_{sc.name}.png)", f"({stem}.png)"))
        with open(os.path.join(out_dir, stem + ".json"), "w") as f:
            json.dump(results, f, indent=1)
        plot(table, sc, os.path.join(out_dir, stem + ".png"))
    return results


# ----------------------------------------------------------------------------- main
def plan(sc: Scale) -> int:
    """Print what `--scale` would run, after validating every config (nothing compiles)."""
    from jaxdiff.config import compose, run_spec
    from jaxdiff.run import runner

    print(f"scale {sc.name}: {sc.seeds} seed(s), {sc.steps:,} Adam steps x "
          f"{sc.train['batch_size']} per denoiser run")
    for name, cfg in collection_configs(sc).items():
        if sc.policy == "mappo":
            argv = ["algo=mappo", f"env={RACE_ENV[cfg['race']]}",
                    f"env.sight_range={cfg['sight']}"] + [f"{k}={v}" for k, v in sc.mappo.items()]
            spec = run_spec(compose(argv))
            runner.prepare(spec)
            a = spec.algo_overrides
            pol = (f"MAPPO {spec.total_steps:,} steps ({a['num_envs']} envs x "
                   f"{a['num_steps']} steps, lr {a['lr']})")
        else:
            pol = "random policy"
        print(f"  data {name}: {pol}; N {fmt_n(cfg['samples'])} + test "
              f"{fmt_n(sc.collect['test_samples'])}, H {cfg['history']}")
    seen = set()
    for _, _, setting in columns(sc):
        key = setting_name(setting)
        if key in seen:
            continue
        seen.add(key)
        runner.prepare(runner.RunSpec(
            algo="state_diffusion", env=RACE_ENV[setting["race"]],
            env_kwargs=dict(sight_range=setting["sight"]),
            algo_overrides=dict(dataset="<collected>", width=setting["width"],
                                history=setting["history"], max_train_rows=setting["samples"],
                                **sc.train),
            seeds=sc.seeds, total_steps=sc.steps * sc.train["batch_size"], chunks=sc.chunks))
        print(f"  denoiser {key}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="same as --scale quick")
    p.add_argument("--scale", choices=tuple(SCALES), default="cpu")
    p.add_argument("--out", default=RESULTS, help="where table1.{json,md,png} go")
    p.add_argument("--plan", action="store_true",
                   help="validate and print the scale's policies, datasets and runs; run nothing")
    args = p.parse_args(argv)
    sc = SCALES["quick" if args.quick else args.scale]
    if args.plan:
        return plan(sc)
    out_dir = os.path.abspath(args.out)
    runs_root = os.path.join(out_dir, "runs", sc.name)
    data_root = os.path.join(out_dir, "datasets", sc.name)
    os.makedirs(runs_root, exist_ok=True)
    os.makedirs(data_root, exist_ok=True)
    # Compiled programs persist across invocations (SMAX rollouts take ~1 min to compile here).
    jax.config.update("jax_compilation_cache_dir", os.path.join(out_dir, "runs", "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
    t0 = time.time()
    stage_s = {}
    results = dict(scale=sc.name, config=dataclasses.asdict(sc), **provenance(),
                   machine=f"{os.cpu_count()} CPU cores ({jax.default_backend()}), "
                           f"load average {os.getloadavg()[0]:.1f} at start",
                   jax_backend=jax.default_backend())
    log(f"scale {sc.name}: {results['machine']}")

    configs = collection_configs(sc)
    results["collections"] = configs
    t = time.time()
    policies = {}
    if sc.policy == "mappo":
        for name, cfg in configs.items():
            policies[name] = train_policy(sc, name, cfg, runs_root)
    results["policies"] = policies
    stage_s["policies"] = time.time() - t

    t = time.time()
    datasets = {name: collect_dataset(sc, name, cfg, data_root,
                                      policies[name]["run_dir"] if policies else None)
                for name, cfg in configs.items()}
    results["datasets"] = datasets
    stage_s["datasets"] = time.time() - t

    t = time.time()
    runs, seen = [], set()
    for g, v, setting in columns(sc):
        key = setting_name(setting)
        if key in seen:
            continue
        seen.add(key)
        name = f"{setting['race']}_s{setting['sight']}"
        run = run_denoiser(sc, setting, datasets[name]["path"], runs_root)
        run.update(baselines(setting, datasets[name]["path"], sc.train["eval_samples"]))
        runs.append(run)
    results["runs"] = runs
    stage_s["denoisers"] = time.time() - t
    stage_s["total"] = time.time() - t0
    results["stage_s"] = {k: round(v, 1) for k, v in stage_s.items()}
    results["wall_s"] = round(time.time() - t0, 1)

    def total(items):
        walls = [x.get("wall_s") for x in items]
        return sum(w for w in walls if w is not None)
    results["compute_s"] = dict(policies=total(policies.values()),
                                datasets=total(datasets.values()), denoisers=total(runs))
    results["compute_s"]["total"] = sum(results["compute_s"].values())
    write_outputs(sc, results, out_dir)
    for c in results["trends"]:
        log(f"{c['trend']}: {c['status']} ({c['detail']})")
    log(f"done in {results['wall_s'] / 60:.1f} min -> {out_dir}/table1.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
