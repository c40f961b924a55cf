"""`runlog.highest_mean`: Table 1's "highest mean over evaluation points ± across-seed std at
that point" (spec-ddpl §4.11, F24), checked against a hand computation."""
from __future__ import annotations

import math

import numpy as np

from jaxdiff.run import logging as runlog


def _rows(curves: dict, score="eval_return", grid=0):
    """{seed: [(step, value), ...]} -> metrics.jsonl-style rows."""
    return [dict(step=step, seed=seed, grid=grid, chunk=i, **{score: v})
            for seed, pts in curves.items() for i, (step, v) in enumerate(pts)]


def test_highest_mean_by_hand():
    # seed means per step: 100 -> (1+3+2)/3 = 2; 200 -> (6+0+3)/3 = 3; 300 -> (4+4+4)/3 = 4;
    # 400 -> (2+2+5)/3 = 3. Highest mean 4 at step 300 with std 0 there, although every seed's
    # own best (6, 4, 5: mean 5) is elsewhere -- the reducer must not mix points across seeds.
    curves = {0: [(100, 1.0), (200, 6.0), (300, 4.0), (400, 2.0)],
              1: [(100, 3.0), (200, 0.0), (300, 4.0), (400, 2.0)],
              2: [(100, 2.0), (200, 3.0), (300, 4.0), (400, 5.0)]}
    out = runlog.highest_mean(_rows(curves))
    assert out["step"] == 300 and out["seeds"] == 3 and out["points"] == 4
    assert math.isclose(out["mean"], 4.0) and math.isclose(out["std"], 0.0, abs_tol=1e-12)
    assert out["per_seed"] == [4.0, 4.0, 4.0]
    # summarise's per-seed best differs (mean of maxima 5): the two reducers are not the same
    assert math.isclose(runlog.summarise(_rows(curves))[0]["best"]["return_mean"], 5.0)


def test_std_is_the_population_std_at_the_chosen_point_and_ties_go_early():
    curves = {0: [(10, -12.0), (20, -9.0), (30, -9.0)],
              1: [(10, -8.0), (20, -11.0), (30, -11.0)]}
    out = runlog.highest_mean(_rows(curves))
    # means: -10, -10, -10 -> tie, earliest point (10); std of (-12, -8) = 2
    assert out["step"] == 10
    assert math.isclose(out["mean"], -10.0) and math.isclose(out["std"], 2.0)
    assert math.isclose(out["std"], float(np.std([-12.0, -8.0])))


def test_incomplete_and_non_finite_points_do_not_count():
    # step 300 only has seed 0 (an interrupted run); step 200 has a NaN for seed 1
    curves = {0: [(100, 1.0), (200, 50.0), (300, 99.0)],
              1: [(100, 2.0), (200, float("nan"))]}
    out = runlog.highest_mean(_rows(curves))
    assert out["step"] == 100 and math.isclose(out["mean"], 1.5) and out["points"] == 1
    assert runlog.highest_mean([]) == {}


def test_other_score_and_grid_point():
    rows = _rows({0: [(1, 0.2), (2, 0.9)], 1: [(1, 0.4), (2, 0.1)]}, score="eval_win_rate")
    rows += _rows({0: [(1, 5.0)], 1: [(1, 7.0)]}, score="eval_win_rate", grid=1)
    assert math.isclose(runlog.highest_mean(rows, "eval_win_rate")["mean"], 0.5)   # step 2
    assert runlog.highest_mean(rows, "eval_win_rate")["step"] == 2
    assert math.isclose(runlog.highest_mean(rows, "eval_win_rate", grid=1)["mean"], 6.0)
    assert runlog.highest_mean(rows, "eval_return") == {}
