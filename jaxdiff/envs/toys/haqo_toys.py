"""The toy environments of HAQO (paper 003, Figs. 1, 2 and 5) as spec-haqo §6.4 reconstructs them.

The paper shows these only as pictures and gives no reward definitions; every constant below is
the spec's CHOICE (§6.4), implemented exactly. Each env has a pure metrics function that turns a
log of actions or positions into the coverage numbers the figures are about.

`haqo_bandit` — MultiModalBandit (§6.4a, the "expressive policy" toy). One-step episodes,
n ∈ {1, 2} agents, each plays a ∈ [−1, 1]²; four targets c_k = (±0.5, ±0.5), σ = 0.1,

    r(a) = (1/n) Σ_i max_k exp(−‖a^i − c_k‖² / (2σ²))

shared by every agent: four equal optima per agent, the agents decoupled. Observation and global
state are a constant 1 (a policy is just a distribution over the box). `bandit_metrics` gives the
mode shares p_k = mean 1{‖a − c_k‖ < 0.2}, the hit rate Σ_k p_k, the number of modes holding
≥ 8 % of the samples, the mean reward and the dispersion Tr Cov(a) (2/3 for uniform on the box).

`haqo_occupation` — OccupationGame (§6.4b, Figs. 1/2: multimodal *visitation* is optimal). Two
point masses p^i ∈ [−1, 1]², p^i_{t+1} = clip(p^i_t + 0.1 a^i_t, −1, 1), a^i ∈ [−1, 1]²,
p^i_0 ~ U([−0.2, 0.2]²). Four targets c_k = (±0.6, ±0.6) of radius ρ = 0.2, each with a resource
f_{k,0} = 1; occupancy o_{k,t} = 1{min_i ‖p^i_t − c_k‖ ≤ ρ}; shared reward r_t = Σ_k o_{k,t} f_{k,t};
an occupied resource decays, a free one recovers:

    f_{k,t+1} = o_{k,t} (1 − κ) f_{k,t} + (1 − o_{k,t}) min(1, f_{k,t} + η),   κ = 0.25, η = 0.02.

Horizon H = 100 (a time limit: `terminated` stays False, the env auto-resets). Every agent sees
the global state [p^i, p^{−i}, f_{1:4}] (8 dims, own position first); the critic's global state
is [p^1, p^2, f]. As the spec writes it, step t's reward is earned by the positions the step
starts from (p_t, f_t), and the action moves the agents afterwards: an action shows in the
reward one step later, and the final positions p_H are never paid. Staying on one target pays
1, 0.75, 0.5625, … so good policies rotate over targets. `occupation_metrics` gives per-target
visit shares, how many targets hold ≥ 10 % of the visits, the normalised coverage entropy.

`haqo_landmarks` — fixed-landmark spread (§6.4c, Fig. 5). JaxMARL's MPE simple_spread with 2
agents and 3 landmarks, continuous actions (JaxMARL's box [0, 1]^5) by default, through our MPE
adapter (same rewards, same 25-step episodes); only the reset differs: the landmarks sit at 90°,
210° and 330° on a circle of radius 0.6 around the origin for every key (agents are drawn as
JaxMARL draws them), so visitation densities overlay across episodes. `landmark_shares` gives,
per landmark, the share of steps on which some agent is within 0.2 of it (paper claim: α = 0
leaves one landmark essentially unvisited, α > 0 visits all three).

    env = jaxdiff.envs.make("haqo_occupation")
    obs, state = env.reset(key)                         # obs: [2, 8]
    metrics = occupation_metrics(positions)             # positions: [T, 2, 2] from agent_positions
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdiff.envs.base import Env, EnvSpec
from jaxdiff.envs.registry import register

# =========================================================================================
# shared helpers
# =========================================================================================


def _check_int(key, value, allowed=None):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1 or (
            allowed is not None and value not in allowed):
        what = f"one of {', '.join(map(str, allowed))}" if allowed else "a positive integer"
        raise ValueError(f"invalid env option {key}={value!r}; allowed: {what}")
    return int(value)


def _check_actions(actions, n, d):
    if actions.ndim != 2 or actions.shape != (n, d):
        raise ValueError(f"actions must be f32[n_agents, {d}] = [{n}, {d}] (one point of the box "
                         f"[-1, 1]^{d} per agent); got shape {tuple(actions.shape)}")


def _check_positions(positions, name):
    positions = jnp.asarray(positions, jnp.float32)
    if positions.ndim != 3 or positions.shape[-1] != 2:
        raise ValueError(f"{name} takes positions f32[T, n_agents, 2] (a log of 2-D agent "
                         f"positions); got shape {tuple(positions.shape)}")
    return positions


def _sq_dist(x, centres):
    """‖x − c_k‖² for every point and centre: x [..., 2], centres [K, 2] -> [..., K]."""
    return jnp.sum((x[..., None, :] - centres) ** 2, axis=-1)


def _always_terminal_info():
    return {"won": jnp.zeros((), jnp.float32), "terminated": jnp.ones((), jnp.bool_)}


# =========================================================================================
# (a) MultiModalBandit
# =========================================================================================

BANDIT_TARGETS = np.array([[0.5, 0.5], [0.5, -0.5], [-0.5, 0.5], [-0.5, -0.5]], np.float32)
BANDIT_SIGMA = 0.1
BANDIT_HIT_RADIUS = 0.2   # a sample "is in" mode k when ‖a − c_k‖ < 0.2
BANDIT_MODE_SHARE = 0.08  # a mode counts as covered when it holds ≥ 8 % of the samples


def bandit_agent_reward(a):
    """max_k exp(−‖a − c_k‖² / (2σ²)) per agent: a [..., 2] -> [...] in (0, 1]."""
    sq = _sq_dist(jnp.asarray(a, jnp.float32), jnp.asarray(BANDIT_TARGETS))
    return jnp.max(jnp.exp(-sq / (2.0 * BANDIT_SIGMA ** 2)), axis=-1)


def bandit_reward(actions):
    """The team reward (1/n) Σ_i max_k exp(−‖a^i − c_k‖² / (2σ²)): actions [..., n, 2] -> [...]."""
    return jnp.mean(bandit_agent_reward(actions), axis=-1)


class MultiModalBandit(Env):
    """§6.4a (see the module docstring)."""

    reports_final = True

    def __init__(self, n_agents: int = 2):
        n = _check_int("n_agents", n_agents, (1, 2))
        self.spec = EnvSpec(
            name="haqo_bandit", n_agents=n, obs_dim=1, obs_sizes=(1,) * n, discrete=False,
            act_dim=2, act_sizes=(2,) * n, action_low=-1.0, action_high=1.0, state_dim=1,
            max_steps=1, shared_reward=True, has_win=False)

    def _obs(self):
        return jnp.ones((self.spec.n_agents, 1), jnp.float32)

    def reset(self, key):
        # Stateless: every episode starts identically (the state only counts nothing).
        return self._obs(), jnp.zeros((), jnp.int32)

    def step(self, key, state, actions):
        n = self.spec.n_agents
        _check_actions(actions, n, 2)
        a = jnp.clip(actions.astype(jnp.float32), -1.0, 1.0)
        r = bandit_reward(a)
        return (self._obs(), state, jnp.full((n,), r, jnp.float32), jnp.ones((n,), jnp.bool_),
                _always_terminal_info())

    def step_final(self, key, state, actions):
        obs, state, reward, done, info = self.step(key, state, actions)
        # One-step episodes: s' is the (constant) start observation; `terminated` is True.
        return obs, state, reward, done, {**info, "final_obs": obs,
                                          "final_state": self.global_state(state)}

    def global_state(self, state):
        return jnp.ones((1,), jnp.float32)

    def action_mask(self, state):
        return jnp.ones((self.spec.n_agents, 2), jnp.bool_)


def bandit_metrics(actions) -> dict:
    """Coverage of the four bandit modes by action samples `actions` [S, 2] (one agent's
    samples; pool agents by reshaping to [-1, 2]).

    mode_shares f32[4] (share of samples within 0.2 of c_k, strictly), hit_rate (their sum),
    n_modes (modes holding ≥ 8 %), mean_reward (mean per-agent reward of the samples),
    dispersion (Tr Cov(a), population covariance; 2/3 for uniform samples on [−1, 1]²)."""
    a = jnp.asarray(actions, jnp.float32)
    if a.ndim != 2 or a.shape[-1] != 2 or a.shape[0] < 1:
        raise ValueError(f"bandit_metrics takes actions f32[S, 2] (S ≥ 1 samples of one agent's "
                         f"2-D action); got shape {tuple(a.shape)}")
    hit = _sq_dist(a, jnp.asarray(BANDIT_TARGETS)) < BANDIT_HIT_RADIUS ** 2   # [S, 4]
    shares = jnp.mean(hit.astype(jnp.float32), axis=0)
    centred = a - jnp.mean(a, axis=0)
    return {
        "mode_shares": shares,
        "hit_rate": jnp.sum(shares),
        "n_modes": jnp.sum(shares >= BANDIT_MODE_SHARE).astype(jnp.int32),
        "mean_reward": jnp.mean(bandit_agent_reward(a)),
        "dispersion": jnp.sum(jnp.mean(centred ** 2, axis=0)),
    }


# =========================================================================================
# (b) OccupationGame
# =========================================================================================


@dataclasses.dataclass(frozen=True)
class OccupationParams:
    """The constants of spec-haqo §6.4b (all CHOICE of the spec; the paper gives none)."""

    targets: tuple = ((0.6, 0.6), (0.6, -0.6), (-0.6, 0.6), (-0.6, -0.6))
    radius: float = 0.2        # ρ
    kappa: float = 0.25        # decay factor of an occupied resource
    eta: float = 0.02          # recovery per free step, capped at 1
    speed: float = 0.1         # p_{t+1} = clip(p_t + speed · a_t, −1, 1)
    start_half_width: float = 0.2   # p_0 ~ U([−w, w]²)


OCCUPATION = OccupationParams()
OCCUPATION_TARGET_SHARE = 0.1  # a target counts as covered with ≥ 10 % of the visits


@struct.dataclass
class OccupationState:
    p: jnp.ndarray  # f32[2, 2] agent positions
    f: jnp.ndarray  # f32[4] resources
    t: jnp.ndarray  # i32[] steps taken in this episode


def occupancy(p, params: OccupationParams = OCCUPATION):
    """o_k = 1{min_i ‖p^i − c_k‖ ≤ ρ}: positions [..., n, 2] -> bool[..., K]."""
    near = _sq_dist(p, jnp.asarray(params.targets, jnp.float32)) <= params.radius ** 2
    return jnp.any(near, axis=-2)


def occupation_transition(p, f, a, params: OccupationParams = OCCUPATION):
    """One step of the game from (p_t, f_t) under a_t: (p_{t+1}, f_{t+1}, r_t). Pure; the
    reward is earned by the starting positions (see the module docstring)."""
    o = occupancy(p, params)
    reward = jnp.sum(jnp.where(o, f, 0.0))
    f_next = jnp.where(o, (1.0 - params.kappa) * f, jnp.minimum(1.0, f + params.eta))
    p_next = jnp.clip(p + params.speed * jnp.clip(a, -1.0, 1.0), -1.0, 1.0)
    return p_next, f_next, reward


class OccupationGame(Env):
    """§6.4b with two agents (see the module docstring)."""

    reports_final = True
    n_agents = 2

    def __init__(self, max_steps: int = 100, params: OccupationParams = OCCUPATION):
        self.params = params
        k = len(params.targets)
        state_dim = 2 * self.n_agents + k
        self.spec = EnvSpec(
            name="haqo_occupation", n_agents=self.n_agents, obs_dim=state_dim,
            obs_sizes=(state_dim,) * self.n_agents, discrete=False, act_dim=2,
            act_sizes=(2,) * self.n_agents, action_low=-1.0, action_high=1.0,
            state_dim=state_dim, max_steps=_check_int("max_steps", max_steps),
            shared_reward=True, has_win=False)

    def _start(self, key):
        w = self.params.start_half_width
        p = jax.random.uniform(key, (self.n_agents, 2), jnp.float32, -w, w)
        return OccupationState(p, jnp.ones((len(self.params.targets),), jnp.float32),
                               jnp.zeros((), jnp.int32))

    def _obs(self, state):
        # agent i sees [p^i, p^{-i}, f]: its own position first (two agents: swap the rows)
        own_first = jnp.stack([state.p, state.p[::-1]], axis=0).reshape(self.n_agents, -1)
        f = jnp.broadcast_to(state.f, (self.n_agents, state.f.shape[0]))
        return jnp.concatenate([own_first, f], axis=-1)

    def reset(self, key):
        state = self._start(key)
        return self._obs(state), state

    def step(self, key, state, actions):
        return self._step(key, state, actions, final=False)

    def step_final(self, key, state, actions):
        return self._step(key, state, actions, final=True)

    def _step(self, key, state, actions, *, final):
        n = self.n_agents
        _check_actions(actions, n, 2)
        p, f, reward = occupation_transition(state.p, state.f, actions.astype(jnp.float32),
                                             self.params)
        stepped = OccupationState(p, f, state.t + 1)
        ended = stepped.t >= self.spec.max_steps   # the time limit: never a termination
        new_state = jax.tree.map(lambda r, s: jnp.where(ended, r, s), self._start(key), stepped)
        info = {"won": jnp.zeros((), jnp.float32), "terminated": jnp.zeros((), jnp.bool_)}
        if final:
            info["final_obs"] = self._obs(stepped)
            info["final_state"] = self.global_state(stepped)
        return (self._obs(new_state), new_state, jnp.full((n,), reward, jnp.float32),
                jnp.full((n,), ended), info)

    def global_state(self, state):
        return jnp.concatenate([state.p.reshape(-1), state.f]).astype(jnp.float32)

    def action_mask(self, state):
        return jnp.ones((self.n_agents, 2), jnp.bool_)


def occupation_metrics(positions, params: OccupationParams = OCCUPATION) -> dict:
    """Target coverage of a position log `positions` [T, n, 2] (e.g. `agent_positions` of the
    states of a rollout).

    visit_shares f32[K]: v_k ∝ Σ_{t,i} 1{‖p^i_t − c_k‖ ≤ ρ}, normalised over k (all zero when
    no target was visited); visit_rate: the unnormalised (1/(nT)) Σ_{t,i,k} 1{…}, the share of
    agent-steps spent on some target; n_targets: targets with share ≥ 0.1; coverage_entropy:
    H(v)/log K in [0, 1] (0 without visits); occupied_share f32[K]: share of steps on which
    target k is occupied (o_{k,t} of the reward)."""
    p = _check_positions(positions, "occupation_metrics")
    t, n = p.shape[0], p.shape[1]
    k = len(params.targets)
    visits = _sq_dist(p, jnp.asarray(params.targets, jnp.float32)) <= params.radius ** 2
    counts = jnp.sum(visits.astype(jnp.float32), axis=(0, 1))           # [K]
    total = jnp.sum(counts)
    shares = jnp.where(total > 0, counts / jnp.maximum(total, 1.0), 0.0)
    plogp = jnp.where(shares > 0, shares * jnp.log(jnp.where(shares > 0, shares, 1.0)), 0.0)
    return {
        "visit_shares": shares,
        "visit_rate": total / (n * t),
        "n_targets": jnp.sum(shares >= OCCUPATION_TARGET_SHARE).astype(jnp.int32),
        "coverage_entropy": -jnp.sum(plogp) / math.log(k),
        "occupied_share": jnp.mean(jnp.any(visits, axis=1).astype(jnp.float32), axis=0),
    }


# =========================================================================================
# (c) fixed-landmark spread (MPE simple_spread, 2 agents, 3 landmarks)
# =========================================================================================

LANDMARK_ANGLES_DEG = (90.0, 210.0, 330.0)
LANDMARK_RADIUS = 0.6
LANDMARK_VISIT_RADIUS = 0.2
LANDMARKS = np.array([[LANDMARK_RADIUS * math.cos(math.radians(d)),
                       LANDMARK_RADIUS * math.sin(math.radians(d))]
                      for d in LANDMARK_ANGLES_DEG], np.float32)


@functools.cache
def _fixed_landmark_spread_class():
    """JaxMARL's SimpleSpreadMPE whose reset puts the landmarks at `LANDMARKS` (built on first
    use: jaxmarl is imported lazily). The adapter's auto-reset calls this reset too."""
    from jaxmarl.environments.mpe import SimpleSpreadMPE

    class FixedLandmarkSpreadMPE(SimpleSpreadMPE):
        def reset(self, key):
            _, state = super().reset(key)   # agents as JaxMARL draws them; landmarks replaced
            p_pos = state.p_pos.at[self.num_agents:].set(jnp.asarray(LANDMARKS))
            state = state.replace(p_pos=p_pos)
            return self.get_obs(state), state

    return FixedLandmarkSpreadMPE


def make_fixed_landmark_spread(*, action_type: str = "continuous", max_steps: int = 25,
                               local_ratio: float = 0.5):
    """§6.4c: simple_spread (2 agents, 3 landmarks) with landmarks fixed at `LANDMARKS`."""
    from jaxdiff.envs.jaxmarl import (
        ACTION_TYPES,
        MPEAdapter,
        _noise_free,
        _space_size,
        check_choice,
        check_positive_int,
        import_jaxmarl,
    )
    check_choice("action_type", action_type, ACTION_TYPES)
    check_positive_int("max_steps", max_steps)
    if isinstance(local_ratio, bool) or not isinstance(local_ratio, int | float) or not (
            0.0 <= local_ratio <= 1.0):
        raise ValueError(f"invalid env option local_ratio={local_ratio!r}; allowed: a number in "
                         "[0, 1] (weight of the per-agent collision term)")
    import_jaxmarl()
    from jaxmarl.environments.mpe.default_params import CONTINUOUS_ACT, DISCRETE_ACT

    cls = _fixed_landmark_spread_class()
    kw = dict(num_agents=2, num_landmarks=len(LANDMARKS), local_ratio=float(local_ratio),
              action_type=DISCRETE_ACT if action_type == "discrete" else CONTINUOUS_ACT,
              max_steps=max_steps - 1)  # JaxMARL runs max_steps + 1 steps (see jaxdiff.envs.jaxmarl)
    env = cls(**kw)
    if not (np.any(np.asarray(env.u_noise)) or np.any(np.asarray(env.c_noise))):
        env = _noise_free(cls)(**kw)   # same values, without the zero-scale noise draws
    obs_dim = max(_space_size(env.observation_space(a)) for a in env.agents)
    return MPEAdapter(env, name="haqo_landmarks", discrete=action_type == "discrete",
                      max_steps=max_steps, state_dim=len(env.agents) * obs_dim,
                      shared_reward=False, has_win=False)


def landmark_shares(agent_positions) -> jax.Array:
    """Per landmark, the share of steps on which some agent is within 0.2 of it:
    agent_positions [T, n, 2] -> f32[3]."""
    p = _check_positions(agent_positions, "landmark_shares")
    near = _sq_dist(p, jnp.asarray(LANDMARKS)) <= LANDMARK_VISIT_RADIUS ** 2   # [T, n, 3]
    return jnp.mean(jnp.any(near, axis=1).astype(jnp.float32), axis=0)


# =========================================================================================
# positions from states, registration
# =========================================================================================


def agent_positions(state) -> jax.Array:
    """f32[..., n_agents, 2]: the agents' positions in a `haqo_occupation` or `haqo_landmarks`
    state (wrapped by `make` or not; batched states keep their leading axes); stack them over a
    rollout for the metrics above."""
    while not (isinstance(state, OccupationState) or hasattr(state, "p_pos")):
        if not hasattr(state, "env_state"):
            raise ValueError("agent_positions takes a state of haqo_occupation or "
                             f"haqo_landmarks (wrapped or not); got {type(state).__name__}")
        state = state.env_state
    if isinstance(state, OccupationState):
        return state.p
    return state.p_pos[..., : state.c.shape[-2], :]   # MPE: agents first, then landmarks


def haqo_bandit(*, n_agents: int = 2) -> MultiModalBandit:
    """One-step 4-mode bandit on [-1, 1]^2 per agent (spec-haqo §6.4a)."""
    return MultiModalBandit(n_agents=n_agents)


def haqo_occupation(*, max_steps: int = 100) -> OccupationGame:
    """Two agents harvesting four decaying target resources (spec-haqo §6.4b)."""
    return OccupationGame(max_steps=max_steps)


def haqo_landmarks(*, action_type: str = "continuous", max_steps: int = 25,
                   local_ratio: float = 0.5):
    """MPE simple_spread, 2 agents, 3 landmarks fixed on a circle (spec-haqo §6.4c)."""
    return make_fixed_landmark_spread(action_type=action_type, max_steps=max_steps,
                                      local_ratio=local_ratio)


register("haqo_bandit", haqo_bandit)
register("haqo_occupation", haqo_occupation)
register("haqo_landmarks", haqo_landmarks)
