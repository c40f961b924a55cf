"""The environment contract: `EnvSpec` and the `Env` interface every adapter implements.

An env is a plain Python object whose methods are pure and jittable/vmappable:

    env.spec                               -> EnvSpec (static)
    env.reset(key)                         -> obs f32[n_agents, obs_dim], state
    env.step(key, state, actions)          -> obs, state, reward f32[n_agents],
                                              done bool[n_agents], info dict of scalars
    env.global_state(state)                -> f32[state_dim]
    env.action_mask(state)                 -> bool[n_agents, act_dim]

Actions: discrete -> int32[n_agents]; continuous -> f32[n_agents, act_dim].
Heterogeneous agents are zero-padded (obs) and masked (actions) up to the max size.

Adapters (`jaxdiff.envs.jaxmarl`, `jaxdiff.envs.mabrax`) auto-reset and return the per-step
info keys `won` (f32) and `terminated` (bool), computed on the pre-reset state. Envs whose
`reports_final` is True also offer

    env.step_final(key, state, actions)    -> like `step`; info adds `final_obs`
                                              f32[n_agents, obs_dim] and `final_state`
                                              f32[state_dim] of the pre-reset state

the true next state s' of a step that ended an episode (auto-reset replaces it in `obs`), which
off-policy learners store so that a time-limit end bootstraps from where the episode stopped. The
`EpisodeStats` wrapper (`jaxdiff.envs.wrappers`), which `make` applies to every env, adds
`returned_episode`, `episode_return` and `episode_length`.
"""

from __future__ import annotations

from typing import Any

from flax import struct

Info = dict[str, Any]


def _static(**kw):
    return struct.field(pytree_node=False, **kw)


@struct.dataclass
class EnvSpec:
    """Static description of a multi-agent env. Frozen, hashable, a leafless pytree."""

    name: str = _static()
    n_agents: int = _static()
    obs_dim: int = _static()  # padded to the max over agents
    obs_sizes: tuple[int, ...] = _static()  # true per-agent obs sizes
    discrete: bool = _static()
    act_dim: int = _static()  # discrete: number of actions (padded); continuous: vector size
    act_sizes: tuple[int, ...] = _static()  # true per-agent action counts / dims
    action_low: float | tuple[float, ...] = _static()  # continuous bounds; discrete: unused
    action_high: float | tuple[float, ...] = _static()
    state_dim: int = _static()  # global state size for centralised critics
    max_steps: int = _static()  # episode length limit (agent steps)
    shared_reward: bool = _static()  # all agents get the same team reward
    has_win: bool = _static()  # episodes can be won (SMAX)
    # Splitting a lone seed's envs over idle CPU devices pays off (jaxdiff.parallel): steps
    # that are long chains of small ops (MABrax physics, SMAX unit logic). MPE's tiny steps only
    # pay the synchronisation (measured 0.6x), so it stays on one device.
    split_envs: bool = _static(default=False)

    @property
    def dim_mask(self):
        """np.float32 [n_agents, act_dim]: 1 on each agent's real action dims (continuous
        agents of different sizes are padded to act_dim), 0 on the padding."""
        import numpy as np
        mask = np.arange(self.act_dim)[None, :] < np.asarray(self.act_sizes)[:, None]
        return mask.astype(np.float32)

    def team_reward(self, reward, axis: int = -1, keepdims: bool = False):
        """The team's reward from per-agent rewards: their mean when every agent already gets
        the team reward (`shared_reward`), else their sum (HARL's and the episode return's
        rule)."""
        import jax.numpy as jnp
        reduce = jnp.mean if self.shared_reward else jnp.sum
        return reduce(reward, axis=axis, keepdims=keepdims)

    @property
    def heterogeneous(self) -> bool:
        """True when agents differ in obs or action sizes (padding/masking in use)."""
        return len(set(self.obs_sizes)) > 1 or len(set(self.act_sizes)) > 1


class Env:
    """Interface of a jaxdiff environment (documentation and `isinstance` only).

    Subclasses set `self.spec` and implement the five methods below. Methods must be
    pure (no Python side effects, no host callbacks) so that they jit and vmap.
    """

    spec: EnvSpec
    reports_final: bool = False  # `step_final` is implemented

    def reset(self, key):  # -> (obs [n_agents, obs_dim], state)
        raise NotImplementedError

    def step(self, key, state, actions):  # -> (obs, state, reward, done, info)
        raise NotImplementedError

    def step_final(self, key, state, actions):  # -> (obs, state, reward, done, info + final)
        """`step` whose info also holds `final_obs` and `final_state`: the observation and
        global state the step reached before any auto-reset (equal to the returned `obs` and
        `global_state(state)` when no episode ended). Optional; see `reports_final`."""
        raise NotImplementedError(
            f"{type(self).__name__} does not report the pre-reset state of a step "
            "(reports_final is False): use `step`, and treat the s' of a time-limit end as "
            "unknown")

    def global_state(self, state):  # -> f32[state_dim]
        raise NotImplementedError

    def action_mask(self, state):  # -> bool[n_agents, act_dim]
        raise NotImplementedError

    @property
    def unwrapped(self) -> Env:
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name!r})"
