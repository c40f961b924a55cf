"""HATRPO: heterogeneous-agent trust-region policy optimisation (Kuba et al. 2022; HARL).

Sequential per-agent updates (`jaxdiff.algos.sequential`). Agent i_m maximises the M-weighted
surrogate L(theta) = E[M * r(theta) * A] subject to E_s KL(pi_old || pi_theta) <= delta:

1. g = grad L at theta_old; s = F^{-1} g by conjugate gradient, where F v is the Hessian of the
   exact mean KL (closed form for categoricals and diagonal Gaussians) times v, plus damping;
2. full step = sqrt(2 delta / s^T F s) * s (the step whose quadratic KL model equals delta);
3. backtracking line search over fractions backtrack_coeff^k, k < ls_steps: accept the first
   step whose measured KL <= delta, whose surrogate improved, and whose improvement is at least
   accept_ratio of the linear prediction; if none is accepted the agent keeps theta_old.

There is no actor optimiser (the step is closed form); the critic is trained as in HAPPO.
Defaults: HARL hatrpo.yaml.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jax.flatten_util import ravel_pytree

from jaxdiff.algos import onpolicy, sequential
from jaxdiff.algos.base import Algorithm, dynamic, register, static
from jaxdiff.nets import policies


@struct.dataclass
class Config(sequential.Config):
    kl_threshold: float = dynamic(0.01, lo=0.0, doc="trust-region radius delta (mean KL)")
    backtrack_coeff: float = dynamic(0.8, lo=0.0, hi=1.0)
    accept_ratio: float = dynamic(0.5, lo=0.0)
    cg_damping: float = dynamic(0.1, lo=0.0, doc="Fisher-vector product damping (F + c I)")
    ls_steps: int = static(10, lo=1, doc="line-search steps")
    cg_iters: int = static(10, lo=1, doc="conjugate-gradient iterations")


def conjugate_gradient(matvec, b, iters: int, tol: float = 1e-10):
    """Solve A x = b for symmetric positive definite A given only x -> A x (flat vectors).
    Runs `iters` iterations; once the squared residual is below `tol` it stops moving."""
    def body(_, c):
        x, r, d, rr = c
        live = rr >= tol
        Ad = matvec(d)
        alpha = jnp.where(live, rr / jnp.where(live, d @ Ad, 1.0), 0.0)
        x, r = x + alpha * d, r - alpha * Ad
        rr_new = r @ r
        beta = rr_new / jnp.where(live, rr, 1.0)
        d = jnp.where(live, r + beta * d, d)
        return x, r, d, jnp.where(live, rr_new, rr)

    x, r, _, rr = jax.lax.fori_loop(0, iters, body, (jnp.zeros_like(b), b, b, b @ b))
    return x, rr


def trust_region_step(surrogate, mean_kl, theta0, hp, config):
    """One natural-gradient step with backtracking (flat parameter vectors).

    surrogate(theta) -> scalar to maximise; mean_kl(theta) -> E KL(pi_theta0 || pi_theta).
    Returns (theta, metrics)."""
    loss0, g = jax.value_and_grad(surrogate)(theta0)
    grad_kl = jax.grad(mean_kl)

    def fvp(v):   # forward-over-reverse Hessian-vector product of the mean KL at theta0
        return jax.jvp(grad_kl, (theta0,), (v,))[1] + hp.cg_damping * v

    s, residual = conjugate_gradient(fvp, g, config.cg_iters)
    shs = 0.5 * s @ fvp(s)
    step_size = jnp.where(shs > 0, jnp.sqrt(hp.kl_threshold / jnp.maximum(shs, 1e-20)), 0.0)
    full_step = step_size * s
    expected0 = g @ full_step

    def cond(c):
        k, accepted = c[0], c[1]
        return (k < config.ls_steps) & ~accepted

    def body(c):
        k, _, frac, _, _ = c
        theta = theta0 + frac * full_step
        improve = surrogate(theta) - loss0
        kl = mean_kl(theta)
        ok = ((kl <= hp.kl_threshold) & (improve > 0)
              & (improve > hp.accept_ratio * frac * expected0))
        return k + 1, ok, jnp.where(ok, frac, frac * hp.backtrack_coeff), kl, improve

    zero = jnp.zeros(())
    k, accepted, frac, kl, improve = jax.lax.while_loop(
        cond, body, (jnp.zeros((), jnp.int32), jnp.zeros((), bool), jnp.ones(()), zero, zero))
    theta = theta0 + jnp.where(accepted, frac, 0.0) * full_step
    metrics = dict(kl=jnp.where(accepted, kl, 0.0), accepted=accepted.astype(jnp.float32),
                   step_fraction=jnp.where(accepted, frac, 0.0), ls_iters=k.astype(jnp.float32),
                   expected_improve=expected0, loss_improve=jnp.where(accepted, improve, 0.0),
                   surrogate=loss0, cg_residual=residual, grad_norm=jnp.sqrt(g @ g))
    return theta, metrics


def trpo_update(p, config, hp, lr):
    """The per-agent update for `sequential.make_step` (`lr` is unused: the step is closed form)."""
    def update(i, params, opt_state, data, key):
        dim_mask = sequential.dim_mask_of(p, i)
        full = sequential.full_batch(config, data)
        theta0, unravel = ravel_pytree(params)
        dist_of = lambda theta: sequential.agent_forward(p, unravel(theta), full)
        old = jax.lax.stop_gradient(dist_of(theta0))

        def surrogate(theta):
            logp, _ = onpolicy.log_prob_entropy(p, dist_of(theta), full["action"], dim_mask)
            return (jnp.exp(logp - full["logp"]) * full["factor"] * full["adv"]).mean()

        def mean_kl(theta):
            return policies.kl(p.discrete, old, dist_of(theta), dim_mask).mean()

        theta, metrics = trust_region_step(surrogate, mean_kl, theta0, hp, config)
        return unravel(theta), opt_state, metrics

    return update


def init(key, env, config: Config):
    return sequential.init(key, env, config, actor_optimiser=False)


def step(env, config: Config, *, iterations: int = 1):
    return sequential.make_step(env, config, trpo_update, iterations=iterations)


register(Algorithm(
    name="hatrpo", Config=Config, init=init, step=step, act=sequential.act,
    init_carry=onpolicy.init_carry, env_steps_per_iter=onpolicy.env_steps_per_iter,
    env_split=sequential.env_split,
    doc="HATRPO: sequential per-agent natural-gradient steps (CG on exact-KL Fisher products, "
        "KL-bounded backtracking line search) with the M advantage factor, per-agent actors, "
        "centralised critic, FF/GRU, discrete+continuous"))
