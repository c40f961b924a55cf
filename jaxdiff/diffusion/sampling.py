"""Reverse processes: DDPM ancestral, DDIM, VE, and the paper's fixed-point / composite flows.

Every sampler is one `lax.scan` whose per-step keys are split up front, so a sampler is a pure
function of (key, model function, schedule): it jits, vmaps over keys or conditionings, and
differentiates through the whole chain with respect to anything the model function closes over.

Model-function conventions (close over parameters and conditioning, e.g.
`eps_fn = lambda x, t: net.apply(params, x, t, obs)`):
  eps_fn(x, t) -> eps          x: [batch, ...]; t: int32 [batch] (0-based schedule index)
  x0_fn(x, t) -> x0            same shapes, predicts the clean sample (prediction="x0")
  denoise_fn(y, sigma) -> x0   VE sampler; y: [batch, ...], sigma: float [batch]
  denoise_fn(tau, y) -> y      fixed-point / composite flows (Def. 2, Def. 6), any y shape
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.diffusion.schedules import (
    Schedule,
    VESchedule,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior,
)

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]
DenoiseFn = Callable[..., jax.Array]

_VARIANCES = ("posterior", "beta", "beta_over_alpha")
_PREDICTIONS = ("eps", "x0")


def _safe_sqrt(v: jax.Array) -> jax.Array:
    # sqrt'(0) is infinite; the double `where` keeps gradients w.r.t. schedule/eta finite when a
    # variance is exactly zero (last DDPM/DDIM step).
    positive = v > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, v, 1.0)), 0.0)


def _clip(x: jax.Array, clip_x0) -> jax.Array:
    if clip_x0 is None:
        return x
    low, high = (-clip_x0, clip_x0) if np.isscalar(clip_x0) else clip_x0
    return jnp.clip(x, low, high)


def _batch_t(t: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.full((x.shape[0],), t, dtype=jnp.int32)


def _check_prediction(prediction: str) -> None:
    if prediction not in _PREDICTIONS:
        raise ValueError(f"prediction={prediction!r}; expected one of {_PREDICTIONS}")


def _predict(model_fn, prediction, schedule, x, tb, clip_x0):
    """(x0, eps) from either parameterisation; eps is re-derived when x0 is clipped so the
    pair stays consistent with x_t."""
    out = model_fn(x, tb)
    if prediction == "eps":
        x0, eps = predict_x0_from_eps(schedule, x, tb, out), out
    else:
        x0, eps = out, None
    if clip_x0 is not None or eps is None:
        x0 = _clip(x0, clip_x0)
        eps = predict_eps_from_x0(schedule, x, tb, x0)
    return x0, eps


def _finish(x, traj, x_init, return_trajectory):
    if not return_trajectory:
        return x
    # traj[k] is the state after k steps, so traj[0] is the starting point.
    return x, jnp.concatenate([x_init[None], traj], axis=0)


def ddpm_sample(
    key: jax.Array,
    eps_fn: EpsFn,
    schedule: Schedule,
    shape: tuple[int, ...],
    *,
    x_T: jax.Array | None = None,
    clip_x0=None,
    variance: str = "posterior",
    prediction: str = "eps",
    return_trajectory: bool = False,
):
    """DDPM ancestral sampling x_T ~ N(0, I) -> x_0 over all T steps.

    shape: (batch, ...). Each step predicts x0 = (x_t - sqrt(1-abar) eps)/sqrt(abar), optionally
    clips it (clip_x0: float c for [-c, c], or (low, high)), and draws x_{t-1} from the
    posterior q(x_{t-1} | x_t, x0) with variance
      "posterior":        beta-tilde_t (the true posterior variance; DDPL/HAQO default),
      "beta":             beta_t (Ho et al.'s upper choice),
      "beta_over_alpha":  beta_t / alpha_t (DDPL paper's sigma_tau^2; diverges when beta_T ~ 1).
    No noise is added at the last step. prediction="x0" takes an x0_fn instead of an eps_fn.
    Returns x_0 [*shape], plus the trajectory [T + 1, *shape] (trajectory[0] = x_T) when
    return_trajectory.
    """
    if variance not in _VARIANCES:
        raise ValueError(f"variance={variance!r}; expected one of {_VARIANCES}")
    _check_prediction(prediction)
    T = schedule.num_steps
    keys = jax.random.split(key, T + 1)
    x_init = jax.random.normal(keys[0], shape) if x_T is None else x_T
    step_var = {
        "posterior": schedule.posterior_variance,
        "beta": schedule.betas,
        "beta_over_alpha": schedule.betas / schedule.alphas,
    }[variance]

    def step(x, inputs):
        t, step_key = inputs
        tb = _batch_t(t, x)
        x0, _ = _predict(eps_fn, prediction, schedule, x, tb, clip_x0)
        mean, _, _ = q_posterior(schedule, x0, x, tb)
        std = _safe_sqrt(jnp.where(t > 0, step_var[t], 0.0))
        x = mean + std * jax.random.normal(step_key, x.shape, x.dtype)
        return x, (x if return_trajectory else None)

    ts = jnp.arange(T - 1, -1, -1, dtype=jnp.int32)
    x, traj = jax.lax.scan(step, x_init, (ts, keys[1:]))
    return _finish(x, traj, x_init, return_trajectory)


def ddim_timesteps(num_train_steps: int, num_steps: int) -> np.ndarray:
    """Evenly spaced, strictly decreasing subsequence of {T-1, .., 0} of length num_steps."""
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"num_steps={num_steps} must be in [1, {num_train_steps}]")
    if num_steps == 1:
        return np.array([num_train_steps - 1], np.int32)
    # Spacing (T-1)/(S-1) >= 1 when S <= T, so rounding keeps the entries distinct.
    return np.round(np.linspace(num_train_steps - 1, 0, num_steps)).astype(np.int32)


def ddim_sample(
    key: jax.Array,
    eps_fn: EpsFn,
    schedule: Schedule,
    shape: tuple[int, ...],
    *,
    num_steps: int | None = None,
    eta: float | jax.Array = 0.0,
    x_T: jax.Array | None = None,
    clip_x0=None,
    prediction: str = "eps",
    return_trajectory: bool = False,
):
    """DDIM (Song et al. 2021) over `num_steps` evenly spaced timesteps (default: all T).

    shape: (batch, ...). eta = 0 is the deterministic probability-flow-like sampler (the key only
    draws x_T); eta = 1 with all T steps is DDPM with the posterior variance. eta may be traced.
    prediction="x0" takes an x0_fn. Returns x_0 [*shape] (and the trajectory
    [num_steps + 1, *shape] when requested).
    """
    _check_prediction(prediction)
    ts_np = ddim_timesteps(schedule.num_steps, num_steps or schedule.num_steps)
    prev_np = np.append(ts_np[1:], -1).astype(np.int32)  # -1 means "clean data", abar = 1
    keys = jax.random.split(key, len(ts_np) + 1)
    x_init = jax.random.normal(keys[0], shape) if x_T is None else x_T
    abar = schedule.alphas_cumprod

    def step(x, inputs):
        t, t_prev, step_key = inputs
        tb = _batch_t(t, x)
        x0, eps = _predict(eps_fn, prediction, schedule, x, tb, clip_x0)
        a_t = abar[t]
        a_prev = jnp.where(t_prev >= 0, abar[jnp.maximum(t_prev, 0)], 1.0)
        sigma = eta * _safe_sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
        direction = _safe_sqrt(1.0 - a_prev - sigma**2) * eps
        noise = jax.random.normal(step_key, x.shape, x.dtype)
        x = jnp.sqrt(a_prev) * x0 + direction + sigma * noise
        return x, (x if return_trajectory else None)

    xs = (jnp.asarray(ts_np), jnp.asarray(prev_np), keys[1:])
    x, traj = jax.lax.scan(step, x_init, xs)
    return _finish(x, traj, x_init, return_trajectory)


def ve_sample(
    key: jax.Array,
    denoise_fn: DenoiseFn,
    schedule: VESchedule,
    shape: tuple[int, ...],
    *,
    stochastic: bool = True,
    x_init: jax.Array | None = None,
    return_trajectory: bool = False,
):
    """Reverse VE process over the sigma grid, sigma_max -> ... -> sigma_min -> 0.

    denoise_fn(y, sigma) -> x0 estimate (y: [batch, ...], sigma: [batch]); the score is
    (x0 - y)/sigma^2 (Eq. 3). stochastic: ancestral step with variance sigma_k^2 - sigma_{k-1}^2
    (reverse-diffusion predictor); otherwise Euler on the probability-flow ODE in sigma.
    The final step to sigma = 0 returns the denoiser output. Starts at N(0, sigma_max^2 I).
    """
    sig = jnp.flip(schedule.sigmas)  # descending
    sig_next = jnp.append(sig[1:], 0.0)
    keys = jax.random.split(key, sig.shape[0] + 1)
    if x_init is None:
        x_init = schedule.sigma_max * jax.random.normal(keys[0], shape)

    def step(y, inputs):
        s, s_next, step_key = inputs
        x0 = denoise_fn(y, jnp.full((y.shape[0],), s, y.dtype))
        if stochastic:
            dvar = s**2 - s_next**2
            score = (x0 - y) / s**2
            noise = jax.random.normal(step_key, y.shape, y.dtype)
            y = y + dvar * score + _safe_sqrt(jnp.where(s_next > 0, dvar, 0.0)) * noise
        else:
            y = y + (s_next - s) * (y - x0) / s
        return y, (y if return_trajectory else None)

    y, traj = jax.lax.scan(step, x_init, (sig, sig_next, keys[1:]))
    return _finish(y, traj, x_init, return_trajectory)


# ---------------------------------------------------------------------------------------------
# The paper's blind-denoiser flows (spec-state-diffusion 2.2 and 4.1). No noise is injected and
# no noise level is passed: the only randomness is y0, which the caller draws.


def fixed_point_flow(
    denoise_fn: DenoiseFn,
    tau,
    y0: jax.Array,
    num_steps: int,
    *,
    return_trajectory: bool = False,
):
    """phi_L(tau)(y0): apply y <- denoise_fn(tau, y) num_steps times (Definition 2).

    y0: any shape the denoiser accepts (e.g. [state_dim] or [batch, state_dim]); tau: any
    pytree. num_steps = 0 returns y0 (phi_0 = identity). Returns y_L, plus the trajectory
    [L + 1, *y0.shape] with trajectory[l] = phi_l(y0) when return_trajectory.
    """

    def step(y, _):
        y = denoise_fn(tau, y)
        return y, (y if return_trajectory else None)

    y, traj = jax.lax.scan(step, y0, None, length=num_steps)
    if return_trajectory and num_steps == 0:
        traj = jnp.zeros((0,) + y0.shape, y0.dtype)
    return _finish(y, traj, y0, return_trajectory)


def composite_agent_sequence(order: jax.Array, num_steps: int) -> jax.Array:
    """Which agent conditions step l = 0..L-1 of a composite flow: order[l mod k]. int32 [L]."""
    order = jnp.asarray(order, jnp.int32)
    return order[jnp.arange(num_steps) % order.shape[0]]


def composite_flow(
    denoise_fn: DenoiseFn,
    taus,
    y0: jax.Array,
    num_steps: int,
    *,
    order: jax.Array | None = None,
    return_trajectory: bool = False,
):
    """Composite flow of Definition 6: step l applies denoise_fn(taus[order[l mod k]], y).

    taus: pytree whose leaves have a leading agent axis [n_agents, ...]. order: int [k], a
    permutation of the agents (k = n) or of a subset (k < n: the partial composite of
    Cor. 7.2); default 0..n-1. order may be traced, so orders can be vmapped. One step is one
    denoiser call, so one cycle is k steps. Returns y_L (and the trajectory [L + 1, ...]).
    """
    if order is None:
        order = jnp.arange(jax.tree.leaves(taus)[0].shape[0])
    agents = composite_agent_sequence(order, num_steps)

    def step(y, agent):
        tau = jax.tree.map(lambda leaf: leaf[agent], taus)
        y = denoise_fn(tau, y)
        return y, (y if return_trajectory else None)

    y, traj = jax.lax.scan(step, y0, agents)
    if return_trajectory and num_steps == 0:
        traj = jnp.zeros((0,) + y0.shape, y0.dtype)
    return _finish(y, traj, y0, return_trajectory)


def sample(
    method: str,
    key: jax.Array,
    model_fn: Callable,
    shape: tuple[int, ...],
    *,
    schedule: Schedule | VESchedule | None = None,
    tau=None,
    num_steps: int | None = None,
    sigma_init: float = 1.0,
    **kwargs,
):
    """One entry point for every sampler, chosen by name.

    "ddpm"        -> ddpm_sample(key, model_fn, schedule, shape, **kwargs)
    "ddim"        -> ddim_sample(..., num_steps=num_steps, **kwargs)
    "ve"          -> ve_sample(key, model_fn, schedule, shape, **kwargs)
    "fixed_point" -> fixed_point_flow(model_fn, tau, y0, num_steps) with y0 ~ N(0, sigma_init^2 I)
    "composite"   -> composite_flow(model_fn, tau, y0, num_steps, **kwargs) (tau: stacked
                     per-agent conditionings), y0 as above
    """
    if method in ("ddpm", "ddim", "ve") and schedule is None:
        raise ValueError(f"sample({method!r}) needs a schedule")
    if method == "ddpm":
        return ddpm_sample(key, model_fn, schedule, shape, **kwargs)
    if method == "ddim":
        return ddim_sample(key, model_fn, schedule, shape, num_steps=num_steps, **kwargs)
    if method == "ve":
        return ve_sample(key, model_fn, schedule, shape, **kwargs)
    if method in ("fixed_point", "composite"):
        if num_steps is None:
            raise ValueError(f"sample({method!r}) needs num_steps")
        y0 = sigma_init * jax.random.normal(key, shape)
        flow = fixed_point_flow if method == "fixed_point" else composite_flow
        return flow(model_fn, tau, y0, num_steps, **kwargs)
    raise ValueError(
        f"unknown sampler {method!r}; expected ddpm, ddim, ve, fixed_point or composite"
    )
