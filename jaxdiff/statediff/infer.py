"""Inference with a trained denoiser: individual flows, composite flows and the composite
diffusion algorithm with its Step-2 acceptance checks (spec-state-diffusion §2.2, §4).

`f(tau, y) -> y` is any denoiser in the (tau, y) convention of `jaxdiff.diffusion` (a trained
`Denoiser` via `denoiser.denoise_fn`, or the analytic one); taus are stacked per agent,
[n_agents, tau_dim]. Flows are deterministic; the only randomness is y0 ~ N(0, sigma_init^2 I).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jaxdiff.diffusion import (
    composite_flow,
    find_fixed_points,
    fixed_point_flow,
    iterate_map,
    spectral_radius,
)
from jaxdiff.statediff.denoiser import DenoiseFn
from jaxdiff.statediff.metrics import regression_residual


def individual_estimates(f: DenoiseFn, taus: jax.Array, y0: jax.Array, num_steps: int) -> jax.Array:
    """phi_L(tau_i)(y0) for every agent from the same start. taus: [n, tau_dim], y0: [s] ->
    [n, s]. (Individual diffusion, spec §5.4.)"""
    return jax.vmap(lambda tau: fixed_point_flow(f, tau, y0, num_steps))(taus)


def active_order(active: jax.Array, num_steps: int, order: jax.Array | None = None) -> jax.Array:
    """The per-step agent sequence of a composite flow restricted to the active agents
    (e.g. alive units), keeping their relative order: int [num_steps]. active: bool [n]; order:
    a permutation of all n agents (default 0..n-1). With no active agent, agent order[0] is
    used throughout."""
    n = active.shape[0]
    order = jnp.arange(n) if order is None else jnp.asarray(order)
    perm = order[jnp.argsort(~active[order], stable=True)]  # active agents first, in order
    k = jnp.maximum(jnp.sum(active), 1)
    return perm[jnp.arange(num_steps) % k]


def composite_estimate(
    f: DenoiseFn,
    taus: jax.Array,
    y0: jax.Array,
    num_steps: int,
    *,
    order: jax.Array | None = None,
    active: jax.Array | None = None,
    return_trajectory: bool = False,
):
    """Composite flow (Def. 6): step l applies f(taus[order[l mod k]], .). taus: [n, tau_dim];
    y0: [s]. order: a permutation of all agents, or of a subset (partial composite, Cor. 7.2).
    active: optional bool [n] (e.g. alive agents): only those take part, in `order`'s order.
    Returns y_L [s] (and the trajectory [L + 1, s])."""
    if active is not None:
        order = active_order(active, num_steps, order)  # one entry per step: order[l mod L]
    return composite_flow(f, taus, y0, num_steps, order=order, return_trajectory=return_trajectory)


def converge(f: DenoiseFn, tau: jax.Array, ys: jax.Array, max_steps: int = 200, tol: float = 1e-6):
    """phi_inf(tau)(y) for a batch ys: [N, s], iterating until max|change| < tol or max_steps."""
    return iterate_map(lambda y: f(tau, y), ys, max_steps, tol)[0]


def deviation(f: DenoiseFn, tau: jax.Array, s: jax.Array, max_steps: int = 200) -> tuple[jax.Array, jax.Array]:
    """Definition 4: start the flow at the true state, D = s - phi_inf(tau)(s).

    tau: [tau_dim], s: [state_dim] (single pair; vmap for batches; a fixed number of steps, so
    it vmaps cheaply). Returns (D [s], the fixed point y* [s])."""
    y_star = fixed_point_flow(f, tau, s, max_steps)
    return s - y_star, y_star


def attractors(f: DenoiseFn, tau: jax.Array, key: jax.Array, *, num_starts: int = 2048,
               sigma_init: float = 1.0, state_dim: int, **kwargs):
    """Stable fixed points of f(tau, .) and their basin fractions from N(0, sigma_init^2 I)
    starts (spec §3.2 finder: iterate, residual 1e-4, merge radius 0.05, spectral radius).
    kwargs go to `jaxdiff.diffusion.find_fixed_points`."""
    starts = sigma_init * jax.random.normal(key, (num_starts, state_dim))
    return find_fixed_points(lambda y: f(tau, y), starts, **kwargs)


@struct.dataclass
class DeviationBound:
    """The deviation bound D-hat of the composite algorithm's Step 2, with its Theorem 6 check.

    Built by `deviation_bound` from held-out (tau_i, s) pairs of the data the model was trained
    on; pass it to `composite_algorithm` as `d_hat`.
    """

    d_hat: jax.Array  # scalar: the `quantile` of ||D_theta(tau_i, s)||_2 over the held-out pairs
    mean_sq_deviation: jax.Array  # scalar: mean ||D_theta(tau_i, s)||_2^2 over the same pairs
    r_bound: jax.Array  # scalar: R(M) of Eq. 17 over the training rows (a data quantity)
    bounded: jax.Array  # bool scalar: mean_sq_deviation <= r_bound (Theorem 6 holds)
    deviation_norms: jax.Array  # [N]: ||D_theta|| per held-out pair


def deviation_bound(
    f: DenoiseFn,
    taus: jax.Array,
    states: jax.Array,
    *,
    train_taus: jax.Array,
    train_states: jax.Array,
    quantile: float = 0.95,
    max_steps: int = 200,
) -> DeviationBound:
    """D-hat for Step 2 (spec §4.2, §7.5) and whether the model satisfies Theorem 6.

    taus: [N, tau_dim], states: [N, s]: held-out (tau_i, s) pairs (never used for training);
    train_taus: [M, tau_dim], train_states: [M, s]: the training rows (or a large subsample),
    over which R(M) = Tr S_s - Tr S_s,tau S_tau^+ S_tau,s (Eq. 17) is computed.

    d_hat is the `quantile` (default 95th percentile) of the model's own deviations
    ||D_theta(tau_i, s)||_2 = ||s - phi_inf(tau_i)(s)||_2 (Definition 4): the paper's "2 D_theta"
    threshold is about this model's deviations, not a data constant.

    bounded [interpretation]: the paper's threshold is "2 D_theta (bounded by Theorem 6)", and
    Theorem 7's guarantee (error <= max_i D_theta) is only informative for a model whose
    deviations obey Theorem 6, D_theta <= R(M). R(M) is the per-sample mean squared residual of
    the best affine regression of s on tau, so the dimensionally matching model quantity is the
    per-sample mean squared deviation: bounded = mean ||D||^2 <= R(M), i.e. the model's fixed
    points explain the states at least as well as the linear surrogate does. A model that maps
    every history to one point c (e.g. random weights: a strong contraction) has
    mean ||D||^2 = Tr S_s + ||E s - c||^2 >= Tr S_s >= R(M), so it is never bounded, however
    self-consistent its flows are. (Fig. 2g plots ||D||_2 against R_eps; the squared form is the
    consistent one for a certificate, spec §7.12.)

    Departure from the spec's CHOICE (§4.2: D-hat = min(95th percentile, R(M))): capping D-hat
    at R(M) is what let a random-weight model through (its D-hat became the data constant R(M),
    and its small re-denoise shifts pass 2 R(M)). Here D-hat is never capped; R(M) enters only
    through `bounded`.
    """
    dev = jax.vmap(lambda t, s: deviation(f, t, s, max_steps)[0])(taus, states)
    norms = jnp.linalg.norm(dev, axis=-1)
    mean_sq = jnp.mean(norms**2)
    r_bound = regression_residual(train_taus, train_states)
    return DeviationBound(
        d_hat=jnp.quantile(norms, quantile),
        mean_sq_deviation=mean_sq,
        r_bound=r_bound,
        bounded=mean_sq <= r_bound,
        deviation_norms=norms,
    )


@struct.dataclass
class CompositeResult:
    """Output of `composite_algorithm`; K = number of samples."""

    samples: jax.Array  # [K, s]: y^(k, L)
    accepted: jax.Array  # bool [K]: certified, and both Step-2 conditions hold
    stable: jax.Array  # bool [K]: condition (1), spectral radius < 1 on the last n iterates
    max_rho: jax.Array  # [K]: the largest of those spectral radii
    max_shift: jax.Array  # [K]: max_i ||phi_inf(tau_i)(y^(k,L)) - y^(k,L)||, condition (2)
    estimate: jax.Array  # [s]: mean of the accepted samples (all of them if none is accepted)
    acceptance_rate: jax.Array  # scalar
    certified: jax.Array  # bool scalar: the model satisfies Theorem 6 (always True for a float d_hat)
    d_hat: jax.Array  # scalar: the deviation bound used in condition (2)


def composite_algorithm(
    f: DenoiseFn,
    taus: jax.Array,
    starts: jax.Array,
    *,
    num_steps: int,
    d_hat: float | jax.Array | DeviationBound,
    order: jax.Array | None = None,
    active: jax.Array | None = None,
    converge_steps: int = 200,
) -> CompositeResult:
    """The composite diffusion algorithm of spec §4.2 (Theorem 7).

    Step 1: each start y^(k,0) (starts: [K, s], drawn by the caller from N(0, sigma^2 I)) runs
    through the composite flow for num_steps iterations. Step 2: a sample is accepted iff
    (1) for each of the last m iterates (m = number of participating agents), the spectral
    radius of J_f(y^(k,l) | tau of the agent that produced it) is < 1 (the paper's
    |lambda_max| < 1, read as the spectral radius because eigenvalues can be complex), and
    (2) re-denoising y^(k,L) to convergence with each participating agent's own flow moves it
    by less than 2 D-hat ("the change ... smaller than 2 D_theta (bounded by Theorem 6)").

    d_hat: a `DeviationBound` from `deviation_bound` (recommended), or a number.
    With a `DeviationBound`, D-hat is the model's own deviation quantile and Step 2 also
    requires that the model obeys Theorem 6 (`DeviationBound.bounded`); if it does not, no
    sample is accepted (`certified` is False). Why the extra requirement: conditions (1) and (2)
    are per-sample consistency checks between the composite end point and each agent's
    attractors, and a model whose every flow contracts to nearly one point c (random weights)
    passes both for any D-hat above the small spread of its per-agent attractors; only a
    comparison with data, through D_theta and the Theorem 6 bound, can tell that c is not a
    state. With a plain number the caller vouches for the model and only (1) and (2) apply.

    taus: [n, tau_dim]; order: a permutation of all or some agents (default 0..n-1);
    active: optional bool [n] (e.g. alive agents; order must then list all n agents): only
    active agents take part. num_steps >= the number of participants.
    CO output: the mean of the accepted samples (all samples if none passes).
    """
    if isinstance(d_hat, DeviationBound):
        certified = jnp.asarray(d_hat.bounded, bool)
        d_hat = d_hat.d_hat
    else:
        certified = jnp.asarray(True)
    n = taus.shape[0]
    order = jnp.arange(n, dtype=jnp.int32) if order is None else jnp.asarray(order, jnp.int32)
    if active is None:
        if num_steps < order.shape[0]:
            raise ValueError(f"num_steps={num_steps} must cover one cycle of {order.shape[0]} agents")
        seq = order[jnp.arange(num_steps) % order.shape[0]]
        participates = jnp.ones(order.shape, bool)
        m = jnp.asarray(order.shape[0])
    else:
        if num_steps < n:
            raise ValueError(f"num_steps={num_steps} must cover one cycle of up to {n} agents")
        seq = active_order(active, num_steps, order)
        participates = active[order]
        m = jnp.maximum(jnp.sum(active), 1)
    window = min(num_steps, order.shape[0])  # static bound on m

    def check(y0):
        _, traj = composite_flow(f, taus, y0, num_steps, order=seq, return_trajectory=True)
        last = traj[num_steps - window + 1 :]  # y^(l) for l in (L - window, L]
        producers = seq[num_steps - window :]  # the agent whose denoiser produced each of them
        in_window = jnp.arange(window) >= window - m  # keep the last m of them
        jac = jax.vmap(lambda a, y: jax.jacfwd(f, argnums=1)(taus[a], y))(producers, last)
        rho = jnp.max(jnp.where(in_window, spectral_radius(jac), 0.0))
        y_last = traj[-1]
        settled = jax.vmap(lambda a: converge(f, taus[a], y_last[None], converge_steps)[0])(order)
        moved = jnp.linalg.norm(settled - y_last, axis=-1)
        return y_last, rho, jnp.max(jnp.where(participates, moved, 0.0))

    samples, max_rho, max_shift = jax.vmap(check)(starts)
    stable = max_rho < 1.0
    d_hat = jnp.asarray(d_hat, samples.dtype)
    accepted = certified & stable & (max_shift < 2.0 * d_hat)
    w = jnp.where(jnp.any(accepted), accepted, True).astype(samples.dtype)
    estimate = jnp.sum(w[:, None] * samples, axis=0) / jnp.sum(w)
    return CompositeResult(
        samples=samples,
        accepted=accepted,
        stable=stable,
        max_rho=max_rho,
        max_shift=max_shift,
        estimate=estimate,
        acceptance_rate=jnp.mean(accepted.astype(jnp.float32)),
        certified=certified,
        d_hat=d_hat,
    )
