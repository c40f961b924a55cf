"""Runner properties: resume == uninterrupted, vmap == loop, jit == no-jit, NaN guard, errors."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY

import jaxdiff.envs.toys  # noqa: F401  (registers coordination_game)
from jaxdiff import envs
from jaxdiff.algos import base, mappo
from jaxdiff.run import runner
from jaxdiff.run.checkpoint import CheckpointError, Checkpointer


def _spec(**kw):
    args = dict(algo="mappo", env="mpe_simple_spread", env_kwargs={}, algo_overrides=dict(TINY),
                seeds=2, total_steps=4 * 32 * 4, chunks=4, eval_episodes=4)
    args.update(kw)
    return runner.RunSpec(**args)


def _params(run_dir):
    spec, algorithm, env, config, state, members = runner.restore_state(str(run_dir))
    return state


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted 4-chunk run shared by the tests that need a finished run folder."""
    full = tmp_path_factory.mktemp("full")
    return full, runner.train(_spec(), str(full), progress=False)


def test_resume_is_bit_identical(tmp_path, full_run):
    full, s_full = full_run
    part = tmp_path / "part"
    s_part = runner.train(_spec(), str(part), progress=False, max_chunks=2)
    assert s_part["complete"] is False
    assert Checkpointer(str(part / "checkpoints")).steps()[-1] == 2
    s_res = runner.train(_spec(), str(part), progress=False)
    assert s_res["complete"] is True
    assert s_res["final"] == s_full["final"]
    a, b = _params(full), _params(part)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    rows = [json.loads(line) for line in open(part / "metrics.jsonl")]
    assert sorted({(r["chunk"], r["seed"]) for r in rows}) == [(c, s) for c in range(4)
                                                               for s in range(2)]
    assert len(rows) == 8  # no duplicated chunks after the resume


def test_vmap_over_seeds_equals_loop():
    # a one-step env: the property is the algorithm's, and eager/unbatched runs stay cheap
    env = envs.make("coordination_game", n_agents=3, n_actions=3)
    config = base.make_config(mappo.Config, TINY)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    step = mappo.step(env, config, iterations=8)
    init = lambda k: mappo.init(k, env, config)
    batched, m_b = jax.jit(jax.vmap(step))(jax.jit(jax.vmap(init))(keys))
    for i in range(2):
        single, m_s = jax.jit(step)(jax.jit(init)(keys[i]))
        for k, (b, s) in enumerate(zip(jax.tree.leaves(m_b), jax.tree.leaves(m_s))):
            np.testing.assert_allclose(b[i], s, rtol=2e-4, atol=1e-5, err_msg=str(k))
        for x, y in zip(jax.tree.leaves(batched.actor), jax.tree.leaves(single.actor)):
            np.testing.assert_allclose(x[i], y, rtol=2e-4, atol=1e-6)


def test_jit_equals_no_jit():
    env = envs.make("coordination_game", n_agents=3, n_actions=3)
    config = base.make_config(mappo.Config, dict(TINY, num_steps=2, num_envs=2,
                                                 num_minibatches=1))
    state = jax.jit(lambda k: mappo.init(k, env, config))(jax.random.PRNGKey(0))
    step = mappo.step(env, config, iterations=2)
    s_jit, m_jit = jax.jit(step)(state)
    with jax.disable_jit():
        s_eager, m_eager = step(state)
    for a, b in zip(jax.tree.leaves(m_jit), jax.tree.leaves(m_eager)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for x, y in zip(jax.tree.leaves(s_jit.actor), jax.tree.leaves(s_eager.actor)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


# --- NaN guard: a toy algorithm whose loss becomes NaN for seed 1 at its 3rd iteration ------
@base.struct.dataclass
class NanConfig:
    lr: float = base.dynamic(0.1)


@base.struct.dataclass
class NanState:
    w: jax.Array
    t: jax.Array
    seed_id: jax.Array
    hp: NanConfig


def _nan_init(key, env, config):
    return NanState(w=jnp.ones(3), t=jnp.zeros((), jnp.int32),
                    seed_id=jax.random.randint(key, (), 0, 2 ** 30), hp=config)


def _nan_step(env, config, *, iterations=1):
    def step(state):
        t = state.t + 1
        bad = (t >= 3) & (state.seed_id == _NAN_SEED[0])
        loss = jnp.where(bad, jnp.nan, jnp.sum(state.w ** 2))
        return state.replace(w=state.w * 0.9, t=t), dict(loss=loss)
    return step


_NAN_SEED = [None]


def _nan_act(config, env, state, obs, carry, mask, key, *, deterministic):
    return jnp.zeros((env.spec.n_agents,), jnp.int32), carry


base.register(base.Algorithm(name="nan_probe", Config=NanConfig, init=_nan_init,
                             step=_nan_step, act=_nan_act, env_steps_per_iter=lambda c, e: 16))


def test_nan_guard_names_metric_and_seed(tmp_path):
    key1 = jax.random.fold_in(jax.random.PRNGKey(0), 1)
    _NAN_SEED[0] = int(jax.random.randint(key1, (), 0, 2 ** 30))
    spec = _spec(algo="nan_probe", algo_overrides={}, total_steps=16 * 8, chunks=4)
    with pytest.raises(runner.NonFiniteError, match=r"`loss` is not finite for seed 1") as e:
        runner.train(spec, str(tmp_path), progress=False)
    assert "chunk 2" in str(e.value)  # K=2 iterations per chunk: NaN appears in chunk 2
    assert Checkpointer(str(tmp_path / "checkpoints")).steps() == [1]


def test_resume_refuses_other_config(full_run):
    # the check runs before anything is compiled or written: the finished run stays as it was
    full, _ = full_run
    before = (full / "summary.json").read_text()
    other = _spec(algo_overrides=dict(TINY, lr=1e-3))
    with pytest.raises(runner.RunConfigMismatch, match="algo_overrides"):
        runner.train(other, str(full), progress=False)
    assert (full / "summary.json").read_text() == before


@pytest.mark.slow   # end to end; tests/run/test_checkpoint.py covers the same path fast
def test_corrupt_checkpoint_is_reported(tmp_path):
    runner.train(_spec(chunks=1, total_steps=128, seeds=1), str(tmp_path), progress=False)
    for root, _, files in os.walk(tmp_path / "checkpoints"):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"garbage")
    with pytest.raises(CheckpointError, match="cannot be read|can be read"):
        runner.train(_spec(chunks=1, total_steps=128, seeds=1), str(tmp_path), progress=False)


def test_unwritable_run_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="not writable"):
        runner.train(_spec(), str(blocker / "run"), progress=False)


def test_action_type_check():
    spec = _spec(env_kwargs={"action_type": "continuous"})
    mappo_ = base.get("mappo")
    base.register(base.Algorithm(
        name="discrete_only", Config=mappo_.Config, init=mappo_.init, step=mappo_.step,
        act=mappo_.act, env_steps_per_iter=mappo_.env_steps_per_iter,
        action_types=("discrete",)))
    with pytest.raises(base.ConfigError, match="does not support continuous"):
        runner.prepare(runner.RunSpec(**{**spec.__dict__, "algo": "discrete_only"}))


def test_static_key_cannot_be_vmapped():
    with pytest.raises(base.ConfigError, match="changes shapes"):
        runner.prepare(_spec(grid=[{"num_envs": 4}, {"num_envs": 8}]))
