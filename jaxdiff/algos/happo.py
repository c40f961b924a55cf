"""HAPPO: heterogeneous-agent PPO (Kuba et al. 2022; HARL, Zhong et al. 2024).

Agents are updated one after another in a fresh random order (`jaxdiff.algos.sequential`);
agent i_m maximises the clipped surrogate weighted by the compounded factor M of the agents
updated before it:

    max E[ M * min(r * A, clip(r, 1 - eps, 1 + eps) * A) ],  r = pi^{i_m} / pi_old^{i_m}

(M > 0, so weighting the clipped term equals HARL's `factor * min(surr1, surr2)`). Rollout,
networks, GAE and the centralised critic are MAPPO's; defaults are HARL's happo.yaml.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from jaxdiff.algos import mappo, sequential
from jaxdiff.algos.base import Algorithm, dynamic, register, static


@struct.dataclass
class Config(sequential.Config):
    update_epochs: int = static(5, lo=1, doc="policy epochs per agent (HARL ppo_epoch)")
    num_minibatches: int = static(1, lo=1, doc="actor minibatches per epoch")
    ent_coef: float = dynamic(0.01, lo=0.0)


def policy_update(p, config, hp, lr, clipped: bool = True):
    """The per-agent update for `sequential.make_step`: `update_epochs` x `num_minibatches`
    Adam steps on the M-weighted surrogate (clipped for HAPPO, plain for HAA2C)."""
    def update(i, params, opt_state, data, key):
        dim_mask = sequential.dim_mask_of(p, i)

        def loss_fn(params, mb):
            dist = sequential.agent_forward(p, params, mb)
            logp, entropy = mappo._log_prob_entropy(p, dist, mb["action"], dim_mask)
            ratio = jnp.exp(logp - mb["logp"])
            adv = mb["adv"]
            surr = ratio * adv
            if clipped:
                surr = jnp.minimum(surr, jnp.clip(ratio, 1 - hp.clip_eps, 1 + hp.clip_eps) * adv)
            pg = -(mb["factor"] * surr).mean()
            ent = entropy.mean()
            aux = dict(actor_loss=pg, entropy=ent,
                       approx_kl=((ratio - 1) - jnp.log(ratio)).mean(),
                       clip_frac=(jnp.abs(ratio - 1) > hp.clip_eps).mean())
            return pg - hp.ent_coef * ent, aux

        return sequential.sgd(loss_fn, params, opt_state, data, key, config,
                              config.update_epochs, lr, hp.max_grad_norm)

    return update


def init(key, env, config: Config):
    return sequential.init(key, env, config)


def step(env, config: Config):
    return sequential.make_step(env, config, policy_update)


register("happo", Algorithm(
    "happo", Config, init, step, mappo.act, mappo.init_carry, mappo.env_steps_per_iter,
    env_split=sequential.env_split,
    doc="HAPPO: sequential per-agent clipped PPO with the M advantage factor, per-agent actors, "
        "centralised critic, FF/GRU, discrete+continuous"))
