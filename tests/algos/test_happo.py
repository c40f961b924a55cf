"""HAPPO: action masks respected on the per-agent path, smoke run via the runner; slow: it
solves the coordination game from the F14 start, and heterogeneous agents' padded action dims
never move."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff.envs.toys  # noqa: F401  (registers coordination_game)
from jaxdiff import envs
from jaxdiff.algos import base, happo, sequential
from jaxdiff.envs.toys.coordination import CoordinationGame, expected_reward
from jaxdiff.envs.wrappers import EpisodeStats
from jaxdiff.nets.agents import apply_agents

happo_act = base.get("happo").act


class _MaskedGame(CoordinationGame):
    """Agent 0 may not play action 2; rewarding action 2 would tempt an unmasked policy."""
    def step(self, key, state, actions):
        obs, state, r, done, info = super().step(key, state, actions)
        return obs, state, r + (actions == 2).astype(jnp.float32), done, info

    def action_mask(self, state):
        return jnp.ones((2, 3), bool).at[0, 2].set(False)


def _probs(env, cfg, actor, mask):
    p = sequential.parts(env, cfg)
    _, out = apply_agents(p.actor, actor, False, jnp.zeros((2, cfg.hidden)), jnp.ones((2, 1)),
                          jnp.zeros((2,), bool))
    return jax.nn.softmax(jnp.where(mask, out[0], -1e9), -1)


def test_masked_action_never_taken_and_gets_no_probability():
    env = EpisodeStats(_MaskedGame(n_agents=2, n_actions=3))
    # Per-agent values: agent 1's bonus is its own reward. (Under the EP critic's team reward,
    # coordinating on 0 or 1 pays 1 > 0.5 for agent 1 playing 2, so it would rightly avoid it.)
    cfg = base.make_config(happo.Config, dict(num_envs=16, num_steps=4, hidden=16, lr=0.05,
                                              critic_epochs=1, critic_state="agent"))
    state = jax.jit(lambda k: happo.init(k, env, cfg))(jax.random.PRNGKey(0))
    step = jax.jit(happo.step(env, cfg))
    for _ in range(5):
        state, metrics = step(state)
    assert all(math.isfinite(float(v)) for v in jax.tree.leaves(metrics))
    mask = env.unwrapped.action_mask(None)
    probs = _probs(env, cfg, state.actor, mask)
    assert float(probs[0, 2]) == 0.0
    assert float(probs[1, 2]) > 0.5          # the unmasked agent did learn the bonus
    keys = jax.random.split(jax.random.PRNGKey(1), 256)
    acts = jax.vmap(lambda k: happo_act(cfg, env, state, jnp.ones((2, 1)), jnp.zeros((2, 16)),
                                        mask, k, deterministic=False)[0])(keys)
    assert not bool((acts[:, 0] == 2).any())


@pytest.mark.slow
def test_solves_coordination_game_from_f14_start():
    env = envs.make("coordination_game")
    cfg = base.make_config(happo.Config, dict(num_envs=16, num_steps=16, hidden=16, lr=0.05))
    state = jax.jit(lambda k: happo.init(k, env, cfg))(jax.random.PRNGKey(0))
    params = dict(state.actor["params"])
    head = max(k for k in params if k.startswith("Dense"))
    params[head] = dict(kernel=jnp.zeros_like(params[head]["kernel"]),
                        bias=jnp.log(jnp.array([[0.9, 0.1], [0.1, 0.9]])))
    state = state.replace(actor=dict(params=params))
    step = jax.jit(happo.step(env, cfg))
    for _ in range(15):
        state, _ = step(state)
    probs = _probs(env, cfg, state.actor, jnp.ones((2, 2), bool))
    assert float(expected_reward(probs)) > 0.95
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_heterogeneous_padded_action_dims_get_no_update():
    """speaker_listener: the speaker acts in 3 dims, the listener in 5; the speaker's padded
    dims 3-4 enter neither its log-probs nor its entropy, so their log-std never moves."""
    env = envs.make("mpe_simple_speaker_listener", action_type="continuous")
    assert env.spec.act_sizes == (3, 5)
    cfg = base.make_config(happo.Config, dict(num_envs=4, num_steps=25, hidden=16, lr=0.01))
    state = jax.jit(lambda k: happo.init(k, env, cfg))(jax.random.PRNGKey(0))
    new, metrics = jax.jit(happo.step(env, cfg))(state)
    assert all(math.isfinite(float(v)) for v in jax.tree.leaves(metrics))
    old_std, new_std = state.actor["params"]["log_std"], new.actor["params"]["log_std"]
    np.testing.assert_array_equal(new_std[0, 3:], old_std[0, 3:])
    assert np.abs(np.asarray(new_std[0, :3] - old_std[0, :3])).max() > 0
    assert np.abs(np.asarray(new_std[1] - old_std[1])).min() > 0
