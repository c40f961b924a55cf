"""MABrax adapter: partitions, observation modes, parity with JaxMARL (slow: Brax compiles)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff.envs as envs
from jaxdiff.envs.mabrax import _quiet_brax


def test_spec_and_local_obs_from_kinematic_tree():
    env = envs.make("mabrax_ant_4x2", obs="local", max_steps=50)
    spec = env.spec
    assert (spec.n_agents, spec.act_dim, spec.act_sizes, spec.state_dim) == (4, 2, (2,) * 4, 27)
    assert not spec.discrete and spec.shared_reward and spec.max_steps == 50
    assert (spec.action_low, spec.action_high) == (-1.0, 1.0)
    # root: z + quaternion (obs 0..4) and 6 root velocities (obs 13..18); then 2 own joints
    assert spec.obs_sizes == (15,) * 4 and spec.obs_dim == 15
    ant = env.unwrapped
    np.testing.assert_array_equal(ant._obs_index[:, :11], np.tile([0, 1, 2, 3, 4, 13, 14, 15, 16, 17, 18], (4, 1)))
    # actuator k is driven by agent k // 2, slot k % 2
    np.testing.assert_array_equal(ant._owner, np.arange(8) // 2)
    a = jnp.arange(8.0).reshape(4, 2) / 10
    np.testing.assert_allclose(ant.global_action(a), np.arange(8) / 10)


def test_generic_partition_and_padding():
    env = envs.mabrax_partition("walker2d", [[0, 1, 2, 3], [5]], obs="local", max_steps=10)
    spec = env.spec
    assert spec.act_sizes == (4, 1) and spec.act_dim == 4 and spec.heterogeneous
    assert spec.obs_sizes == (13, 7)  # 5 root entries (z, pitch; 3 root vels) + 2 per joint
    w = env.unwrapped
    a = jnp.array([[0.1, 0.2, 0.3, 0.4], [0.5, 9.0, 9.0, 9.0]])
    # unowned actuator 4 gets 0; padded slots are ignored; out-of-bounds values clipped
    np.testing.assert_allclose(w.global_action(a), [0.1, 0.2, 0.3, 0.4, 0.0, 0.5])
    np.testing.assert_allclose(w.global_action(a * 10)[:4], [1.0, 1.0, 1.0, 1.0])


@pytest.mark.slow
def test_all_registered_partitions_build():
    for name in [n for n in envs.names() if n.startswith("mabrax_")]:
        spec = envs.make(name, obs="local").spec
        assert sum(spec.act_sizes) <= 17 and spec.state_dim >= 11, name
    for key in ["ant_4x2", "hopper_3x1", "walker2d_2x3"]:
        spec = envs.make(f"mabrax_{key}", obs="jaxmarl").spec
        assert max(spec.obs_sizes) <= spec.state_dim, key
    for key in ["halfcheetah_6x1", "humanoid_9_8"]:  # JaxMARL's mappings index past the obs
        with pytest.raises(ValueError, match="obs='jaxmarl'"):
            envs.make(f"mabrax_{key}", obs="jaxmarl")
    assert envs.make("mabrax_humanoid_9_8").spec.act_sizes == (9, 8)
    assert envs.make("mabrax_humanoidstandup_17x1").spec.n_agents == 17


@pytest.mark.parametrize("bad", [[[0, 1], [1, 2]], [[0], [7]], [[]], 3])
def test_bad_partition(bad):
    with pytest.raises(ValueError, match="partition"):
        envs.mabrax_partition("hopper", bad)


def test_bad_obs_mode():
    with pytest.raises(ValueError, match="obs='jaxmarl'"):
        envs.make("mabrax_ant_2x4", obs="jaxmarl")
    with pytest.raises(ValueError, match="obs='nearby'"):
        envs.make("mabrax_ant_4x2", obs="nearby")


@pytest.mark.slow
def test_parity_with_jaxmarl_and_auto_reset():
    """hopper_3x1 with obs='jaxmarl' against jaxmarl.make('hopper_3x1'): same keys/actions ->
    same per-agent obs and rewards, across a time-limit reset."""
    import jaxmarl

    T = 4
    env = envs.make("mabrax_hopper_3x1", obs="jaxmarl", max_steps=T)
    with _quiet_brax():  # no deprecation noise, no MUJOCO_LOG.TXT
        jm = jaxmarl.make("hopper_3x1", episode_length=T)
    agents = jm.agents
    n_steps = T + 2

    def rollout(key):
        k0, key = jax.random.split(key)
        obs, state = env.reset(k0)
        jm_obs, jm_state = jm.reset(k0)

        def body(carry, k):
            state, jm_state = carry
            ka, ks = jax.random.split(k)
            actions = jax.random.uniform(ka, (3, 1), minval=-1.0, maxval=1.0)
            obs, state, rew, done, info = env.step_final(ks, state, actions)
            jm_obs, jm_state, jm_rew, jm_done, _ = jm.step(
                ks, jm_state, {a: actions[i] for i, a in enumerate(agents)})
            out = (obs, rew, done, info, env.global_state(state),
                   [jm_obs[a] for a in agents], jnp.stack([jm_rew[a] for a in agents]),
                   jm_done["__all__"], jm_state.obs)
            return (state, jm_state), out

        _, out = jax.lax.scan(body, (state, jm_state), jax.random.split(key, n_steps))
        return (obs, [jm_obs[a] for a in agents]), out

    (obs0, jm_obs0), out = jax.jit(rollout)(jax.random.PRNGKey(0))
    obs, rew, done, info, gs, jm_obs, jm_rew, jm_done, jm_gs = out
    sizes = env.spec.obs_sizes
    chex.assert_shape([obs, rew, done, gs], [(n_steps, 3, 9), (n_steps, 3), (n_steps, 3),
                                             (n_steps, 11)])
    for i, size in enumerate(sizes):
        np.testing.assert_allclose(obs0[i, :size], jm_obs0[i], rtol=1e-6)
        np.testing.assert_allclose(obs[:, i, :size], jm_obs[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(obs[:, i, size:], 0.0)
    np.testing.assert_allclose(gs, jm_gs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rew, jm_rew, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(done[:, 0], jm_done)
    ended = np.flatnonzero(info["returned_episode"])
    assert len(ended) >= 1
    # step_final's s': the returned obs/state except where an episode ended (then pre-reset)
    live = ~np.asarray(info["returned_episode"])
    np.testing.assert_allclose(info["final_obs"][live], obs[live], atol=1e-6)
    np.testing.assert_allclose(info["final_state"][live], gs[live], atol=1e-6)
    assert not np.allclose(info["final_state"][ended], gs[ended])
    for e in ended:
        truncated = info["episode_length"][e] == T
        assert bool(info["terminated"][e]) != bool(truncated)
