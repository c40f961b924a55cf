"""Ensemble members split over devices (one XLA host device per core on CPU), and a lone
member's envs split over the devices left over: the placement rules, and that a split run
computes what the same run on one device computes."""
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
@pytest.mark.slow
def test_sharded_run_equals_single_device_run(tmp_path, monkeypatch):
    spec = runner.RunSpec(algo="mappo", env="mpe_simple_spread", env_kwargs={},
                          algo_overrides=dict(TINY), seeds=2, total_steps=4 * 32 * 3, chunks=3,
                          eval_episodes=4)
    sharded = runner.train(spec, str(tmp_path / "sharded"), progress=False)
    spec_state = runner.restore_state(str(tmp_path / "sharded"))[4]
    monkeypatch.setattr(runner, "ensemble_sharding", lambda n, split=1: None)
    single = runner.train(spec, str(tmp_path / "single"), progress=False)
    single_state = runner.restore_state(str(tmp_path / "single"))[4]
    for k, v in single["final"].items():
        if isinstance(v, str):  # notes such as why the IQM equals the mean
            assert sharded["final"][k] == v
            continue
        np.testing.assert_allclose(sharded["final"][k], v, rtol=1e-4, atol=1e-5, err_msg=k)
    for x, y in zip(jax.tree.leaves(spec_state), jax.tree.leaves(single_state)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


@multi
@pytest.mark.slow   # the fast suite runs the same path: the sweep test's 4 members over 2 devices
def test_sharded_state_stays_split_across_chunks(tmp_path):   # for 2 chunks (test_sweep_cli.py)
    """Every state leaf keeps the ensemble sharding after a chunk (a leaf XLA would replicate,
    such as a zero-initialised bias, must not flip sharding and break the compiled chunk)."""
    spec = runner.RunSpec(algo="ippo", env="mpe_simple_spread", env_kwargs={},
                          algo_overrides=dict(TINY), seeds=4, total_steps=4 * 32 * 2, chunks=2,
                          eval_episodes=2)
    summary = runner.train(spec, str(tmp_path / "r"), progress=False)
    assert summary["complete"]


def test_env_split_uses_the_devices_members_leave_idle():
    n_dev = len(jax.devices())
    for members, split in ((1, 16), (1, 3), (2, 16), (3, 4), (4, 8)):
        sh = runner.ensemble_sharding(members, split)
        k = max(d for d in range(1, min(n_dev, members) + 1) if members % d == 0)
        d = max(x for x in range(1, n_dev // k + 1) if split % x == 0)
        shape = (1, 1) if sh is None else tuple(sh.mesh.shape.values())
        assert shape == (k, d), (members, split)


def test_env_split_switch(monkeypatch):
    from jaxdiff import algos, envs
    algorithm = algos.get("mappo")
    env = envs.make("mpe_simple_spread")
    config = algos.make_config(algorithm.Config, dict(TINY))
    data_axis = lambda: (lambda sh: 1 if sh is None else dict(sh.mesh.shape)["data"])(
        runner.member_sharding(algorithm, env, config, 1))
    monkeypatch.setenv("JAXDIFF_ENV_SPLIT", "0")
    assert data_axis() == 1
    monkeypatch.setenv("JAXDIFF_ENV_SPLIT", "1")
    assert data_axis() == max(x for x in range(1, len(jax.devices()) + 1) if 4 % x == 0)
    monkeypatch.setenv("JAXDIFF_ENV_SPLIT", "yes")
    with pytest.raises(ValueError, match="JAXDIFF_ENV_SPLIT"):
        runner.member_sharding(algorithm, env, config, 1)


@multi
def test_env_split_chunk_equals_single_device_chunk(monkeypatch):
    """The runner's compiled chunk for one seed whose envs are split over two devices (rollout,
    GAE and minibatch gradients per device, gradients all-reduced) ends in the same state, with
    the same metrics, as the unsplit chunk. Whole runs (placement, eval, restore) are checked
    with -m slow below."""
    import jax.numpy as jnp

    from jaxdiff import algos, envs
    algorithm = algos.get("mappo")
    env = envs.make("mpe_simple_spread")
    config = algos.make_config(algorithm.Config, dict(TINY))
    monkeypatch.setenv("JAXDIFF_ENV_SPLIT", "1")
    sharding = runner.member_sharding(algorithm, env, config, 1)
    assert dict(sharding.mesh.shape)["data"] == 2
    step = algorithm.step(env, config, iterations=2)
    hp = jax.tree.map(lambda x: jnp.asarray(x)[None], config)
    init = jax.jit(jax.vmap(lambda k, c: algorithm.init(k, env, c)))
    out = {}
    for name, sh in (("split", sharding), ("single", None)):
        chunk = runner.with_finite_check(runner.make_chunk(lambda s, _: step(s), 2, sh))
        state = runner.place(init(jax.random.PRNGKey(3)[None], hp), sh)
        compiled, _ = runner.compile_chunk(chunk, state, None, sh)
        out[name] = jax.device_get(compiled(state, None))
    assert bool(out["split"][2].all()) and bool(out["single"][2].all())
    leaves = jax.tree.leaves(out["single"][:2])
    assert len(leaves) == len(jax.tree.leaves(out["split"][:2])) > 10
    for x, y in zip(jax.tree.leaves(out["split"][:2]), leaves):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


@multi
@pytest.mark.parametrize("algo,over", [
    pytest.param("mappo", {}, marks=pytest.mark.slow),
    pytest.param("ippo", dict(recurrent=True, num_envs=8, num_minibatches=2),
                 marks=pytest.mark.slow),
    pytest.param("hatrpo", dict(num_envs=4, num_steps=8, hidden=16, critic_epochs=1),
                 marks=pytest.mark.slow),
    pytest.param("happo", dict(num_envs=4, num_steps=8, hidden=16, critic_epochs=1,
                               update_epochs=1, recurrent=True), marks=pytest.mark.slow),
])
def test_env_split_run_equals_single_device_run(tmp_path, monkeypatch, algo, over):
    """One seed whose envs are split over two devices (rollout, GAE and minibatch gradients
    per device, gradients all-reduced) trains the same parameters as the unsplit run."""
    spec = runner.RunSpec(algo=algo, env="mpe_simple_spread", env_kwargs={},
                          algo_overrides=over if algo in ("hatrpo", "happo") else {**TINY, **over}, seeds=1, total_steps=8 * 8 * 2,
                          chunks=2, eval_episodes=2)
    monkeypatch.setenv("JAXDIFF_ENV_SPLIT", "1")
    assert dict(runner.member_sharding(*_parts(spec), 1).mesh.shape)["data"] == 2
    split = runner.train(spec, str(tmp_path / "split"), progress=False)
    split_state = runner.restore_state(str(tmp_path / "split"))[4]
    monkeypatch.setenv("JAXDIFF_ENV_SPLIT", "0")
    single = runner.train(spec, str(tmp_path / "single"), progress=False)
    single_state = runner.restore_state(str(tmp_path / "single"))[4]
    for k, v in single["final"].items():
        if isinstance(v, str):  # notes such as why the IQM equals the mean
            assert split["final"][k] == v
            continue
        np.testing.assert_allclose(split["final"][k], v, rtol=1e-4, atol=1e-5, err_msg=k)
    for x, y in zip(jax.tree.leaves(split_state), jax.tree.leaves(single_state)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


def _parts(spec):
    algorithm, env, base, _ = runner.prepare(spec)
    return algorithm, env, base
