"""The toy MDPs of DDPL §3.2 (paper 002, spec-ddpl §2.1/§2.3): M_sa and its n-agent game M_ma.

Both are built so that a Gaussian policy fails to explore: the immediate reward at the start
state has a quadratic well at 0 and two narrow bumps at ±β, and only actions near −β open,
with a small probability, a large delayed reward. A unimodal policy that follows the well
shrinks around 0 and (almost) never finds it; an expressive policy can put mass on the bumps.

M_sa (`ddpl_toy_sa`, one agent, γ = 0.1): states s0 (start), s1 (goal), s2 (absorbing).

    r(s0, a) = r_start(a) = −ν a² + c0 exp(−α (a + β)²) + c0 exp(−α (a − β)²)
    r(s1, ·) = c1,  r(s2, ·) = 0
    P(s1 | s0, a) = p_start(a) = c_p exp(−α (a + β)²) 1(|a + β| ≤ 1/4),  P(s2 | s0, a) = 1 − p_start
    P(s2 | s1, ·) = P(s2 | s2, ·) = 1

M_ma (`ddpl_toy_ma`, n agents): states −1_n (start) and {0, 1}^n. From −1_n coordinate i becomes
1 with probability p_start(a_i), independently, else 0; every other state moves to the zero
vector. r(−1_n, a) = Σ_i r_start(a_i); r(s, a) = c1 Σ_i s_i for s ∉ {±1_n}; r(1_n, a) =
c2 + c3 exp(−aᵀa). The goal 1_n is reached only when every agent succeeds at once.

Episodes: the absorbing zero-reward state (s2, resp. the zero vector) has value 0 under every
policy, so entering it *terminates* the episode (done, `terminated`), and the env auto-resets to
the start state like the other adapters. Hence an episode lasts 1 step (no success) or 2 steps
(success, then the goal-reward step); `max_steps` = 2 is never a truncation. `won` is 1 on the
step that ends an episode which visited the goal (s1, resp. 1_n), so `has_win` success rates
come for free. Rewards are shared (every agent gets the team reward).

Observations are the global state for every agent (the paper's policies condition on s):
M_sa one-hot [s0, s1, s2]; M_ma the state vector itself (entries −1, 0, 1). Actions are one
real number per agent; the paper's action space is ℝ, the env evaluates r_start / p_start at the
action as given (no clipping) and announces the box [−action_bound, action_bound] (default 1,
which holds ±β and four standard deviations of the paper's start policy N(0, 0.1) around 0) for
samplers that need bounds.

γ for M_ma is not restated in the paper; we use 0.1 as for M_sa (spec §8.15). `q_sa`, `j_ma` give
the analytic values used by the tests: Q(s0, a) = r_start(a) + γ c1 p_start(a) (10.2 at −β),
and J(−β, −β) = 20.4 for two agents.

    env = jaxdiff.envs.make("ddpl_toy_ma", n_agents=2)
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from jaxdiff.envs.base import Env, EnvSpec
from jaxdiff.envs.registry import register


@dataclasses.dataclass(frozen=True)
class ToyParams:
    """The constants of paper §3.2 (all [PAPER] except `gamma` for M_ma, spec §8.15)."""

    nu: float = 10.0
    alpha: float = 250.0
    beta: float = 0.5
    c0: float = 2.7
    c1: float = 20000.0
    c2: float = 30000.0
    c3: float = 10000.0
    cp: float = 0.005
    gamma: float = 0.1
    window: float = 0.25  # p_start is zero outside |a + β| ≤ 1/4


PARAMS = ToyParams()


def r_start(a, p: ToyParams = PARAMS):
    """Immediate reward at the start state: the well −ν a² plus two bumps at ±β."""
    return (-p.nu * a ** 2 + p.c0 * jnp.exp(-p.alpha * (a + p.beta) ** 2)
            + p.c0 * jnp.exp(-p.alpha * (a - p.beta) ** 2))


def p_start(a, p: ToyParams = PARAMS):
    """Probability of a success (s1, resp. coordinate 1) from the start state under action a."""
    near = jnp.abs(a + p.beta) <= p.window
    return jnp.where(near, p.cp * jnp.exp(-p.alpha * (a + p.beta) ** 2), 0.0)


def q_sa(a, p: ToyParams = PARAMS):
    """Exact Q(s0, a) of M_sa: V(s1) = c1 (one goal step, then s2), V(s2) = 0, policy-free."""
    return r_start(a, p) + p.gamma * p.c1 * p_start(a, p)


def j_ma(actions, goal_action_sq=0.0, p: ToyParams = PARAMS):
    """Exact discounted return of M_ma when the agents play `actions` [n] at −1_n and a joint
    action with squared norm `goal_action_sq` at 1_n. With q_i = p_start(a_i): the goal is
    reached with probability Π q_i, else the reward is c1 × (number of successes)."""
    q = p_start(jnp.asarray(actions, jnp.float32), p)
    n = q.shape[-1]
    all_ = jnp.prod(q, axis=-1)
    second = (p.c1 * (jnp.sum(q, axis=-1) - n * all_)
              + all_ * (p.c2 + p.c3 * jnp.exp(-goal_action_sq)))
    return jnp.sum(r_start(jnp.asarray(actions, jnp.float32), p), axis=-1) + p.gamma * second


@struct.dataclass
class ToyState:
    s: jnp.ndarray        # M_sa: i32[] in {0, 1, 2}; M_ma: f32[n] with entries in {−1, 0, 1}
    t: jnp.ndarray        # i32[] steps taken in this episode
    visited: jnp.ndarray  # bool[] the episode has visited the goal


def _check_bound(action_bound):
    if isinstance(action_bound, bool) or not isinstance(action_bound, (int, float)) \
            or not action_bound > 0:
        raise ValueError(f"invalid env option action_bound={action_bound!r}; allowed: a "
                         "positive number (the announced action box is [-bound, bound])")
    return float(action_bound)


def _spec(name, n, obs_dim, bound):
    return EnvSpec(
        name=name, n_agents=n, obs_dim=obs_dim, obs_sizes=(obs_dim,) * n, discrete=False,
        act_dim=1, act_sizes=(1,) * n, action_low=-bound, action_high=bound, state_dim=obs_dim,
        max_steps=2, shared_reward=True, has_win=True)


def _check_actions(actions, n):
    if actions.ndim != 2 or actions.shape != (n, 1):
        raise ValueError(f"actions must be f32[n_agents, 1] = [{n}, 1] (one real action per "
                         f"agent); got shape {tuple(actions.shape)}")


class ToySingleAgent(Env):
    """M_sa (see the module docstring)."""

    def __init__(self, action_bound: float = 1.0, params: ToyParams = PARAMS):
        self.params = params
        self.spec = _spec("ddpl_toy_sa", 1, 3, _check_bound(action_bound))

    def _start(self):
        return ToyState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
                        jnp.zeros((), jnp.bool_))

    def _obs(self, state):
        return jax.nn.one_hot(state.s, 3, dtype=jnp.float32)[None]

    def reset(self, key):
        state = self._start()
        return self._obs(state), state

    def step(self, key, state, actions):
        _check_actions(actions, 1)
        p = self.params
        a = actions[0, 0].astype(jnp.float32)
        at_start, at_goal = state.s == 0, state.s == 1
        success = jax.random.uniform(key) < p_start(a, p)
        reward = jnp.where(at_start, r_start(a, p), jnp.where(at_goal, p.c1, 0.0))
        s_next = jnp.where(at_start & success, 1, 2).astype(jnp.int32)
        done = s_next == 2
        visited = state.visited | (s_next == 1)
        stepped = ToyState(s_next, state.t + 1, visited)
        new_state = jax.tree.map(lambda r, c: jnp.where(done, r, c), self._start(), stepped)
        info = {"won": jnp.where(done, visited, False).astype(jnp.float32), "terminated": done}
        return (self._obs(new_state), new_state, reward.astype(jnp.float32)[None],
                done[None], info)

    def global_state(self, state):
        return self._obs(state)[0]

    def action_mask(self, state):
        return jnp.ones((1, 1), jnp.bool_)


class ToyMultiAgent(Env):
    """M_ma with `n_agents` agents (see the module docstring)."""

    def __init__(self, n_agents: int = 2, action_bound: float = 1.0,
                 params: ToyParams = PARAMS):
        if isinstance(n_agents, bool) or not isinstance(n_agents, int) or n_agents < 1:
            raise ValueError(f"invalid env option n_agents={n_agents!r}; allowed: a positive "
                             "integer")
        self.params = params
        self.spec = _spec("ddpl_toy_ma", n_agents, n_agents, _check_bound(action_bound))

    def _start(self):
        n = self.spec.n_agents
        return ToyState(-jnp.ones((n,), jnp.float32), jnp.zeros((), jnp.int32),
                        jnp.zeros((), jnp.bool_))

    def _obs(self, state):
        return jnp.broadcast_to(state.s, (self.spec.n_agents, self.spec.n_agents))

    def reset(self, key):
        state = self._start()
        return self._obs(state), state

    def step(self, key, state, actions):
        n = self.spec.n_agents
        _check_actions(actions, n)
        p = self.params
        a = actions[:, 0].astype(jnp.float32)
        at_start = jnp.all(state.s == -1.0)
        at_goal = jnp.all(state.s == 1.0)
        reward = jnp.where(
            at_start, jnp.sum(r_start(a, p)),
            jnp.where(at_goal, p.c2 + p.c3 * jnp.exp(-jnp.sum(a * a)), p.c1 * jnp.sum(state.s)))
        success = jax.random.uniform(key, (n,)) < p_start(a, p)
        s_next = jnp.where(at_start, success.astype(jnp.float32), jnp.zeros((n,), jnp.float32))
        done = jnp.all(s_next == 0.0)
        visited = state.visited | jnp.all(s_next == 1.0)
        stepped = ToyState(s_next, state.t + 1, visited)
        new_state = jax.tree.map(lambda r, c: jnp.where(done, r, c), self._start(), stepped)
        info = {"won": jnp.where(done, visited, False).astype(jnp.float32), "terminated": done}
        return (self._obs(new_state), new_state,
                jnp.full((n,), reward, jnp.float32), jnp.full((n,), done), info)

    def global_state(self, state):
        return state.s

    def action_mask(self, state):
        return jnp.ones((self.spec.n_agents, 1), jnp.bool_)


def ddpl_toy_sa(*, action_bound: float = 1.0) -> ToySingleAgent:
    return ToySingleAgent(action_bound=action_bound)


def ddpl_toy_ma(*, n_agents: int = 2, action_bound: float = 1.0) -> ToyMultiAgent:
    return ToyMultiAgent(n_agents=n_agents, action_bound=action_bound)


register("ddpl_toy_sa", ddpl_toy_sa)
register("ddpl_toy_ma", ddpl_toy_ma)
