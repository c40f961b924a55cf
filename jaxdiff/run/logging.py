"""Host-side outputs of a run: metrics.jsonl, summary statistics, curves.png, TensorBoard."""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict

import numpy as np


def read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a torn last line from a killed process
    return rows


def write_jsonl(path: str, rows: list[dict], mode: str = "a") -> None:
    with open(path, mode) as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_jsonl(path: str, max_chunk: int) -> None:
    """Keep rows of chunks <= max_chunk (rows written after the last checkpoint are redone)."""
    rows = [r for r in read_jsonl(path) if r.get("chunk", -1) <= max_chunk]
    tmp = path + ".tmp"
    write_jsonl(tmp, rows, mode="w")
    os.replace(tmp, path)


def iqm(x) -> float:
    """Interquartile mean: mean of the middle 50% (all values when fewer than 4)."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    if len(x) < 4:
        return float(x.mean())
    lo, hi = int(math.floor(0.25 * len(x))), int(math.ceil(0.75 * len(x)))
    return float(x[lo:hi].mean())


def _stats(values, prefix):
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {}
    out = {f"{prefix}_mean": float(v.mean()), f"{prefix}_std": float(v.std()),
           f"{prefix}_iqm": iqm(v)}
    if v.size < 4:     # say so rather than report a trimmed mean that trimmed nothing
        out[f"{prefix}_iqm_note"] = f"equals the mean: IQM needs >= 4 seeds, got {v.size}"
    return out


def _rank(value) -> tuple:
    """Sort key of a score: finite values by size, above every non-finite one (a NaN compares
    False with everything, so `max` would keep a leading NaN as the best)."""
    finite = value is not None and math.isfinite(value)
    return (finite, value if finite else 0.0)


def summarise(rows: list[dict], score: str = "eval_return") -> dict:
    """Final and best evaluation per grid point (mean, std and IQM over seeds)."""
    by_grid = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if score in r:
            by_grid[r.get("grid", 0)][r["seed"]].append(r)
    out = {}
    for g, seeds in sorted(by_grid.items()):
        finals = [runs[-1] for _, runs in sorted(seeds.items())]
        bests = [max(runs, key=lambda r: _rank(r[score])) for _, runs in sorted(seeds.items())]
        name = "return" if score == "eval_return" else score.removeprefix("eval_")
        final = _stats([r[score] for r in finals], name)
        best = _stats([r[score] for r in bests], name)
        if any("eval_win_rate" in r for r in finals):
            final.update(_stats([r.get("eval_win_rate", np.nan) for r in finals], "win_rate"))
            best.update(_stats([r.get("eval_win_rate", np.nan) for r in bests], "win_rate"))
        final["step"] = int(finals[0]["step"])
        out[g] = dict(final=final, best=best, per_seed=[
            dict(seed=int(r["seed"]), **{f"final_{name}": r[score], f"best_{name}": b[score]},
                 final_win_rate=r.get("eval_win_rate"), step=int(r["step"]))
            for r, b in zip(finals, bests)])
    return out


def highest_mean(rows: list[dict], score: str = "eval_return", grid: int = 0) -> dict:
    """The "highest mean ± std" of a learning curve (the protocol of Table 1 in papers such as
    DDPL's: at every evaluation point average the seeds, take the point where that average is
    largest, and report the across-seed std AT that point). This differs from `summarise`'s
    `best`, which takes each seed's own best point (a mean of maxima is never below this).

    Only evaluation points that every seed reached count (a partly written last chunk would
    otherwise be an average over fewer seeds); ties go to the earliest point. Returns
    {mean, std (population, as `summarise`), step, seeds, per_seed: [values in seed order],
    points: number of complete evaluation points}, or {} when no point is complete."""
    by_step = defaultdict(dict)
    for r in rows:
        if r.get("grid", 0) == grid and score in r and r[score] is not None:
            by_step[int(r["step"])][int(r["seed"])] = float(r[score])
    seeds = sorted({s for vals in by_step.values() for s in vals})
    complete = [(step, [vals[s] for s in seeds]) for step, vals in sorted(by_step.items())
                if len(vals) == len(seeds)
                and all(math.isfinite(vals[s]) for s in seeds)]
    if not complete:
        return {}
    step, vals = max(complete, key=lambda sv: (float(np.mean(sv[1])), -sv[0]))
    v = np.asarray(vals, dtype=np.float64)
    return dict(mean=float(v.mean()), std=float(v.std()), step=step, seeds=len(seeds),
                per_seed=[float(x) for x in v], points=len(complete))


CURVE_KEYS = ("eval_return", "eval_return_stochastic", "train_return", "eval_win_rate",
              "actor_loss", "value_loss", "entropy", "loss")


def steps_label(x: float, _pos=None) -> str:
    """An axis tick for a step count: 100000 -> '100k', 1500000 -> '1.5M' (plain integers run
    together on a crowded axis)."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:g}{suffix}"
    return f"{x:g}"


def plot_curves(rows: list[dict], path: str, title: str = "", labels: dict | None = None) -> None:
    """One panel per metric: mean over seeds with a +-std band, one line per grid point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    present = {k for r in rows for k in r}
    keys = [k for k in CURVE_KEYS if k in present]
    keys += sorted(k for k in present if k.startswith("eval_") and k not in CURVE_KEYS)
    if not keys:
        return
    cols = min(3, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    grids = sorted({r.get("grid", 0) for r in rows})
    for ax, key in zip(axes.flat, keys):
        for g in grids:
            series = defaultdict(dict)
            for r in rows:
                if r.get("grid", 0) == g and key in r and r[key] is not None:
                    series[r["step"]][r["seed"]] = r[key]
            if not series:
                continue
            steps = np.array(sorted(series))
            vals = [np.array(list(series[s].values()), dtype=float) for s in steps]
            mean = np.array([v.mean() for v in vals])
            std = np.array([v.std() for v in vals])
            label = (labels or {}).get(g, f"grid {g}" if len(grids) > 1 else None)
            line, = ax.plot(steps, mean, label=label)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2, color=line.get_color())
        ax.set_title(key)
        ax.set_xlabel("env steps (per seed)")
        ax.set_ylabel(key.replace("_", " "))
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.xaxis.set_major_formatter(FuncFormatter(steps_label))
        ax.grid(alpha=0.3)
        n_seeds = len({r["seed"] for r in rows})
        handles, _ = ax.get_legend_handles_labels()
        band = Patch(color="grey", alpha=0.2,
                     label=f"mean ± std over {n_seeds} seed{'s' if n_seeds != 1 else ''}")
        ax.legend(handles=handles + [band], fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class TensorBoard:
    """One writer per ensemble member under run_dir/tb/<grid>_<seed>."""

    def __init__(self, run_dir: str):
        from tensorboardX import SummaryWriter
        self._dir = os.path.join(run_dir, "tb")
        self._writers = {}
        self._cls = SummaryWriter

    def log(self, rows: list[dict]) -> None:
        for r in rows:
            name = f"grid{r.get('grid', 0)}_seed{r['seed']}"
            if name not in self._writers:
                self._writers[name] = self._cls(os.path.join(self._dir, name))
            w = self._writers[name]
            for k, v in r.items():
                if k not in ("step", "seed", "grid", "chunk") and isinstance(v, (int, float)):
                    w.add_scalar(k, v, r["step"])
            w.flush()

    def close(self):
        for w in self._writers.values():
            w.close()


def git_commit(path: str) -> str:
    """The short commit of the checkout holding `path`, "+uncommitted" when its tree has
    changes, "unknown" outside git: the provenance line of every result file."""
    import subprocess
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=path, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=path, text=True,
                               capture_output=True).stdout.strip()
        return sha + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
