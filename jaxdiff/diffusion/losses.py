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


# ---------------------------------------------------------------------------------------------
# HAQO (paper 003): Q-weighted variational denoising, the uniform-action entropy surrogate, the
# adaptive entropy coefficient and the chain-ratio PPO clip (spec-haqo §3.2, §3.3, §3.7).

QV_WEIGHT_MODES = ("qadv", "qcut")


def qv_weights(q: jax.Array, *, mode: str = "qadv", eps_cut=0.0, axis: int = -1) -> jax.Array:
    """Non-negative QV weights of K candidate actions of one state (paper 003 Eq. 6/7).

    q: critic values with the K candidates of one state along `axis` (e.g. [B, K]). The
    advantage is centred on the K-sample baseline, A = q - mean_K q (spec §3.7.2: the candidates
    come from pi_old, so their mean estimates E_{pi_old} A, which Eq. 6 subtracts), then
      "qadv"  w = max(0, A)                       (soft calibration; continuous control)
      "qcut"  w = max(0, A) 1{A >= eps_cut}        (hard filter; the paper's epsilon threshold).
    Both are non-negative and non-decreasing in A, the two properties Prop. 5.2 needs (raw A
    would make the denoising objective sign-indefinite). eps_cut may be an array broadcastable
    against q (e.g. a per-state 0.25 std(A)). Returned under stop_gradient: weights are data.
    """
    if mode not in QV_WEIGHT_MODES:
        raise ValueError(f"qv_weights(mode={mode!r}): expected one of {QV_WEIGHT_MODES}.")
    q = jax.lax.stop_gradient(jnp.asarray(q, jnp.float32))
    if q.ndim == 0 or q.shape[axis] < 2:
        raise ValueError(
            f"qv_weights needs K >= 2 candidate values per state along axis {axis}, got shape "
            f"{q.shape}: the baseline is their mean, so one candidate always gets weight 0.")
    adv = q - jnp.mean(q, axis=axis, keepdims=True)
    w = jnp.maximum(adv, 0.0)
    if mode == "qcut":
        w = jnp.where(adv >= jax.lax.stop_gradient(jnp.asarray(eps_cut, w.dtype)), w, 0.0)
    return jax.lax.stop_gradient(w)


def _masked_sq_norm(diff: jax.Array, mask) -> jax.Array:
    """sum over the last axis of mask * diff^2 (mask broadcastable to diff, or None)."""
    sq = diff**2
    if mask is not None:
        sq = sq * jax.lax.stop_gradient(jnp.asarray(mask, sq.dtype))
    return jnp.sum(sq, axis=-1)


def _check_mask(mask, x_shape: tuple, who: str):
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    try:
        jnp.broadcast_shapes(mask.shape, x_shape)
    except ValueError:
        raise ValueError(f"{who}: mask {mask.shape} must broadcast against the actions "
                         f"{x_shape} (e.g. [d] per action dim, 1 = real, 0 = padded).") from None
    return mask


def qv_weighted(
    eps_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    schedule: Schedule,
    key: jax.Array,
    x0: jax.Array,
    cond: jax.Array,
    weights: jax.Array,
    *,
    mask: jax.Array | None = None,
    normalise: bool = True,
    t: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """The Q-weighted variational (QV) denoising loss of HAQO (paper 003 Eq. 5, spec §3.7.2):

        mean_{b,k} w~_bk || eps_bk - eps_fn(sqrt(abar_t) x0_bk + sqrt(1 - abar_t) eps_bk, t, c_b) ||^2_mask

    with a fresh t ~ U{0..T-1} and eps ~ N(0, I) per candidate (b, k). It is minimised (spec §8
    item 1: the paper's "max" of a non-negative loss is a sign slip). x0 [..., K, d]: candidate
    actions in the normalised box (from pi_old); cond [..., C]: the state's conditioning (shared
    by its K candidates, broadcast here); weights [..., K] from `qv_weights`. With `normalise`,
    w~ = w / (mean w + 1e-8): the loss scale no longer tracks the critic's reward scale (the
    paper's "normalized QV loss"). mask (broadcastable to x0, e.g. [d]) drops padded action
    dims from the error, so they get zero gradient. eps_fn(x_t [..., K, d], t int32 [..., K],
    cond [..., K, C]) -> [..., K, d]. `t`/`noise` replace the random draws (fixed-batch checks).

    Candidates, conditioning and weights are under stop_gradient. Returns (loss, aux) with aux
    {"frac_nonzero_weights", "mean_weight"} (of the raw weights).
    """
    x0 = jax.lax.stop_gradient(jnp.asarray(x0, jnp.float32))
    cond = jax.lax.stop_gradient(jnp.asarray(cond, x0.dtype))
    weights = jax.lax.stop_gradient(jnp.asarray(weights, x0.dtype))
    if x0.ndim < 2 or weights.shape != x0.shape[:-1] or cond.shape[:-1] != x0.shape[:-2]:
        raise ValueError(
            f"qv_weighted: expected x0 [..., K, d], weights [..., K] and cond [..., C] with the same "
            f"leading dims, got x0 {x0.shape}, weights {weights.shape}, cond {cond.shape}.")
    mask = _check_mask(mask, x0.shape, "qv_weighted")
    key_t, key_noise = jax.random.split(key)
    if t is None:
        t = jax.random.randint(key_t, weights.shape, 0, schedule.num_steps)
    if noise is None:
        noise = jax.random.normal(key_noise, x0.shape, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    cond_k = jnp.broadcast_to(cond[..., None, :], x0.shape[:-1] + cond.shape[-1:])
    err = _masked_sq_norm(noise - eps_fn(x_t, t, cond_k), mask)
    mean_w = jnp.mean(weights)
    w = weights / (mean_w + 1e-8) if normalise else weights
    aux = {"frac_nonzero_weights": jnp.mean((weights > 0).astype(x0.dtype)),
           "mean_weight": mean_w}
    return jnp.mean(w * err), aux


def diffusion_entropy(
    eps_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    schedule: Schedule,
    key: jax.Array,
    cond: jax.Array,
    *,
    n_samples: int,
    d: int,
    low: float = -1.0,
    high: float = 1.0,
    mask: jax.Array | None = None,
    weights: jax.Array | None = None,
    u: jax.Array | None = None,
    t: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> jax.Array:
    """HAQO's diffusion entropy surrogate without its coefficient (paper 003 Eq. 9, spec §3.3):
    the denoising loss on uniform actions u ~ U([low, high]^d), n_samples per state,

        mean_b w_b mean_e || eps_be - eps_fn(sqrt(abar_t) u_be + sqrt(1 - abar_t) eps_be, t, c_b) ||^2_mask  >= 0.

    The caller multiplies by alpha and minimises it with the QV loss: fitting uniform actions
    pulls the policy's dispersion towards the box's (Prop. 5.3's spectral floor). By the
    identity ||eps - eps_theta||^2 = abar/(1 - abar) ||x0_hat - x0||^2 (Eq. 131) this is the
    uniform reconstruction error of Alg. 1 line 15 up to a per-t factor. cond [B, C] (any
    leading dims); weights [B] (optional, per state: the "q_scaled" variant weights each state's
    uniform samples by its QV weight; default 1). eps_fn as in `qv_weighted`: x_t [B, N, d],
    t [B, N], cond [B, N, C]. u/t/noise replace the random draws (fixed-batch checks).
    """
    if n_samples < 1 or d < 1:
        raise ValueError(f"diffusion_entropy needs n_samples >= 1 and d >= 1, got "
                         f"n_samples={n_samples}, d={d}.")
    cond = jax.lax.stop_gradient(jnp.asarray(cond, jnp.float32))
    if cond.ndim < 1:
        raise ValueError("diffusion_entropy: cond must be [..., C] (one row per state).")
    lead = cond.shape[:-1]
    shape = lead + (n_samples, d)
    ku, kt, kn = jax.random.split(key, 3)
    if u is None:
        u = jax.random.uniform(ku, shape, cond.dtype, minval=low, maxval=high)
    if t is None:
        t = jax.random.randint(kt, shape[:-1], 0, schedule.num_steps)
    if noise is None:
        noise = jax.random.normal(kn, shape, cond.dtype)
    mask = _check_mask(mask, shape, "diffusion_entropy")
    x_t = q_sample(schedule, jax.lax.stop_gradient(u), t, noise)
    cond_e = jnp.broadcast_to(cond[..., None, :], shape[:-1] + cond.shape[-1:])
    per_state = jnp.mean(_masked_sq_norm(noise - eps_fn(x_t, t, cond_e), mask), axis=-1)
    if weights is None:
        return jnp.mean(per_state)
    weights = jax.lax.stop_gradient(jnp.asarray(weights, per_state.dtype))
    if weights.shape != lead:
        raise ValueError(f"diffusion_entropy: weights must be one per state {lead}, got "
                         f"{weights.shape}.")
    return jnp.mean(weights * per_state)


def dispersion_ratio(x: jax.Array, *, low: float = -1.0, high: float = 1.0,
                     mask: jax.Array | None = None, axis: int = -2) -> jax.Array:
    """Tr Cov(x over the sample `axis`) / Tr Sigma_U, the dispersion of candidate actions
    relative to the uniform distribution on [low, high]^d (Tr Sigma_U = d (high - low)^2 / 12;
    spec §3.7.4, paper Eq. 142). x [..., K, d] with the K samples of one state along `axis`
    (unbiased covariance, so K >= 2) -> [...]. mask (broadcastable to [..., d]) counts only
    real action dims, in both traces. ~1 for uniform samples, 0 for a collapsed (deterministic) policy."""
    x = jnp.asarray(x, jnp.float32)
    if x.ndim < 2 or axis % x.ndim == x.ndim - 1 or x.shape[axis] < 2:
        raise ValueError(f"dispersion_ratio needs x [..., K, d] with K >= 2 samples along "
                         f"axis {axis} (not the action axis), got shape {x.shape}.")
    var = jnp.var(x, axis=axis, ddof=1)                           # [..., d]
    d = x.shape[-1]
    if mask is not None:
        mask = jnp.broadcast_to(jnp.asarray(mask, var.dtype), var.shape)
        var = var * mask
        d = jnp.sum(mask, axis=-1)
    return jnp.sum(var, axis=-1) / (d * (high - low) ** 2 / 12.0)


def adaptive_alpha(alpha, dispersion_ratio, *, kappa: float = 0.05, grow: float = 1.5,
                   cap: float = 0.5, decay: float = 0.99, alpha0: float = 0.02):
    """One step of the adaptive entropy coefficient (paper Eq. 142, spec §3.7.4): when the
    dispersion ratio falls below kappa, alpha <- min(grow alpha, cap) ("increase alpha until
    dispersion recovers"); otherwise alpha relaxes towards alpha0 by the factor `decay`
    (alpha decay from above, alpha / decay from below, never past alpha0). Elementwise, so
    alpha and the ratio may be per agent [n]."""
    checks = (("kappa", lambda: 0.0 < kappa < 1.0), ("grow", lambda: grow > 1.0),
              ("decay", lambda: 0.0 < decay <= 1.0), ("alpha0", lambda: 0.0 < alpha0 <= cap))
    concrete = all(isinstance(v, (int, float)) for v in (kappa, grow, cap, decay, alpha0))
    for name, ok in checks if concrete else ():       # traced settings (sweeps): unchecked
        if not ok():
            raise ValueError(
                f"adaptive_alpha: bad {name} (kappa={kappa}, grow={grow}, decay={decay}, "
                f"alpha0={alpha0}, cap={cap}); need 0 < kappa < 1, grow > 1, 0 < decay <= 1 "
                "and 0 < alpha0 <= cap.")
    alpha = jnp.asarray(alpha, jnp.float32)
    low_dispersion = jnp.asarray(dispersion_ratio) < kappa
    relaxed = jnp.where(alpha > alpha0, jnp.maximum(alpha * decay, alpha0),
                        jnp.minimum(alpha / decay, alpha0))
    return jax.lax.stop_gradient(
        jnp.where(low_dispersion, jnp.minimum(alpha * grow, cap), relaxed))


def ppo_clip_loss(log_ratio: jax.Array, advantage: jax.Array, clip: float = 0.2) -> jax.Array:
    """-mean min(rho A, clip(rho, 1 - clip, 1 + clip) A) with rho = exp(log_ratio): HAQO's
    optional ppo_clip drift term (Alg. 1 lines 17-18) on the exact reverse-chain ratio
    (`DiffusionActor.chain_log_ratio`). The gradient is zero once rho has left [1 - clip,
    1 + clip] in the direction A favours, so one update cannot move the policy far. advantage
    (same shape as log_ratio, e.g. the centred candidate advantages) is under stop_gradient."""
    if not clip > 0:
        raise ValueError(f"ppo_clip_loss(clip={clip}): the clip range must be > 0 (0.2 is "
                         "the usual choice).")
    advantage = jax.lax.stop_gradient(jnp.asarray(advantage))
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1.0 - clip, 1.0 + clip)
    return -jnp.mean(jnp.minimum(ratio * advantage, clipped * advantage))
