"""Ensemble members split over devices (one XLA host device per core on CPU): the placement
rule, and that a sharded run computes what the same run on one device computes."""
import jax
import numpy as np
import pytest
from conftest import TINY

from jaxdiff.run import runner

multi = pytest.mark.skipif(len(jax.devices()) < 2, reason="needs >= 2 devices (cores)")


def test_placement_uses_largest_dividing_device_count():
    n_dev = len(jax.devices())
    for members in (1, 2, 3, 4, 6, 16):
        sh = runner.ensemble_sharding(members)
        expected = max(d for d in range(1, min(n_dev, members) + 1) if members % d == 0)
        assert (1 if sh is None else sh.mesh.size) == expected


@multi
def test_sharded_run_equals_single_device_run(tmp_path, monkeypatch):
    spec = runner.RunSpec(algo="mappo", env="mpe_simple_spread", env_kwargs={},
                          algo_overrides=dict(TINY), seeds=2, total_steps=4 * 32 * 3, chunks=3,
                          eval_episodes=4)
    sharded = runner.train(spec, str(tmp_path / "sharded"), progress=False)
    spec_state = runner.restore_state(str(tmp_path / "sharded"))[4]
    monkeypatch.setattr(runner, "ensemble_sharding", lambda n: None)
    single = runner.train(spec, str(tmp_path / "single"), progress=False)
    single_state = runner.restore_state(str(tmp_path / "single"))[4]
    for k, v in single["final"].items():
        np.testing.assert_allclose(sharded["final"][k], v, rtol=1e-4, atol=1e-5, err_msg=k)
    for x, y in zip(jax.tree.leaves(spec_state), jax.tree.leaves(single_state)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


@multi
def test_sharded_state_stays_split_across_chunks(tmp_path):
    """Every state leaf keeps the ensemble sharding after a chunk (a leaf XLA would replicate,
    such as a zero-initialised bias, must not flip sharding and break the compiled chunk)."""
    spec = runner.RunSpec(algo="ippo", env="mpe_simple_spread", env_kwargs={},
                          algo_overrides=dict(TINY), seeds=4, total_steps=4 * 32 * 2, chunks=2,
                          eval_episodes=2)
    summary = runner.train(spec, str(tmp_path / "r"), progress=False)
    assert summary["complete"]
