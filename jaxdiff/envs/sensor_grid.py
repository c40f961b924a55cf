"""Sensor networks of spec-state-diffusion §5.1/5.2: (global state, local observation) generators.

Sensors sit on the nodes of a square lattice and the *areas* are the lattice edges; each sensor
scans the edges incident to it, so every area is covered by exactly its two endpoint sensors.
Targets occupy distinct areas (drawn uniformly without replacement, i.i.d. per sample: the
history length is 1, so no target dynamics are needed). The global state is the k-hot vector
s in {0,1}^{n_areas} of occupied areas; agent i observes one bit per scanned area ("slot"):
1 if a target is there and the sensor detects it. Detection can fail with a per-area
probability, independently per sensor (the non-collectively-observable variant).

`SensorGrid` is a data generator: `sample(key)` returns (s, obs), `encode(obs)` turns
observations into the conditioning vectors tau_i of the shared denoiser, everything is pure
JAX and vmaps over keys. `SensorGridEnv` wraps one as a registered reset/step env
(`jaxdiff.envs.make("sensor_2x2_co" | "sensor_2x2_nonco" | "sensor_5x5")`, see its docstring). Because observations are conditionally independent given s, the
posteriors p(s | o_i) and p(s | o_1..o_n) are enumerated exactly over all C(n_areas, k) states.

Geometry [CHOICE, spec §5.1/5.2 and §7.6]:

* ``sensor_2x2(collectively_observable=True)``: sensors A1 (top-left), A2 (top-right), A3
  (bottom-left), A4 (bottom-right) at the corners of a square; Area 1 = top edge (A1-A2),
  Area 2 = left (A1-A3), Area 3 = bottom (A3-A4), Area 4 = right (A2-A4). Coverage A1 {1,2},
  A2 {1,4}, A3 {2,3}, A4 {3,4}; each agent's two observation bits are its areas in ascending
  order. One target, uniform over the 4 areas. This is the only layout that fits every
  statement of the paper: with the target in Area 1, A1 and A2 see it, A3 cannot tell Area 1
  from Area 4 and A4 cannot tell Area 1 from Area 2. Non-CO variant: when the target is in
  Area 1 or 2 each covering sensor misses it with probability 0.5, so p(s | tau_1 = 00) =
  (1/6, 1/6, 1/3, 1/3) (the paper's 0.33 label) and all-00 joint histories leave Areas 1 and 2
  equally likely.
* ``sensor_5x5(n_targets=2)``: sensors on a 5x5 lattice (agent index r*5 + c, r = row from the
  top, c = column), areas = its 40 edges: horizontal edge (r, c)-(r, c+1) is area r*4 + c
  (0..19), vertical edge (r, c)-(r+1, c) is area 20 + r*5 + c (20..39). Each sensor has four
  slots [up, down, left, right]; a slot without an edge (lattice border) always reads 0. The
  paper's "each sensor scans 4 nearby areas" is exact for interior sensors only; a torus would
  give every sensor 4 edges but 50 areas (spec §7.6). Noiseless, hence collectively observable.

Encodings of tau_i (H = 1, no actions: observations do not depend on actions):
* ``"raw"``: [onehot_n(i), o_i] (2x2: 6 dims; 5x5: 29 dims), the paper-faithful input;
* ``"area"``: [onehot_n(i), v_i] with v_i[a] = +1 if agent i scans area a and sees a target,
  -1 if it scans a and sees nothing, 0 if it does not scan a (5x5: 65 dims). The raw 5x5
  encoding is hard to learn at CPU scale (spec §1.2), the area-indexed one is not.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdiff.envs.base import Env, EnvSpec
from jaxdiff.envs.registry import register

ENCODINGS = ("raw", "area")
OBS_ENCODINGS = ("reading", *ENCODINGS)


@dataclass(frozen=True, eq=False)
class SensorGrid:
    """A sensor network. All arrays are host numpy constants (closed over under jit).

    coverage: int [n_agents, n_slots], area index scanned by each slot, -1 for an empty slot.
    p_detect: float [n_areas], probability that a scanning sensor sees a target in that area.
    """

    name: str
    coverage: np.ndarray
    n_areas: int
    n_targets: int
    p_detect: np.ndarray

    def __post_init__(self):
        cov = np.asarray(self.coverage, np.int32)
        object.__setattr__(self, "coverage", cov)
        object.__setattr__(self, "p_detect", np.asarray(self.p_detect, np.float32))
        if cov.max() >= self.n_areas or cov.min() < -1:
            raise ValueError(f"coverage indices must lie in [-1, {self.n_areas - 1}]")
        if not 1 <= self.n_targets <= self.n_areas:
            raise ValueError(f"n_targets={self.n_targets} must be in [1, {self.n_areas}]")
        # Compiled batch helpers (eager vmaps dispatch op by op and are slow on large batches).
        object.__setattr__(self, "_sample_batch", jax.jit(jax.vmap(self._sample_from_uniform)))
        object.__setattr__(
            self, "_encode_batch",
            jax.jit(jax.vmap(lambda o, enc: self.encode(o, enc), in_axes=(0, None)), static_argnums=1),
        )

    # ----------------------------------------------------------------------- sizes

    @property
    def n_agents(self) -> int:
        return self.coverage.shape[0]

    @property
    def n_slots(self) -> int:
        return self.coverage.shape[1]

    @property
    def state_dim(self) -> int:
        return self.n_areas

    @property
    def collectively_observable(self) -> bool:
        """Noiseless observations of every area by some sensor identify s."""
        covered = np.zeros(self.n_areas, bool)
        covered[self.coverage[self.coverage >= 0]] = True
        return bool(np.all(self.p_detect == 1.0) and covered.all())

    def tau_dim(self, encoding: str = "raw") -> int:
        _check_encoding(encoding)
        return self.n_agents + (self.n_slots if encoding == "raw" else self.n_areas)

    @property
    def coverage_matrix(self) -> np.ndarray:
        """bool [n_agents, n_areas]: agent i scans area a."""
        m = np.zeros((self.n_agents, self.n_areas), bool)
        for i, row in enumerate(self.coverage):
            m[i, row[row >= 0]] = True
        return m

    def states(self) -> np.ndarray:
        """Every possible state (k-hot over the areas), float32 [C(n_areas, k), n_areas], in
        lexicographic order of the occupied area tuples."""
        combos = list(itertools.combinations(range(self.n_areas), self.n_targets))
        out = np.zeros((len(combos), self.n_areas), np.float32)
        for row, areas in enumerate(combos):
            out[row, list(areas)] = 1.0
        return out

    # ----------------------------------------------------------------------- sampling

    def sample_state(self, key: jax.Array) -> jax.Array:
        """k distinct target areas, uniformly: float32 [n_areas] (k-hot)."""
        return self._state_from_uniform(jax.random.uniform(key, (self.n_areas,)))

    def observe(self, key: jax.Array, s: jax.Array) -> jax.Array:
        """o_i[slot] = s[area] * detected, 0 for empty slots. s: [n_areas] -> [n_agents, n_slots]."""
        return self._observe_from_uniform(s, jax.random.uniform(key, self.coverage.shape))

    def sample(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One joint sample: (s [n_areas], obs [n_agents, n_slots])."""
        return self._sample_from_uniform(jax.random.uniform(key, (self._num_uniforms,)))

    def sample_dataset(self, key: jax.Array, n: int) -> dict:
        """n joint samples: {"s": [n, n_areas], "obs": [n, n_agents, n_slots]}."""
        s, obs = self._sample_batch(jax.random.uniform(key, (n, self._num_uniforms)))
        return {"s": s, "obs": obs}

    # One uniform draw per sample drives everything (few random ops: they dominate compile time).
    @property
    def _num_uniforms(self) -> int:
        return self.n_areas + self.coverage.size

    def _state_from_uniform(self, u: jax.Array) -> jax.Array:
        # The k largest of i.i.d. uniforms: a uniformly random k-subset.
        areas = jax.lax.top_k(u, self.n_targets)[1]
        return jnp.zeros((self.n_areas,), jnp.float32).at[areas].set(1.0)

    def _observe_from_uniform(self, s: jax.Array, u: jax.Array) -> jax.Array:
        cov = jnp.asarray(self.coverage)
        present = jnp.where(cov >= 0, s[jnp.maximum(cov, 0)], 0.0)
        p = jnp.asarray(self.p_detect)[jnp.maximum(cov, 0)]
        return present * (u < p).astype(jnp.float32)

    def _sample_from_uniform(self, u: jax.Array):
        s = self._state_from_uniform(u[: self.n_areas])
        return s, self._observe_from_uniform(s, u[self.n_areas :].reshape(self.coverage.shape))

    # ----------------------------------------------------------------------- encodings

    def encode(self, obs: jax.Array, encoding: str = "raw") -> jax.Array:
        """tau for every agent. obs: [n_agents, n_slots] -> [n_agents, tau_dim]."""
        return jax.vmap(lambda i, o: self.encode_agent(i, o, encoding))(
            jnp.arange(self.n_agents), obs
        )

    def encode_agent(self, agent: jax.Array, obs_i: jax.Array, encoding: str = "raw") -> jax.Array:
        """tau_i of one agent (agent may be traced). obs_i: [n_slots] -> [tau_dim]."""
        _check_encoding(encoding)
        onehot = jax.nn.one_hot(agent, self.n_agents, dtype=jnp.float32)
        if encoding == "raw":
            return jnp.concatenate([onehot, obs_i.astype(jnp.float32)])
        cov = jnp.asarray(self.coverage)[agent]
        scanned = cov >= 0
        view = jnp.zeros((self.n_areas,), jnp.float32)
        # Empty slots write to a scratch index past the end, dropped by mode="drop".
        idx = jnp.where(scanned, cov, self.n_areas)
        view = view.at[idx].set(2.0 * obs_i.astype(jnp.float32) - 1.0, mode="drop")
        return jnp.concatenate([onehot, view])

    def rows(self, data: dict, encoding: str = "raw") -> dict:
        """Per-agent training rows (tau_i, s): {"tau": [N*n, tau_dim], "s": [N*n, n_areas],
        "agent": [N*n]}, sample-major (rows k*n .. k*n+n-1 belong to joint sample k)."""
        _check_encoding(encoding)
        tau = self._encode_batch(data["obs"], encoding)
        n, m = tau.shape[:2]
        return {
            "tau": tau.reshape(n * m, -1),
            "s": jnp.repeat(data["s"], m, axis=0),
            "agent": jnp.tile(jnp.arange(m, dtype=jnp.int32), n),
        }

    # ----------------------------------------------------------------------- exact posteriors

    def log_likelihood(self, agent, obs_i: jax.Array, states: jax.Array | None = None) -> jax.Array:
        """log p(o_i | s) for every state. obs_i: [n_slots] -> [n_states] (-inf: impossible)."""
        states = jnp.asarray(self.states() if states is None else states)
        cov = jnp.asarray(self.coverage)[agent]
        p = jnp.asarray(self.p_detect)[jnp.maximum(cov, 0)]
        present = jnp.where(cov >= 0, states[:, jnp.maximum(cov, 0)], 0.0)  # [S, slots]
        o = obs_i.astype(jnp.float32)
        # Target present: Bernoulli(p) detection; absent (or empty slot): o must be 0.
        lik = jnp.where(present > 0, jnp.where(o > 0, p, 1.0 - p), jnp.where(o > 0, 0.0, 1.0))
        return jnp.sum(jnp.log(lik), axis=-1)

    def posterior(self, agent, obs_i: jax.Array, states: jax.Array | None = None) -> jax.Array:
        """p(s | tau_i) under the uniform prior over states: [n_states]."""
        return jax.nn.softmax(self.log_likelihood(agent, obs_i, states))

    def joint_posterior(self, obs: jax.Array, states: jax.Array | None = None) -> jax.Array:
        """p(s | tau_1..tau_n): observations are independent given s. obs: [n_agents, n_slots]."""
        ll = jax.vmap(lambda i, o: self.log_likelihood(i, o, states))(
            jnp.arange(self.n_agents), obs
        )
        return jax.nn.softmax(jnp.sum(ll, axis=0))


def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding={encoding!r}; expected one of {ENCODINGS}")


def lattice_coverage(rows: int, cols: int) -> tuple[np.ndarray, int]:
    """Edge-lattice coverage: sensor r*cols + c scans its [up, down, left, right] edges.

    Horizontal edge (r, c)-(r, c+1) is area r*(cols-1) + c; vertical edge (r, c)-(r+1, c) is
    area rows*(cols-1) + r*cols + c. Returns (coverage int [rows*cols, 4], n_areas).
    """
    n_h = rows * (cols - 1)

    def h(r, c):
        return r * (cols - 1) + c

    def v(r, c):
        return n_h + r * cols + c

    cov = -np.ones((rows * cols, 4), np.int32)
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            if r > 0:
                cov[i, 0] = v(r - 1, c)
            if r < rows - 1:
                cov[i, 1] = v(r, c)
            if c > 0:
                cov[i, 2] = h(r, c - 1)
            if c < cols - 1:
                cov[i, 3] = h(r, c)
    return cov, n_h + (rows - 1) * cols


def sensor_2x2(collectively_observable: bool = True, miss_prob: float = 0.5) -> SensorGrid:
    """The 2x2 network of Fig. 1: 4 corner sensors, 4 edge areas, one target (see module doc).

    Non-CO: a target in Area 1 or 2 (indices 0, 1) is missed with probability `miss_prob` by
    each covering sensor independently.
    """
    coverage = np.array([[0, 1], [0, 3], [1, 2], [2, 3]], np.int32)  # areas ascending per agent
    p_detect = np.ones(4, np.float32)
    if not collectively_observable:
        p_detect[:2] = 1.0 - miss_prob
    name = "sensor_2x2" if collectively_observable else "sensor_2x2_nonco"
    return SensorGrid(name, coverage, n_areas=4, n_targets=1, p_detect=p_detect)


def sensor_5x5(n_targets: int = 2, size: int = 5) -> SensorGrid:
    """The size x size edge-lattice network of Figs. 2-4 (default 5x5, 40 areas, 2 targets)."""
    coverage, n_areas = lattice_coverage(size, size)
    return SensorGrid(
        f"sensor_{size}x{size}", coverage, n_areas=n_areas, n_targets=n_targets,
        p_detect=np.ones(n_areas, np.float32),
    )


# --------------------------------------------------------------------------- reset/step envs


@struct.dataclass
class SensorEnvState:
    s: jax.Array  # f32[n_areas]: the k-hot target state, fixed for the episode
    readings: jax.Array  # f32[n_agents, n_slots]: this step's observations o_i
    t: jax.Array  # i32[]: steps taken in the episode


class SensorGridEnv(Env):
    """A `SensorGrid` as an env of the jaxdiff contract (`jaxdiff.envs.base`).

    Agents are the sensors. An episode draws its targets once at reset (`SensorGrid.sample`,
    the generator's own draw, so reset(key) gives exactly `grid.sample(key)`) and keeps them for
    `max_steps` steps; every step re-observes them with fresh detection draws
    (`grid.observe(key_obs, s)` with `key_obs = split(key)[0]`), which only changes anything in
    the non-CO network. The episode then ends on the time limit (done for all agents,
    `terminated` False) and the env auto-resets with `split(key)[1]`. max_steps = 1 gives the
    paper's setting (H = 1, targets i.i.d. per sample); longer episodes give repeated looks at
    one target, for history encoders with H > 1. [CHOICE] The paper's targets do not move;
    target dynamics are not modelled.

    Observation (obs_encoding): "reading" = o_i [n_slots] (what the sensor sees; the default,
    as agent ids and action history are added by history encoders); "raw" = [onehot_n(i), o_i]
    and "area" = [onehot_n(i), v_i], the conditioning vectors tau_i of `SensorGrid.encode`.
    Global state: s, the k-hot target state the state-diffusion code reconstructs.
    Actions [CHOICE]: the paper's sensors are passive (observations do not depend on actions,
    and the scanning/tracking reward plays no part in state estimation), so the action space is
    one discrete no-op per agent (act_dim 1, always available) and the reward is 0.
    """

    def __init__(self, grid: SensorGrid, name: str, max_steps: int, obs_encoding: str = "reading"):
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"invalid env option max_steps={max_steps!r}; allowed: a positive integer")
        if obs_encoding not in OBS_ENCODINGS:
            raise ValueError(
                f"invalid env option obs_encoding={obs_encoding!r}; allowed: {', '.join(OBS_ENCODINGS)}"
            )
        self.grid = grid
        self.obs_encoding = obs_encoding
        n = grid.n_agents
        obs_dim = grid.n_slots if obs_encoding == "reading" else grid.tau_dim(obs_encoding)
        self.spec = EnvSpec(
            name=name, n_agents=n, obs_dim=obs_dim, obs_sizes=(obs_dim,) * n, discrete=True,
            act_dim=1, act_sizes=(1,) * n, action_low=0.0, action_high=0.0,
            state_dim=grid.state_dim, max_steps=max_steps, shared_reward=True, has_win=False,
        )

    def observation(self, readings: jax.Array) -> jax.Array:
        """readings [n_agents, n_slots] -> obs [n_agents, obs_dim] in this env's encoding."""
        if self.obs_encoding == "reading":
            return readings
        return self.grid.encode(readings, self.obs_encoding)

    def reset(self, key):
        s, readings = self.grid.sample(key)
        state = SensorEnvState(s=s, readings=readings, t=jnp.zeros((), jnp.int32))
        return self.observation(readings), state

    def step(self, key, state: SensorEnvState, actions):
        # actions: int32[n_agents], all 0 (the no-op); they do not affect anything.
        key_obs, key_reset = jax.random.split(key)
        t = state.t + 1
        ended = t >= self.spec.max_steps
        cont = SensorEnvState(s=state.s, readings=self.grid.observe(key_obs, state.s), t=t)
        _, fresh = self.reset(key_reset)
        new_state = jax.tree.map(lambda a, b: jnp.where(ended, a, b), fresh, cont)
        n = self.spec.n_agents
        info = {"won": jnp.zeros((), jnp.float32), "terminated": jnp.zeros((), jnp.bool_)}
        return (self.observation(new_state.readings), new_state, jnp.zeros((n,), jnp.float32),
                jnp.full((n,), ended), info)

    def global_state(self, state: SensorEnvState):
        return state.s

    def action_mask(self, state: SensorEnvState):
        return jnp.ones((self.spec.n_agents, 1), jnp.bool_)


def _check_probability(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"invalid env option {key}={value!r}; allowed: a number in [0, 1]")


def sensor_2x2_co_env(*, max_steps: int = 5, obs_encoding: str = "reading") -> SensorGridEnv:
    """The 2x2 network of Fig. 1, collectively observable (noiseless sensors)."""
    return SensorGridEnv(sensor_2x2(True), "sensor_2x2_co", max_steps, obs_encoding)


def sensor_2x2_nonco_env(
    *, max_steps: int = 5, miss_prob: float = 0.5, obs_encoding: str = "reading"
) -> SensorGridEnv:
    """The 2x2 network, non-CO: a target in Area 1 or 2 is missed with probability miss_prob."""
    _check_probability("miss_prob", miss_prob)
    return SensorGridEnv(sensor_2x2(False, float(miss_prob)), "sensor_2x2_nonco", max_steps, obs_encoding)


def sensor_5x5_env(
    *, max_steps: int = 5, n_targets: int = 2, size: int = 5, obs_encoding: str = "reading"
) -> SensorGridEnv:
    """The size x size edge-lattice network of Figs. 2-4 (default 5x5, 40 areas, 2 targets)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"invalid env option size={size!r}; allowed: an integer >= 2")
    n_areas = 2 * size * (size - 1)
    if isinstance(n_targets, bool) or not isinstance(n_targets, int) or not 1 <= n_targets <= n_areas:
        raise ValueError(f"invalid env option n_targets={n_targets!r}; allowed: an integer in [1, {n_areas}]")
    name = "sensor_5x5" if size == 5 else f"sensor_{size}x{size}"
    return SensorGridEnv(sensor_5x5(n_targets, size), name, max_steps, obs_encoding)


register("sensor_2x2_co", sensor_2x2_co_env)
register("sensor_2x2", sensor_2x2_co_env)  # the name the design's public surface lists
register("sensor_2x2_nonco", sensor_2x2_nonco_env)
register("sensor_5x5", sensor_5x5_env)
