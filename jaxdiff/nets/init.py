"""Weight initialisers that compile to plain XLA ops (no LAPACK custom calls).

Why this module exists: `flax.linen.initializers.orthogonal` calls `jnp.linalg.qr`, which XLA:CPU
executes as a LAPACK custom call. With a leading seed axis (`vmap(init)`) the call is batched,
and jaxlib's batched LAPACK kernels split the batch over XLA's intra-op thread pool and block
until the pieces finish. When two such calls (e.g. the QR factorisation of one layer and the
Q-formation of another) run concurrently on a pool with as many threads as there are of them
(two on a 2-core machine), every pool thread is blocked waiting for work queued behind it and
the program never finishes (observed with jaxlib 0.10.2: all threads idle in
`jax::ParallelBatchMap`). A Householder QR written with `lax.fori_loop` has no custom call,
gives the same matrix as flax's initialiser for the same key (up to float rounding), and costs
nothing that matters at init time.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def householder_q(a: jax.Array) -> jax.Array:
    """Q factor [m, n] (m >= n) of a = Q R with diag(R) >= 0, by n Householder reflections.

    Pure jnp + `lax.fori_loop`: no LAPACK. The reflections act on all rows with a mask, so the
    shapes stay static; the cost is O(m^2 n), fine for initialising layers.
    """
    m, n = a.shape
    if m < n:
        raise ValueError(f"householder_q needs rows >= columns, got {a.shape}")
    rows = jnp.arange(m)

    def reflect(k, carry):
        r, q = carry
        x = jnp.where(rows >= k, r[:, k], 0.0)
        norm_x = jnp.linalg.norm(x)
        xk = x[k]
        alpha = -jnp.where(xk >= 0, 1.0, -1.0) * norm_x
        v = x - alpha * (rows == k)
        norm_v = jnp.linalg.norm(v)
        v = jnp.where(norm_v > 0, v / jnp.where(norm_v > 0, norm_v, 1.0), 0.0)
        r = r - 2.0 * jnp.outer(v, v @ r)
        q = q - 2.0 * jnp.outer(q @ v, v)
        return r, q

    r, q = jax.lax.fori_loop(0, n, reflect, (a, jnp.eye(m, dtype=a.dtype)))
    signs = jnp.where(jnp.diagonal(r)[:n] >= 0, 1.0, -1.0).astype(a.dtype)
    return q[:, :n] * signs


def orthogonal(scale: float = 1.0, column_axis: int = -1, dtype=jnp.float32):
    """Drop-in for `flax.linen.initializers.orthogonal` (same draws, same result for the same
    key), built on `householder_q` so the compiled init holds no LAPACK custom call."""

    def init(key, shape, dtype=dtype):
        if len(shape) < 2:
            raise ValueError(f"orthogonal init needs at least 2 dimensions, got shape {shape}")
        axis = column_axis % len(shape)
        n_cols = shape[axis]
        n_rows = math.prod(shape) // n_cols
        a = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), dtype)
        q = householder_q(a)
        if n_rows < n_cols:
            q = q.T
        q = q.reshape(tuple(s for i, s in enumerate(shape) if i != axis) + (n_cols,))
        return jnp.asarray(scale, dtype) * jnp.moveaxis(q, -1, axis)

    return init


def torch_linear(features: int, gain: float = 1.0):
    """A Dense layer with torch.nn.Linear's default weights, U(+-gain / sqrt(fan_in)), and zero
    biases (HARL's PlainMLP initialisation)."""
    import flax.linen as nn
    from flax.linen.initializers import variance_scaling, zeros_init
    return nn.Dense(features, kernel_init=variance_scaling(gain ** 2 / 3, "fan_in", "uniform"),
                    bias_init=zeros_init())
