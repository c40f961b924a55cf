"""Adapters from JaxMARL's dict-keyed envs (MPE, SMAX) to jaxdiff's stacked-array contract.

Agent order is JaxMARL's `env.agents` order (MPE simple_tag: adversaries first, then good
agents; speaker_listener: speaker, listener). Observations are zero-padded to the max size over
agents; discrete actions of heterogeneous agents are padded to the max count and masked by
`action_mask` (an out-of-range action is clipped to the agent's last valid action);
continuous actions are sliced to each agent's true size and clipped to the bounds.

Auto-reset replicates `jaxmarl.MultiAgentEnv.step` (same key split, same reset), so a jaxdiff
env and the JaxMARL env give the same obs/rewards for the same keys and actions (up to float
rounding: XLA fuses the two graphs differently). We call `step_env` + `reset` ourselves rather
than `step` so that `won`/`terminated` are read from the terminal state before it is replaced
by the fresh one, and so that the obs is computed once (on the selected state).

Speed: the adapter adds a stack/pad per step and nothing else; it removes work JaxMARL does
(one of its three `get_obs` per step; MPE's zero-scale noise draws, see `_noise_free`).

`done[i]` is the episode-level done for every agent (SMAX's per-agent "unit is dead" dones are
not exposed as dones; a dead unit's `action_mask` allows only the no-op).

`max_steps` is the episode length in agent steps. JaxMARL's MPE and SMAX check the time limit
before incrementing their step counter, so a JaxMARL env built with `max_steps=T` runs `T + 1`
steps; we build it with `max_steps - 1`. Defaults: MPE 25 (the PettingZoo/MAPPO episode
length), SMAX 100.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import math
import os
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.envs.base import Env, EnvSpec

ACTION_TYPES = ("discrete", "continuous")


def import_jaxmarl() -> None:
    """Make `jaxmarl` importable cheaply and quietly. Call it before any `from jaxmarl... import`.

    JaxMARL's package `__init__` imports every environment it ships (STORM, JaxNav, Overcooked,
    Hanabi, Coin Game, MABrax with Brax and MJX, ...): about 11 s on a 2-core CPU, of which
    jaxdiff needs MPE and SMAX (~2-4 s). So `jaxmarl` and `jaxmarl.environments` are registered
    as lazy packages: their submodules (`jaxmarl.environments.mpe`, `.smax`, `jaxmarl.viz`, ...)
    import normally and alone, and the first access to anything else on them (`jaxmarl.make`,
    `jaxmarl.environments.Hanabi`) runs the package's real `__init__`, so a host program that
    uses JaxMARL's own API after importing jaxdiff sees the complete package. If JaxMARL was
    imported before, or its layout is not the expected one, this is the plain import.

    JaxMARL's `__init__` prints "Importing submoduled environments... Skipping import." and its
    MABrax module resets `sys.stdout`/`sys.stderr` to `sys.__stdout__`/`sys.__stderr__` (which
    would undo a host program's stream replacement, e.g. pytest's capture): whenever that code
    runs, stdout is silenced and all three streams are put back afterwards."""
    if "jaxmarl" in sys.modules:
        return
    try:
        spec = importlib.util.find_spec("jaxmarl")
        root = os.path.dirname(spec.origin)
        if not os.path.isfile(os.path.join(root, "environments", "__init__.py")):
            raise ImportError("unexpected JaxMARL layout")
    except (ImportError, AttributeError, TypeError, ValueError):
        with _quiet_streams():
            import jaxmarl  # noqa: F401
        return
    top = _lazy_package("jaxmarl", root)
    top.environments = _lazy_package("jaxmarl.environments", os.path.join(root, "environments"))


@contextlib.contextmanager
def _quiet_streams():
    saved = sys.stdout, sys.stderr, sys.__stdout__
    sys.stdout = sys.__stdout__ = io.StringIO()
    try:
        yield
    finally:
        sys.stdout, sys.stderr, sys.__stdout__ = saved


def _lazy_package(name: str, folder: str):
    """A package module whose `__init__.py` runs on the first attribute access that is not one
    of its submodules (PEP 562 `__getattr__`); submodule imports never trigger it."""
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    loaded = []

    def __getattr__(attr: str):
        if attr.startswith("__") or loaded:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        if importlib.util.find_spec(f"{name}.{attr}") is not None:   # a submodule: import it alone
            return importlib.import_module(f"{name}.{attr}")
        loaded.append(True)
        del module.__getattr__
        with _quiet_streams():
            spec.loader.exec_module(module)
        return getattr(module, attr)

    module.__getattr__ = __getattr__
    sys.modules[name] = module
    return module


def check_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(
            f"invalid env option {key}={value!r}; allowed values: {', '.join(map(repr, allowed))}"
        )


def check_positive_int(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"invalid env option {key}={value!r}; allowed: a positive integer")


def _space_size(space) -> int:
    """Discrete -> number of actions; Box -> flat size."""
    if hasattr(space, "n"):
        return int(space.n)
    return int(math.prod(space.shape))


class JaxMARLAdapter(Env):
    """Wraps one JaxMARL `MultiAgentEnv` (subclasses fill in the env-specific bits)."""

    def __init__(self, env, *, name: str, discrete: bool, max_steps: int, state_dim: int,
                 shared_reward: bool, has_win: bool, split_envs: bool = False):
        self.jaxmarl_env = env
        self.agents = tuple(env.agents)
        n = len(self.agents)
        obs_sizes = tuple(_space_size(env.observation_space(a)) for a in self.agents)
        act_sizes = tuple(_space_size(env.action_space(a)) for a in self.agents)
        if discrete:
            low, high = 0.0, 0.0
        else:
            lows = {float(np.min(env.action_space(a).low)) for a in self.agents}
            highs = {float(np.max(env.action_space(a).high)) for a in self.agents}
            assert len(lows) == 1 and len(highs) == 1, "per-agent bounds differ"
            low, high = lows.pop(), highs.pop()
        self.spec = EnvSpec(
            name=name, n_agents=n, obs_dim=max(obs_sizes), obs_sizes=obs_sizes,
            discrete=discrete, act_dim=max(act_sizes), act_sizes=act_sizes,
            action_low=low, action_high=high, state_dim=state_dim, max_steps=max_steps,
            shared_reward=shared_reward, has_win=has_win, split_envs=split_envs,
        )
        self._hetero_obs = len(set(obs_sizes)) > 1
        self._hetero_act = len(set(act_sizes)) > 1
        # numpy constants: baked into the compiled graph, no device transfer per call.
        self._valid_actions = np.arange(self.spec.act_dim)[None, :] < np.array(act_sizes)[:, None]
        self._max_action = np.array(act_sizes, np.int32) - 1

    # --- dict <-> array ------------------------------------------------------------------

    def _stack_obs(self, obs: dict) -> jax.Array:  # -> f32[n_agents, obs_dim]
        d = self.spec.obs_dim
        if not self._hetero_obs:
            return jnp.stack([obs[a] for a in self.agents]).astype(jnp.float32)
        return jnp.stack(
            [jnp.pad(obs[a].astype(jnp.float32), (0, d - obs[a].shape[-1])) for a in self.agents]
        )

    def _stack_scalar(self, x: dict, dtype) -> jax.Array:  # -> [n_agents]
        return jnp.stack([x[a] for a in self.agents]).astype(dtype)

    def _action_dict(self, actions: jax.Array) -> dict:
        if self.spec.discrete:
            # actions: int32[n_agents]
            actions = actions.astype(jnp.int32)
            if self._hetero_act:
                actions = jnp.clip(actions, 0, self._max_action)
            return {a: actions[i] for i, a in enumerate(self.agents)}
        # actions: f32[n_agents, act_dim]
        actions = jnp.clip(actions, self.spec.action_low, self.spec.action_high)
        sizes = self.spec.act_sizes
        return {a: actions[i, : sizes[i]] for i, a in enumerate(self.agents)}

    # --- env-specific hooks ----------------------------------------------------------------

    def _won(self, state) -> jax.Array:  # f32[], on the pre-reset state
        return jnp.zeros((), jnp.float32)

    def _terminated(self, state) -> jax.Array:  # bool[], on the pre-reset state
        return jnp.zeros((), jnp.bool_)

    # --- contract ------------------------------------------------------------------------

    def reset(self, key):
        obs, state = self.jaxmarl_env.reset(key)
        return self._stack_obs(obs), state

    reports_final = True

    def step(self, key, state, actions):
        return self._step(key, state, actions, final=False)

    def step_final(self, key, state, actions):
        return self._step(key, state, actions, final=True)

    def _step(self, key, state, actions, *, final: bool):
        env = self.jaxmarl_env
        key, key_reset = jax.random.split(key)  # same split as jaxmarl's MultiAgentEnv.step
        _, state_st, reward, dones, _ = env.step_env(key, state, self._action_dict(actions))
        _, state_re = env.reset(key_reset)
        ended = jnp.asarray(dones["__all__"]).astype(jnp.bool_)
        info = {"won": self._won(state_st), "terminated": self._terminated(state_st)}
        if final:  # one more get_obs, only for the learners that store s'
            info["final_obs"] = self._stack_obs(env.get_obs(state_st))
            info["final_state"] = self.global_state(state_st)
        state = jax.tree.map(lambda r, s: jax.lax.select(ended, r, s), state_re, state_st)
        # JaxMARL observes both the stepped and the reset state and selects; observing the
        # selected state gives the same obs for one get_obs (XLA drops the unused two).
        obs = self._stack_obs(env.get_obs(state))
        reward = self._stack_scalar(reward, jnp.float32)
        done = jnp.broadcast_to(ended, (self.spec.n_agents,))
        return obs, state, reward, done, info

    def action_mask(self, state):  # -> bool[n_agents, act_dim]
        if self.spec.discrete:
            return jnp.asarray(self._valid_actions)
        return jnp.ones((self.spec.n_agents, self.spec.act_dim), jnp.bool_)


# =========================================================================================
# MPE
# =========================================================================================

_MPE_CLASSES = {
    "simple_spread": "SimpleSpreadMPE",
    "simple_reference": "SimpleReferenceMPE",
    "simple_speaker_listener": "SimpleSpeakerListenerMPE",
    "simple_tag": "SimpleTagMPE",
}
# speaker_listener gives both agents the same reward; the others mix local and global terms.
_MPE_SHARED_REWARD = {"simple_speaker_listener"}


class MPEAdapter(JaxMARLAdapter):
    """MPE: global state = concatenation of all agents' padded observations."""

    def global_state(self, state):  # -> f32[n_agents * obs_dim]
        return self._stack_obs(self.jaxmarl_env.get_obs(state)).reshape(-1)


@functools.cache
def _noise_free(cls):
    """`cls` without the physics/communication noise draws, when the noise scales are zero.

    JaxMARL draws `normal(key) * u_noise` and `normal(key) * c_noise` for every agent on every
    step even though every scenario we register sets both scales to 0; XLA cannot drop
    `x * 0.0` (NaN semantics), so the Threefry draws cost ~15-20% of an MPE step on CPU.
    Adding an exact 0 changes no value, so results stay bit-identical to JaxMARL's."""

    class NoiseFree(cls):
        @partial(jax.vmap, in_axes=[None, 0, 0, 0, 0, 0])
        def _apply_action_force(self, key, p_force, u, u_noise, moveable):
            return jax.lax.select(moveable, u, p_force)

        @partial(jax.vmap, in_axes=[None, 0, 0, 0, 0])
        def _apply_comm_action(self, key, c, c_noise, silent):
            return jax.lax.select(silent, jnp.zeros(c.shape), c)

    NoiseFree.__name__ = NoiseFree.__qualname__ = f"NoiseFree{cls.__name__}"
    return NoiseFree


def make_mpe(scenario: str, *, action_type: str = "discrete", max_steps: int = 25,
             **scenario_kwargs) -> MPEAdapter:
    """Build `mpe_<scenario>`; `scenario_kwargs` go to the JaxMARL scenario class."""
    check_choice("action_type", action_type, ACTION_TYPES)
    check_positive_int("max_steps", max_steps)
    import_jaxmarl()
    from jaxmarl.environments import mpe
    from jaxmarl.environments.mpe.default_params import CONTINUOUS_ACT, DISCRETE_ACT

    cls = getattr(mpe, _MPE_CLASSES[scenario])
    jm_action = DISCRETE_ACT if action_type == "discrete" else CONTINUOUS_ACT
    kw = dict(action_type=jm_action, max_steps=max_steps - 1, **scenario_kwargs)
    env = cls(**kw)
    if not (np.any(np.asarray(env.u_noise)) or np.any(np.asarray(env.c_noise))):
        env = _noise_free(cls)(**kw)
    obs_dim = max(_space_size(env.observation_space(a)) for a in env.agents)
    return MPEAdapter(
        env, name=f"mpe_{scenario}", discrete=action_type == "discrete", max_steps=max_steps,
        state_dim=len(env.agents) * obs_dim, shared_reward=scenario in _MPE_SHARED_REWARD,
        has_win=False,
    )


def mpe_simple_spread(*, action_type="discrete", max_steps=25, num_agents=3,
                      num_landmarks=3, local_ratio=0.5):
    """MPE simple_spread: agents cover landmarks without colliding (shared reward)."""
    return make_mpe("simple_spread", action_type=action_type, max_steps=max_steps,
                    num_agents=num_agents, num_landmarks=num_landmarks,
                    local_ratio=local_ratio)


def mpe_simple_reference(*, action_type="discrete", max_steps=25, local_ratio=0.5):
    """MPE simple_reference: two agents each guide the other to a goal landmark it alone sees."""
    return make_mpe("simple_reference", action_type=action_type, max_steps=max_steps,
                    local_ratio=local_ratio)


def mpe_simple_speaker_listener(*, action_type="discrete", max_steps=25):
    """MPE speaker_listener: a static speaker tells a blind listener which landmark to reach."""
    return make_mpe("simple_speaker_listener", action_type=action_type, max_steps=max_steps)


def mpe_simple_tag(*, action_type="discrete", max_steps=25, num_good_agents=1,
                   num_adversaries=3, num_obs=2):
    """MPE simple_tag: slower adversaries chase a faster good agent among obstacles."""
    return make_mpe("simple_tag", action_type=action_type, max_steps=max_steps,
                    num_good_agents=num_good_agents, num_adversaries=num_adversaries,
                    num_obs=num_obs)


# =========================================================================================
# SMAX (HeuristicEnemySMAX: the learning agents are the allies)
# =========================================================================================

SMAX_MAPS = (
    "3m", "2s3z", "3s5z", "5m_vs_6m", "10m_vs_11m", "3s_vs_5z", "6h_vs_8z", "3s5z_vs_3s6z",
    "27m_vs_30m", "smacv2_5_units", "smacv2_10_units",
)


# Continuous SMAX: the dims JaxMARL reads as Bernoulli probabilities (it samples them from the
# logits log(p), log(1 - p)) and how far they are kept from 0 and 1 (spec-ddpl §4.9, F15).
SMAX_PROB_DIMS = ("shoot_last_enemy", "do_shoot")
SMAX_PROB_EPS = 1e-6


class SMAXAdapter(JaxMARLAdapter):
    """SMAX: global state = JaxMARL's world state; action mask = available actions.

    Continuous actions: the two probability dims (`SMAX_PROB_DIMS`, found by name in JaxMARL's
    `continuous_action_dims`) are clipped to [1e-6, 1 - 1e-6] on top of the box clip. JaxMARL
    turns them into logits log(p), log(1 - p); at p = 0 or 1 one logit is -inf, which samples
    correctly but gives NaN as soon as anything differentiates or subtracts logits, and a
    policy that saturates at the box edge (a clipped diffusion sample) hits exactly 0 or 1."""

    def __init__(self, env, **kwargs):
        super().__init__(env, **kwargs)
        if not self.spec.discrete:
            names = list(env.continuous_action_dims)
            low = np.full(self.spec.act_dim, self.spec.action_low, np.float32)
            high = np.full(self.spec.act_dim, self.spec.action_high, np.float32)
            for name in SMAX_PROB_DIMS:
                low[names.index(name)] = SMAX_PROB_EPS
                high[names.index(name)] = 1.0 - SMAX_PROB_EPS
            self._prob_low, self._prob_high = low, high

    def _action_dict(self, actions: jax.Array) -> dict:
        if not self.spec.discrete:
            actions = jnp.clip(actions, self._prob_low, self._prob_high)
        return super()._action_dict(actions)

    def _smax_state(self, state):
        return state.state  # HeuristicEnemySMAX wraps the SMAX state

    def _won(self, state):
        s = self._smax_state(state)
        n_allies = self.jaxmarl_env.num_allies
        allies_alive = jnp.any(s.unit_alive[:n_allies])
        enemies_alive = jnp.any(s.unit_alive[n_allies:])
        return (allies_alive & ~enemies_alive).astype(jnp.float32)

    def _terminated(self, state):
        s = self._smax_state(state)
        n_allies = self.jaxmarl_env.num_allies
        return ~jnp.any(s.unit_alive[:n_allies]) | ~jnp.any(s.unit_alive[n_allies:])

    def global_state(self, state):  # -> f32[state_dim]
        return self.jaxmarl_env.get_world_state(state).astype(jnp.float32)

    def action_mask(self, state):  # -> bool[n_agents, act_dim]
        if not self.spec.discrete:
            return super().action_mask(state)
        avail = self.jaxmarl_env.get_avail_actions(state)
        d = self.spec.act_dim
        return jnp.stack(
            [jnp.pad(avail[a].astype(jnp.bool_), (0, d - avail[a].shape[-1])) for a in self.agents]
        )


def make_smax(map_name: str, *, action_type: str = "discrete", max_steps: int = 100,
              enemy_shoots: bool = True, attack_mode: str = "closest",
              observation_type: str = "unit_list", see_enemy_actions: bool = True,
              walls_cause_death: bool = True, won_battle_bonus: float = 1.0,
              world_steps_per_env_step: int = 8) -> SMAXAdapter:
    check_choice("action_type", action_type, ACTION_TYPES)
    check_positive_int("max_steps", max_steps)
    check_choice("attack_mode", attack_mode, ("closest", "random"))
    check_choice("observation_type", observation_type, ("unit_list", "conic"))
    check_positive_int("world_steps_per_env_step", world_steps_per_env_step)
    import_jaxmarl()
    from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario

    env = HeuristicEnemySMAX(
        scenario=map_name_to_scenario(map_name), action_type=action_type,
        max_steps=max_steps - 1, enemy_shoots=enemy_shoots, attack_mode=attack_mode,
        observation_type=observation_type, see_enemy_actions=see_enemy_actions,
        walls_cause_death=walls_cause_death, won_battle_bonus=won_battle_bonus,
        world_steps_per_env_step=world_steps_per_env_step,
    )
    return SMAXAdapter(
        env, name=f"smax_{map_name}", discrete=action_type == "discrete", max_steps=max_steps,
        state_dim=int(env.state_size), shared_reward=True, has_win=True, split_envs=True,
    )


def _smax_factory(map_name: str):
    def factory(*, action_type="discrete", max_steps=100, enemy_shoots=True,
                attack_mode="closest", observation_type="unit_list", see_enemy_actions=True,
                walls_cause_death=True, won_battle_bonus=1.0, world_steps_per_env_step=8):
        return make_smax(map_name, action_type=action_type, max_steps=max_steps,
                         enemy_shoots=enemy_shoots, attack_mode=attack_mode,
                         observation_type=observation_type,
                         see_enemy_actions=see_enemy_actions,
                         walls_cause_death=walls_cause_death,
                         won_battle_bonus=won_battle_bonus,
                         world_steps_per_env_step=world_steps_per_env_step)

    factory.__name__ = f"smax_{map_name}"
    factory.__doc__ = (f"SMAX {map_name}: allied units (the agents) against JaxMARL's heuristic "
                       f"enemy; shared reward, win rate reported.")
    return factory
