"""The public, jittable loss API.

Re-exports only: each loss is defined once, next to the machinery it needs. Every function
here is pure, jittable, vmappable and differentiable, and takes explicit keys.

    from jaxdiff import losses
    loss = losses.denoising_loss_eps(eps_fn, schedule, key, x0, weights=w)
"""
from jaxdiff.diffusion.losses import (
    adaptive_alpha,
    denoising_errors_eps,
    denoising_errors_x0,
    denoising_loss_eps,
    denoising_loss_x0,
    diffusion_entropy,
    dispersion_ratio,
    importance_weights,
    issm,
    paper_time_weights,
    per_sample_sq_error,
    ppo_clip_loss,
    qv_weighted,
    qv_weights,
    weighted_mean,
    weighted_sq_error_loss,
)
from jaxdiff.diffusion.trust_region import line_search

__all__ = [
    "adaptive_alpha",
    "denoising_errors_eps",
    "denoising_errors_x0",
    "denoising_loss_eps",
    "denoising_loss_x0",
    "diffusion_entropy",
    "dispersion_ratio",
    "importance_weights",
    "issm",
    "line_search",
    "paper_time_weights",
    "per_sample_sq_error",
    "ppo_clip_loss",
    "qv_weighted",
    "qv_weights",
    "weighted_mean",
    "weighted_sq_error_loss",
]
