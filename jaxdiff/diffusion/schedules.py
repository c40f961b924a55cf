"""Noise schedules as pytrees.

Discrete schedules (linear, cosine, VP) share one `Schedule` pytree that carries every
coefficient the samplers and losses need, so nothing is recomputed inside a scan and a
schedule can be passed through `jit`/`vmap` like any other array bundle.

Timestep convention: `t` is a 0-based integer index into the arrays, `t = 0 .. T-1`.
Index `t` is the paper-style step `t + 1`: `x_t = sqrt(abar[t]) x_0 + sqrt(1 - abar[t]) eps`,
so `t = 0` is the least noisy level and `t = T-1` the noisiest. "Previous" coefficients at
`t = 0` refer to clean data (`abar_prev[0] = 1`).

The VE schedule sigma(t) = A * exp(t) (spec-state-diffusion Eq. 4) lives in `VESchedule`; it
has no betas because the variance-exploding process adds noise without shrinking the data.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

# Any log of a variance goes through this floor: the posterior variance is exactly 0 at t = 0.
_LOG_FLOOR = 1e-20


@struct.dataclass
class Schedule:
    """Every coefficient of a discrete DDPM-style schedule. All fields: [T] float32."""

    betas: jax.Array
    alphas: jax.Array
    alphas_cumprod: jax.Array  # abar_t
    alphas_cumprod_prev: jax.Array  # abar_{t-1}, with abar_{-1} = 1
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    log_one_minus_alphas_cumprod: jax.Array
    sqrt_recip_alphas_cumprod: jax.Array  # x0 = sqrt_recip * x_t - sqrt_recipm1 * eps
    sqrt_recipm1_alphas_cumprod: jax.Array
    posterior_variance: jax.Array  # beta-tilde_t of q(x_{t-1} | x_t, x_0)
    posterior_log_variance_clipped: jax.Array
    posterior_mean_coef1: jax.Array  # multiplies x_0
    posterior_mean_coef2: jax.Array  # multiplies x_t

    @property
    def num_steps(self) -> int:
        # Shapes are static under jit, so this is a Python int even inside traced code.
        return self.betas.shape[-1]


@struct.dataclass
class VESchedule:
    """Variance-exploding schedule sigma(t) = A * exp(t), t in [0, t_max].

    `sigmas` is the discrete grid used by `ve_sample` (increasing, sigmas[0] = A,
    sigmas[-1] = sigma_max); `times` are the matching t values. Continuous training noise is
    drawn with `sample_ve_sigma` (t ~ U[0, t_max], i.e. log-uniform sigma).
    """

    sigmas: jax.Array  # [T]
    times: jax.Array  # [T]
    log_sigmas: jax.Array  # [T]
    sigma_min: jax.Array  # scalar, equals A
    sigma_max: jax.Array  # scalar
    t_max: jax.Array  # scalar, log(sigma_max / A)

    @property
    def num_steps(self) -> int:
        return self.sigmas.shape[-1]

    def sigma(self, t: jax.Array) -> jax.Array:
        """sigma(t) = A e^t for continuous t."""
        return self.sigma_min * jnp.exp(t)

    def g_squared(self, t: jax.Array) -> jax.Array:
        """Diffusion coefficient g(t)^2 = d sigma^2 / dt = 2 sigma(t)^2 (Eq. 4)."""
        return 2.0 * self.sigma(t) ** 2


def schedule_from_betas(betas: jax.Array) -> Schedule:
    """Derive every coefficient from betas: [T] (each in (0, 1))."""
    betas = jnp.asarray(betas, jnp.float32)
    alphas = 1.0 - betas
    # Cumulative products in log space keep abar accurate when T is large and betas tiny.
    abar = jnp.exp(jnp.cumsum(jnp.log(alphas)))
    abar_prev = jnp.concatenate([jnp.ones((1,), abar.dtype), abar[:-1]])
    one_minus_abar = 1.0 - abar
    post_var = betas * (1.0 - abar_prev) / one_minus_abar
    return Schedule(
        betas=betas,
        alphas=alphas,
        alphas_cumprod=abar,
        alphas_cumprod_prev=abar_prev,
        sqrt_alphas_cumprod=jnp.sqrt(abar),
        sqrt_one_minus_alphas_cumprod=jnp.sqrt(one_minus_abar),
        log_one_minus_alphas_cumprod=jnp.log(one_minus_abar),
        sqrt_recip_alphas_cumprod=jnp.sqrt(1.0 / abar),
        sqrt_recipm1_alphas_cumprod=jnp.sqrt(1.0 / abar - 1.0),
        posterior_variance=post_var,
        posterior_log_variance_clipped=jnp.log(jnp.maximum(post_var, _LOG_FLOOR)),
        posterior_mean_coef1=betas * jnp.sqrt(abar_prev) / one_minus_abar,
        posterior_mean_coef2=(1.0 - abar_prev) * jnp.sqrt(alphas) / one_minus_abar,
    )


def linear_schedule(
    num_steps: int, beta_start: float | None = None, beta_end: float | None = None
) -> Schedule:
    """Betas linear in t (Ho et al.).

    Defaults are Ho's (1e-4, 0.02) at T = 1000, rescaled by 1000/T so that abar_T stays near
    zero for short chains too (beta_end capped at 0.999, where alpha would otherwise hit 0).
    DDPL's Table 3 uses beta_start=0.001, beta_end=0.999 with T = 20.
    """
    scale = 1000.0 / num_steps
    start = 1e-4 * scale if beta_start is None else beta_start
    end = min(0.02 * scale, 0.999) if beta_end is None else beta_end
    return schedule_from_betas(jnp.linspace(start, end, num_steps, dtype=jnp.float32))


def cosine_schedule(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Nichol & Dhariwal cosine schedule: abar(u) ∝ cos^2((u + s)/(1 + s) * pi/2)."""
    u = jnp.linspace(0.0, 1.0, num_steps + 1, dtype=jnp.float32)
    f = jnp.cos((u + s) / (1.0 + s) * jnp.pi / 2.0) ** 2
    abar = f / f[0]
    betas = 1.0 - abar[1:] / abar[:-1]
    # The last beta is 1 without the cap (abar(1) = 0), which would make alpha_T = 0.
    return schedule_from_betas(jnp.clip(betas, 0.0, max_beta))


def vp_schedule(num_steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> Schedule:
    """Discretised VP-SDE (Song et al.) with linear beta(u) on u in [0, 1].

    alpha_t = exp(-beta_min/T - (beta_max - beta_min)(2t - 1)/(2 T^2)) for paper step t = 1..T:
    the exact per-step decay of the continuous process over [(t-1)/T, t/T].
    beta_min and beta_max may be traced (sweeps vmap over them).
    """
    k = jnp.arange(1, num_steps + 1, dtype=jnp.float32)
    T = float(num_steps)
    log_alphas = -beta_min / T - 0.5 * (beta_max - beta_min) * (2.0 * k - 1.0) / T**2
    return schedule_from_betas(-jnp.expm1(log_alphas))


def ve_schedule(num_steps: int, A: float = 0.01, sigma_max: float = 2.0) -> VESchedule:
    """sigma(t) = A e^t on a uniform t grid over [0, log(sigma_max / A)] (geometric sigmas).

    Defaults are spec-state-diffusion's [CHOICE]: sigma in [0.01, 2.0].
    """
    A = jnp.asarray(A, jnp.float32)
    sigma_max = jnp.asarray(sigma_max, jnp.float32)
    t_max = jnp.log(sigma_max / A)
    times = jnp.linspace(0.0, 1.0, num_steps, dtype=jnp.float32) * t_max
    return VESchedule(
        sigmas=A * jnp.exp(times),
        times=times,
        log_sigmas=jnp.log(A) + times,
        sigma_min=A,
        sigma_max=sigma_max,
        t_max=t_max,
    )


def make_schedule(name: str, num_steps: int, **kwargs) -> Schedule | VESchedule:
    """Build a schedule by name: "linear", "cosine", "vp" or "ve"."""
    builders = {
        "linear": linear_schedule,
        "cosine": cosine_schedule,
        "vp": vp_schedule,
        "ve": ve_schedule,
    }
    if name not in builders:
        raise ValueError(f"unknown schedule {name!r}; expected one of {sorted(builders)}")
    return builders[name](num_steps, **kwargs)


# ---------------------------------------------------------------------------------------------
# Coefficient lookups. t: int [batch] (or scalar); x: [batch, ...]. A coefficient indexed by t
# is reshaped to broadcast against x over its trailing (event) dimensions.


def gather(coef: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """coef[t] shaped to broadcast against x (t's dims lead, x's extra dims trail)."""
    values = coef[t]
    return values.reshape(values.shape + (1,) * (x.ndim - values.ndim))


def sample_timesteps(key: jax.Array, schedule: Schedule, batch: int) -> jax.Array:
    """Uniform t in {0, .., T-1}: int32 [batch]."""
    return jax.random.randint(key, (batch,), 0, schedule.num_steps)


def sample_ve_sigma(key: jax.Array, schedule: VESchedule, batch: int) -> jax.Array:
    """sigma = A e^t with t ~ U[0, t_max] (log-uniform sigma): [batch]."""
    t = jax.random.uniform(key, (batch,), minval=0.0, maxval=1.0) * schedule.t_max
    return schedule.sigma(t)


def q_sample(schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Draw from the forward process q(x_t | x_0).

    x0, noise: [batch, ...]; t: int [batch] for `Schedule` (x_t = sqrt(abar) x0 +
    sqrt(1 - abar) noise), or float sigma [batch] for `VESchedule` (y = x0 + sigma noise).
    """
    if isinstance(schedule, VESchedule):
        return x0 + gather_sigma(t, x0) * noise
    return (
        gather(schedule.sqrt_alphas_cumprod, t, x0) * x0
        + gather(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * noise
    )


def gather_sigma(sigma: jax.Array, x: jax.Array) -> jax.Array:
    """Per-sample sigma [batch] shaped to broadcast against x [batch, ...]."""
    sigma = jnp.asarray(sigma)
    return sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim))


def predict_x0_from_eps(schedule: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array):
    """Invert q_sample for x_0 given the noise. x_t, eps: [batch, ...]; t: [batch]."""
    return (
        gather(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t
        - gather(schedule.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
    )


def predict_eps_from_x0(schedule: Schedule, x_t: jax.Array, t: jax.Array, x0: jax.Array):
    """Invert q_sample for the noise given x_0. x_t, x0: [batch, ...]; t: [batch]."""
    return (gather(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / gather(
        schedule.sqrt_recipm1_alphas_cumprod, t, x_t
    )


def q_posterior(schedule: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array):
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0).

    x0, x_t: [batch, ...]; t: [batch]. Returns (mean [batch, ...], var, log_var), the
    variances shaped to broadcast against x_t.
    """
    mean = (
        gather(schedule.posterior_mean_coef1, t, x_t) * x0
        + gather(schedule.posterior_mean_coef2, t, x_t) * x_t
    )
    var = gather(schedule.posterior_variance, t, x_t)
    log_var = gather(schedule.posterior_log_variance_clipped, t, x_t)
    return mean, var, log_var


def snr(schedule: Schedule) -> jax.Array:
    """Signal-to-noise ratio abar / (1 - abar): [T]. Handy for loss time-weightings."""
    return schedule.alphas_cumprod / (1.0 - schedule.alphas_cumprod)
