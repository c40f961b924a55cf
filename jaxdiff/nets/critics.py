"""Critics: state values V(x) (feed-forward or GRU) and Q(s, a_joint) networks, single or twin."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdiff.nets.init import torch_linear
from jaxdiff.nets.mlp import ACTIVATIONS, Torso, dense


class ValueNet(nn.Module):
    """V: (carry [..., hidden], x [..., in], reset bool [...]) -> (carry, value [...])."""
    hidden: int
    layers: int
    activation: str
    recurrent: bool

    @nn.compact
    def __call__(self, carry, x, reset):
        carry, h = Torso(self.hidden, self.activation, self.recurrent, self.layers)(carry, x, reset)
        return carry, dense(1, 1.0)(h)[..., 0]


class QNet(nn.Module):
    """Q: x [..., in] -> [...], an MLP with torch Linear init (HARL's ContinuousQNet); the
    caller builds x, e.g. `joint_input(global_state, joint_action)`."""
    hidden: int
    layers: int
    activation: str

    @nn.compact
    def __call__(self, x):
        for _ in range(self.layers):
            x = ACTIVATIONS[self.activation](torch_linear(self.hidden)(x))
        return torch_linear(1)(x)[..., 0]


def joint_input(state, joint):
    """state [..., S], joint [..., n, A] -> [..., S + n A]: a centralised Q's input."""
    return jnp.concatenate([state, joint.reshape(joint.shape[:-2] + (-1,))], -1)


def init_twin(module: nn.Module, key, example, n: int = 2):
    """n independently initialised parameter sets of `module`, stacked on a leading axis."""
    return jax.vmap(lambda k: module.init(k, example))(jax.random.split(key, n))


def apply_twin(module: nn.Module, params, x):
    """Every stacked parameter set on the same input: -> [n, ...]. Take `.min(0)` for the
    clipped double-Q estimate."""
    return jax.vmap(lambda c: module.apply(c, x))(params)
