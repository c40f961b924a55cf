"""HAA2C: heterogeneous-agent advantage actor-critic (HARL, Zhong et al. 2024).

HAPPO's sequential scheme with a plain policy-gradient surrogate: agent i_m maximises
E[M * r * A] (r = pi^{i_m} / pi_old^{i_m}, no clipping) for `update_epochs` epochs; the first
epoch's gradient is exactly A2C's, later ones are importance weighted. Defaults: HARL haa2c.yaml.
"""
from __future__ import annotations

import functools

from flax import struct

from jaxdiff.algos import onpolicy, sequential
from jaxdiff.algos.base import Algorithm, dynamic, register, static


@struct.dataclass
class Config(sequential.Config):
    update_epochs: int = static(5, lo=1, doc="policy epochs per agent (HARL a2c_epoch)")
    num_minibatches: int = static(1, lo=1, doc="actor minibatches per epoch")
    ent_coef: float = dynamic(0.01, lo=0.0)


init = sequential.init
act = sequential.act


def step(env, config: Config, *, iterations: int = 1):
    unclipped = functools.partial(sequential.surrogate_update, clipped=False)
    return sequential.make_step(env, config, unclipped, iterations=iterations)


register(Algorithm(
    name="haa2c", Config=Config, init=init, step=step, act=act,
    init_carry=onpolicy.init_carry, env_steps_per_iter=onpolicy.env_steps_per_iter,
    env_split=sequential.env_split,
    doc="HAA2C: sequential per-agent advantage actor-critic with the M advantage factor, "
        "per-agent actors, centralised critic, FF/GRU, discrete+continuous"))
