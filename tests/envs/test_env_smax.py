"""SMAX adapter (3m): parity with JaxMARL's HeuristicEnemySMAX, masks, global state, wins."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff.envs as envs


@functools.lru_cache(maxsize=None)
def smax_3m(max_steps=100):
    return envs.make("smax_3m", max_steps=max_steps)


def masked_random_actions(key, mask):  # mask: bool[n_agents, act_dim] -> int32[n_agents]
    return jax.random.categorical(key, jnp.where(mask, 0.0, -jnp.inf)).astype(jnp.int32)


def test_spec():
    spec = smax_3m().spec
    assert (spec.n_agents, spec.obs_dim, spec.act_dim, spec.state_dim) == (3, 75, 8, 72)
    assert spec.discrete and spec.shared_reward and spec.has_win and spec.max_steps == 100
    assert spec.obs_sizes == (75,) * 3 and spec.act_sizes == (8,) * 3
    cont = envs.make("smax_3m", action_type="continuous").spec
    assert not cont.discrete and cont.act_dim == 4
    assert (cont.action_low, cont.action_high) == (0.0, 1.0)


def test_all_maps_specs():
    from jaxmarl.environments.smax import map_name_to_scenario

    for name in [n for n in envs.names() if n.startswith("smax_")]:
        spec = envs.make(name).spec
        sc = map_name_to_scenario(name[len("smax_"):])
        assert spec.n_agents == sc.num_allies, name
        assert spec.act_dim == sc.num_enemies + 5, name  # 4 moves + stop + one per enemy
        assert spec.state_dim == 12 * (sc.num_allies + sc.num_enemies), name


def test_parity_mask_and_global_state_vs_jaxmarl():
    """Same keys and actions -> same obs, rewards, dones, masks and world state as JaxMARL.

    A short time limit (max_steps=6: JaxMARL built with 5) makes the rollout cross resets."""
    env = smax_3m(6)
    jm = env.unwrapped.jaxmarl_env
    agents = env.unwrapped.agents
    n_steps = 14

    def rollout(key):
        k0, key = jax.random.split(key)
        obs, state = env.reset(k0)
        jm_obs, jm_state = jm.reset(k0)

        def body(carry, k):
            state, jm_state = carry
            ka, ks = jax.random.split(k)
            mask = env.action_mask(state)
            jm_mask = jm.get_avail_actions(jm_state)
            actions = masked_random_actions(ka, mask)
            gs = env.global_state(state)
            obs, state, rew, done, info = env.step(ks, state, actions)
            jm_obs, jm_state, jm_rew, jm_done, _ = jm.step(
                ks, jm_state, {a: actions[i] for i, a in enumerate(agents)})
            out = dict(
                mask=mask, jm_mask=jnp.stack([jm_mask[a] for a in agents]).astype(bool),
                gs=gs, obs=obs, jm_obs=jnp.stack([jm_obs[a] for a in agents]),
                jm_gs=jm_obs["world_state"], gs_next=env.global_state(state),
                rew=rew, jm_rew=jnp.stack([jm_rew[a] for a in agents]),
                done=done, jm_done=jm_done["__all__"], info=info,
            )
            return (state, jm_state), out

        _, out = jax.lax.scan(body, (state, jm_state), jax.random.split(key, n_steps))
        return obs, jnp.stack([jm_obs[a] for a in agents]), out

    obs0, jm_obs0, out = jax.jit(rollout)(jax.random.PRNGKey(0))
    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
    chex.assert_shape([obs0, out["obs"], out["mask"], out["gs"]],
                      [(3, 75), (n_steps, 3, 75), (n_steps, 3, 8), (n_steps, 72)])
    close(obs0, jm_obs0)
    close(out["obs"], out["jm_obs"])
    close(out["gs_next"], out["jm_gs"])
    np.testing.assert_array_equal(out["mask"], out["jm_mask"])
    close(out["rew"], out["jm_rew"])
    np.testing.assert_array_equal(out["done"], np.broadcast_to(out["jm_done"][:, None], (n_steps, 3)))
    info = out["info"]
    ended = np.flatnonzero(info["returned_episode"])
    assert len(ended) >= 2
    assert (info["episode_length"][ended] <= 6).all()
    # an episode that hits the limit without a side wiped out is truncated, not terminated
    time_limit = info["episode_length"][ended] == 6
    assert time_limit.any()
    assert not info["terminated"][ended][time_limit].any()
    assert not info["won"][ended][time_limit].any()
    # team return = sum of the (shared) reward over the episode
    first = ended[0]
    np.testing.assert_allclose(info["episode_return"][first], out["rew"][: first + 1, 0].sum(),
                               rtol=1e-5)


def test_win_is_reported():
    """Enemies that never shoot lose to allies attacking the closest enemy."""
    env = envs.make("smax_3m", enemy_shoots=False, max_steps=60)

    def run(key):
        obs, state = env.reset(key)

        def body(state, k):
            mask = env.action_mask(state)
            # prefer attack actions (indices >= 5) when available, else move right (1)
            attack = jnp.where(mask[:, 5:], jnp.arange(5, 8), -1).max(axis=1)
            actions = jnp.where(attack >= 0, attack, 1).astype(jnp.int32)
            _, state, rew, done, info = env.step(k, state, actions)
            return state, info

        _, info = jax.lax.scan(body, state, jax.random.split(key, 60))
        return info

    info = jax.jit(run)(jax.random.PRNGKey(1))
    ended = np.flatnonzero(info["returned_episode"])
    assert len(ended) >= 1
    first = ended[0]
    assert info["won"][first] == 1.0 and info["terminated"][first]
    assert info["episode_return"][first] > 1.0  # damage + won bonus
    assert (info["won"][~info["returned_episode"]] == 0).all()
