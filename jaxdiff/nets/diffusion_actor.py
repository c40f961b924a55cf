"""Building blocks of a diffusion actor: the noise-prediction network eps(a_t, t, cond) and its
per-agent stacked form (one parameter set per agent, no sharing, applied with one `vmap`).

The sampler (a `jaxdiff.diffusion` reverse process) and the loss belong to the algorithm; this
module only fixes the network, so every diffusion-policy algorithm uses the same one.

    net = EpsNet(act_dim=2, hidden=256, layers=3)
    params = init_stacked(net, key, n_agents, cond_dim)        # leaves [n, ...]
    eps = apply_stacked(net, params, a_t, t, cond)            # a_t [..., n, A], t [..., n]
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiff.nets.embeddings import TimeEmbedding
from jaxdiff.nets.mlp import ACTIVATIONS


class EpsNet(nn.Module):
    """eps(a_t [..., A], t [...], cond [..., C]) -> [..., A]: an MLP on [a_t, emb(t), cond]
    (DACER/EDP-style; `t` is the integer step or any float level)."""
    act_dim: int
    hidden: int = 256
    layers: int = 3
    activation: str = "mish"
    time_features: int = 16

    @nn.compact
    def __call__(self, a_t, t, cond):
        act = ACTIVATIONS[self.activation]
        emb = TimeEmbedding(self.time_features, self.activation)(t)
        x = jnp.concatenate([a_t, jnp.broadcast_to(emb, a_t.shape[:-1] + emb.shape[-1:]), cond],
                            -1)
        for _ in range(self.layers):
            x = act(nn.Dense(self.hidden)(x))
        return nn.Dense(self.act_dim)(x)


def init_stacked(net: EpsNet, key, n_agents: int, cond_dim: int):
    """n_agents independent parameter sets of `net`, stacked on a leading agent axis."""
    example = (jnp.zeros((net.act_dim,)), jnp.zeros(()), jnp.zeros((cond_dim,)))
    return jax.vmap(lambda k: net.init(k, *example))(jax.random.split(key, n_agents))


def apply_stacked(net: EpsNet, params, a_t, t, cond, agent_axis: int = -2):
    """Agent i's network on agent i's inputs. a_t [..., n, A], cond [..., n, C] (agent axis at
    `agent_axis` of a_t/cond), t broadcastable to a_t.shape[:-1] -> eps [..., n, A]."""
    axis = agent_axis % a_t.ndim
    t = jnp.broadcast_to(t, a_t.shape[:-1])
    return jax.vmap(net.apply, in_axes=(0, axis, axis, axis), out_axes=axis)(params, a_t, t, cond)
