"""MAPPO and IPPO: clipped PPO with a centralised (MAPPO) or decentralised (IPPO) critic.

Feed-forward or GRU torsos, discrete (with action masks) or continuous actions, shared or
per-agent parameters, value normalisation, GAE. One `step` = one rollout of
`num_envs x num_steps` vectorised transitions followed by `update_epochs` passes of
`num_minibatches` minibatches. The rollout, networks and minibatching are the shared on-policy
pieces (`jaxdiff.algos.onpolicy`); this file holds the PPO loss and the update loop.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jaxdiff import optim, parallel
from jaxdiff.algos import onpolicy
from jaxdiff.algos.base import Algorithm, EpisodeSums, dynamic, register, static
from jaxdiff.algos.returns import linear_anneal


# ----------------------------------------------------------------------------- config
@struct.dataclass
class Config(onpolicy.Config):
    update_epochs: int = static(4, lo=1)
    num_minibatches: int = static(4, lo=1)
    shared_params: bool = static(True, doc="one parameter set for all agents (else stacked)")
    centralised_critic: bool = static(True, doc="critic sees the global state (MAPPO)")
    ent_coef: float = dynamic(0.01, lo=0.0)
    vf_coef: float = dynamic(0.5, lo=0.0)

    def check(self):
        onpolicy.check_split(self, "num_minibatches", self.num_minibatches)


@struct.dataclass
class IPPOConfig(Config):
    centralised_critic: bool = static(False, doc="critic sees only the agent's observation")


def parts(env, config: Config) -> onpolicy.Parts:
    shared = config.shared_params
    return onpolicy.parts(env, config, actor_shared=shared, critic_shared=shared)


def init(key, env, config: Config) -> onpolicy.State:
    return onpolicy.init(key, env, config, parts(env, config))


act = onpolicy.make_act(parts)
init_carry = onpolicy.init_carry
env_steps_per_iter = onpolicy.env_steps_per_iter


def env_split(config, env):
    """The env axis a step can split over devices: all envs (feed-forward), or the envs of one
    recurrent minibatch (each device must hold whole blocks of M envs)."""
    return config.num_envs // config.num_minibatches if config.recurrent else config.num_envs


# ----------------------------------------------------------------------------- step
def step(env, config: Config, *, iterations: int = 1):
    p = parts(env, config)
    collect = onpolicy.rollout_fn(env, config, p)

    def forward(actor, critic, carries, mb):
        """mb leaves: [T, B, n, ...]; carries: ([B, n, h], [B, n, h]) at t=0."""
        def body(c, x):
            (ca, cc), (ax, cx, reset, mask) = c, x
            ca, out = onpolicy.actor_apply(p, actor, ca, ax, reset)
            cc, v = onpolicy.critic_apply(p, critic, cc, cx, reset)
            return (ca, cc), (onpolicy.dist(p, out, mask), v)
        xs = (mb["a_x"], mb["c_x"], mb["reset"], mb["mask"])
        if not config.recurrent:  # T == 1: skip the scan (and its backward while-loop)
            _, (dist, value) = body(carries, jax.tree.map(lambda x: x[0], xs))
            return jax.tree.map(lambda x: x[None], dist), value[None]
        _, (dist, value) = jax.lax.scan(body, carries, xs)
        return dist, value

    def loss_fn(actor, critic, hp, mb):
        dist, value = forward(actor, critic, (mb["ca0"], mb["cc0"]), mb)
        logp, entropy = onpolicy.log_prob_entropy(p, dist, mb["action"])
        ratio = jnp.exp(logp - mb["logp"])
        adv = mb["adv"]
        adv = (adv - parallel.mean(adv)) / (parallel.std(adv) + 1e-8)
        pg = -jnp.minimum(ratio * adv,
                          jnp.clip(ratio, 1 - hp.clip_eps, 1 + hp.clip_eps) * adv).mean()
        v_clip = mb["value"] + jnp.clip(value - mb["value"], -hp.clip_eps, hp.clip_eps)
        v_loss = 0.5 * jnp.maximum((value - mb["target"]) ** 2,
                                   (v_clip - mb["target"]) ** 2).mean()
        ent = entropy.mean()
        total = pg - hp.ent_coef * ent + hp.vf_coef * v_loss
        aux = dict(actor_loss=pg, value_loss=v_loss, entropy=ent,
                   approx_kl=((ratio - 1) - jnp.log(ratio)).mean(),
                   clip_frac=(jnp.abs(ratio - 1) > hp.clip_eps).mean())
        return total, aux

    grad_fn = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)
    opt = optim.adam()

    def train_step(state: onpolicy.State):
        ca0, cc0 = state.actor_carry, state.critic_carry
        state, tr, adv, target, vn = collect(state)
        hp = state.hp
        batch = dict(a_x=tr["a_x"], c_x=tr["c_x"], mask=tr["mask"], reset=tr["reset"],
                     action=tr["action"], logp=tr["logp"], value=tr["value"], adv=adv,
                     target=target, ca0=ca0, cc0=cc0)
        lr = linear_anneal(hp.lr, state.update_idx, iterations, config.anneal_lr)

        def update_minibatch(carry, mb):
            actor, critic, a_opt, c_opt = carry
            rows = {k: 0 if k in ("ca0", "cc0") else 1 for k in mb}   # each leaf's row axis
            (g_actor, g_critic), aux = parallel.local_mean(
                lambda nets, d: grad_fn(*nets, d), rows)((actor, critic, hp), mb)
            actor, a_opt, a_norm = optim.apply(opt, actor, a_opt, g_actor, lr, hp.max_grad_norm)
            critic, c_opt, c_norm = optim.apply(opt, critic, c_opt, g_critic, lr,
                                                hp.max_grad_norm)
            return (actor, critic, a_opt, c_opt), dict(aux, actor_grad_norm=a_norm,
                                                       critic_grad_norm=c_norm)

        def update_epoch(carry, key):
            nets, _ = carry
            mbs = onpolicy.minibatches(key, batch, num_minibatches=config.num_minibatches,
                                       num_steps=config.num_steps, num_envs=config.num_envs,
                                       recurrent=config.recurrent)
            nets, aux = jax.lax.scan(update_minibatch, nets, mbs)
            return (nets, None), aux

        key, k_perm = jax.random.split(state.key)
        nets = (state.actor, state.critic, state.actor_opt, state.critic_opt)
        (nets, _), aux = jax.lax.scan(update_epoch, (nets, None),
                                      jax.random.split(k_perm, config.update_epochs))
        actor, critic, a_opt, c_opt = nets
        state = state.replace(actor=actor, critic=critic, actor_opt=a_opt, critic_opt=c_opt,
                              value_norm=vn, key=key, update_idx=state.update_idx + 1)
        metrics = jax.tree.map(jnp.mean, aux)
        metrics.update(episodes=EpisodeSums.of(tr["info"]), lr=lr)
        return state, metrics

    return train_step


_DOC = "clipped PPO, FF/GRU, discrete+continuous, shared or per-agent parameters"
_COMMON = dict(init=init, step=step, act=act, init_carry=init_carry,
               env_steps_per_iter=env_steps_per_iter, env_split=env_split)
register(Algorithm(name="mappo", Config=Config, **_COMMON,
                   doc="MAPPO: " + _DOC + ", centralised critic on the global state"))
register(Algorithm(name="ippo", Config=IPPOConfig, **_COMMON,
                   doc="IPPO: " + _DOC + ", decentralised critic"))
