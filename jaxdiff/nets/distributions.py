"""Action distributions as small pure functions (no distribution objects on the hot path).

Categorical over (masked) logits and diagonal Gaussians with state-independent log-std.
Shapes: logits [..., n_actions]; mean, log_std [..., act_dim]; actions [...] or [..., act_dim].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG = -1e9  # large but finite: exp underflows to exactly 0 without creating NaNs in grads


def mask_logits(logits, mask):
    # mask: bool [..., n_actions]; unavailable actions get (numerically) zero probability
    return jnp.where(mask, logits, _NEG)


def categorical_sample(key, logits):
    return jax.random.categorical(key, logits, axis=-1)


def categorical_log_prob(logits, action):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, action[..., None].astype(jnp.int32), axis=-1)[..., 0]


def categorical_entropy(logits):
    logp = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1)


def categorical_kl(logits_p, logits_q):
    """KL(p || q) for categoricals sharing a mask."""
    logp = jax.nn.log_softmax(logits_p, axis=-1)
    logq = jax.nn.log_softmax(logits_q, axis=-1)
    p = jnp.exp(logp)
    return jnp.sum(jnp.where(p > 0, p * (logp - logq), 0.0), axis=-1)


def gaussian_sample(key, mean, log_std):
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)


def gaussian_log_prob(mean, log_std, action, dim_mask=None):
    # dim_mask: [..., act_dim], 0 on padded action dims of heterogeneous agents
    z = (action - mean) * jnp.exp(-log_std)
    terms = -0.5 * z * z - log_std - 0.5 * jnp.log(2 * jnp.pi)
    return jnp.sum(terms if dim_mask is None else terms * dim_mask, axis=-1)


def gaussian_entropy(log_std, dim_mask=None):
    terms = log_std + 0.5 * (1.0 + jnp.log(2 * jnp.pi))
    return jnp.sum(terms if dim_mask is None else terms * dim_mask, axis=-1)


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q):
    """KL(p || q) for diagonal Gaussians."""
    var_p, var_q = jnp.exp(2 * log_std_p), jnp.exp(2 * log_std_q)
    return jnp.sum(log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5,
                   axis=-1)
