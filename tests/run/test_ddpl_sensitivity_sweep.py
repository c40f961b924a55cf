"""configs/sweep/ddpl_sensitivity.yaml (DDPL Fig. 5, spec-ddpl F26): the file composes, through
the real `jaxdiff.run.sweep.run` loop and the command's `compose`, into the 9 (H, schedule) runs,
one run (one compile) per point because both keys are static; every RunSpec validates.
`runner.train` is replaced by a recorder, so nothing compiles or trains."""
from __future__ import annotations

import itertools

from jaxdiff import cli
from jaxdiff.algos import base as algos
from jaxdiff.config import CONFIG_DIR
from jaxdiff.run import runner
from jaxdiff.run import sweep as sweep_lib


def test_ddpl_sensitivity_composes_into_nine_static_runs(tmp_path, monkeypatch):
    doc = sweep_lib.load(CONFIG_DIR / "sweep" / "ddpl_sensitivity.yaml")
    static, dynamic = sweep_lib.split_grid(algos.get(doc["algo"]), doc["grid"])
    assert [k for k, _ in static] == ["algo.steps", "algo.schedule"] and dynamic == []

    seen = []

    def record(spec, run_dir, **kw):
        seen.append((spec, run_dir))
        fake = dict(final=dict(return_mean=0.0, return_std=0.0), best=dict(return_mean=0.0))
        return dict(grid=[fake], env_steps_per_s=1.0, compile_s=0.0)

    monkeypatch.setattr(sweep_lib.runner, "train", record)
    rows = sweep_lib.run(doc, str(tmp_path), seeds=2, total_steps=5000, compose=cli.compose,
                         progress=False)
    want = list(itertools.product([10, 20, 30], ["linear", "cosine", "vp"]))
    got = [(s.algo_overrides["steps"], s.algo_overrides["schedule"]) for s, _ in seen]
    assert got == want and len(rows) == 9
    assert len({d for _, d in seen}) == 9                   # one run folder per point
    for spec, _ in seen:
        assert (spec.algo, spec.env) == ("ddpl", "smax_3s_vs_5z")
        assert spec.env_kwargs["action_type"] == "continuous"
        assert spec.seeds == 2 and spec.total_steps == 5000 and spec.chunks == 100
        assert spec.algo_overrides["warmup_steps"] == 30_000          # the SMAX preset applies
        assert spec.grid == [{}]                                       # nothing vmapped
        _, env, base, configs = runner.prepare(spec)                   # validates, no compile
        assert (base.steps, base.schedule) == (spec.algo_overrides["steps"],
                                               spec.algo_overrides["schedule"])
        assert env.spec.discrete is False
    table = (tmp_path / "results.md").read_text().splitlines()
    assert [ln.split(" | ")[:2] for ln in table if ln[:3] in ("| 1", "| 2", "| 3")] == \
        [[f"| {h}", s] for h, s in want]
