"""README.md's "Write your own algorithm" example, run as written: it registers, trains on the
runner (seeds, chunks, EpisodeSums pooled into train_return) and learns to coordinate."""
import json
import os
import re

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _blocks():
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("### Write your own algorithm", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_algorithm_trains_on_the_runner(tmp_path):
    algo_src, usage = _blocks()
    assert 40 <= len(algo_src.splitlines()) <= 100
    exec(compile(algo_src, "README-algorithm", "exec"), {})
    usage = usage.replace('"runs/reinforce_coordination"', repr(str(tmp_path / "run")))
    scope = {}
    exec(compile(usage, "README-usage", "exec"), scope)
    summary = scope["summary"]
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert {r["seed"] for r in rows} == {0, 1} and len(rows) == 8
    # one-step episodes: every env step ends one, so a chunk (8 iterations of 16 envs x 8
    # steps) pools exactly 1024 of them
    assert all(r["train_episodes"] == 1024 for r in rows)
    assert np.isfinite([r["loss"] for r in rows]).all()
    # a uniformly random team of 2 agents with 3 actions coordinates 1/3 of the time
    first = np.mean([r["train_return"] for r in rows if r["chunk"] == 0])
    assert summary["final"]["return_mean"] > 0.9 > first
