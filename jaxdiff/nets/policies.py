"""Policy networks and their action heads (categorical with availability masks, diagonal
Gaussian, tanh-squashed Gaussian on a box). No RL here: algorithms decide what to do with them.

Heads are plain functions on the network outputs so that a loss can differentiate through them:

    out = net.apply(params, ...)                         # (logits,) or (mean, log_std)
    dist = masked(discrete, out, mask)                   # availability mask on logits
    action, logp = sample(discrete, key, dist, dim_mask)
    logp, entropy = log_prob_entropy(discrete, dist, action, dim_mask)

The hand-written forms in `jaxdiff.nets.distributions` are used instead of distrax objects: the
same formulas, no object construction inside the scanned training step (see the notes of the
algorithm-layer change for the measurement).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.initializers import constant

from jaxdiff.nets import distributions as D
from jaxdiff.nets.init import torch_linear
from jaxdiff.nets.mlp import ACTIVATIONS, Torso, dense

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class PolicyNet(nn.Module):
    """Torso (feed-forward or GRU) and an action head: logits (discrete) or a Gaussian mean with a
    state-independent log-std parameter (continuous). One time step:
    (carry [..., hidden], x [..., in], reset bool [...]) -> (carry, (logits,) | (mean, log_std))."""
    act_dim: int
    discrete: bool
    hidden: int
    layers: int
    activation: str
    recurrent: bool
    init_log_std: float

    @nn.compact
    def __call__(self, carry, x, reset):
        carry, h = Torso(self.hidden, self.activation, self.recurrent, self.layers)(carry, x, reset)
        out = dense(self.act_dim, 0.01)(h)
        if self.discrete:
            return carry, (out,)
        log_std = self.param("log_std", constant(self.init_log_std), (self.act_dim,))
        return carry, (out, jnp.broadcast_to(log_std, out.shape))


class PlainPolicyNet(nn.Module):
    """HARL's PlainMLP (hidden activations, tanh on the last hidden layer, torch Linear init) and
    a logits head (discrete, gain 0.01) or a Gaussian head with a state-dependent log-std
    clipped to [LOG_STD_MIN, LOG_STD_MAX]. x [..., in] -> (logits,) | (mean, log_std)."""
    act_dim: int
    discrete: bool
    hidden: int
    layers: int
    activation: str

    @nn.compact
    def __call__(self, x):
        for layer in range(self.layers):
            x = torch_linear(self.hidden)(x)
            x = jnp.tanh(x) if layer == self.layers - 1 else ACTIVATIONS[self.activation](x)
        if self.discrete:
            return (torch_linear(self.act_dim, 0.01)(x),)
        log_std = jnp.clip(torch_linear(self.act_dim)(x), LOG_STD_MIN, LOG_STD_MAX)
        return torch_linear(self.act_dim)(x), log_std


# ----------------------------------------------------------------------------- heads
def masked(discrete: bool, out, mask):
    """Apply the availability mask to discrete logits; continuous outputs pass through."""
    return (D.mask_logits(out[0], mask),) if discrete else out


def sample(discrete: bool, key, dist, dim_mask):
    """-> (action, log-prob). dim_mask [..., act_dim] excludes padded continuous dims."""
    if discrete:
        a = D.categorical_sample(key, dist[0])
        return a, D.categorical_log_prob(dist[0], a)
    a = D.gaussian_sample(key, *dist)
    return a, D.gaussian_log_prob(*dist, a, dim_mask)


def mode(discrete: bool, dist):
    """The deterministic action: argmax of the logits, or the Gaussian mean."""
    return jnp.argmax(dist[0], -1) if discrete else dist[0]


def log_prob_entropy(discrete: bool, dist, action, dim_mask):
    """(log pi(action), entropy) per sample."""
    if discrete:
        return D.categorical_log_prob(dist[0], action), D.categorical_entropy(dist[0])
    return D.gaussian_log_prob(*dist, action, dim_mask), D.gaussian_entropy(dist[1], dim_mask)


def kl(discrete: bool, old, new, dim_mask):
    """Exact KL(old || new) per sample; padded continuous dims excluded."""
    if discrete:
        return D.categorical_kl(old[0], new[0])
    per_dim = D.gaussian_kl(old[0][..., None], old[1][..., None], new[0][..., None],
                            new[1][..., None])
    return (per_dim * dim_mask).sum(-1)


def squashed_sample(out, key, dim_mask, low, high, deterministic=False):
    """Tanh-squashed Gaussian mapped affinely onto the box [low, high].
    out: (mean, log_std) [..., A] -> (action, log-prob of the action the env receives, i.e.
    including the tanh and box-scale Jacobians)."""
    mean, log_std = out
    u = mean if deterministic else D.gaussian_sample(key, mean, log_std)
    half = 0.5 * (high - low)
    # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), stable for large |u|
    log_det = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)) + jnp.log(half)
    logp = D.gaussian_log_prob(mean, log_std, u, dim_mask) - jnp.sum(log_det * dim_mask, -1)
    action = (low + (jnp.tanh(u) + 1.0) * half) * dim_mask
    return action, logp
