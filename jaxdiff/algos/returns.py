"""Return and value-target pieces shared by on- and off-policy algorithms: GAE / TD(lambda)
returns, the running value normaliser, the Huber loss, linear learning-rate annealing."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


def gae(rewards, values, dones, last_value, gamma, lam):
    """Generalised advantage estimation.

    rewards, values, dones: [T, ...]; last_value: [...] (value of the state after step T-1).
    `dones[t]` marks that the episode ended with transition t (no bootstrap across it).
    Returns (advantages, returns), both [T, ...]; the returns are the TD(lambda) returns with
    `values` as the baseline.
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


def huber(x, delta):
    """Huber loss of the error x with threshold delta (traced allowed); delta <= 0: 0.5 x^2."""
    a = jnp.abs(x)
    quad = 0.5 * x * x
    return jnp.where(delta > 0, jnp.where(a <= delta, quad, delta * (a - 0.5 * delta)), quad)


def linear_anneal(lr, update_idx, total_updates, enabled: bool):
    """lr * (1 - update_idx / total_updates) when enabled (reaches 0 after the last update)."""
    if not enabled:
        return lr
    return lr * (1.0 - update_idx / jnp.maximum(total_updates, 1))
