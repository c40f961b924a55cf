"""Metrics of spec-state-diffusion §3 and §5.4: PSNR, deviation, Jacobian rank, and the
surrogate linear-regression bound R_eps / R(M) (Definition 5, Theorem 6).

All functions are jittable; per-sample inputs are batched along the leading axis. Sample
selections (the eps-neighbourhoods M_eps) are expressed as 0/1 weights over a fixed-size pool,
so they stay inside compiled code.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.diffusion import effective_rank, jacobian_plus, jacobian_y, numerical_rank

RTOLS = (1e-3, 1e-2, 1e-1)


# ----------------------------------------------------------------------------- PSNR


def psnr(estimate: jax.Array, target: jax.Array, max_value: float = 1.0) -> jax.Array:
    """Per-sample PSNR in dB: 10 log10(MAX^2 / MSE), MSE over the feature axis, clipped at
    1e-10 (spec §5.4, MAX = 1 for [0, 1] states). [..., s] -> [...]."""
    mse = jnp.mean((estimate - target) ** 2, axis=-1)
    return 10.0 * jnp.log10(max_value**2 / jnp.maximum(mse, 1e-10))


def mean_psnr(estimate, target, weights=None, max_value: float = 1.0) -> jax.Array:
    """Average of per-sample PSNRs (the paper's reported number), optionally weighted (e.g. by
    an alive mask). [..., s] -> scalar."""
    p = psnr(estimate, target, max_value)
    if weights is None:
        return jnp.mean(p)
    w = jnp.broadcast_to(weights, p.shape)
    return jnp.sum(w * p) / jnp.sum(w)


def aggregate_psnr(estimate, target, weights=None, max_value: float = 1.0) -> jax.Array:
    """PSNR of the mean MSE over all samples: 10 log10(MAX^2 / mean MSE). [..., s] -> scalar."""
    mse = jnp.mean((estimate - target) ** 2, axis=-1)
    if weights is not None:
        w = jnp.broadcast_to(weights, mse.shape)
        mse = jnp.sum(w * mse) / jnp.sum(w)
    else:
        mse = jnp.mean(mse)
    return 10.0 * jnp.log10(max_value**2 / jnp.maximum(mse, 1e-10))


# ----------------------------------------------------------------------------- Jacobian rank


def jacobian_ranks(f, tau: jax.Array, y_star: jax.Array, rtols=RTOLS) -> dict:
    """rank(J+(y*|tau)) (Finding 2) at several relative tolerances, plus the entropy
    effective rank. tau: [d], y_star: [s] -> {"rank": int [len(rtols)], "effective_rank"}."""
    j_plus = jacobian_plus(f, tau, y_star)
    return {
        "rank": numerical_rank(j_plus, jnp.asarray(rtols)),
        "effective_rank": effective_rank(j_plus),
    }


def jacobian_distances(f, tau: jax.Array, y_star: jax.Array, pool_taus: jax.Array) -> jax.Array:
    """||J_f(tau, y*) - J_f(tau', y*)||_F for every tau' in pool_taus [P, d], both Jacobians
    w.r.t. y at the same y* (Definition 5; spec §7.13). -> [P]."""
    j0 = jacobian_y(f, tau, y_star)
    jp = jax.vmap(lambda t: jacobian_y(f, t, y_star))(pool_taus)
    return jnp.sqrt(jnp.sum((jp - j0) ** 2, axis=(-2, -1)))


# ----------------------------------------------------------------------------- R(M), R_eps


def _weights(n: int, weights, dtype):
    return jnp.ones((n,), dtype) if weights is None else jnp.asarray(weights, dtype)


def regression_residual(taus: jax.Array, states: jax.Array, weights=None) -> jax.Array:
    """Theorem 6, Eq. 17: R(M) = Tr(S_s) - Tr(S_s,tau S_tau^+ S_tau,s), the per-sample mean
    squared residual of the best affine regression of s on tau over M.

    taus: [N, d], states: [N, s]; weights: [N] (0/1 selects M; any non-negative weights give
    the weighted regression). Covariances are population (1/|M|) moments; S_tau^+ is pinv.
    """
    w = _weights(taus.shape[0], weights, taus.dtype)
    w = w / jnp.maximum(jnp.sum(w), 1e-12)
    tc = taus - w @ taus
    sc = states - w @ states
    cov_s = jnp.trace((sc * w[:, None]).T @ sc)
    cov_st = (sc * w[:, None]).T @ tc  # [s, d]
    cov_t = (tc * w[:, None]).T @ tc  # [d, d]
    explained = jnp.trace(cov_st @ jnp.linalg.pinv(cov_t, hermitian=True) @ cov_st.T)
    return cov_s - explained


def regression_residual_lstsq(taus: jax.Array, states: jax.Array) -> jax.Array:
    """Eq. 17's R(M) computed directly: the mean squared residual of lstsq s ~ [tau, 1]."""
    x = jnp.concatenate([taus, jnp.ones((taus.shape[0], 1), taus.dtype)], axis=1)
    coef = jnp.linalg.lstsq(x, states)[0]
    return jnp.mean(jnp.sum((x @ coef - states) ** 2, axis=-1))


def local_regression_residual(tau, s, taus, states, weights=None) -> jax.Array:
    """Eq. 15: min_W sum_{M} ||W dtau - ds||^2 / |M| with dtau = tau - tau', ds = s - s' (no
    intercept: the map passes through the anchor). tau: [d], s: [s]; taus: [N, d],
    states: [N, s]; weights: [N] selects M."""
    w = _weights(taus.shape[0], weights, taus.dtype)
    dt = (tau - taus) * jnp.sqrt(w)[:, None]
    ds = (s - states) * jnp.sqrt(w)[:, None]
    gram = dt.T @ dt
    cross = ds.T @ dt  # [s, d]
    explained = jnp.trace(cross @ jnp.linalg.pinv(gram, hermitian=True) @ cross.T)
    return (jnp.sum(ds**2) - explained) / jnp.maximum(jnp.sum(w), 1e-12)


def span_rank(states: jax.Array, weights=None, rtol: float = 1e-3) -> jax.Array:
    """r(M) = dim span{s' in M}: numerical rank of the stacked selected states. [N, s]."""
    w = _weights(states.shape[0], weights, states.dtype)
    return numerical_rank(states * (w > 0)[:, None], rtol)


def surrogate_bound(f, tau, s, y_star, pool_taus, pool_states, eps) -> dict:
    """R_eps of Definition 5 for one anchor (tau, s, y*) at thresholds eps ([E]).

    M_eps = pool rows with ||J_f(tau, y*) - J_f(tau', y*)||_F < eps. Returns {"size": [E],
    "R_eq17": [E] (Eq. 17 on M_eps), "R_eq15": [E] (Eq. 15, anchored), "span_rank": [E],
    "distances": [P]}."""
    dist = jacobian_distances(f, tau, y_star, pool_taus)
    masks = (dist[None, :] < jnp.atleast_1d(jnp.asarray(eps))[:, None]).astype(pool_taus.dtype)
    per_eps = jax.vmap(
        lambda m: (
            jnp.sum(m),
            regression_residual(pool_taus, pool_states, m),
            local_regression_residual(tau, s, pool_taus, pool_states, m),
            span_rank(pool_states, m),
        )
    )(masks)
    size, r17, r15, rank = per_eps
    return {"size": size, "R_eq17": r17, "R_eq15": r15, "span_rank": rank, "distances": dist}


# ----------------------------------------------------------------------------- statistics


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties), host-side numpy."""
    x, y = np.asarray(x, float), np.asarray(y, float)

    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # average ties
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])
