"""Env wrappers. `EpisodeStats` is applied by `jaxdiff.envs.make` to every env.

It keeps running sums in the state and reports, on every step,

    returned_episode  bool  an episode ended on this step
    episode_return    f32   return of the last completed episode: sum over agents of their
                            rewards, or the team reward (mean over agents) when
                            `spec.shared_reward`. Holds its value between episode ends
                            (like PureJaxRL's LogWrapper), so it is always valid once one
                            episode has ended; average it where `returned_episode`.
    episode_length    i32   length of the last completed episode (same holding rule)
    won               f32   1.0 if the episode that ended on this step was won (SMAX), else 0
    terminated        bool  the episode ended by termination, not by the time limit

The wrapped env's own auto-reset is kept: on an episode end the returned obs/state are those
of a fresh episode.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from jaxdiff.envs.base import Env


@struct.dataclass
class EpisodeStatsState:
    env_state: object
    running_return: jnp.ndarray  # f32[]
    running_length: jnp.ndarray  # i32[]
    last_return: jnp.ndarray  # f32[]
    last_length: jnp.ndarray  # i32[]


class Wrapper(Env):
    """Base of wrappers whose state holds the wrapped env's state as `env_state`: the spec,
    global state, action mask and adapter-specific helpers pass through unless overridden."""

    def __init__(self, env: Env):
        self.env = env
        self.spec = env.spec

    @property
    def unwrapped(self) -> Env:
        return self.env.unwrapped

    def __getattr__(self, name):
        # Adapter-specific helpers (e.g. `jaxmarl_env`) stay reachable through the wrapper.
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    @property
    def reports_final(self) -> bool:
        # Only a wrapper that implements `step_final` itself passes the capability on: the
        # inherited `Env.step_final` raises instead of skipping this wrapper's bookkeeping.
        return type(self).step_final is not Env.step_final and self.env.reports_final

    def global_state(self, state):
        return self.env.global_state(state.env_state)

    def action_mask(self, state):
        return self.env.action_mask(state.env_state)


class EpisodeStats(Wrapper):

    def reset(self, key):
        obs, env_state = self.env.reset(key)
        zero_f, zero_i = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
        return obs, EpisodeStatsState(env_state, zero_f, zero_i, zero_f, zero_i)

    def step(self, key, state: EpisodeStatsState, actions):
        return self._account(state, *self.env.step(key, state.env_state, actions))

    def step_final(self, key, state: EpisodeStatsState, actions):
        return self._account(state, *self.env.step_final(key, state.env_state, actions))

    def _account(self, state: EpisodeStatsState, obs, env_state, reward, done, info):
        team_reward = self.spec.team_reward(reward)
        ret = state.running_return + team_reward.astype(jnp.float32)
        length = state.running_length + 1
        ended = done[0]  # done is the same for every agent (episode-level)
        new_state = EpisodeStatsState(
            env_state=env_state,
            running_return=jnp.where(ended, 0.0, ret),
            running_length=jnp.where(ended, 0, length),
            last_return=jnp.where(ended, ret, state.last_return),
            last_length=jnp.where(ended, length, state.last_length),
        )
        out = {
            "returned_episode": ended,
            "episode_return": new_state.last_return,
            "episode_length": new_state.last_length,
            "won": jnp.where(ended, info["won"], 0.0).astype(jnp.float32),
            "terminated": ended & info["terminated"],
        }
        out.update({k: info[k] for k in ("final_obs", "final_state") if k in info})
        return obs, new_state, reward, done, out
