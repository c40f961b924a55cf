"""MPE adapter: parity with JaxMARL's dict envs, auto-reset, vmap/jit, padding and masking."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff.envs as envs


def random_actions(key, env, state):
    spec = env.spec
    if spec.discrete:
        logits = jnp.where(env.action_mask(state), 0.0, -jnp.inf)
        return jax.random.categorical(key, logits).astype(jnp.int32)
    return jax.random.uniform(key, (spec.n_agents, spec.act_dim), minval=-0.2, maxval=1.2)


def to_jaxmarl_actions(env, actions):
    """What the adapter should hand JaxMARL: clipped, sliced to each agent's true size."""
    spec, agents = env.spec, env.unwrapped.agents
    if spec.discrete:
        return {a: actions[i] for i, a in enumerate(agents)}
    actions = jnp.clip(actions, spec.action_low, spec.action_high)
    return {a: actions[i, : spec.act_sizes[i]] for i, a in enumerate(agents)}


@functools.lru_cache(maxsize=None)
def cached_env(name, action_type):
    return envs.make(name, action_type=action_type)


CASES = [
    ("mpe_simple_spread", "discrete"),
    ("mpe_simple_spread", "continuous"),
    ("mpe_simple_speaker_listener", "discrete"),
    ("mpe_simple_tag", "continuous"),
]


@pytest.mark.parametrize("name,action_type", CASES)
def test_parity_with_jaxmarl_dict_env(name, action_type):
    env = cached_env(name, action_type)
    jm = env.unwrapped.jaxmarl_env  # built with max_steps - 1 (see jaxdiff.envs.jaxmarl)
    agents = env.unwrapped.agents
    n_steps = env.spec.max_steps + 3  # crosses one auto-reset

    def rollout(key):
        k0, key = jax.random.split(key)
        obs, state = env.reset(k0)
        jm_obs, jm_state = jm.reset(k0)

        def body(carry, k):
            state, jm_state = carry
            ka, ks = jax.random.split(k)
            actions = random_actions(ka, env, state)
            obs, state, rew, done, info = env.step(ks, state, actions)
            jm_obs, jm_state, jm_rew, jm_done, _ = jm.step(
                ks, jm_state, to_jaxmarl_actions(env, actions))
            out = (obs, rew, done, info["returned_episode"],
                   [jm_obs[a] for a in agents], jnp.stack([jm_rew[a] for a in agents]),
                   jm_done["__all__"])
            return (state, jm_state), out

        _, outs = jax.lax.scan(body, (state, jm_state), jax.random.split(key, n_steps))
        return (obs, [jm_obs[a] for a in agents]), outs

    (obs0, jm_obs0), (obs, rew, done, ended, jm_obs, jm_rew, jm_done) = jax.jit(rollout)(
        jax.random.PRNGKey(3))
    # equal up to float rounding (XLA fuses the two graphs differently: 1-ulp differences)
    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
    for i, size in enumerate(env.spec.obs_sizes):
        close(obs0[i, :size], jm_obs0[i])
        close(obs[:, i, :size], jm_obs[i])
        np.testing.assert_array_equal(obs[:, i, size:], 0.0)  # padding
    close(rew, jm_rew)
    np.testing.assert_array_equal(done, np.broadcast_to(jm_done[:, None], done.shape))
    assert int(ended.sum()) == 1 and bool(ended[env.spec.max_steps - 1])


@functools.lru_cache(maxsize=None)
def jitted(name, action_type):
    env = cached_env(name, action_type)
    return jax.jit(env.reset), jax.jit(env.step)


def test_spec_and_shapes():
    cont = cached_env("mpe_simple_spread", "continuous").spec
    assert (cont.act_dim, cont.action_low, cont.action_high, cont.discrete) == (5, 0.0, 1.0, False)
    env = cached_env("mpe_simple_spread", "discrete")
    reset, step = jitted("mpe_simple_spread", "discrete")
    spec = env.spec
    assert (spec.n_agents, spec.obs_dim, spec.act_dim, spec.max_steps) == (3, 18, 5, 25)
    assert spec.discrete and spec.act_sizes == (5, 5, 5) and spec.obs_sizes == (18, 18, 18)
    assert spec.state_dim == 3 * 18 and not spec.shared_reward and not spec.has_win
    obs, state = reset(jax.random.PRNGKey(0))
    chex.assert_shape(obs, (3, 18))
    chex.assert_type(obs, jnp.float32)
    actions = jnp.array([0, 3, 4], jnp.int32)
    obs2, state2, rew, done, info = step(jax.random.PRNGKey(2), state, actions)
    chex.assert_shape([obs2, rew, done], [(3, 18), (3,), (3,)])
    chex.assert_type([rew, done], [jnp.float32, jnp.bool_])
    assert set(info) == {"returned_episode", "episode_return", "episode_length", "won",
                         "terminated"}
    for v in info.values():
        chex.assert_shape(v, ())
    chex.assert_type([info["returned_episode"], info["episode_length"], info["won"]],
                     [jnp.bool_, jnp.int32, jnp.float32])
    chex.assert_shape(env.global_state(state2), (spec.state_dim,))
    np.testing.assert_array_equal(env.global_state(state2), obs2.reshape(-1))
    chex.assert_shape(env.action_mask(state2), (3, 5))
    assert bool(env.action_mask(state2).all())


def test_auto_reset_and_episode_stats():
    env = cached_env("mpe_simple_spread", "discrete")
    reset, _ = jitted("mpe_simple_spread", "discrete")
    T = env.spec.max_steps
    key = jax.random.PRNGKey(7)
    obs, state = env.reset(key)

    def body(state, k):
        obs, state, rew, done, info = env.step(k, state, jnp.zeros((3,), jnp.int32))
        return state, (obs, rew, done, info, state.env_state.step)

    keys = jax.random.split(key, 2 * T + 1)
    _, (obs, rew, done, info, step_counter) = jax.jit(
        lambda s: jax.lax.scan(body, s, keys))(state)
    ended = np.flatnonzero(info["returned_episode"])
    np.testing.assert_array_equal(ended, [T - 1, 2 * T - 1])
    np.testing.assert_array_equal(np.flatnonzero(done[:, 0]), ended)
    assert done[ended].all()
    np.testing.assert_array_equal(info["episode_length"][ended], [T, T])
    np.testing.assert_allclose(info["episode_return"][ended[0]], rew[:T].sum(), rtol=1e-5)
    np.testing.assert_allclose(info["episode_return"][ended[1]], rew[T:2 * T].sum(), rtol=1e-5)
    assert not info["terminated"].any() and not info["won"].any()
    # the obs returned on the last step is a fresh episode's: the reset with step's reset key
    assert int(step_counter[T - 1]) == 0 and int(step_counter[T]) == 1
    fresh_obs, _ = reset(jax.random.split(keys[T - 1])[1])
    np.testing.assert_array_equal(obs[T - 1], fresh_obs)


def test_vmap_equals_loop_and_jit_equals_eager():
    env = cached_env("mpe_simple_spread", "discrete")
    reset, step = jitted("mpe_simple_spread", "discrete")
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    obs, states = jax.jit(jax.vmap(env.reset))(keys)
    actions = jax.random.randint(keys[0], (3, 3), 0, 5)
    out_v = jax.jit(jax.vmap(env.step))(keys, states, actions)
    for i in range(3):
        obs_i, state_i = reset(keys[i])
        np.testing.assert_allclose(obs[i], obs_i, rtol=1e-6)
        out_i = step(keys[i], state_i, actions[i])
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], out_v), out_i, rtol=1e-6)
    state0 = jax.tree.map(lambda x: x[0], states)
    out_eager = env.step(keys[0], state0, actions[0])
    chex.assert_trees_all_close(out_eager, step(keys[0], state0, actions[0]),
                                rtol=1e-5, atol=1e-6)


def test_heterogeneous_padding_and_masking():
    env = cached_env("mpe_simple_speaker_listener", "discrete")
    _, step = jitted("mpe_simple_speaker_listener", "discrete")
    spec = env.spec
    assert spec.obs_sizes == (3, 11) and spec.act_sizes == (3, 5) and spec.heterogeneous
    assert (spec.obs_dim, spec.act_dim) == (11, 5) and spec.shared_reward
    obs, state = env.reset(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(obs[0, 3:], 0.0)
    np.testing.assert_array_equal(
        env.action_mask(state), [[True, True, True, False, False], [True] * 5])
    # an out-of-range (masked) speaker action is clipped to its last valid action
    key = jax.random.PRNGKey(1)
    out_bad = step(key, state, jnp.array([4, 1], jnp.int32))
    out_ok = step(key, state, jnp.array([2, 1], jnp.int32))
    chex.assert_trees_all_equal(out_bad, out_ok)


def test_continuous_actions_clipped_and_sliced():
    env = cached_env("mpe_simple_speaker_listener", "continuous")
    assert env.spec.act_sizes == (3, 5) and env.spec.act_dim == 5
    assert (env.spec.action_low, env.spec.action_high) == (0.0, 1.0)
    obs, state = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    key = jax.random.PRNGKey(1)
    a = jnp.array([[0.2, 1.7, -3.0, 9.0, 9.0], [0.1, 0.2, 2.0, -1.0, 0.5]])
    # the speaker's padded dims (3, 4) are ignored; everything is clipped to [0, 1]
    a_clean = jnp.clip(a, 0, 1) * jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    chex.assert_trees_all_equal(step(key, state, a), step(key, state, a_clean))


def test_max_steps_option():
    env = envs.make("mpe_simple_reference", max_steps=4)
    _, state = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    lengths = []
    for i in range(8):
        _, state, _, done, info = step(jax.random.PRNGKey(i), state, jnp.zeros((2,), jnp.int32))
        if info["returned_episode"]:
            lengths.append(int(info["episode_length"]))
    assert lengths == [4, 4]


def test_step_final_reports_the_pre_reset_state_and_changes_nothing_else():
    """`step_final` (true s' for off-policy learners) returns exactly `step`'s outputs, plus the
    observation and global state the episode reached before the auto-reset: recomputed here
    from JaxMARL's own non-resetting `step_env`. A wrapper without its own `step_final` does
    not claim the capability (its bookkeeping would be skipped)."""
    from jaxdiff.envs.wrappers import Wrapper

    T = 3
    env = envs.make("mpe_simple_reference", action_type="continuous", max_steps=T)
    assert env.reports_final and not Wrapper(env).reports_final
    jm = env.unwrapped.jaxmarl_env
    key = jax.random.PRNGKey(3)
    _, state = env.reset(key)

    def body(state, k):
        ka, ks = jax.random.split(k)
        actions = random_actions(ka, env, state)
        out_final = env.step_final(ks, state, actions)
        out = env.step(ks, state, actions)
        # independent: JaxMARL's step without reset, observed
        _, jm_state, _, _, _ = jm.step_env(jax.random.split(ks)[0], state.env_state,
                                           to_jaxmarl_actions(env, actions))
        jm_obs = jnp.stack([jm.get_obs(jm_state)[a] for a in jm.agents])
        return out_final[1], (out_final, out, jm_obs, env.global_state(out[1]))

    _, (fin, plain, jm_obs, gs) = jax.jit(lambda s: jax.lax.scan(
        body, s, jax.random.split(key, 2 * T)))(state)
    info_f = fin[4]
    # same arithmetic; XLA may fuse the two programs differently (last-bit differences)
    chex.assert_trees_all_close(fin[:4], plain[:4], rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close({k: v for k, v in info_f.items() if not k.startswith("final")},
                                plain[4], rtol=1e-6, atol=1e-6)
    ended = np.asarray(info_f["returned_episode"])
    np.testing.assert_array_equal(np.flatnonzero(ended), [T - 1, 2 * T - 1])
    pad = jm_obs.shape[-1]
    np.testing.assert_allclose(info_f["final_obs"][..., :pad], jm_obs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(info_f["final_state"], info_f["final_obs"].reshape(2 * T, -1))
    # no episode ended: s' is the returned obs; one ended: the returned obs is a fresh episode's
    np.testing.assert_allclose(info_f["final_obs"][~ended], fin[0][~ended], atol=1e-6)
    np.testing.assert_allclose(info_f["final_state"][~ended], gs[~ended], atol=1e-6)
    assert not np.allclose(info_f["final_obs"][ended], fin[0][ended])
