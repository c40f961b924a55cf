"""The blind, history-conditioned denoiser f_theta(tau_i, y) of spec-state-diffusion §2.

One MLP is shared by all agents (tau_i carries the agent id). It sees no noise level: the
first layer is a single affine map of [tau; y] (Corollary 5.1's W_tau tau + W_y y + b),
followed by `depth` activated hidden layers and a linear output that predicts the clean
state. Also here: the analytic optimal blind denoiser for a finite state set (spec §5.1),
which the tests and the 2x2 experiment use as the approximation-free reference.
"""
from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {"silu": nn.silu, "relu": nn.relu, "tanh": nn.tanh, "gelu": nn.gelu}

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]


class Denoiser(nn.Module):
    """f(tau [..., tau_dim], y [..., state_dim]) -> clean-state estimate [..., state_dim].

    [CHOICE, spec §2.4] depth 3 hidden layers of `width`, SiLU (smooth, so the Hessian terms of
    Theorem 5 exist), Flax default init (lecun_normal kernels, zero biases), float32.
    """

    state_dim: int
    width: int = 256
    depth: int = 3
    activation: str = "silu"

    @nn.compact
    def __call__(self, tau: jax.Array, y: jax.Array) -> jax.Array:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation={self.activation!r}; expected one of {sorted(ACTIVATIONS)}"
            )
        act = ACTIVATIONS[self.activation]
        h = jnp.concatenate([tau, y], axis=-1)
        for _ in range(self.depth):
            h = act(nn.Dense(self.width)(h))
        return nn.Dense(self.state_dim)(h)


def num_params(tau_dim: int, state_dim: int, width: int, depth: int) -> int:
    """Parameter count of `Denoiser`: (|tau|+|s|+1) W + (D-1)(W+1) W + (W+1) |s|."""
    return (tau_dim + state_dim + 1) * width + (depth - 1) * (width + 1) * width + (
        width + 1
    ) * state_dim


def init_params(key: jax.Array, model: Denoiser, tau_dim: int):
    """Parameters of `model` for conditioning vectors of size tau_dim."""
    return model.init(key, jnp.zeros((tau_dim,)), jnp.zeros((model.state_dim,)))


def denoise_fn(model: Denoiser, params) -> DenoiseFn:
    """f(tau, y) closed over params, in the (tau, y) convention of `jaxdiff.diffusion`."""
    return lambda tau, y: model.apply(params, tau, y)


def first_layer_blocks(params, tau_dim: int) -> tuple[jax.Array, jax.Array]:
    """Corollary 5.1's W_tau [W, tau_dim] and W_y [W, state_dim] of a `Denoiser`: its first
    layer computes W_tau tau + W_y y + b (the kernel acts on the concatenation [tau; y])."""
    kernel = params["params"]["Dense_0"]["kernel"]  # [tau_dim + state_dim, W]
    return kernel[:tau_dim].T, kernel[tau_dim:].T


def analytic_blind_denoiser(
    states: jax.Array,
    sigma_min: float = 0.01,
    sigma_max: float = 2.0,
    num_sigmas: int = 64,
) -> DenoiseFn:
    """Optimal blind denoiser for a discrete posterior over `states` (Eq. 2, noise unknown).

    Returns f(log_post, y) = E[s | y, tau] = sum_s w_s s with
    w_s ∝ p(s | tau) ∫ N(y; s, sigma^2 I) p(sigma) dsigma, where p(sigma) is the training noise
    distribution (log-uniform on [sigma_min, sigma_max]) integrated on a geometric grid of
    `num_sigmas` points. The conditioning "tau" is log p(s | tau) over the states: [n_states]
    (-inf for impossible states); y: [state_dim].
    states: [n_states, state_dim].
    """
    states = jnp.asarray(states, jnp.float32)
    sigmas = jnp.asarray(np.geomspace(sigma_min, sigma_max, num_sigmas), jnp.float32)
    dim = states.shape[-1]

    def f(log_post: jax.Array, y: jax.Array) -> jax.Array:
        sq = jnp.sum((y - states) ** 2, axis=-1)  # [S]
        log_n = -sq[:, None] / (2 * sigmas**2) - dim * jnp.log(sigmas)  # [S, n_sigma]
        logits = log_post + jax.nn.logsumexp(log_n, axis=-1)
        return jax.nn.softmax(logits) @ states

    return f
