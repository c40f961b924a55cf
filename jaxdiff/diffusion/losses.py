"""Denoising score-matching losses with per-sample weights.

All losses reduce to `weighted_mean(per_sample_error, weights)` = (1/B) sum_b w_b e_b. The
weights are the single hook the RL losses plug into: importance ratios (DDPL's ISSM),
rectified Q-advantages (HAQO/QVPO), value weights (MF-Diffuser). Dividing by B rather than by
sum(w) keeps importance-weighted losses unbiased; pass weights / mean(weights) for the
self-normalised form. Weights are treated as data: gradients never flow into them.

A per-sample error is the squared L2 norm over the feature dimensions (spec-state-diffusion
Eq. 1), or their mean with feature_reduce="mean" (the DDPM "simple" loss scale). `mask`
([batch, ...], same shape as x0) removes padded features of heterogeneous agents.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxdiff.diffusion.schedules import (
    Schedule,
    VESchedule,
    q_sample,
    sample_timesteps,
    sample_ve_sigma,
)


def per_sample_sq_error(
    pred: jax.Array,
    target: jax.Array,
    mask: jax.Array | None = None,
    feature_reduce: str = "sum",
) -> jax.Array:
    """Squared error per sample. pred, target, mask: [batch, ...] -> [batch]."""
    sq = (pred - target) ** 2
    if mask is not None:
        sq = sq * mask
    axes = tuple(range(1, sq.ndim))
    total = jnp.sum(sq, axis=axes)
    if feature_reduce == "sum":
        return total
    if feature_reduce == "mean":
        if mask is None:
            return jnp.mean(sq, axis=axes)
        count = jnp.sum(jnp.broadcast_to(mask, sq.shape), axis=axes)
        return total / jnp.maximum(count, 1.0)
    raise ValueError(f"feature_reduce={feature_reduce!r}; expected 'sum' or 'mean'")


def weighted_mean(values: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """(1/B) sum_b w_b v_b with gradient blocked through w. values, weights: [batch] -> scalar."""
    if weights is None:
        return jnp.mean(values)
    return jnp.mean(jax.lax.stop_gradient(weights) * values)


def weighted_sq_error_loss(
    pred: jax.Array,
    target: jax.Array,
    weights: jax.Array | None = None,
    mask: jax.Array | None = None,
    feature_reduce: str = "sum",
) -> jax.Array:
    """Weighted mean of per-sample squared errors, for callers that already ran the model."""
    return weighted_mean(per_sample_sq_error(pred, target, mask, feature_reduce), weights)


def _time_weight(time_weights, t, errors):
    if time_weights is None:
        return errors
    return errors * jax.lax.stop_gradient(jnp.asarray(time_weights)[t])


def denoising_errors_eps(
    eps_fn: Callable[[jax.Array, jax.Array], jax.Array],
    schedule: Schedule,
    key: jax.Array,
    x0: jax.Array,
    *,
    t: jax.Array | None = None,
    time_weights: jax.Array | None = None,
    mask: jax.Array | None = None,
    feature_reduce: str = "sum",
) -> jax.Array:
    """Per-sample eps-prediction errors ||eps_fn(x_t, t) - eps||^2: [batch].

    x0: [batch, ...]. t: int32 [batch] (drawn uniformly from {0..T-1} when None).
    time_weights: optional [T] lambda_t multiplying each sample's error (e.g. DDPL's
    "paper" weighting T * beta_t / (1 - abar_t)).
    """
    key_t, key_noise = jax.random.split(key)
    if t is None:
        t = sample_timesteps(key_t, schedule, x0.shape[0])
    noise = jax.random.normal(key_noise, x0.shape, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    errors = per_sample_sq_error(eps_fn(x_t, t), noise, mask, feature_reduce)
    return _time_weight(time_weights, t, errors)


def denoising_errors_x0(
    x0_fn: Callable[[jax.Array, jax.Array], jax.Array],
    schedule: Schedule | VESchedule,
    key: jax.Array,
    x0: jax.Array,
    *,
    t: jax.Array | None = None,
    time_weights: jax.Array | None = None,
    mask: jax.Array | None = None,
    feature_reduce: str = "sum",
) -> jax.Array:
    """Per-sample x0-prediction errors ||x0_fn(x_t, t) - x0||^2: [batch].

    With a `Schedule`, t is an int32 index [batch] and x_t = sqrt(abar) x0 + sqrt(1-abar) eps.
    With a `VESchedule` (the paper's Eq. 1), "t" is the noise level sigma [batch], drawn
    log-uniformly in [A, sigma_max] when None, and x_t = x0 + sigma eps. A blind denoiser
    f(tau, y) is passed as `lambda y, sigma: f(tau, y)`. time_weights only apply to `Schedule`.
    """
    ve = isinstance(schedule, VESchedule)
    if ve and time_weights is not None:
        raise ValueError("time_weights index a discrete schedule; pass weights for VE losses")
    key_t, key_noise = jax.random.split(key)
    if t is None:
        draw = sample_ve_sigma if ve else sample_timesteps
        t = draw(key_t, schedule, x0.shape[0])
    noise = jax.random.normal(key_noise, x0.shape, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    errors = per_sample_sq_error(x0_fn(x_t, t), x0, mask, feature_reduce)
    return _time_weight(time_weights, t, errors)


def denoising_loss_eps(
    eps_fn: Callable[[jax.Array, jax.Array], jax.Array],
    schedule: Schedule,
    key: jax.Array,
    x0: jax.Array,
    weights: jax.Array | None = None,
    **kwargs,
) -> jax.Array:
    """Weighted eps-prediction DSM loss: (1/B) sum_b w_b ||eps_fn(x_t, t) - eps||^2.

    x0: [batch, ...]; weights: [batch] or None. kwargs: t, time_weights, mask, feature_reduce
    (see denoising_errors_eps).
    """
    return weighted_mean(denoising_errors_eps(eps_fn, schedule, key, x0, **kwargs), weights)


def denoising_loss_x0(
    x0_fn: Callable[[jax.Array, jax.Array], jax.Array],
    schedule: Schedule | VESchedule,
    key: jax.Array,
    x0: jax.Array,
    weights: jax.Array | None = None,
    **kwargs,
) -> jax.Array:
    """Weighted x0-prediction DSM loss: (1/B) sum_b w_b ||x0_fn(x_t, t) - x0||^2.

    x0: [batch, ...]; weights: [batch] or None. kwargs as in denoising_errors_x0.
    """
    return weighted_mean(denoising_errors_x0(x0_fn, schedule, key, x0, **kwargs), weights)


# ---------------------------------------------------------------------------------------------
# Importance-sampling score matching (DDPL, paper 002 §4.1 Eq. 2 and Algorithm 2 line 6).

WEIGHT_MODES = ("normalized", "paper_stable")


def importance_weights(
    q: jax.Array,
    *,
    mode: str = "normalized",
    eta: float = 1.0,
    clip: float | None = 3.0,
    axis: int = -1,
    temperature: float | None = None,
    scale_axis=None,
) -> tuple[jax.Array, jax.Array]:
    """Importance weights pi*(a|s) / p~(a|s) of ISSM from critic values, and their effective
    sample size. Both are under stop_gradient (weights are data, never a path for gradients).

    q: critic values of proposal samples, with the samples of one state along `axis` (e.g.
    [batch, N] with axis=-1), or one sample per state ([batch], axis=-1: the batch is the pool).
    The paper's weight exp(eta/(1-gamma) Q) drops the per-state normaliser 1/Z(s); a per-state
    positive factor does not move the per-state minimiser, so both modes fix it freely (spec-ddpl
    §4.5, §8.1):

      "paper_stable"  w = exp(c (q - max_axis q)), c = `temperature` (pass eta/(1-gamma); falls
                      back to `eta` when None): the paper's literal weight times exp(-c max q),
                      which cannot overflow. Needs several samples along `axis`.
      "normalized"    z = (q - mean_axis q) / (std + 1e-6), w = exp(c clip(z, -clip, clip)),
                      divided by its mean over `axis`; c = `temperature` or `eta` (Table 3's eta
                      = 1 as an inverse temperature on standardised Q, the code base's form).
                      The std is of the centred q pooled over `scale_axis` (default: all axes,
                      a stable batch-wide scale even with N = 2 samples per state).

    Adding any per-state constant to q leaves both unchanged. Returns (weights like q,
    ess = (sum w)^2 / (N sum w^2) over `axis`, in (0, 1], 1 for equal weights).
    """
    q = jax.lax.stop_gradient(jnp.asarray(q, jnp.float32))
    if mode not in WEIGHT_MODES:
        raise ValueError(f"importance_weights(mode={mode!r}): expected one of {WEIGHT_MODES}.")
    if q.ndim == 0:
        raise ValueError("importance_weights needs q with a sample axis, got a scalar.")
    n = q.shape[axis]
    c = eta if temperature is None else temperature
    if n < 2:
        raise ValueError(
            f"importance_weights(mode={mode!r}) compares the samples along axis {axis}, which "
            f"holds {n}: every weight would be 1. Draw N > 1 samples per state, or with one "
            "sample per state pass q as [batch] so the batch is the pool (normalized mode).")
    if mode == "paper_stable":
        w = jnp.exp(c * (q - jnp.max(q, axis=axis, keepdims=True)))
    else:
        centred = q - jnp.mean(q, axis=axis, keepdims=True)
        scale = jnp.sqrt(jnp.mean(centred**2, axis=scale_axis, keepdims=True))
        z = centred / (scale + 1e-6)
        if clip is not None:
            z = jnp.clip(z, -clip, clip)
        w = jnp.exp(c * z)
        w = w / jnp.mean(w, axis=axis, keepdims=True)
    w = jax.lax.stop_gradient(w)
    ess = jnp.sum(w, axis=axis) ** 2 / (n * jnp.sum(w**2, axis=axis))
    return w, ess


def paper_time_weights(schedule: Schedule) -> jax.Array:
    """lambda_t = T beta_t / (1 - abar_t): with t uniform, E_t[lambda_t ||eps_theta - eps||^2] is
    the paper's sum_t beta_t/(1-abar_t) ||.||^2, i.e. Eq. (1)/(2) with sigma^2 = beta/alpha and
    s = -eps/sqrt(1-abar) (spec-ddpl §1.2, §3.4 dsm_weight="paper"). [T]."""
    return schedule.num_steps * schedule.betas / (1.0 - schedule.alphas_cumprod)


def issm(
    eps_fn: Callable[[jax.Array, jax.Array], jax.Array],
    schedule: Schedule,
    key: jax.Array,
    actions: jax.Array,
    weights: jax.Array,
    *,
    time_weights: jax.Array | None = None,
    feature_reduce: str = "sum",
) -> jax.Array:
    """Importance-sampling score matching (paper 002 Eq. 2): (1/B) sum_b w_b lambda_t
    ||eps_fn(sqrt(abar_t) a_b + sqrt(1 - abar_t) eps, t) - eps||^2 with one t ~ U{0..T-1} and
    one eps per sample. Unbiased for the plain DSM loss under the target pi* = w p~ when the
    actions come from the proposal p~ (App. B.1); `weights` from `importance_weights`.

    actions: [*W, ...] proposal samples, weights: [*W], the leading dims of actions (e.g. [B] with
    actions [B, A], or [B, n] with agent-stacked actions [B, n, A]). eps_fn(a_t, t) gets a_t like
    actions and t int32 [*W] (one step per weighted sample; `DiffusionActor.eps` accepts that
    directly). "simple" weighting (lambda = 1, the DDPM/code-base loss) unless time_weights [T]
    is given (`paper_time_weights` for the paper's). Actions and weights are under stop_gradient,
    so only the network behind eps_fn is trained. Dividing by the sample count, not sum(w), keeps
    the estimate unbiased; per-state normalised weights make it the self-normalised one.
    """
    actions = jax.lax.stop_gradient(jnp.asarray(actions))
    weights = jax.lax.stop_gradient(jnp.asarray(weights, actions.dtype))
    lead = weights.shape
    if weights.ndim >= actions.ndim or actions.shape[: weights.ndim] != lead:
        raise ValueError(
            f"issm: weights {lead} must be the leading dims of actions {actions.shape} (one weight "
            "per sample, at least one feature dim left); e.g. actions [B, A] with weights [B].")
    key_t, key_noise = jax.random.split(key)
    t = jax.random.randint(key_t, lead, 0, schedule.num_steps)
    noise = jax.random.normal(key_noise, actions.shape, actions.dtype)
    a_t = q_sample(schedule, actions, t, noise)
    err = (eps_fn(a_t, t) - noise) ** 2
    feature_axes = tuple(range(weights.ndim, err.ndim))
    if feature_reduce == "sum":
        err = jnp.sum(err, axis=feature_axes)
    elif feature_reduce == "mean":
        err = jnp.mean(err, axis=feature_axes)
    else:
        raise ValueError(f"feature_reduce={feature_reduce!r}; expected 'sum' or 'mean'")
    return jnp.mean(weights * _time_weight(time_weights, t, err))
