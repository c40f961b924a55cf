"""`jaxdiff compare` on two hand-written run folders (the runner's metrics.jsonl/summary.json
layout): table means, IQM against a brute-force IQM, CIs around the estimates, the marl-eval
layout and the plot."""
import json
import os

import numpy as np
import pytest

from jaxdiff.run import compare


def _run(folder, algo, finals, steps=(100, 200, 300)):
    """A finished run whose seed s scores finals[s] - (300 - step)/100 at each evaluation."""
    os.makedirs(folder)
    rows = [dict(step=st, chunk=c, seed=s, grid=0, train_return=0.0,
                 eval_return=float(f - (steps[-1] - st) / 100), eval_return_stochastic=0.0)
            for c, st in enumerate(steps) for s, f in enumerate(finals)]
    with open(os.path.join(folder, "metrics.jsonl"), "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(dict(algo=algo, env="mpe_simple_spread", env_kwargs={}, algo_overrides={},
                       seeds=len(finals), total_steps=steps[-1], seed=0, chunks=len(steps),
                       eval_episodes=4, checkpoint_every=1, grid=None), fh)
    with open(os.path.join(folder, "summary.json"), "w") as fh:
        json.dump(dict(algo=algo, env="mpe_simple_spread", final={}, best={}), fh)


def _brute_iqm(x):
    x = np.sort(x)
    n = len(x)
    k = n // 4                              # scipy's trim_mean(0.25): int(0.25 n) from each end
    return x[k:n - k].mean()


def test_compare_table_ci_marl_eval_and_plot(tmp_path):
    a = [-80.0, -70.0, -60.0, -100.0, -50.0, -65.0, -90.0, -75.0]   # 8 seeds
    b = [-40.0, -42.0, -38.0]                                        # 3 seeds
    _run(str(tmp_path / "runs" / "mappo-a"), "mappo", a)
    _run(str(tmp_path / "runs" / "ippo-b"), "ippo", b)
    out = str(tmp_path / "cmp")
    rows = {r["label"]: r for r in compare.main([str(tmp_path / "runs")], out=out)}
    ra, rb = rows["mappo-a"], rows["ippo-b"]
    assert (ra["seeds"], rb["seeds"]) == (8, 3)
    assert ra["final"]["mean"] == pytest.approx(np.mean(a))
    assert rb["final"]["mean"] == pytest.approx(np.mean(b))
    assert ra["final"]["iqm"] == pytest.approx(_brute_iqm(np.array(a)))
    assert ra["final"]["iqm"] != pytest.approx(np.mean(a))          # 8 seeds: really trimmed
    assert ra["best"]["mean"] == pytest.approx(np.mean(a))          # the last eval is the best
    for r in (ra, rb):
        for which in ("final", "best"):
            d = r[which]
            for k in ("mean", "iqm"):
                lo, hi = d[f"{k}_ci"]
                assert lo <= d[k] <= hi and lo < hi
    # below 4 seeds the IQM is the mean, and the table says why
    assert rb["final"]["iqm"] == pytest.approx(np.mean(b)) and "needs >= 4" in rb["iqm_note"]
    assert ra["iqm_note"] is None
    md = open(os.path.join(out, "compare.md")).read()
    assert "IQM = mean where marked" in md and "95%" in md and "| ippo-b |" in md
    assert json.load(open(os.path.join(out, "compare.json")))[0]["final"]["iqm_ci"]
    # marl-eval raw-data layout: env -> task -> algorithm -> seed_<s> -> step_<i> / absolute
    me = json.load(open(os.path.join(out, "marl_eval.json")))
    run = me["mpe"]["simple_spread"]["mappo-a"]["seed_3"]
    assert set(run) == {"step_0", "step_1", "step_2", "absolute_metrics"}
    assert run["step_1"] == {"step_count": 200, "return": [-101.0]}
    assert run["absolute_metrics"] == {"return": [-100.0]}
    assert set(me["mpe"]["simple_spread"]) == {"mappo-a", "ippo-b"}
    assert os.path.getsize(os.path.join(out, "compare.png")) > 1000


def test_a_folder_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(compare.CompareError, match="no jaxdiff run"):
        compare.main([str(tmp_path)], out=str(tmp_path / "o"))
    with pytest.raises(compare.CompareError, match="not a folder"):
        compare.main([str(tmp_path / "nope")], out=str(tmp_path / "o"))
