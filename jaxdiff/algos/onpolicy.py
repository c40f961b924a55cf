"""On-policy pieces shared by MAPPO/IPPO and the sequential HA* algorithms: the settings every
on-policy algorithm has, its state, actor/critic inputs, the vectorised rollout with bootstrapped
GAE and value normalisation, env-stratified minibatches, and `act`.

Data layout: rollouts are [T, E, n, ...] (time, env, agent). Feed-forward minibatches are
presented as [1, B, n, ...] and recurrent ones as [T, E/M, n, ...], so one forward function
(a scan over the leading time axis) serves both.

Critic forms (`ep`): an agent-row critic has one value per agent (V(o_i), or V(s, id) when
centralised); HARL's EP critic has one V(s) per env on the global state, trained on the team
reward (`EnvSpec.team_reward`), whose advantage every agent shares.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxdiff import optim
from jaxdiff.algos.base import ConfigError, dynamic, static
from jaxdiff.algos.returns import ValueNorm, gae
from jaxdiff.nets import policies
from jaxdiff.nets.agents import apply_agents, init_agents, with_agent_id
from jaxdiff.nets.critics import ValueNet
from jaxdiff.nets.mlp import ACTIVATIONS
from jaxdiff.parallel import shard_envs


# ----------------------------------------------------------------------------- config
@struct.dataclass
class Config:
    """The settings every on-policy algorithm has (defaults: PureJaxRL's / JaxMARL's PPO).
    Algorithms subclass it, adding their own fields and overriding defaults."""
    num_envs: int = static(16, lo=1, doc="parallel environments per seed")
    num_steps: int = static(128, lo=1, doc="rollout length per update")
    hidden: int = static(64, lo=1)
    layers: int = static(2, lo=1)
    activation: str = static("tanh", choices=tuple(ACTIVATIONS))
    recurrent: bool = static(False, doc="GRU torso for actor and critic")
    agent_id: bool = static(True, doc="append a one-hot agent id to shared networks' inputs")
    centralised_critic: bool = static(True, doc="critic sees the global state")
    value_norm: bool = static(False)
    anneal_lr: bool = static(True, doc="anneal the learning rate linearly to 0 over the run")
    init_log_std: float = static(0.0)
    lr: float = dynamic(2.5e-4, lo=0.0)
    gamma: float = dynamic(0.99, lo=0.0, hi=1.0)
    gae_lambda: float = dynamic(0.95, lo=0.0, hi=1.0)
    clip_eps: float = dynamic(0.2, lo=0.0)
    max_grad_norm: float = dynamic(0.5, lo=0.0)


def check_split(config, key: str, m: int):
    """`m` minibatches must split the rollout: num_envs*num_steps samples (feed-forward) or
    num_envs whole sequences (recurrent)."""
    if not config.recurrent and (config.num_envs * config.num_steps) % m:
        raise ConfigError(f"`algo.{key}={m}` must divide "
                          f"num_envs*num_steps={config.num_envs * config.num_steps}.")
    if config.recurrent and config.num_envs % m:
        raise ConfigError(f"`algo.{key}={m}` must divide `algo.num_envs={config.num_envs}` "
                          f"for recurrent training.")


# ----------------------------------------------------------------------------- state
@struct.dataclass
class State:
    actor: Any
    critic: Any
    actor_opt: Any
    critic_opt: Any
    value_norm: ValueNorm
    env_state: Any
    obs: jax.Array            # [E, n, obs_dim]
    done: jax.Array           # [E, n] done flag of the previous transition (GRU resets)
    actor_carry: jax.Array    # [E, n, hidden]
    critic_carry: jax.Array   # [E, r, hidden]; r = n agent rows, or 1 for the EP critic
    key: jax.Array
    update_idx: jax.Array
    hp: Any                   # the Config as arrays: dynamic hyper-parameters (vmapped in sweeps)


class Parts(struct.PyTreeNode):
    """Everything static that `init`, `step` and `act` derive from (env, config)."""
    actor: policies.PolicyNet = struct.field(pytree_node=False)
    critic: ValueNet = struct.field(pytree_node=False)
    n: int = struct.field(pytree_node=False)
    discrete: bool = struct.field(pytree_node=False)
    dim_mask: Any = struct.field(pytree_node=False)   # np [n, act_dim] for continuous
    actor_shared: bool = struct.field(pytree_node=False)
    critic_shared: bool = struct.field(pytree_node=False)
    ep: bool = struct.field(pytree_node=False)        # HARL's EP critic: one V(s) per env


def parts(env, config, *, actor_shared: bool, critic_shared: bool, ep: bool = False) -> Parts:
    spec = env.spec
    actor = policies.PolicyNet(spec.act_dim, spec.discrete, config.hidden, config.layers,
                               config.activation, config.recurrent, config.init_log_std)
    critic = ValueNet(config.hidden, config.layers, config.activation, config.recurrent)
    return Parts(actor, critic, spec.n_agents, spec.discrete, spec.dim_mask, actor_shared,
                 critic_shared, ep)


# ----------------------------------------------------------------------------- inputs
def actor_in(config, p: Parts, obs, agent_axis):
    # obs: [..., n, obs_dim] (agent axis at `agent_axis`)
    return with_agent_id(obs, agent_axis, p.n) if p.actor_shared and config.agent_id else obs


def critic_in(config, p: Parts, obs, gstate, agent_axis):
    # obs: [B, n, obs_dim]; gstate: [B, state_dim] -> [B, n, d] ([B, 1, state_dim] for EP)
    if p.ep:
        return jnp.expand_dims(gstate, agent_axis)
    if config.centralised_critic:
        x = jnp.broadcast_to(jnp.expand_dims(gstate, agent_axis),
                             obs.shape[:-1] + gstate.shape[-1:])
        return with_agent_id(x, agent_axis, p.n) if config.agent_id else x
    return actor_in(config, p, obs, agent_axis)


def dist(p: Parts, out, mask):
    return policies.masked(p.discrete, out, mask)


def log_prob_entropy(p: Parts, d, action, dim_mask=None):
    """(log-prob, entropy) per sample; dim_mask defaults to all agents' [n, act_dim] (pass one
    agent's row when the data has no agent axis)."""
    return policies.log_prob_entropy(p.discrete, d, action,
                                     p.dim_mask if dim_mask is None else dim_mask)


def actor_apply(p: Parts, params, carry, x, reset):     # inputs [B, n, ...]
    return apply_agents(p.actor, params, p.actor_shared, carry, x, reset, agent_axis=1)


def critic_apply(p: Parts, params, carry, x, reset):
    return apply_agents(p.critic, params, p.critic_shared, carry, x, reset, agent_axis=1)


# ----------------------------------------------------------------------------- init / act
def init(key, env, config, p: Parts, *, per_agent_opt: bool = False,
         actor_optimiser: bool = True) -> State:
    """Fresh networks, optimiser states and `num_envs` reset envs. per_agent_opt: one optimiser
    state per agent (vmapped, so every leaf has the agent axis to index); actor_optimiser=False
    for algorithms whose actor step is closed form."""
    opt = optim.adam()
    k_actor, k_critic, k_env, key = jax.random.split(key, 4)
    E, n, h = config.num_envs, p.n, config.hidden
    obs, env_state = jax.vmap(env.reset)(jax.random.split(k_env, E))
    gstate = jax.vmap(env.global_state)(env_state)
    a_x = actor_in(config, p, obs, 1)[0, 0]
    c_x = critic_in(config, p, obs, gstate, 1)[0, 0]
    zero_h, no_reset = jnp.zeros((h,)), jnp.zeros((), bool)
    actor = init_agents(p.actor, k_actor, n, p.actor_shared, zero_h, a_x, no_reset)
    critic = init_agents(p.critic, k_critic, n, p.critic_shared, zero_h, c_x, no_reset)
    if not actor_optimiser:
        actor_opt = ()
    else:
        actor_opt = jax.vmap(opt.init)(actor) if per_agent_opt else opt.init(actor)
    return State(actor=actor, critic=critic, actor_opt=actor_opt, critic_opt=opt.init(critic),
                 value_norm=ValueNorm.create(), env_state=env_state, obs=obs,
                 done=jnp.zeros((E, n), bool), actor_carry=jnp.zeros((E, n, h)),
                 critic_carry=jnp.zeros((E, 1 if p.ep else n, h)), key=key,
                 update_idx=jnp.zeros((), jnp.int32), hp=jax.tree.map(jnp.asarray, config))


def init_carry(config, env):
    return jnp.zeros((env.spec.n_agents, config.hidden))


def env_steps_per_iter(config, env):
    return config.num_envs * config.num_steps


def make_act(parts_of):
    """act(config, env, state, obs, carry, mask, key, *, deterministic) for an algorithm whose
    static parts are `parts_of(env, config)`. One env: obs [n, obs_dim], carry [n, hidden],
    mask [n, act_dim] -> (actions, carry)."""
    def act(config, env, state: State, obs, carry, mask, key, *, deterministic: bool):
        p = parts_of(env, config)
        x = actor_in(config, p, obs, 0)
        reset = jnp.zeros((p.n,), bool)
        carry, out = apply_agents(p.actor, state.actor, p.actor_shared, carry, x, reset)
        d = dist(p, out, mask)
        if deterministic:
            return policies.mode(p.discrete, d), carry
        return policies.sample(p.discrete, key, d, p.dim_mask)[0], carry
    return act


# ----------------------------------------------------------------------------- rollout
def rollout_fn(env, config, p: Parts):
    """collect(state) -> (state, tr, adv, target, value_norm): `num_steps` transitions in
    `num_envs` envs, bootstrapped GAE and (optionally) value normalisation."""
    # The critic's rows of an [B, n, ...] array: all agents, or (EP) the first one -- `done`
    # is episode-level, so row 0 stands for every agent.
    c_rows = (lambda x: x[:, :1]) if p.ep else (lambda x: x)

    def env_step(state, _):
        # env-batched fields may live split over devices (jaxdiff.parallel)
        state = state.replace(**shard_envs(dict(
            env_state=state.env_state, obs=state.obs, done=state.done,
            actor_carry=state.actor_carry, critic_carry=state.critic_carry)))
        key, k_act, k_env = jax.random.split(state.key, 3)
        mask = jax.vmap(env.action_mask)(state.env_state)
        gstate = jax.vmap(env.global_state)(state.env_state)
        a_x = actor_in(config, p, state.obs, 1)
        c_x = critic_in(config, p, state.obs, gstate, 1)
        a_carry, out = actor_apply(p, state.actor, state.actor_carry, a_x, state.done)
        if config.recurrent:
            c_carry, value = critic_apply(p, state.critic, state.critic_carry, c_x,
                                          c_rows(state.done))
        else:   # feed-forward values are computed for the whole rollout at once, below
            c_carry, value = state.critic_carry, jnp.zeros(c_x.shape[:2])
        action, logp = policies.sample(p.discrete, k_act, dist(p, out, mask), p.dim_mask)
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
            _, v = critic_apply(p, state.critic, jnp.zeros(flat.shape[:2] + (config.hidden,)),
                                flat, jnp.zeros(flat.shape[:2], bool))
            tr = dict(tr, value=jnp.swapaxes(v.reshape((E, T) + v.shape[1:]), 0, 1))
        # Bootstrap from the state after the rollout.
        gstate = jax.vmap(env.global_state)(state.env_state)
        c_x = critic_in(config, p, state.obs, gstate, 1)
        _, last_v = critic_apply(p, state.critic, state.critic_carry, c_x, c_rows(state.done))
        vn = state.value_norm
        denorm = vn.denormalize if config.value_norm else (lambda x: x)
        reward, done = tr["reward"], tr["done"]
        if p.ep:
            reward, done = env.spec.team_reward(reward, -1, keepdims=True), done[..., :1]
        adv, target = gae(reward, denorm(tr["value"]), done, denorm(last_v),
                          hp.gamma, hp.gae_lambda)
        if config.value_norm:
            vn = vn.update(target)
            target = vn.normalize(target)
        if p.ep:   # every agent's advantage is the team's; target/value stay one row per env
            adv = jnp.broadcast_to(adv, tr["done"].shape)
        return state, tr, adv, target, vn

    return collect


# ----------------------------------------------------------------------------- minibatches
def minibatches(key, batch, *, num_minibatches: int, num_steps: int, num_envs: int,
                recurrent: bool):
    """Shuffle and split into num_minibatches; returns leaves [M, T', B', ...].

    batch leaves are [T, E, ...] except the initial carries `ca0`/`cc0` ([E, ...]); the trailing
    dims are free, so per-agent slices (no agent axis) split the same way.

    The split is stratified by env, so that no sample crosses the env axis and a run whose envs
    are split over devices (`jaxdiff.parallel`) shuffles locally, whatever the device count:
    feed-forward minibatch m holds, for every env, T/M of its time steps drawn by that env's own
    random permutation; recurrent minibatch m holds whole sequences, one env from every block of
    M consecutive envs (a random position per block). (Without M | T the feed-forward split falls
    back to one permutation of all T*E samples.)"""
    M, T, E = num_minibatches, num_steps, num_envs
    carries = [k for k in ("ca0", "cc0") if k in batch]
    if recurrent:   # keep whole sequences: split the env axis
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
