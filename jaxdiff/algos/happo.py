"""HAPPO: heterogeneous-agent PPO (Kuba et al. 2022; HARL, Zhong et al. 2024).

Agents are updated one after another in a fresh random order (`jaxdiff.algos.sequential`);
agent i_m maximises the clipped surrogate weighted by the compounded factor M of the agents
updated before it:

    max E[ M * min(r * A, clip(r, 1 - eps, 1 + eps) * A) ],  r = pi^{i_m} / pi_old^{i_m}

(`sequential.surrogate_update`). Rollout, networks, GAE and the centralised critic are the shared
on-policy pieces; defaults are HARL's happo.yaml.
"""
from __future__ import annotations

from flax import struct

from jaxdiff.algos import onpolicy, sequential
from jaxdiff.algos.base import Algorithm, dynamic, register, static


@struct.dataclass
class Config(sequential.Config):
    update_epochs: int = static(5, lo=1, doc="policy epochs per agent (HARL ppo_epoch)")
    num_minibatches: int = static(1, lo=1, doc="actor minibatches per epoch")
    ent_coef: float = dynamic(0.01, lo=0.0)


init = sequential.init
act = sequential.act


def step(env, config: Config, *, iterations: int = 1):
    return sequential.make_step(env, config, sequential.surrogate_update, iterations=iterations)


register(Algorithm(
    name="happo", Config=Config, init=init, step=step, act=act,
    init_carry=onpolicy.init_carry, env_steps_per_iter=onpolicy.env_steps_per_iter,
    env_split=sequential.env_split,
    doc="HAPPO: sequential per-agent clipped PPO with the M advantage factor, per-agent actors, "
        "centralised critic, FF/GRU, discrete+continuous"))
