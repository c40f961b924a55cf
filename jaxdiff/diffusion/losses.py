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
