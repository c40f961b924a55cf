"""The one-shot coordination game of spec-haqo §7 (F14), for any number of agents.

Each of `n_agents` agents picks one of `n_actions` actions; the team reward is 1 when all
picks are equal and 0 otherwise (`r = 1{a^1 = a^2}` for two agents). Every episode is one step
and the observation is constant, so a policy is just a distribution over actions and the
expected reward of independent policies is sum_b prod_i pi^i(b), known in closed form. It is the
smallest game in which simultaneous independent updates miscoordinate while sequential ones,
each seeing its predecessors' new policies, do not.

    env = jaxdiff.envs.make("coordination_game", n_agents=2)
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxdiff.envs.base import Env, EnvSpec
from jaxdiff.envs.registry import register


class CoordinationGame(Env):
    def __init__(self, n_agents: int = 2, n_actions: int = 2):
        for key, value in (("n_agents", n_agents), ("n_actions", n_actions)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"invalid env option {key}={value!r}; allowed: a positive integer")
        self.spec = EnvSpec(
            name="coordination_game", n_agents=n_agents, obs_dim=1, obs_sizes=(1,) * n_agents,
            discrete=True, act_dim=n_actions, act_sizes=(n_actions,) * n_agents,
            action_low=0.0, action_high=0.0, state_dim=1, max_steps=1, shared_reward=True,
            has_win=False,
        )

    def _obs(self):
        return jnp.ones((self.spec.n_agents, 1), jnp.float32)

    def reset(self, key):
        # No state to speak of: every episode starts identically.
        return self._obs(), jnp.zeros((), jnp.int32)

    def step(self, key, state, actions):
        # actions: int32[n_agents]
        n = self.spec.n_agents
        r = jnp.all(actions == actions[0]).astype(jnp.float32)
        info = {"won": jnp.zeros((), jnp.float32), "terminated": jnp.ones((), jnp.bool_)}
        return (self._obs(), state, jnp.full((n,), r), jnp.ones((n,), jnp.bool_), info)

    def global_state(self, state):
        return jnp.ones((1,), jnp.float32)

    def action_mask(self, state):
        return jnp.ones((self.spec.n_agents, self.spec.act_dim), jnp.bool_)


def coordination_game(*, n_agents: int = 2, n_actions: int = 2) -> CoordinationGame:
    """One-step matrix game: reward only when every agent picks the same action."""
    return CoordinationGame(n_agents=n_agents, n_actions=n_actions)


def expected_reward(probs):
    """Exact expected team reward of independent policies. probs: [n_agents, n_actions]."""
    return jnp.sum(jnp.prod(probs, axis=0))


register("coordination_game", coordination_game)
