"""Embeddings of a diffusion step (or noise level) for conditional networks."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxdiff.nets.mlp import ACTIVATIONS


def sinusoidal(t, dim: int, max_period: float = 10_000.0):
    """Transformer-style features of t [...] (an integer step or a float level) -> [..., dim]:
    [sin(t w_k), cos(t w_k)] with frequencies w_k = max_period^(-k / (dim/2)), k < dim/2."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}.")
    half = dim // 2
    freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(t, jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], -1)


class TimeEmbedding(nn.Module):
    """sinusoidal(t) -> Dense -> activation -> Dense: t [...] -> [..., features]."""
    features: int
    activation: str = "mish"

    @nn.compact
    def __call__(self, t):
        h = sinusoidal(t, 2 * ((self.features + 1) // 2))
        h = ACTIVATIONS[self.activation](nn.Dense(2 * self.features)(h))
        return nn.Dense(self.features)(h)
