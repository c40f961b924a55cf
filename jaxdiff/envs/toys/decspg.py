"""DecSPG (Algorithm 1 of paper 002) on the DDPL toy MDPs, exactly: the "all policies" update on
an action grid, the reverse-KL Gaussian projection, the Q̂ estimator of spec-ddpl §2.4, and the
numerics of Theorem 3.1 / Proposition 3.2 (spec F20, F21).

Everything here is about the start state, the only state where a policy matters before the
goal is found (the goal-state action is fixed to 0, its optimum, as spec §2.4 allows). Agent i's
policy π_i(·|s0) is either

* ``"grid"`` — any density, held as log-probabilities on a uniform grid (default [−1.5, 1.5],
  6001 points, Δ = 5e−4 against bumps of std 0.045). The DecSPG update is then exact:
  log π^k = log π^{k−1} + η/(1−γ) Q̂_k, renormalised. Sampling: inverse CDF on the grid plus a
  uniform jitter inside the cell.
* ``"gaussian"`` — N(μ, σ²). Line 5 of Algorithm 1 is the *reverse* KL projection
  argmin KL(N(μ, σ²) ‖ π̃) with π̃ ∝ π^{k−1} exp(η/(1−γ) Q̂) — the paper's Appendix A analyses
  exactly this; we minimise it by damped Newton steps in (μ, log σ) warm-started at the
  previous policy, i.e. the stationary point that gradient descent from π^{k−1} reaches. The
  objective uses the closed form of E_N[r_start] (App. A, Step 1) and a grid integral for the
  learned success term.

Q̂ (the paper does not say how Q̂ is estimated; spec §2.4 [CHOICE]):

* ``"kernel"`` — Q̂_i(a) = r_start(a) + γ c_i p̂_i(a): the immediate reward is known, p̂_i is a
  kernel-smoothed success frequency over every sample so far (Gaussian kernel, bandwidth h,
  p̂ = Σ_j succ_j K(a − a_j) / (Σ_j K(a − a_j) + 1), ≡ 0 before the first success). Pooling all
  epochs is unbiased because Q(s0, ·) does not depend on the policy. c_i = c1 for M_sa; for
  M_ma the averaged Q̄_i in a_i has the slope c1 + (c2 + c3 − n c1) P_{−i}, P_{−i} the product
  of the other agents' success probabilities (estimated with their p̂_j); it is exactly c1 for
  n = 2 because c2 + c3 = 2 c1.
* ``"rstart"`` — Q̂ = r_start, the idealised estimator of Theorem 3.1 (accurate for the reward
  without the goal term), for the theorem's Monte-Carlo check.

Interaction goes through the registered envs (`ddpl_toy_sa` for one agent, `ddpl_toy_ma`
otherwise): a batch of B one-step episodes from the start state per epoch; an agent's success
is its coordinate of the next state being 1. A whole run is one `lax.scan` over epochs; seeds
are a `vmap` over keys (`run_seeds`).

Theorem 3.1 numerics (float64 numpy, host side): `precision_increment` (Eq. 10), its minimum
0.1283 and the max of its bump term 3.585, the exact stationary recursion of Eq. 9
(`exact_precisions`), the exact per-sample success probability p_k of Eq. 12
(`success_prob`), and the never-succeed bounds of Eq. 15 (`success_bound`). Our evaluation of
the paper's worst-case precision path 1/σ_k² = 10 + 0.128 k gives a success bound of 0.4466,
which is ≤ 0.45 as the paper states (spec §2.2/§8.16 quotes 0.463 for it and 0.429 for the
exact recursion; we get 0.4466 and 0.4114 — the paper wins, and two independent quadratures in
the tests agree with us).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdiff.envs.toys import ddpl_toy as toy

POLICIES = ("grid", "gaussian")
QHATS = ("kernel", "rstart")


@dataclasses.dataclass(frozen=True)
class DecSPGConfig:
    """A toy DecSPG run. Frozen and hashable: safe to close over under jit."""

    policy: str = "grid"          # "grid" (all policies) | "gaussian"
    qhat: str = "kernel"          # "kernel" (spec §2.4) | "rstart" (Thm 3.1's idealised Q̂)
    n_agents: int = 1             # 1: M_sa; ≥ 2: M_ma with n agents
    batch: int = 200              # B, one-step episodes per epoch (paper §3.2.1: 200)
    epochs: int = 250             # K
    step: float = 0.01            # η / (1 − γ) (paper: η = 0.01 (1 − γ))
    init_var: float = 0.1         # π^0 = N(0, 0.1) (Thm 3.1; Fig. 1)
    grid_low: float = -1.5
    grid_high: float = 1.5
    grid_points: int = 6001
    bandwidth: float = 0.01       # kernel of p̂
    newton_iters: int = 20        # Gaussian projection
    snapshot_every: int = 0       # > 0: also return the density every this many epochs

    def __post_init__(self):
        def positive_int(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"DecSPGConfig.{name}={v!r}: must be a positive integer")
        if self.policy not in POLICIES:
            raise ValueError(f"DecSPGConfig.policy={self.policy!r}: choose one of {POLICIES}")
        if self.qhat not in QHATS:
            raise ValueError(f"DecSPGConfig.qhat={self.qhat!r}: choose one of {QHATS}")
        for name in ("n_agents", "batch", "epochs", "grid_points", "newton_iters"):
            positive_int(name)
        if not (self.grid_low < -0.75 and self.grid_high > 0.75):
            raise ValueError("the grid must cover [-0.75, 0.75] (both bumps and the success "
                             f"window); got [{self.grid_low}, {self.grid_high}]")
        for name in ("step", "init_var", "bandwidth"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DecSPGConfig.{name}={getattr(self, name)!r}: must be > 0")
        s = self.snapshot_every
        if isinstance(s, bool) or not isinstance(s, int) or s < 0 or (s and self.epochs % s):
            raise ValueError(f"DecSPGConfig.snapshot_every={s!r}: must be 0 (off) or a positive "
                             f"divisor of epochs={self.epochs}")

    @property
    def env(self):
        return (toy.ToySingleAgent() if self.n_agents == 1
                else toy.ToyMultiAgent(n_agents=self.n_agents))

    def grid(self):
        return jnp.linspace(self.grid_low, self.grid_high, self.grid_points)

    @property
    def delta(self) -> float:
        return (self.grid_high - self.grid_low) / (self.grid_points - 1)


@struct.dataclass
class DecSPGState:
    logp: jnp.ndarray        # grid: f32[n, G] log-probabilities of the grid cells (sum exp = 1)
    mu: jnp.ndarray          # gaussian: f32[n]
    log_sigma: jnp.ndarray   # gaussian: f32[n]
    num: jnp.ndarray         # f32[n, G] Σ_j succ_j K(a_g − a_j)
    den: jnp.ndarray         # f32[n, G] Σ_j K(a_g − a_j)
    found: jnp.ndarray       # bool[n] agent i has succeeded at least once
    first: jnp.ndarray       # i32[n] epoch of agent i's first success (−1: none yet)
    epoch: jnp.ndarray       # i32[]


# ----------------------------------------------------------------------------- policies
def gaussian_expected_rstart(mu, var, p: toy.ToyParams = toy.PARAMS):
    """E_{a ~ N(μ, σ²)} r_start(a) in closed form (paper App. A, Step 1)."""
    s = 1.0 + 2.0 * p.alpha * var
    bump = lambda c: jnp.exp(-p.alpha * (mu - c) ** 2 / s)
    return -p.nu * (mu ** 2 + var) + p.c0 / jnp.sqrt(s) * (bump(p.beta) + bump(-p.beta))


def _gaussian_cells(cfg, mu, log_sigma):
    """Normalised cell probabilities of N(μ, σ²) on the grid."""
    z = (cfg.grid() - mu) / jnp.exp(log_sigma)
    return jax.nn.softmax(-0.5 * z * z)


def probs(cfg: DecSPGConfig, state: DecSPGState):
    """f32[n, G] cell probabilities of every agent's current policy."""
    if cfg.policy == "grid":
        return jnp.exp(state.logp)
    return jax.vmap(lambda m, s: _gaussian_cells(cfg, m, s))(state.mu, state.log_sigma)


def density(cfg, state):
    """f32[n, G] the policies' densities on the grid (cell probabilities / Δ), for figures."""
    return probs(cfg, state) / cfg.delta


def _sample(cfg, state, key):
    """f32[B, n] one action per episode and agent from the current policies."""
    n, B = cfg.n_agents, cfg.batch
    if cfg.policy == "gaussian":
        eps = jax.random.normal(key, (B, n))
        return state.mu + jnp.exp(state.log_sigma) * eps
    k_u, k_j = jax.random.split(key)
    cdf = jnp.cumsum(jnp.exp(state.logp), axis=-1)                    # [n, G]
    u = jax.random.uniform(k_u, (n, B)) * cdf[:, -1:]
    idx = jax.vmap(jnp.searchsorted)(cdf, u)                          # [n, B]
    idx = jnp.minimum(idx, cfg.grid_points - 1)
    jitter = (jax.random.uniform(k_j, (n, B)) - 0.5) * cfg.delta
    return (cfg.grid()[idx] + jitter).T


def successes(cfg, key, actions):
    """bool[B, n] agent i's coordinate of the next state is 1 after one step from the start."""
    env = cfg.env
    _, start = env.reset(key)

    def one(k, a):
        _, nxt, _, done, _ = env.step(k, start, a[:, None])
        hit = (nxt.s == 1) if cfg.n_agents == 1 else (nxt.s == 1.0)
        return jnp.broadcast_to(hit & ~done[0], (cfg.n_agents,))

    return jax.vmap(one)(jax.random.split(key, cfg.batch), actions)


# ----------------------------------------------------------------------------- Q̂ and updates
def record(cfg: DecSPGConfig, state: DecSPGState, actions, succ):
    """Add a batch (actions f32[B, n], succ bool[B, n]) to the kernel sums of p̂ (kernel Q̂
    only) and to the first-success bookkeeping."""
    if cfg.qhat == "kernel":
        kern = jnp.exp(-0.5 * ((cfg.grid()[None, None] - actions.T[:, :, None])
                               / cfg.bandwidth) ** 2)                  # [n, B, G]
        state = state.replace(
            num=state.num + jnp.einsum("nb,nbg->ng", succ.T.astype(kern.dtype), kern),
            den=state.den + jnp.sum(kern, axis=1))
    hit = jnp.any(succ, axis=0)
    return state.replace(first=jnp.where(hit & ~state.found, state.epoch, state.first),
                         found=state.found | hit)


def _p_hat(state):
    return state.num / (state.den + 1.0)


def q_hat_at(cfg: DecSPGConfig, state: DecSPGState, actions, cell_probs=None):
    """Q̂_i at arbitrary actions f32[B, n] (linear interpolation of the grid's p̂), for
    policies that are not held on the grid (a diffusion policy trained by ISSM)."""
    if cell_probs is None:
        cell_probs = probs(cfg, state)
    learned = q_hat(cfg, state, cell_probs) - toy.r_start(cfg.grid())[None]     # [n, G]
    interp = jax.vmap(lambda a, f: jnp.interp(a, cfg.grid(), f), in_axes=(1, 0), out_axes=1)
    return toy.r_start(actions) + interp(actions, learned)


def _slopes(cfg, state, cell_probs, p: toy.ToyParams = toy.PARAMS):
    """f32[n] c_i: the weight of agent i's own success probability in its averaged Q̄_i."""
    n = cfg.n_agents
    if n == 1:
        return jnp.full((1,), p.c1)
    q = jnp.sum(cell_probs * _p_hat(state), axis=-1)                  # [n] E_π_j p̂_j
    others = jnp.prod(jnp.where(jnp.eye(n, dtype=bool), 1.0, q[None, :]), axis=-1)
    return p.c1 + (p.c2 + p.c3 - n * p.c1) * others


def q_hat(cfg, state, cell_probs, p: toy.ToyParams = toy.PARAMS):
    """f32[n, G] Q̂_i on the grid (up to a per-agent constant, which no update sees)."""
    r = r_grid = toy.r_start(cfg.grid(), p)[None]
    if cfg.qhat == "kernel":
        r = r_grid + p.gamma * _slopes(cfg, state, cell_probs, p)[:, None] * _p_hat(state)
    return jnp.broadcast_to(r, (cfg.n_agents, cfg.grid_points))


def reverse_kl(theta, mu_k, log_sigma_k, learned, cfg, p: toy.ToyParams = toy.PARAMS):
    """KL(N(μ, σ²) ‖ π̃) up to log Z, π̃ ∝ N(μ_k, σ_k²) exp(step Q̂) (paper Eq. 3).
    `learned` [G] is γ c_i p̂_i on the grid (None for Q̂ = r_start)."""
    mu, log_sigma = theta[0], theta[1]
    var, var_k = jnp.exp(2 * log_sigma), jnp.exp(2 * log_sigma_k)
    eq = gaussian_expected_rstart(mu, var, p)
    if learned is not None:
        eq = eq + jnp.sum(_gaussian_cells(cfg, mu, log_sigma) * learned)
    return (log_sigma_k - log_sigma + (var + (mu - mu_k) ** 2) / (2 * var_k) - 0.5
            - cfg.step * eq)


def gaussian_projection(cfg, mu_k, log_sigma_k, learned=None):
    """argmin over (μ, log σ) of `reverse_kl` by damped Newton steps from (μ_k, log σ_k): the
    Hessian is shifted to be positive definite and each step is capped (|Δμ| ≤ 0.05,
    |Δ log σ| ≤ 0.25), so the iteration descends to the stationary point next to the previous
    policy, as the gradient descent of Theorem 3.1 does."""
    f = lambda th: reverse_kl(th, mu_k, log_sigma_k, learned, cfg)
    grad, hess = jax.grad(f), jax.hessian(f)
    cap = jnp.array([0.05, 0.25])

    def newton(_, th):
        g, h = grad(th), hess(th)
        lam_min = jnp.linalg.eigvalsh(h)[0]
        h = h + (jnp.maximum(0.0, -lam_min) + 1e-3 * (1.0 + jnp.abs(lam_min))) * jnp.eye(2)
        return th + jnp.clip(-jnp.linalg.solve(h, g), -cap, cap)

    th = jax.lax.fori_loop(0, cfg.newton_iters, newton, jnp.stack([mu_k, log_sigma_k]))
    return th[0], th[1]


def init(cfg: DecSPGConfig) -> DecSPGState:
    n, G = cfg.n_agents, cfg.grid_points
    mu = jnp.zeros((n,))
    log_sigma = jnp.full((n,), 0.5 * np.log(cfg.init_var), jnp.float32)
    logp = jnp.log(jax.vmap(lambda m, s: _gaussian_cells(cfg, m, s))(mu, log_sigma))
    zeros = jnp.zeros((n, G))
    return DecSPGState(logp, mu, log_sigma, zeros, zeros, jnp.zeros((n,), bool),
                       jnp.full((n,), -1, jnp.int32), jnp.zeros((), jnp.int32))


def true_return(cfg, cell_probs, p: toy.ToyParams = toy.PARAMS):
    """Exact discounted J of the policies (goal-state action 0): Σ_i E r_start + γ E[r(s')]."""
    grid = cfg.grid()
    er = jnp.sum(cell_probs * toy.r_start(grid, p), axis=-1)          # [n]
    q = jnp.sum(cell_probs * toy.p_start(grid, p), axis=-1)           # [n]
    if cfg.n_agents == 1:
        return er[0] + p.gamma * p.c1 * q[0]
    all_ = jnp.prod(q)
    return jnp.sum(er) + p.gamma * (p.c1 * (jnp.sum(q) - cfg.n_agents * all_)
                                    + all_ * (p.c2 + p.c3))


def epoch(cfg: DecSPGConfig, state: DecSPGState, key):
    """One epoch of Algorithm 1: B episodes with π^{k−1}, Q̂ update, policy update. Returns
    the new state and the epoch's metrics of the updated policy π^k (`p_success`: its exact
    per-sample probability of reaching the goal, E_π^k p_start)."""
    k_a, k_e = jax.random.split(key)
    actions = _sample(cfg, state, k_a)                                 # [B, n]
    succ = successes(cfg, k_e, actions)                                # [B, n]
    state = record(cfg, state, actions, succ)
    cell = probs(cfg, state)
    q = q_hat(cfg, state, cell)
    if cfg.policy == "grid":
        state = state.replace(logp=jax.nn.log_softmax(state.logp + cfg.step * q, axis=-1))
    else:
        learned = None
        if cfg.qhat == "kernel":
            learned = q - toy.r_start(cfg.grid())[None]
        mu, ls = jax.vmap(lambda m, s, lr: gaussian_projection(cfg, m, s, lr),
                          in_axes=(0, 0, None if learned is None else 0))(
            state.mu, state.log_sigma, learned)
        state = state.replace(mu=mu, log_sigma=ls)
    state = state.replace(epoch=state.epoch + 1)
    cell = probs(cfg, state)
    grid = cfg.grid()
    mean = jnp.sum(cell * grid, axis=-1)
    metrics = dict(mean=mean, var=jnp.sum(cell * (grid - mean[:, None]) ** 2, axis=-1),
                   J=true_return(cfg, cell), successes=jnp.sum(succ, axis=0),
                   p_success=jnp.sum(cell * toy.p_start(grid), axis=-1),
                   found=state.found, found_all=jnp.all(state.found))
    return state, metrics


def run(cfg: DecSPGConfig, key):
    """K epochs from π^0 as one `lax.scan`. Returns (final state, metrics with a leading
    [K] axis, densities f32[K/snapshot_every + 1, n, G] at epochs 0, s, 2s, … or None)."""
    state = init(cfg)
    body = lambda st, k: epoch(cfg, st, k)
    keys = jax.random.split(key, cfg.epochs)
    if not cfg.snapshot_every:
        state, metrics = jax.lax.scan(body, state, keys)
        return state, metrics, None
    s = cfg.snapshot_every

    def chunk(st, ks):
        st, m = jax.lax.scan(body, st, ks)
        return st, (m, density(cfg, st))

    d0 = density(cfg, state)
    state, (metrics, dens) = jax.lax.scan(
        chunk, state, keys.reshape((cfg.epochs // s, s) + keys.shape[1:]))
    metrics = jax.tree.map(lambda x: x.reshape((cfg.epochs,) + x.shape[2:]), metrics)
    return state, metrics, jnp.concatenate([d0[None], dens])


def run_seeds(cfg: DecSPGConfig, key, seeds: int):
    """`run` for `seeds` independent seeds (vmap over keys), compiled once."""
    keys = jax.random.split(key, seeds)
    return jax.jit(jax.vmap(lambda k: run(cfg, k)))(keys)


# ----------------------------------------------------------------------------- Theorem 3.1
def bump_term(var, p: toy.ToyParams = toy.PARAMS):
    """The bump part of −∂E_N(0,σ²)[r_start]/∂σ² (paper Eq. 8), printed in Eq. 10 as
    1350 (124 − 500σ²) / (1 + 500σ²)^{5/2} exp(−62.5 / (1 + 500σ²)). float64 numpy."""
    var = np.asarray(var, np.float64)
    s = 1.0 + 2.0 * p.alpha * var
    return (2 * p.c0 * p.alpha * (2 * p.alpha * p.beta ** 2 - s) / s ** 2.5
            * np.exp(-p.alpha * p.beta ** 2 / s))


def precision_increment(var, step: float = 0.01, p: toy.ToyParams = toy.PARAMS):
    """f(σ²) with 1/σ² = 1/σ_k² + f(σ²) at a stationary point of the projection (Eq. 9/10)."""
    return 2 * step * (p.nu - bump_term(var, p))


def _grid_extreme(fn, lo=1e-7, hi=10.0, n=400001, maximise=False):
    """Extreme of a smooth scalar function: dense log grid, then a golden-section refinement."""
    x = np.geomspace(lo, hi, n)
    y = fn(x) * (-1 if maximise else 1)
    i = int(np.argmin(y))
    a, b = x[max(i - 1, 0)], x[min(i + 1, n - 1)]
    g = (np.sqrt(5) - 1) / 2
    for _ in range(100):
        c, d = b - g * (b - a), a + g * (b - a)
        if fn(c) * (-1 if maximise else 1) < fn(d) * (-1 if maximise else 1):
            b = d
        else:
            a = c
    xm = 0.5 * (a + b)
    return float(xm), float(fn(xm))


def min_increment(step: float = 0.01):
    """(σ², min_σ² f(σ²)): the paper's 0.128 lower bound on the precision gain per epoch."""
    return _grid_extreme(lambda v: precision_increment(v, step))


def max_bump_term():
    """(σ², max_σ² bump_term): the paper's 3.6 upper bound."""
    return _grid_extreme(bump_term, maximise=True)


def exact_precisions(epochs: int, init_var: float = 0.1, step: float = 0.01, iters: int = 100):
    """1/σ_k², k = 0..epochs−1, of the exact stationary recursion 1/σ² = 1/σ_k² + f(σ²)
    (fixed-point iteration from 1/σ_k², the root next to the previous policy)."""
    out = np.empty(epochs)
    prec = 1.0 / init_var
    for k in range(epochs):
        out[k] = prec
        x = prec
        for _ in range(iters):
            x = prec + precision_increment(1.0 / x, step)
        prec = x
    return out


def success_prob(var, p: toy.ToyParams = toy.PARAMS):
    """p_k of Eq. 12, exactly: P(reach s1) for one action a ~ N(0, σ²) (both Φ terms kept)."""
    from scipy.special import ndtr
    var = np.asarray(var, np.float64)
    s = 1.0 + 2.0 * p.alpha * var
    mu_p = -2 * p.alpha * p.beta * var / s
    sd_p = np.sqrt(var / s)
    c = p.cp / np.sqrt(s) * np.exp(-p.alpha * p.beta ** 2 / s)
    lo, hi = -p.beta - p.window, -p.beta + p.window
    return c * (ndtr((hi - mu_p) / sd_p) - ndtr((lo - mu_p) / sd_p))


def success_bound(precisions, batch: int = 32):
    """dict(bound=1 − exp(−B Σ p_k/(1 − p_k)) — the paper's Eq. 15 lower bound on never
    succeeding, turned into an upper bound on success — and exact=1 − Π (1 − p_k)^B, the
    success probability when σ_k follows `precisions` until the first success)."""
    pk = success_prob(1.0 / np.asarray(precisions, np.float64))
    return dict(bound=float(1 - np.exp(-batch * np.sum(pk / (1 - pk)))),
                exact=float(1 - np.exp(batch * np.sum(np.log1p(-pk)))))


def path_success(p_success, batch: int = 32):
    """P(at least one success) of B samples per epoch along per-epoch success probabilities
    p_k (last axis), 1 − Π_k (1 − p_k)^B: for a run whose policies do not depend on successes
    (Q̂ = r_start before the first one), the exact probability of ever reaching the goal."""
    p = np.asarray(p_success, np.float64)
    return 1 - np.exp(batch * np.sum(np.log1p(-p), axis=-1))


def worst_case_precisions(epochs: int, init_var: float = 0.1, increment: float = 0.128):
    """The paper's Eq. 11 path 1/σ_k² = 1/σ_0² + 0.128 k."""
    return 1.0 / init_var + increment * np.arange(epochs)
