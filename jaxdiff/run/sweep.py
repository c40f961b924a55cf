"""Hyper-parameter sweeps: a YAML grid, seeds x dynamic values vmapped in one compiled program.

    # configs/sweep/<name>.yaml
    algo: mappo
    env: mpe_simple_spread
    seeds: 2
    total_steps: 300000
    fixed: {algo.hidden: 128}              # optional overrides for every point
    grid:
      algo.lr: [1.0e-4, 3.0e-4, 1.0e-3]    # float (dynamic): a vmapped axis
      algo.num_envs: [16, 32]              # shape-changing (static): one compile per value

Writes <out>/results.md, results.json and sweep.png, one row per grid point (mean ± std over
seeds of the final evaluation return), plus one run folder per static combination.
"""
from __future__ import annotations

import itertools
import json
import os
import sys

import yaml

from jaxdiff.algos import base as algos
from jaxdiff.run import runner


class SweepError(ValueError):
    pass


def load(path) -> dict:
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    for key in ("algo", "env", "grid"):
        if key not in doc:
            raise SweepError(f"Sweep file {path} lacks `{key}`.")
    if not isinstance(doc["grid"], dict) or not doc["grid"]:
        raise SweepError(f"`grid` in {path} must map `algo.<key>` to a list of values.")
    return doc


def split_grid(algorithm, grid: dict):
    """-> (static axes, dynamic axes), each a list of (key, values)."""
    fields = algos.config_fields(algorithm.Config)
    static, dynamic = [], []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid `{key}` must be a non-empty list.")
        group, _, sub = key.partition(".")
        if group == "env" and sub:
            static.append((key, values))
        elif group == "algo" and sub in fields:
            (static if algos.is_static(algorithm.Config, sub) else dynamic).append((key, values))
        else:
            raise SweepError(f"grid key `{key}` is not `algo.<setting>` or `env.<setting>` "
                             f"(valid algo settings: {', '.join(sorted(fields))}).")
    return static, dynamic


def _label(point: dict) -> str:
    return ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in point.items())


def run(doc: dict, out: str, *, seeds=None, total_steps=None, compose=None,
        progress: bool = True) -> list[dict]:
    algorithm = algos.get(doc["algo"])
    static, dynamic = split_grid(algorithm, doc["grid"])
    fixed = dict(doc.get("fixed") or {})
    os.makedirs(out, exist_ok=True)
    rows = []
    static_points = [dict(zip([k for k, _ in static], vals))
                     for vals in itertools.product(*[v for _, v in static])] or [{}]
    dyn_points = [dict(zip([k for k, _ in dynamic], vals))
                  for vals in itertools.product(*[v for _, v in dynamic])] or [{}]
    for sp in static_points:
        argv = [f"algo={doc['algo']}", f"env={doc['env']}"]
        argv += [f"{k}={v}" for k, v in {**fixed, **sp}.items()]
        cfg = compose(argv) if compose else None
        algo_over = cfg["algo"] if cfg else {k[5:]: v for k, v in {**fixed, **sp}.items()
                                             if k.startswith("algo.")}
        env_kw = cfg["env"] if cfg else {k[4:]: v for k, v in {**fixed, **sp}.items()
                                         if k.startswith("env.")}
        grid = [{k[5:]: v for k, v in dp.items()} for dp in dyn_points]
        spec = runner.RunSpec(algo=doc["algo"], env=doc["env"], env_kwargs=env_kw,
                              algo_overrides=algo_over,
                              seeds=int(seeds or doc.get("seeds", 2)),
                              total_steps=int(float(total_steps or doc.get("total_steps", 100_000))),
                              chunks=int(doc.get("chunks", 10)), grid=grid)
        name = _label(sp).replace(", ", "_").replace("=", "-") or "all"
        labels = {g: _label(dp) for g, dp in enumerate(dyn_points)}
        summary = runner.train(spec, os.path.join(out, name), progress=progress,
                               grid_labels=labels)
        for g, dp in enumerate(dyn_points):
            res = summary["grid"][g]
            rows.append(dict(point={**sp, **dp}, final=res["final"], best=res["best"],
                             env_steps_per_s=summary["env_steps_per_s"],
                             compile_s=summary["compile_s"]))
    if runner.distributed.is_main():   # several processes: process 0 writes the tables
        _write(rows, out, doc)
    return rows


def _write(rows: list[dict], out: str, doc: dict) -> None:
    keys = list(rows[0]["point"]) if rows else []
    win = any("win_rate_mean" in r["final"] for r in rows)
    head = "| " + " | ".join(k for k in keys) + " | final return (mean ± std) | IQM | best |"
    head += " win rate |" if win else ""
    lines = [f"# Sweep: {doc['algo']} on {doc['env']}", "",
             head, "|" + "---|" * (len(keys) + 3 + int(win))]
    for r in rows:
        f, b = r["final"], r["best"]
        cells = [str(r["point"][k]) for k in keys]
        cells += [f"{f.get('return_mean', float('nan')):.3f} ± {f.get('return_std', float('nan')):.3f}",
                  f"{f.get('return_iqm', float('nan')):.3f}", f"{b.get('return_mean', float('nan')):.3f}"]
        if win:
            cells.append(f"{f.get('win_rate_mean', float('nan')):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "results.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(rows, fh, indent=2)
    print(text)
    _plot(rows, os.path.join(out, "sweep.png"), f"{doc['algo']} on {doc['env']}")


def bar_limits(means, stds) -> tuple[float, float]:
    """y-limits of a bar plot: from 0 when some value is positive; when every value is negative
    or zero, around the values (a bar from 0 to -69 next to one to -63 hides the difference)."""
    import numpy as np
    m = np.asarray(means, dtype=float)
    s = np.nan_to_num(np.asarray(stds, dtype=float))
    ok = np.isfinite(m)
    if not ok.any():
        return -1.0, 1.0
    lo, hi = float((m - s)[ok].min()), float((m + s)[ok].max())
    pad = 0.1 * (hi - lo) or 0.1 * abs(hi) or 1.0
    if hi <= 0:
        return lo - pad, hi + pad
    return min(0.0, lo - pad), hi + pad


def _plot(rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [_label(r["point"]) for r in rows]
    means = [r["final"].get("return_mean", float("nan")) for r in rows]
    stds = [r["final"].get("return_std", 0.0) for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows)), 3.5))
    ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8,
           label="mean ± std over seeds")
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("final eval return")
    ax.set_xlabel("grid point")
    ax.set_ylim(*bar_limits(means, stds))
    ax.legend(fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(path, overrides: dict, compose=None) -> None:
    doc = load(path)
    name = os.path.splitext(os.path.basename(str(path)))[0]
    out = overrides.pop("out", None) or os.path.join("runs", "sweeps", name)
    seeds = overrides.pop("seeds", None)
    total = overrides.pop("total_steps", None)
    progress = str(overrides.pop("progress", "true")).lower() not in ("false", "0")
    if overrides:
        raise SweepError(f"Unknown sweep setting(s) {sorted(overrides)}; valid: sweep, seeds, "
                         f"total_steps, out, progress.")
    main = runner.distributed.is_main()
    if main:
        print(f"[jaxdiff] sweep {name} -> {out}", file=sys.stderr)
    run(doc, out, seeds=seeds, total_steps=total, compose=compose, progress=progress)
    if main:
        print(f"sweep results: {os.path.abspath(out)} (results.md, results.json, sweep.png)")
