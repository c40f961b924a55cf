"""The one optimiser path of every algorithm: an optax transform plus hyper-parameters that are
array leaves of the algorithm's state (so a sweep vmaps over them).

    opt = optim.adam()                       # or optim.rmsprop(); any optax GradientTransformation
    opt_state = opt.init(params)
    params, opt_state, grad_norm = optim.apply(opt, params, opt_state, grads, lr, max_grad_norm)

`apply` clips the gradients by their global norm (`max_grad_norm`, may be `inf`), runs the
transform, and moves the parameters by `-lr * update`. Both `lr` and `max_grad_norm` may be traced
values; that is why they are arguments here rather than baked into the transform with
`optax.clip_by_global_norm` / `optax.scale(-lr)`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def adam(eps: float = 1e-5) -> optax.GradientTransformation:
    """Adam's moment scaling (the learning rate is applied by `apply`); eps 1e-5 as PPO codes."""
    return optax.scale_by_adam(eps=eps)


def rmsprop(decay: float = 0.99, eps: float = 1e-5) -> optax.GradientTransformation:
    """torch.optim.RMSprop's scaling (eps outside the square root), as pymarl uses it."""
    return optax.scale_by_rms(decay=decay, eps=eps, eps_in_sqrt=False)


def clip_by_global_norm(grads, max_grad_norm):
    """Scale `grads` so their global norm is at most `max_grad_norm` (traced allowed).
    Returns (grads, norm before clipping)."""
    gnorm = optax.global_norm(grads)
    scale = jnp.minimum(1.0, max_grad_norm / (gnorm + 1e-6))
    return jax.tree.map(lambda g: g * scale, grads), gnorm


def apply(opt: optax.GradientTransformation, params, opt_state, grads, lr, max_grad_norm=jnp.inf):
    """One optimiser step: clip, transform, `params - lr * update`.
    Returns (params, opt_state, global gradient norm before clipping)."""
    grads, gnorm = clip_by_global_norm(grads, max_grad_norm)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
    return params, opt_state, gnorm


def polyak(target, online, tau):
    """Soft target update `tau * online + (1 - tau) * target` (tau = 1: an exact copy)."""
    return jax.tree.map(lambda t, o: tau * o + (1 - tau) * t, target, online)
