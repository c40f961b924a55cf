"""Local analysis of denoiser maps: Jacobians, spectra, ranks and fixed points.

Maps come in two forms:
  f(tau, y) -> y   a conditioned denoiser (y: [state_dim], tau: [tau_dim]), for the Jacobians
                   w.r.t. y and tau and the fixed-point sensitivity J+ (Eq. 13/14);
  g(y) -> y        a plain map (close over tau: `g = lambda y: f(tau, y)`), for fixed points.
Both act on single, unbatched points; batching is done here with vmap.

Eigenvalues use jnp.linalg.eigvals, which jax 0.10 lowers on CPU (LAPACK) and on CUDA
(cuSOLVER geev), so the spectral radius can stay inside compiled code.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Map = Callable[[jax.Array], jax.Array]


# ----------------------------------------------------------------------------- Jacobians


def jacobian_y(f: Callable, tau: jax.Array, y: jax.Array) -> jax.Array:
    """J_f = df/dy at (tau, y) (Eq. 9). y: [s] -> [s, s]."""
    return jax.jacfwd(f, argnums=1)(tau, y)


def jacobian_tau(f: Callable, tau: jax.Array, y: jax.Array) -> jax.Array:
    """df/dtau at (tau, y). tau: [d], y: [s] -> [s, d]."""
    # Reverse mode costs one pass per output, forward mode one per input: pick the cheaper.
    jac = jax.jacrev if jnp.size(tau) > jnp.size(y) else jax.jacfwd
    return jac(f, argnums=0)(tau, y)


def jacobian_plus(f: Callable, tau: jax.Array, y: jax.Array) -> jax.Array:
    """J+ = (I - df/dy)^{-1} df/dtau at a fixed point y (Eq. 14): dy* ~ J+ dtau. [s, d]."""
    j_y = jacobian_y(f, tau, y)
    j_tau = jacobian_tau(f, tau, y)
    return jnp.linalg.solve(jnp.eye(j_y.shape[0], dtype=j_y.dtype) - j_y, j_tau)


@struct.dataclass
class FixedPointShift:
    """Theorem 5 check for one (tau, y*, dtau): Eq. 13's prediction against the true shift."""

    y_star: jax.Array  # [s]: the fixed point under tau (Newton-polished)
    y_star_new: jax.Array  # [s]: the fixed point under tau + dtau, re-converged from y_star
    predicted: jax.Array  # [s]: J+(y*|tau) dtau (Eq. 13)
    true: jax.Array  # [s]: y_star_new - y_star
    rel_error: jax.Array  # scalar: ||predicted - true|| / ||true||
    residual: jax.Array  # scalar: the larger of the two fixed-point residuals ||f(.,y) - y||
    spectral_radius: jax.Array  # scalar: of J_f(y*|tau); Theorem 5 assumes y* stable (< 1)


def fixed_point_shift(
    f: Callable,
    tau: jax.Array,
    y_star: jax.Array,
    delta_tau: jax.Array,
    *,
    flow_steps: int = 100,
    newton_steps: int = 10,
) -> FixedPointShift:
    """Theorem 5 / Eq. 13: predicted vs true fixed-point shift when tau moves by delta_tau.

    tau: [d]; y_star: [s], a (stable) fixed point of f(tau, .) or a point in its basin;
    delta_tau: [d]. The base point is first polished (flow_steps flow iterations, then
    newton_steps Newton steps), so that its residual does not pollute the true shift. The true
    shift re-converges the flow from y* under tau + delta_tau the same way (the flow follows the
    attractor whose basin holds y*; Newton removes the remaining error quadratically); the
    prediction is J+(y*|tau) delta_tau with J+ = (I - df/dy)^{-1} df/dtau (Eq. 14).
    The relative error is O(||delta_tau||) for a smooth f and zero for an affine one.
    """

    def settle(t, y):
        g = lambda v: f(t, v)
        # A fixed-length scan (not iterate_map's while_loop): cheaper to compile under vmap.
        y = jax.lax.scan(lambda v, _: (g(v), None), y, None, length=flow_steps)[0]
        y = newton_refine(g, y[None], newton_steps)[0] if newton_steps else y
        return y, jnp.linalg.norm(g(y) - y)

    y0, res0 = settle(tau, y_star)
    y1, res1 = settle(tau + delta_tau, y0)
    predicted = jacobian_plus(f, tau, y0) @ delta_tau
    true = y1 - y0
    rel = jnp.linalg.norm(predicted - true) / jnp.maximum(jnp.linalg.norm(true), jnp.finfo(true.dtype).tiny)
    return FixedPointShift(
        y_star=y0,
        y_star_new=y1,
        predicted=predicted,
        true=true,
        rel_error=rel,
        residual=jnp.maximum(res0, res1),
        spectral_radius=spectral_radius(jacobian_y(f, tau, y0)),
    )


def corollary51_shift(j_y: jax.Array, w_tau: jax.Array, w_y: jax.Array, delta_tau: jax.Array) -> jax.Array:
    """Corollary 5.1: dy* ~ U (I - Lambda)^{-1} Lambda U^T W_y^+ W_tau dtau.

    For f(tau, y) = g(act(W_tau tau + W_y y + b)): j_y = J_f(y*|tau) [s, s]; w_tau: [W, d] and
    w_y: [W, s], the first layer's blocks; delta_tau: [d] -> [s]. U Lambda U^T is the
    eigendecomposition of J_f, which the corollary assumes symmetric (and non-negative); here it
    is taken of the symmetric part (J + J^T) / 2, exact under that assumption. W_y^+ is
    jnp.linalg.pinv(w_y): the printed W_y^T (W_y W_y^T)^{-1} is singular for a first layer
    wider than |s| (spec §7.14). The corollary equals Eq. 13 when J_f is symmetric and
    W_y W_y^+ W_tau = W_tau (e.g. W <= |s| with W_y of full row rank, or range(W_tau) inside
    range(W_y)); otherwise it is an approximation. An analysis aid only.
    """
    lam, u = jnp.linalg.eigh(0.5 * (j_y + j_y.T))
    z = u.T @ (jnp.linalg.pinv(w_y) @ (w_tau @ delta_tau))
    return u @ (lam / (1.0 - lam) * z)


# ----------------------------------------------------------------------------- spectra, rank


def spectral_radius(jac: jax.Array) -> jax.Array:
    """max_k |lambda_k| of a square matrix [..., n, n] -> [...]. Eigenvalues may be complex."""
    return jnp.max(jnp.abs(jnp.linalg.eigvals(jac)), axis=-1)


def is_stable(g: Map, y: jax.Array) -> jax.Array:
    """Stability filter of Eq. 11: spectral radius of dg/dy at y below 1. y: [s] -> bool."""
    return spectral_radius(jax.jacfwd(g)(y)) < 1.0


def singular_values(m: jax.Array) -> jax.Array:
    """Singular values, descending. m: [..., a, b] -> [..., min(a, b)]."""
    return jnp.linalg.svd(m, compute_uv=False)


def numerical_rank(m: jax.Array, rtol=1e-3, atol: float = 0.0) -> jax.Array:
    """#{k : sigma_k > max(rtol * sigma_1, atol)}.

    m: [..., a, b]. rtol: scalar -> int [...]; or a sequence of r tolerances -> int [..., r]
    (the rank is threshold-sensitive, so analyses report several, e.g. (1e-3, 1e-2, 1e-1)).
    """
    s = singular_values(m)  # [..., k]
    rt = jnp.asarray(rtol, s.dtype)
    s_max = s[..., :1]
    if rt.ndim == 0:
        return jnp.sum(s > jnp.maximum(rt * s_max, atol), axis=-1)
    thresholds = jnp.maximum(rt[:, None] * s_max[..., None, :], atol)  # [..., r, 1]
    return jnp.sum(s[..., None, :] > thresholds, axis=-1)


def effective_rank(m: jax.Array) -> jax.Array:
    """Entropy effective rank exp(H(sigma / sum sigma)) (Roy & Vetterli). m: [..., a, b]."""
    s = singular_values(m)
    p = s / jnp.maximum(jnp.sum(s, axis=-1, keepdims=True), jnp.finfo(s.dtype).tiny)
    plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
    return jnp.exp(-jnp.sum(plogp, axis=-1))


# ----------------------------------------------------------------------------- fixed points


def iterate_map(g: Map, ys: jax.Array, max_steps: int = 200, tol: float = 1e-6):
    """Iterate y <- g(y) on a batch ys: [N, s] until max|g(y) - y|_inf < tol or max_steps.

    Returns (ys [N, s], steps taken). Uses a while_loop, so it is not reverse-differentiable;
    use fixed_point_flow for a differentiable fixed-length flow.
    """
    gb = jax.vmap(g)

    def cond(carry):
        _, step, change = carry
        return (step < max_steps) & (change >= tol)

    def body(carry):
        y, step, _ = carry
        y_next = gb(y)
        return y_next, step + 1, jnp.max(jnp.abs(y_next - y))

    init = (ys, jnp.asarray(0, jnp.int32), jnp.asarray(jnp.inf, ys.dtype))
    ys, steps, _ = jax.lax.while_loop(cond, body, init)
    return ys, steps


def newton_refine(g: Map, ys: jax.Array, num_steps: int = 20) -> jax.Array:
    """Newton on g(y) - y = 0: y <- y - (J_g - I)^{-1} (g(y) - y). ys: [N, s].

    Newton converges to unstable fixed points (saddles) as readily as to attractors, which is
    why the stability filter exists. A step that produces non-finite values is skipped.
    """

    def one(y):
        def step(y, _):
            jac = jax.jacfwd(g)(y)
            delta = jnp.linalg.solve(jac - jnp.eye(y.shape[0], dtype=y.dtype), g(y) - y)
            y_new = y - delta
            return jnp.where(jnp.all(jnp.isfinite(y_new)), y_new, y), None

        return jax.lax.scan(step, y, None, length=num_steps)[0]

    return jax.vmap(one)(ys)


def deduplicate(points: jax.Array, valid: jax.Array, merge_radius: float, capacity: int):
    """Greedy merge: each valid point joins the first centre within merge_radius (L2), else
    opens a new centre (the point itself), while fewer than `capacity` centres exist.

    points: [N, s]; valid: bool [N]. Returns centres [capacity, s], counts [capacity],
    number of centres, and assignment int [N] (-1: invalid or no room left).
    """
    idx = jnp.arange(capacity)

    def step(carry, inputs):
        centres, counts, n = carry
        p, ok = inputs
        dist = jnp.where(idx < n, jnp.linalg.norm(centres - p, axis=-1), jnp.inf)
        nearest = jnp.argmin(dist)
        merges = ok & (dist[nearest] <= merge_radius)
        opens = ok & ~merges & (n < capacity)
        slot = jnp.where(opens, n, nearest)
        assigned = merges | opens
        centres = jnp.where(opens, centres.at[slot].set(p), centres)
        counts = counts.at[slot].add(assigned.astype(counts.dtype))
        return (centres, counts, n + opens), jnp.where(assigned, slot, -1)

    init = (
        jnp.zeros((capacity, points.shape[-1]), points.dtype),
        jnp.zeros((capacity,), jnp.int32),
        jnp.asarray(0, jnp.int32),
    )
    (centres, counts, n), assignment = jax.lax.scan(step, init, (points, valid))
    return centres, counts, n, assignment


@struct.dataclass
class FixedPoints:
    """Deduplicated fixed points, sorted by basin size. C = capacity, N = number of starts."""

    points: jax.Array  # [C, s]; rows >= num_found are padding
    valid: jax.Array  # bool [C]
    counts: jax.Array  # int [C]: starts that converged to each point
    basin_fraction: jax.Array  # [C]: counts / N (non-converged starts belong to no basin)
    spectral_radius: jax.Array  # [C]: of the map's Jacobian at each point
    stable: jax.Array  # bool [C]: valid and spectral radius < 1 (Eq. 11)
    residual: jax.Array  # [C]: ||g(y*) - y*||
    num_found: jax.Array  # int scalar
    assignment: jax.Array  # int [N]: index into points, -1 when not converged / no room
    converged: jax.Array  # bool [N]
    final: jax.Array  # [N, s]: where each start ended up


def find_fixed_points(
    g: Map,
    starts: jax.Array,
    *,
    method: str = "iterate",
    max_steps: int = 200,
    tol: float = 1e-6,
    residual_tol: float = 1e-4,
    merge_radius: float = 0.05,
    newton_steps: int | None = None,
    max_points: int | None = None,
) -> FixedPoints:
    """Fixed points of g from many starts, merged, with basin fractions and stability.

    starts: [N, s]. method "iterate": run the flow y <- g(y) (finds attractors; basin
    fractions estimate the pushed-forward mass), then optionally `newton_steps` Newton
    refinements. method "newton": Newton from the starts (default 50 steps; also finds
    unstable points). A start counts as converged when ||g(y) - y|| < residual_tol.
    max_points bounds how many distinct points are kept (default min(N, 256)).
    Jittable with g, method, step counts and max_points static.
    """
    n_starts = starts.shape[0]
    capacity = max_points or min(n_starts, 256)
    if method == "iterate":
        ys, _ = iterate_map(g, starts, max_steps, tol)
        if newton_steps:
            ys = newton_refine(g, ys, newton_steps)
    elif method == "newton":
        ys = newton_refine(g, starts, 50 if newton_steps is None else newton_steps)
    else:
        raise ValueError(f"method={method!r}; expected 'iterate' or 'newton'")

    gb = jax.vmap(g)
    residual = jnp.linalg.norm(gb(ys) - ys, axis=-1)
    converged = jnp.isfinite(residual) & (residual < residual_tol)
    centres, counts, n_found, assignment = deduplicate(ys, converged, merge_radius, capacity)

    # Largest basins first, so points[0] is the dominant attractor; padding (count 0) sorts last.
    order = jnp.argsort(-counts, stable=True)
    rank_of = jnp.argsort(order)
    centres, counts = centres[order], counts[order]
    valid = jnp.arange(capacity)[order] < n_found
    assignment = jnp.where(assignment >= 0, rank_of[jnp.maximum(assignment, 0)], -1)

    rho = spectral_radius(jax.vmap(jax.jacfwd(g))(centres))
    return FixedPoints(
        points=centres,
        valid=valid,
        counts=counts,
        basin_fraction=counts / n_starts,
        spectral_radius=rho,
        stable=valid & (rho < 1.0),
        residual=jnp.linalg.norm(gb(centres) - centres, axis=-1),
        num_found=n_found,
        assignment=assignment,
        converged=converged,
        final=ys,
    )


def summarize_fixed_points(fp: FixedPoints, stable_only: bool = True) -> list[dict]:
    """Host-side list of the found points (numpy), largest basin first, for reports/plots."""
    keep = np.asarray(fp.stable if stable_only else fp.valid)
    rows = []
    for i in np.flatnonzero(keep):
        rows.append(
            {
                "point": np.asarray(fp.points[i]),
                "basin_fraction": float(fp.basin_fraction[i]),
                "spectral_radius": float(fp.spectral_radius[i]),
                "stable": bool(fp.stable[i]),
                "residual": float(fp.residual[i]),
            }
        )
    return rows


def shared_fixed_points(points: jax.Array, valid: jax.Array, tol: float = 0.1) -> jax.Array:
    """Which of agent 0's points lie within tol (L2) of a valid point of every agent.

    points: [n_agents, C, s]; valid: bool [n_agents, C] (e.g. FixedPoints.stable stacked over
    agents). Returns bool [C] over points[0] (the intersection of Theorems 3-4).
    """
    dist = jnp.linalg.norm(points[0][None, :, None, :] - points[:, None, :, :], axis=-1)
    dist = jnp.where(valid[:, None, :], dist, jnp.inf)  # [n_agents, C_0, C]
    near_every_agent = jnp.all(jnp.min(dist, axis=-1) < tol, axis=0)
    return valid[0] & near_every_agent
