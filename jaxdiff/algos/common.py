"""Pieces every algorithm shares: GAE, value normalisation, the optimiser step, episode stats."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

_ADAM = optax.scale_by_adam(eps=1e-5)


def adam_init(params):
    return _ADAM.init(params)


def adam_step(params, opt_state, grads, lr, max_grad_norm):
    """Clip by global norm, Adam, then scale by -lr. lr and max_grad_norm may be traced values
    (hyper-parameters stored in the state), which is what lets sweeps vmap over them."""
    gnorm = optax.global_norm(grads)
    scale = jnp.minimum(1.0, max_grad_norm / (gnorm + 1e-6))
    grads = jax.tree.map(lambda g: g * scale, grads)
    updates, opt_state = _ADAM.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
    return params, opt_state, gnorm


def gae(rewards, values, dones, last_value, gamma, lam):
    """Generalised advantage estimation.

    rewards, values, dones: [T, ...]; last_value: [...] (value of the state after step T-1).
    `dones[t]` marks that the episode ended with transition t (no bootstrap across it).
    Returns (advantages, returns), both [T, ...].
    """
    def body(carry, x):
        adv_next, v_next = carry
        r, v, d = x
        live = 1.0 - d.astype(r.dtype)
        delta = r + gamma * v_next * live - v
        adv = delta + gamma * lam * live * adv_next
        return (adv, v), adv

    init = (jnp.zeros_like(last_value), last_value)
    _, adv = jax.lax.scan(body, init, (rewards, values, dones), reverse=True)
    return adv, adv + values


@struct.dataclass
class ValueNorm:
    """Debiased running mean/variance of value targets (as in MAPPO's ValueNorm)."""
    mean: jax.Array
    mean_sq: jax.Array
    debias: jax.Array

    @classmethod
    def create(cls):
        z = jnp.zeros((), jnp.float32)
        return cls(z, z, z)

    def stats(self):
        d = jnp.maximum(self.debias, 1e-5)
        mean = self.mean / d
        var = jnp.maximum(self.mean_sq / d - mean ** 2, 1e-2)
        return mean, jnp.sqrt(var)

    def update(self, x, beta=0.99999):
        return ValueNorm(beta * self.mean + (1 - beta) * jnp.mean(x),
                         beta * self.mean_sq + (1 - beta) * jnp.mean(x ** 2),
                         beta * self.debias + (1 - beta))

    def normalize(self, x):
        mean, std = self.stats()
        return (x - mean) / std

    def denormalize(self, x):
        mean, std = self.stats()
        return x * std + mean


def episode_stats(info):
    """Sums over a rollout's finished episodes; the runner divides by `episodes`.

    info: dict of arrays [T, n_envs] from the env wrappers.
    """
    ended = info["returned_episode"].astype(jnp.float32)
    return {
        "episodes": ended.sum(),
        "episode_return_sum": (info["episode_return"] * ended).sum(),
        "episode_length_sum": (info["episode_length"] * ended).sum(),
        "won_sum": (info["won"] * ended).sum(),
    }


def linear_anneal(lr, update_idx, total_updates, enabled: bool):
    if not enabled:
        return lr
    return lr * (1.0 - update_idx / jnp.maximum(total_updates, 1))
