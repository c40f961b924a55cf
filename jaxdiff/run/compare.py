"""`jaxdiff compare <run or sweep folders...> [out=DIR]`: curves, a table with IQM and 95%
stratified bootstrap confidence intervals (rliable), and a marl-eval export.

Every folder holding config.json and metrics.jsonl (a `jaxdiff train` run, or a sweep's run
folders found below a sweep folder) becomes one entry per grid point. Writes to `out`:

- compare.png: mean evaluation score over seeds against env steps, band = min..max over seeds
  (labelled in the legend);
- compare.md / compare.json: per entry the number of seeds, the mean and the IQM of the final and
  of the best evaluation score over seeds, each with a 95% stratified bootstrap CI (rliable,
  2,000 resamples of the seeds, percentile intervals). The IQM (mean of the middle 50% of
  seeds) trims nothing below 4 seeds, so it equals the mean there; the table says so;
- marl_eval.json: the raw-data layout marl-eval's aggregation tools read:
  `{environment: {task: {algorithm: {"seed_<s>": {"step_<i>": {"step_count": int,
  "<metric>": [value]}, ..., "absolute_metrics": {"<metric>": [value]}}}}}}` with environment
  and task split from the jaxdiff env name at its first underscore (`smax_3m` -> "smax", "3m"),
  algorithm = the entry's label, `step_<i>` = the i-th evaluation, metrics `return` (and
  `win_rate`), each a one-element list (the seed's mean over its evaluation episodes), and the
  final evaluation as `absolute_metrics`.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np

from jaxdiff.run import logging as runlog

CI_REPS = 2000


class CompareError(ValueError):
    pass


def find_runs(folder: str) -> list[str]:
    """Run folders (config.json + metrics.jsonl) at or below `folder`, sorted."""
    if not os.path.isdir(folder):
        raise CompareError(f"`{folder}` is not a folder; pass run folders written by "
                           f"`jaxdiff train` or sweep folders written by `jaxdiff sweep`.")
    found = sorted(root for root, _, files in os.walk(folder)
                   if "config.json" in files and "metrics.jsonl" in files)
    if not found:
        raise CompareError(f"`{folder}` holds no jaxdiff run (no config.json with "
                           f"metrics.jsonl at or below it); train first or check the path.")
    return found


def load_entries(folders: list[str], score: str = "eval_return") -> list[dict]:
    """One entry per (run folder, grid point): label, env, algo and per-seed curves
    {seed: [(step, score), ...]} (plus win rates when the env reports them)."""
    entries = []
    for folder in folders:
        for run in find_runs(folder):
            with open(os.path.join(run, "config.json")) as f:
                spec = json.load(f)
            labels = {}
            summary_path = os.path.join(run, "summary.json")
            if os.path.exists(summary_path):
                with open(summary_path) as f:
                    for g, point in enumerate(json.load(f).get("grid") or []):
                        labels[g] = point.get("label") or f"grid {g}"
            by_grid = defaultdict(lambda: defaultdict(list))
            for r in runlog.read_jsonl(os.path.join(run, "metrics.jsonl")):
                if r.get(score) is not None:
                    by_grid[r.get("grid", 0)][r["seed"]].append(r)
            name = os.path.basename(os.path.normpath(run))
            for g, seeds in sorted(by_grid.items()):
                curves = {s: [(r["step"], r[score]) for r in sorted(rows, key=lambda r: r["step"])]
                          for s, rows in sorted(seeds.items())}
                wins = {s: [(r["step"], r["eval_win_rate"]) for r in rows if "eval_win_rate" in r]
                        for s, rows in sorted(seeds.items())}
                entries.append(dict(label=name + (f" [{labels[g]}]" if g in labels else ""),
                                    run_dir=run, algo=spec["algo"], env=spec["env"],
                                    curves=curves, wins=wins if any(wins.values()) else None))
    if not entries:
        raise CompareError(f"No `{score}` values in {folders}; these runs have not evaluated yet.")
    seen = defaultdict(int)
    for e in entries:                                   # labels must be unique keys
        seen[e["label"]] += 1
        if seen[e["label"]] > 1:
            e["label"] += f" #{seen[e['label']]}"
    return entries


def interval_estimates(scores: np.ndarray, seed: int = 0) -> dict:
    """Mean and IQM of per-seed `scores`, each with its 95% stratified bootstrap CI
    (rliable.library.get_interval_estimates over the seeds of one task)."""
    from rliable import library as rly
    from rliable import metrics as rlm
    x = np.asarray(scores, dtype=np.float64).reshape(-1, 1)    # [runs, tasks=1]
    fn = lambda s: np.array([rlm.aggregate_mean(s), rlm.aggregate_iqm(s)])
    if len(x) == 1:                                     # nothing to resample
        v = float(x[0, 0])
        return dict(mean=v, mean_ci=[v, v], iqm=v, iqm_ci=[v, v])
    import warnings
    with warnings.catch_warnings():      # arch's notice about its future `random_state` API
        warnings.simplefilter("ignore", FutureWarning)
        point, ci = rly.get_interval_estimates({"x": x}, fn, reps=CI_REPS,
                                               random_state=np.random.RandomState(seed))
    (m, q), c = point["x"], ci["x"]
    return dict(mean=float(m), mean_ci=[float(c[0, 0]), float(c[1, 0])],
                iqm=float(q), iqm_ci=[float(c[0, 1]), float(c[1, 1])])


def table(entries: list[dict]) -> list[dict]:
    rows = []
    for e in entries:
        finals = np.array([c[-1][1] for c in e["curves"].values()], dtype=np.float64)
        bests = np.array([max(v for _, v in c) for c in e["curves"].values()], dtype=np.float64)
        n = len(finals)
        rows.append(dict(label=e["label"], algo=e["algo"], env=e["env"], run_dir=e["run_dir"],
                         seeds=n, step=int(max(c[-1][0] for c in e["curves"].values())),
                         final=interval_estimates(finals), best=interval_estimates(bests),
                         iqm_note=None if n >= 4 else
                         f"IQM = mean: the middle 50% of {n} seed(s) is all of them (needs >= 4)"))
    return rows


def _fmt(d: dict, key: str) -> str:
    lo, hi = d[f"{key}_ci"]
    return f"{d[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(rows: list[dict]) -> str:
    lines = ["| run | env | seeds | final mean [95% CI] | final IQM [95% CI] | best mean [95% CI] "
             "| best IQM [95% CI] |", "|---|---|---|---|---|---|---|"]
    notes = []
    for r in rows:
        star = " *" if r["iqm_note"] else ""
        lines.append(f"| {r['label']} | {r['env']} | {r['seeds']} | {_fmt(r['final'], 'mean')} | "
                     f"{_fmt(r['final'], 'iqm')}{star} | {_fmt(r['best'], 'mean')} | "
                     f"{_fmt(r['best'], 'iqm')}{star} |")
        if r["iqm_note"]:
            notes.append(r["iqm_note"])
    text = "\n".join(lines) + "\n\nCIs: 95% stratified bootstrap over seeds (rliable, " \
        f"{CI_REPS} resamples); best = each seed's highest evaluation.\n"
    if notes:
        text += ("\n* IQM = mean where marked: the middle 50% of fewer than 4 seeds is all of "
                 "them (the IQM needs >= 4 seeds to trim anything).\n")
    return text


def marl_eval(entries: list[dict]) -> dict:
    """The marl-eval raw-data dict (layout in the module docstring)."""
    out: dict = {}
    for e in entries:
        env, _, task = e["env"].partition("_")
        algo = out.setdefault(env, {}).setdefault(task or env, {}).setdefault(e["label"], {})
        for s, curve in e["curves"].items():
            wins = dict((e["wins"] or {}).get(s, []))
            run = {}
            for i, (step, value) in enumerate(curve):
                run[f"step_{i}"] = dict(step_count=int(step), **{"return": [float(value)]})
                if step in wins:
                    run[f"step_{i}"]["win_rate"] = [float(wins[step])]
            last_step, last = curve[-1]
            run["absolute_metrics"] = {"return": [float(last)]}
            if last_step in wins:
                run["absolute_metrics"]["win_rate"] = [float(wins[last_step])]
            algo[f"seed_{s}"] = run
    return out


def plot(entries: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for e in entries:
        steps = sorted({st for c in e["curves"].values() for st, _ in c})
        vals = [[v for c in e["curves"].values() for st, v in c if st == x] for x in steps]
        mean = np.array([np.mean(v) for v in vals])
        line, = ax.plot(steps, mean, label=f"{e['label']} (mean of {len(e['curves'])} seeds)")
        ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], alpha=0.2,
                        color=line.get_color(), label="min..max over seeds")
    ax.set_xlabel("env steps per seed")
    ax.set_ylabel("evaluation return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(folders: list[str], out: str = "runs/compare") -> list[dict]:
    if not folders:
        raise CompareError("`jaxdiff compare` needs run or sweep folders, e.g. "
                           "`jaxdiff compare runs/mappo-mpe_simple_spread runs/ippo-mpe_simple_spread`.")
    entries = load_entries(folders)
    rows = table(entries)
    os.makedirs(out, exist_ok=True)
    text = markdown(rows)
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump(rows, f, indent=2)
    with open(os.path.join(out, "marl_eval.json"), "w") as f:
        json.dump(marl_eval(entries), f, indent=2)
    plot(entries, os.path.join(out, "compare.png"))
    print(text)
    print(f"compare results: {os.path.abspath(out)} (compare.md, compare.json, compare.png, "
          f"marl_eval.json)")
    return rows
