"""run.logging: metrics.jsonl round trips, survives a torn last line and is truncated back to a
checkpointed chunk; IQM against scipy's 25%-trimmed mean; `summarise` against a hand
computation (final and best per seed, mean/std/IQM over seeds, per grid point)."""
import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from jaxdiff.run import logging as runlog


def _rows(chunks=(0, 1, 2), seeds=(0, 1)):
    return [dict(chunk=c, step=100 * (c + 1), seed=s, loss=0.5 * c - s, note=None, vec=[c, s])
            for c in chunks for s in seeds]


def test_jsonl_round_trip_append_and_overwrite(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    assert runlog.read_jsonl(path) == []                     # no file yet
    rows = _rows()
    runlog.write_jsonl(path, rows[:3])
    runlog.write_jsonl(path, rows[3:])                       # appends
    assert runlog.read_jsonl(path) == rows
    runlog.write_jsonl(path, rows[:1], mode="w")
    assert runlog.read_jsonl(path) == rows[:1]
    nan_row = dict(chunk=0, seed=0, step=1, eval_return=float("nan"))
    runlog.write_jsonl(path, [nan_row], mode="w")
    assert math.isnan(runlog.read_jsonl(path)[0]["eval_return"])


def test_torn_last_line_is_dropped_and_truncation_repairs_the_file(tmp_path):
    """A process killed mid-write leaves a partial last line: reading skips it; resuming from the
    checkpoint of chunk 1 truncates the file to chunks <= 1 (dropping the torn line and any row
    of a chunk that was not checkpointed), so the rows appended afterwards are all readable."""
    path = str(tmp_path / "metrics.jsonl")
    rows = _rows(chunks=(0, 1, 2))
    runlog.write_jsonl(path, rows)
    with open(path, "a") as f:
        f.write(json.dumps(dict(chunk=3, seed=0, step=400))[:17])      # torn
    assert runlog.read_jsonl(path) == rows
    runlog.truncate_jsonl(path, 1)
    kept = [r for r in rows if r["chunk"] <= 1]
    assert runlog.read_jsonl(path) == kept
    assert not os.path.exists(path + ".tmp")
    redo = _rows(chunks=(2, 3))
    runlog.write_jsonl(path, redo)
    assert runlog.read_jsonl(path) == kept + redo
    runlog.truncate_jsonl(str(tmp_path / "missing.jsonl"), 0)        # nothing to truncate
    assert runlog.read_jsonl(str(tmp_path / "missing.jsonl")) == []


@pytest.mark.parametrize("n", range(1, 14))
def test_iqm_is_the_25_percent_trimmed_mean(n):
    x = np.random.default_rng(n).standard_cauchy(n)          # heavy tails: trimming matters
    assert runlog.iqm(x) == pytest.approx(stats.trim_mean(x, 0.25), rel=1e-12)
    assert runlog.iqm(list(x)) == runlog.iqm(x[::-1])        # order does not matter


def test_iqm_by_hand():
    assert runlog.iqm([100.0, -50.0, 1, 2, 3, 4, 5, 6]) == pytest.approx(3.5)   # mean(2..5)
    assert runlog.iqm([1.0, 2.0, 30.0]) == pytest.approx(11.0)               # < 4: plain mean


def _eval_rows():
    """Two grid points, three seeds, three chunks; eval_return per (grid, seed) by chunk."""
    curves = {
        (0, 0): [1.0, 5.0, 4.0], (0, 1): [2.0, 3.0, 6.0], (0, 2): [0.0, 9.0, 1.0],
        (1, 0): [-1.0, -2.0, -3.0], (1, 1): [0.5, 0.25, 0.75], (1, 2): [7.0, 7.0, 8.0],
    }
    wins = {(0, 0): [0.0, 0.5, 0.25], (0, 1): [0.1, 0.2, 0.3], (0, 2): [1.0, 0.0, 0.0],
            (1, 0): [0.0] * 3, (1, 1): [0.0] * 3, (1, 2): [0.0] * 3}
    rows = []
    for c in range(3):
        for (g, s), ys in curves.items():
            rows.append(dict(chunk=c, step=1000 * (c + 1), grid=g, seed=s, eval_return=ys[c],
                             eval_win_rate=wins[g, s][c], loss=1.0))
        rows.append(dict(chunk=c, step=1000 * (c + 1), grid=0, seed=0, loss=2.0))   # no eval
    return rows, curves, wins


def test_summarise_against_a_hand_computation():
    rows, curves, wins = _eval_rows()
    out = runlog.summarise(rows)
    assert sorted(out) == [0, 1]
    for g in (0, 1):
        seeds = [curves[g, s] for s in range(3)]
        final = np.array([ys[-1] for ys in seeds])
        best_idx = [int(np.argmax(ys)) for ys in seeds]
        best = np.array([ys[i] for ys, i in zip(seeds, best_idx)])
        f, b = out[g]["final"], out[g]["best"]
        assert f["return_mean"] == pytest.approx(final.mean())
        assert f["return_std"] == pytest.approx(final.std())                 # population std
        assert f["return_iqm"] == pytest.approx(final.mean())                # 3 seeds: all
        assert "needs >= 4 seeds" in f["return_iqm_note"]                   # ... and says so
        assert b["return_mean"] == pytest.approx(best.mean())
        assert b["return_std"] == pytest.approx(best.std())
        assert f["step"] == 3000
        # the win rate of the rows that give the final and the best return
        final_wins = np.array([wins[g, s][-1] for s in range(3)])
        best_wins = np.array([wins[g, s][i] for s, i in enumerate(best_idx)])
        assert f["win_rate_mean"] == pytest.approx(final_wins.mean())
        assert b["win_rate_mean"] == pytest.approx(best_wins.mean())
        per_seed = out[g]["per_seed"]
        assert [p["seed"] for p in per_seed] == [0, 1, 2]
        assert [p["final_return"] for p in per_seed] == list(final)
        assert [p["best_return"] for p in per_seed] == list(best)
        assert [p["final_win_rate"] for p in per_seed] == list(final_wins)


def test_summarise_other_score_names_the_metric():
    rows = [dict(chunk=c, step=c + 1, seed=s, eval_psnr_composite=10.0 * s + c)
            for c in range(2) for s in range(4)]
    f = runlog.summarise(rows, score="eval_psnr_composite")[0]["final"]
    final = np.array([10.0 * s + 1 for s in range(4)])
    assert f["psnr_composite_mean"] == pytest.approx(final.mean())
    assert f["psnr_composite_iqm"] == pytest.approx(stats.trim_mean(final, 0.25))
    assert "win_rate_mean" not in f


def test_summarise_best_skips_non_finite_evaluations():
    """A seed whose first evaluation is NaN (e.g. no episode finished) still has a best: the
    largest finite value, not the NaN it started with."""
    rows = [dict(chunk=c, step=c + 1, seed=s, eval_return=v)
            for s, curve in enumerate([[float("nan"), 2.0, 1.0], [3.0, float("nan"), 0.0]])
            for c, v in enumerate(curve)]
    out = runlog.summarise(rows)[0]
    assert [p["best_return"] for p in out["per_seed"]] == [2.0, 3.0]
    assert out["best"]["return_mean"] == pytest.approx(2.5)
    assert out["final"]["return_mean"] == pytest.approx(0.5)
