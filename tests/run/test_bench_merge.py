"""A filtered `jaxdiff bench only=...` updates its own rows of the throughput table and keeps
the rows it did not measure."""
import json

from jaxdiff.benchmarks import bench


def _row(algo, env, seeds, rate, env_kwargs=None):
    return dict(algo=algo, env=env, seeds=seeds, env_steps_per_s=rate, env_kwargs=env_kwargs or {})


def test_filtered_run_replaces_only_its_rows(tmp_path):
    path = tmp_path / "training_throughput.json"
    old = [_row("ippo", "mpe", 1, 10.0), _row("happo", "mpe", 1, 1.0, {"action_type": "continuous"}),
           _row("happo", "mpe", 16, 2.0, {"action_type": "continuous"})]
    path.write_text(json.dumps(dict(rows=old)))
    new = [_row("happo", "mpe", 1, 5.0, {"action_type": "continuous"})]
    merged = bench._merge(str(path), new)
    rates = {(r["algo"], r["seeds"]): r["env_steps_per_s"] for r in merged}
    assert rates == {("ippo", 1): 10.0, ("happo", 1): 5.0, ("happo", 16): 2.0}
    assert bench._merge(str(tmp_path / "missing.json"), new) == new
    path.write_text("{not json")
    assert bench._merge(str(path), new) == new
