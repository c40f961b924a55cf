"""MAPPO and IPPO: clipped PPO with a centralised (MAPPO) or decentralised (IPPO) critic.

Feed-forward or GRU torsos, discrete (with action masks) or continuous actions, shared or
per-agent parameters, value normalisation, GAE. One `step` = one rollout of
`num_envs x num_steps` vectorised transitions followed by `update_epochs` passes of
`num_minibatches` minibatches.

Data layout: rollouts are [T, E, n, ...] (time, env, agent). Feed-forward minibatches are
presented as [1, B, n, ...] and recurrent ones as [T, E/M, n, ...], so one forward function
(a scan over the leading time axis) serves both.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from flax.linen.initializers import constant

from jaxdiff.algos import common
from jaxdiff.algos.base import Algorithm, ConfigError, dynamic, register, static
from jaxdiff.nets import distributions as D
from jaxdiff.nets.agents import apply_agents, init_agents, with_agent_id
from jaxdiff.nets.mlp import ACTIVATIONS, Torso, dense
from jaxdiff.run import parallel
from jaxdiff.run.parallel import shard_envs


# ----------------------------------------------------------------------------- config
@struct.dataclass
class Config:
    num_envs: int = static(16, lo=1, doc="parallel environments per seed")
    num_steps: int = static(128, lo=1, doc="rollout length per update")
    update_epochs: int = static(4, lo=1)
    num_minibatches: int = static(4, lo=1)
    hidden: int = static(64, lo=1)
    layers: int = static(2, lo=1)
    activation: str = static("tanh", choices=tuple(ACTIVATIONS))
    recurrent: bool = static(False, doc="GRU torso for actor and critic")
    shared_params: bool = static(True, doc="one parameter set for all agents (else stacked)")
    agent_id: bool = static(True, doc="append a one-hot agent id to shared networks' inputs")
    centralised_critic: bool = static(True, doc="critic sees the global state (MAPPO)")
    value_norm: bool = static(False)
    anneal_lr: bool = static(True)
    init_log_std: float = static(0.0)
    total_steps: int = static(0, lo=0, doc="set by the runner (learning-rate annealing)")
    lr: float = dynamic(2.5e-4, lo=0.0)
    gamma: float = dynamic(0.99, lo=0.0, hi=1.0)
    gae_lambda: float = dynamic(0.95, lo=0.0, hi=1.0)
    clip_eps: float = dynamic(0.2, lo=0.0)
    ent_coef: float = dynamic(0.01, lo=0.0)
    vf_coef: float = dynamic(0.5, lo=0.0)
    max_grad_norm: float = dynamic(0.5, lo=0.0)

    def check(self):
        if not self.recurrent and (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ConfigError(f"`algo.num_minibatches={self.num_minibatches}` must divide "
                              f"num_envs*num_steps={self.num_envs * self.num_steps}.")
        if self.recurrent and self.num_envs % self.num_minibatches:
            raise ConfigError(f"`algo.num_minibatches={self.num_minibatches}` must divide "
                              f"`algo.num_envs={self.num_envs}` for recurrent training.")


@struct.dataclass
class IPPOConfig(Config):
    centralised_critic: bool = static(False, doc="critic sees only the agent's observation")


# ----------------------------------------------------------------------------- networks
class Actor(nn.Module):
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


class Critic(nn.Module):
    hidden: int
    layers: int
    activation: str
    recurrent: bool

    @nn.compact
    def __call__(self, carry, x, reset):
        carry, h = Torso(self.hidden, self.activation, self.recurrent, self.layers)(carry, x, reset)
        return carry, dense(1, 1.0)(h)[..., 0]


@struct.dataclass
class State:
    actor: Any
    critic: Any
    actor_opt: Any
    critic_opt: Any
    value_norm: common.ValueNorm
    env_state: Any
    obs: jax.Array            # [E, n, obs_dim]
    done: jax.Array           # [E, n] done flag of the previous transition (GRU resets)
    actor_carry: jax.Array    # [E, n, hidden]
    critic_carry: jax.Array   # [E, n, hidden]
    key: jax.Array
    update_idx: jax.Array
    hp: Config                # dynamic hyper-parameters (vmapped in sweeps)


class _Parts(struct.PyTreeNode):
    """Everything static that `init`, `step` and `act` derive from (env, config)."""
    actor: Actor = struct.field(pytree_node=False)
    critic: Critic = struct.field(pytree_node=False)
    n: int = struct.field(pytree_node=False)
    discrete: bool = struct.field(pytree_node=False)
    dim_mask: Any = struct.field(pytree_node=False)   # np [n, act_dim] for continuous


def _parts(env, config):
    spec = env.spec
    actor = Actor(spec.act_dim, spec.discrete, config.hidden, config.layers, config.activation,
                  config.recurrent, config.init_log_std)
    critic = Critic(config.hidden, config.layers, config.activation, config.recurrent)
    import numpy as np
    dim_mask = (np.arange(spec.act_dim)[None, :] < np.asarray(spec.act_sizes)[:, None])
    return _Parts(actor, critic, spec.n_agents, spec.discrete, dim_mask.astype(np.float32))


# ----------------------------------------------------------------------------- inputs
def _actor_in(config, obs, agent_axis, n):
    # obs: [..., n, obs_dim] (agent axis at `agent_axis`)
    return with_agent_id(obs, agent_axis, n) if config.shared_params and config.agent_id else obs


def critic_ep(config) -> bool:
    """HARL's EP critic (`critic_state="ep"`, sequential algorithms): one V(s) per env on the
    environment-provided global state, trained on the team reward, its advantage shared by all
    agents. Otherwise every agent row has its own value (V(s, id) or V(o_i))."""
    return getattr(config, "critic_state", "agent") == "ep"


def _critic_in(config, obs, gstate, agent_axis, n):
    # obs: [B, n, obs_dim]; gstate: [B, state_dim] -> [B, n, d] ([B, 1, state_dim] for EP)
    if critic_ep(config):
        return jnp.expand_dims(gstate, agent_axis)
    if config.centralised_critic:
        x = jnp.broadcast_to(jnp.expand_dims(gstate, agent_axis),
                             obs.shape[:-1] + gstate.shape[-1:])
        return with_agent_id(x, agent_axis, n) if config.agent_id else x
    return _actor_in(config, obs, agent_axis, n)


def _dist(parts, out, mask):
    if parts.discrete:
        return (D.mask_logits(out[0], mask),)
    return out


def _sample(parts, key, dist):
    if parts.discrete:
        a = D.categorical_sample(key, dist[0])
        return a, D.categorical_log_prob(dist[0], a)
    a = D.gaussian_sample(key, *dist)
    return a, D.gaussian_log_prob(*dist, a, parts.dim_mask)


def _log_prob_entropy(parts, dist, action, dim_mask=None):
    # dim_mask: defaults to all agents' [n, act_dim]; one agent's row when data has no agent axis
    dim_mask = parts.dim_mask if dim_mask is None else dim_mask
    if parts.discrete:
        return D.categorical_log_prob(dist[0], action), D.categorical_entropy(dist[0])
    return (D.gaussian_log_prob(*dist, action, dim_mask), D.gaussian_entropy(dist[1], dim_mask))


# ----------------------------------------------------------------------------- init
def init(key, env, config: Config) -> State:
    spec, p = env.spec, _parts(env, config)
    k_actor, k_critic, k_env, key = jax.random.split(key, 4)
    E, n, h = config.num_envs, spec.n_agents, config.hidden
    obs, env_state = jax.vmap(env.reset)(jax.random.split(k_env, E))
    gstate = jax.vmap(env.global_state)(env_state)
    a_x = _actor_in(config, obs, 1, n)[0, 0]
    c_x = _critic_in(config, obs, gstate, 1, n)[0, 0]
    zero_h, no_reset = jnp.zeros((h,)), jnp.zeros((), bool)
    actor = init_agents(p.actor, k_actor, n, config.shared_params, zero_h, a_x, no_reset)
    critic = init_agents(p.critic, k_critic, n, config.shared_params, zero_h, c_x, no_reset)
    return State(actor=actor, critic=critic, actor_opt=common.adam_init(actor),
                 critic_opt=common.adam_init(critic), value_norm=common.ValueNorm.create(),
                 env_state=env_state, obs=obs, done=jnp.zeros((E, n), bool),
                 actor_carry=jnp.zeros((E, n, h)), critic_carry=jnp.zeros((E, n, h)),
                 key=key, update_idx=jnp.zeros((), jnp.int32),
                 hp=jax.tree.map(jnp.asarray, config))


def init_carry(config, env):
    return jnp.zeros((env.spec.n_agents, config.hidden))


def env_steps_per_iter(config, env):
    return config.num_envs * config.num_steps


# ----------------------------------------------------------------------------- act
def act(config, env, state: State, obs, carry, mask, key, deterministic):
    """One env: obs [n, obs_dim], carry [n, hidden], mask [n, act_dim] -> actions, carry."""
    p = _parts(env, config)
    x = _actor_in(config, obs, 0, p.n)
    reset = jnp.zeros((p.n,), bool)
    carry, out = apply_agents(p.actor, state.actor, config.shared_params, carry, x, reset)
    dist = _dist(p, out, mask)
    if deterministic:
        return (jnp.argmax(dist[0], -1) if p.discrete else dist[0]), carry
    return _sample(p, key, dist)[0], carry


# ----------------------------------------------------------------------------- rollout
def rollout_fn(env, config, p, actor_shared: bool, critic_shared: bool):
    """collect(state) -> (state, tr, adv, target, value_norm): `num_steps` transitions in
    `num_envs` envs, bootstrapped GAE and (optionally) value normalisation. Shared with the
    sequential HA* algorithms, whose State has the same rollout fields."""
    n = p.n
    ep = critic_ep(config)
    # The critic's rows of an [B, n, ...] array: all agents, or (EP) the first one -- `done`
    # is episode-level, so row 0 stands for every agent.
    c_rows = (lambda x: x[:, :1]) if ep else (lambda x: x)

    def actor_apply(params, carry, x, reset):     # inputs [B, n, ...]
        return apply_agents(p.actor, params, actor_shared, carry, x, reset, agent_axis=1)

    def critic_apply(params, carry, x, reset):
        return apply_agents(p.critic, params, critic_shared, carry, x, reset, agent_axis=1)

    def env_step(state, _):
        # env-batched fields may live split over devices (jaxdiff.run.parallel)
        state = state.replace(**shard_envs(dict(
            env_state=state.env_state, obs=state.obs, done=state.done,
            actor_carry=state.actor_carry, critic_carry=state.critic_carry)))
        key, k_act, k_env = jax.random.split(state.key, 3)
        mask = jax.vmap(env.action_mask)(state.env_state)
        gstate = jax.vmap(env.global_state)(state.env_state)
        a_x = _actor_in(config, state.obs, 1, n)
        c_x = _critic_in(config, state.obs, gstate, 1, n)
        a_carry, out = actor_apply(state.actor, state.actor_carry, a_x, state.done)
        if config.recurrent:
            c_carry, value = critic_apply(state.critic, state.critic_carry, c_x,
                                          c_rows(state.done))
        else:   # feed-forward values are computed for the whole rollout at once, below
            c_carry, value = state.critic_carry, jnp.zeros(c_x.shape[:2])
        action, logp = _sample(p, k_act, _dist(p, out, mask))
        keys = jax.random.split(k_env, config.num_envs)
        obs, env_state, reward, done, info = jax.vmap(env.step)(keys, state.env_state, action)
        tr = shard_envs(dict(a_x=a_x, c_x=c_x, mask=mask, reset=state.done, action=action,
                             logp=logp, value=value, reward=reward, done=done, info=info))
        state = state.replace(env_state=env_state, obs=obs, done=done, actor_carry=a_carry,
                              critic_carry=c_carry, key=key)
        return state, tr

    def collect(state):
        state, tr = jax.lax.scan(env_step, state, None, config.num_steps)
        hp = state.hp
        if not config.recurrent:   # one [E*T, n] batch: fewer, larger matmuls than per step
            T, E = tr["c_x"].shape[:2]   # env-major, so a split env axis stays contiguous
            flat = shard_envs(jnp.swapaxes(tr["c_x"], 0, 1).reshape((E * T,) + tr["c_x"].shape[2:]))
            _, v = critic_apply(state.critic, jnp.zeros(flat.shape[:2] + (config.hidden,)),
                                flat, jnp.zeros(flat.shape[:2], bool))
            tr = dict(tr, value=jnp.swapaxes(v.reshape((E, T) + v.shape[1:]), 0, 1))
        # Bootstrap from the state after the rollout.
        gstate = jax.vmap(env.global_state)(state.env_state)
        c_x = _critic_in(config, state.obs, gstate, 1, n)
        _, last_v = critic_apply(state.critic, state.critic_carry, c_x, c_rows(state.done))
        vn = state.value_norm
        denorm = vn.denormalize if config.value_norm else (lambda x: x)
        reward, done = tr["reward"], tr["done"]
        if ep:   # the team reward (HARL's MPE wrapper: the sum of the agents' rewards)
            team = reward.mean if env.spec.shared_reward else reward.sum
            reward, done = team(-1, keepdims=True), done[..., :1]
        adv, target = common.gae(reward, denorm(tr["value"]), done, denorm(last_v),
                                 hp.gamma, hp.gae_lambda)
        if config.value_norm:
            vn = vn.update(target)
            target = vn.normalize(target)
        if ep:   # every agent's advantage is the team's; target/value stay one row per env
            adv = jnp.broadcast_to(adv, tr["done"].shape)
        return state, tr, adv, target, vn

    return collect


def minibatches(config, key, batch):
    """Shuffle and split into num_minibatches; returns leaves [M, T', B', ...].

    batch leaves are [T, E, ...] except the initial carries `ca0`/`cc0` ([E, ...]); the trailing
    dims are free, so per-agent slices (no agent axis) split the same way.

    The split is stratified by env, so that no sample crosses the env axis and a run whose envs
    are split over devices (`jaxdiff.run.parallel`) shuffles locally, whatever the device count:
    feed-forward minibatch m holds, for every env, T/M of its time steps drawn by that env's own
    random permutation; recurrent minibatch m holds whole sequences, one env from every block of
    M consecutive envs (a random position per block). (Without M | T the feed-forward split falls
    back to one permutation of all T*E samples.)"""
    M, T, E = config.num_minibatches, config.num_steps, config.num_envs
    carries = [k for k in ("ca0", "cc0") if k in batch]
    if config.recurrent:   # keep whole sequences: split the env axis
        pos = jax.vmap(lambda k: jax.random.permutation(k, M))(jax.random.split(key, E // M))
        def split(x, axis):   # env axis at `axis` -> [M, ..., E/M, ...]
            x = x.reshape(x.shape[:axis] + (E // M, M) + x.shape[axis + 1:])
            idx = pos.reshape((1,) * axis + (E // M, M) + (1,) * (x.ndim - axis - 2))
            x = jnp.take_along_axis(x, idx, axis=axis + 1)
            return shard_envs(jnp.moveaxis(x, axis + 1, 0), axis + 1)
        seq = {k: split(v, 1) for k, v in batch.items() if k not in carries}
        seq.update({k: split(batch[k], 0) for k in carries})
        return seq
    B = E * T
    if T % M == 0:
        times = jax.vmap(lambda k: jax.random.permutation(k, T))(jax.random.split(key, E))
        def split(x):   # [T, E, ...] -> [M, 1, E*T/M, ...]
            x = jnp.swapaxes(x, 0, 1)
            x = jnp.take_along_axis(x, times.reshape((E, T) + (1,) * (x.ndim - 2)), axis=1)
            x = jnp.moveaxis(x.reshape((E, M, T // M) + x.shape[2:]), 1, 0)
            return shard_envs(x.reshape((M, 1, B // M) + x.shape[3:]), 2)
    else:
        perm = jax.random.permutation(key, B)
        def split(x):
            x = x.reshape((B,) + x.shape[2:])[perm]
            return x.reshape((M, 1, B // M) + x.shape[1:])
    flat = {k: split(v) for k, v in batch.items() if k not in carries}
    flat.update({k: jnp.zeros((M, B // M) + batch[k].shape[1:]) for k in carries})
    return flat


def env_split(config, env):
    """The env axis a step can split over devices: all envs (feed-forward), or the envs of one
    recurrent minibatch (each device must hold whole blocks of M envs)."""
    return config.num_envs // config.num_minibatches if config.recurrent else config.num_envs


# ----------------------------------------------------------------------------- step
def step(env, config: Config):
    p = _parts(env, config)
    shared = config.shared_params
    total_updates = max(config.total_steps // (config.num_envs * config.num_steps), 1)
    collect = rollout_fn(env, config, p, shared, shared)

    def actor_apply(params, carry, x, reset):     # inputs [B, n, ...]
        return apply_agents(p.actor, params, shared, carry, x, reset, agent_axis=1)

    def critic_apply(params, carry, x, reset):
        return apply_agents(p.critic, params, shared, carry, x, reset, agent_axis=1)

    def forward(actor, critic, carries, mb):
        """mb leaves: [T, B, n, ...]; carries: ([B, n, h], [B, n, h]) at t=0."""
        def body(c, x):
            (ca, cc), (ax, cx, reset, mask) = c, x
            ca, out = actor_apply(actor, ca, ax, reset)
            cc, v = critic_apply(critic, cc, cx, reset)
            return (ca, cc), (_dist(p, out, mask), v)
        xs = (mb["a_x"], mb["c_x"], mb["reset"], mb["mask"])
        if not config.recurrent:  # T == 1: skip the scan (and its backward while-loop)
            _, (dist, value) = body(carries, jax.tree.map(lambda x: x[0], xs))
            return jax.tree.map(lambda x: x[None], dist), value[None]
        _, (dist, value) = jax.lax.scan(body, carries, xs)
        return dist, value

    def loss_fn(actor, critic, hp, mb):
        dist, value = forward(actor, critic, (mb["ca0"], mb["cc0"]), mb)
        logp, entropy = _log_prob_entropy(p, dist, mb["action"])
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

    def train_step(state: State):
        ca0, cc0 = state.actor_carry, state.critic_carry
        state, tr, adv, target, vn = collect(state)
        hp = state.hp
        batch = dict(a_x=tr["a_x"], c_x=tr["c_x"], mask=tr["mask"], reset=tr["reset"],
                     action=tr["action"], logp=tr["logp"], value=tr["value"], adv=adv,
                     target=target, ca0=ca0, cc0=cc0)
        lr = common.linear_anneal(hp.lr, state.update_idx, total_updates, config.anneal_lr)

        def update_minibatch(carry, mb):
            actor, critic, a_opt, c_opt = carry
            rows = {k: 0 if k in ("ca0", "cc0") else 1 for k in mb}   # each leaf's row axis
            (g_actor, g_critic), aux = parallel.local_mean(
                lambda nets, d: grad_fn(*nets, d), rows)((actor, critic, hp), mb)
            actor, a_opt, a_norm = common.adam_step(actor, a_opt, g_actor, lr, hp.max_grad_norm)
            critic, c_opt, c_norm = common.adam_step(critic, c_opt, g_critic, lr,
                                                     hp.max_grad_norm)
            return (actor, critic, a_opt, c_opt), dict(aux, actor_grad_norm=a_norm,
                                                       critic_grad_norm=c_norm)

        def update_epoch(carry, key):
            nets, _ = carry
            nets, aux = jax.lax.scan(update_minibatch, nets, minibatches(config, key, batch))
            return (nets, None), aux

        key, k_perm = jax.random.split(state.key)
        nets = (state.actor, state.critic, state.actor_opt, state.critic_opt)
        (nets, _), aux = jax.lax.scan(update_epoch, (nets, None),
                                      jax.random.split(k_perm, config.update_epochs))
        actor, critic, a_opt, c_opt = nets
        state = state.replace(actor=actor, critic=critic, actor_opt=a_opt, critic_opt=c_opt,
                              value_norm=vn, key=key, update_idx=state.update_idx + 1)
        metrics = jax.tree.map(jnp.mean, aux)
        metrics.update(common.episode_stats(tr["info"]), lr=lr)
        return state, metrics

    return train_step


_DOC = "clipped PPO, FF/GRU, discrete+continuous, shared or per-agent parameters"
register("mappo", Algorithm("mappo", Config, init, step, act, init_carry, env_steps_per_iter,
                            doc="MAPPO: " + _DOC + ", centralised critic on the global state",
                            env_split=env_split))
register("ippo", Algorithm("ippo", IPPOConfig, init, step, act, init_carry, env_steps_per_iter,
                           doc="IPPO: " + _DOC + ", decentralised critic", env_split=env_split))
