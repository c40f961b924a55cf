"""HASAC: heterogeneous-agent soft actor-critic (Liu et al., ICLR 2024; HARL, Zhong et al. 2024).

Off-policy maximum-entropy MARL with HARL's sequential scheme. One `step`:

1. collect `train_interval` vectorised steps in `num_envs` envs (uniform random actions while
   fewer than `warmup_steps` transitions have been collected) into a flashbax trajectory
   buffer held in `State.buffer` (so checkpoints hold the replay memory and a resumed run is
   bit-identical to an uninterrupted one);
2. once warm, `updates_per_train` gradient updates, each on a fresh batch:
   - twin centralised critics Q_k(s, a_joint) regress on the n-step soft target
     `sum_k gamma^k r_{t+k} + gamma^m [min_k Qbar_k(s_{t+m}, a') - sum_i alpha_i log pi_i(a'^i)]`,
     a' ~ pi(.|o_{t+m}) (Polyak targets, Huber or squared error, optional ValueNorm: the
     critics then output normalised values, which the actors maximise as they are, as in HARL);
   - actors in a fresh random order (a `lax.scan` over the permutation): agent i_m maximises
     `E[min_k Q_k(s, a^{i_1..i_m-1}, a^{i_m}, a^{rest})] - alpha_{i_m} E[log pi^{i_m}]` with its
     predecessors' actions re-sampled from their UPDATED policies, its own from its current
     policy (reparameterised), and the rest sampled from their not-yet-updated policies (HARL;
     `successor_actions=buffer` uses the stored actions instead);
   - per-agent temperatures, fixed or auto-tuned towards a target entropy.

Actions. Continuous: tanh-squashed Gaussian (state-dependent log-std clipped to [-20, 2]) mapped
affinely onto the env's [low, high] box; `log pi` includes both the tanh and the box-scale
Jacobians, so it is the density of the action the env receives and the target entropy -|A^i|
refers to the env's own action space. Discrete (with action masks): by default the actor loss
is the exact expectation over the agent's own categorical, sum_a pi(a|o) [Q(s, a, a^-i) -
alpha log pi(a|o)] (one critic evaluation per action of that agent: exact and low-variance for
the small action sets of MPE/SMAX); `discrete_grad=gumbel` is HARL's straight-through
Gumbel-softmax instead.

n-step targets on truncated episodes. The env adapters auto-reset and expose no terminal
observation, so a window that reaches a time-limit end at offset j bootstraps from s_{t+j}, the
last state whose successor is known (rewards up to j-1), and a sample whose own transition is
the truncating one (j = 0) is dropped from the loss. Terminations cut the bootstrap. HARL
(`use_proper_time_limits`) bootstraps from the terminal observation instead.

Deviations from HARL, on purpose: the critic's soft target uses the per-agent temperatures
(HARL keeps a separate critic temperature tuned on the summed log-probs; both aim at the same
sum); the discrete target entropy is 0.98 log|A^i| (HARL's code evaluates
`np.prod(Discrete.shape) = 1`, i.e. a target of 0, which only ever shrinks alpha); auto-tuned
temperatures start at `alpha` (HARL starts at 1); torch's default Linear init everywhere (HARL's
continuous actor and critics; its discrete actor is orthogonal); no input LayerNorm, no
per-agent active masks (SMAX dead units act through their no-op mask). Defaults: HARL's
configs/algos_cfgs/hasac.yaml except `buffer_size` (1e5, CPU-friendly: the buffer is part of the
checkpointed, seed-vmapped state; HARL uses 1e6).

Layouts: buffer experience [E, L, ...] (env, time); batches [B, ...]; agent axis after batch.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdiff import optim
from jaxdiff.algos import offpolicy, sequential
from jaxdiff.algos.base import Algorithm, ConfigError, EpisodeSums, dynamic, register, static
from jaxdiff.algos.returns import ValueNorm, huber
from jaxdiff.nets import distributions as D
from jaxdiff.nets import policies
from jaxdiff.nets.agents import apply_agents, init_agents
from jaxdiff.nets.critics import QNet, apply_twin, init_twin, joint_input
from jaxdiff.nets.mlp import ACTIVATIONS


# ----------------------------------------------------------------------------- config
@struct.dataclass
class Config:
    """Defaults: HARL's configs/algos_cfgs/hasac.yaml (HARL key names in the docs)."""
    num_envs: int = static(20, lo=1, doc="parallel environments per seed (n_rollout_threads)")
    train_interval: int = static(50, lo=1, doc="vectorised env steps collected per `step`")
    updates_per_train: int = static(50, lo=1, doc="gradient updates per `step` "
                                    "(HARL: update_per_train x train_interval = 1 x 50)")
    warmup_steps: int = static(10_000, lo=0, doc="uniform random actions for these transitions")
    buffer_size: int = static(100_000, lo=1, doc="transitions kept (HARL 1e6)")
    batch_size: int = static(1000, lo=1)
    n_step: int = static(20, lo=1, doc="n-step returns")
    hidden: int = static(256, lo=1)
    layers: int = static(2, lo=1)
    activation: str = static("relu", choices=tuple(ACTIVATIONS))
    auto_alpha: bool = static(False, doc="tune each agent's temperature towards its target")
    value_norm: bool = static(True, doc="ValueNorm on the Q targets (use_valuenorm)")
    fixed_order: bool = static(False, doc="update agents in index order, not a random permutation")
    successor_actions: str = static("policy", choices=("policy", "buffer"),
                                    doc="actions of agents not yet updated: sampled from their "
                                        "current policies (HARL) or taken from the buffer")
    discrete_grad: str = static("expected", choices=("expected", "gumbel"),
                                doc="discrete actor gradient: exact expectation over the "
                                    "agent's categorical, or straight-through Gumbel (HARL)")
    lr: float = dynamic(5e-4, lo=0.0, doc="actor learning rate")
    critic_lr: float = dynamic(5e-4, lo=0.0)
    alpha: float = dynamic(1e-3, lo=0.0, doc="temperature (initial value when auto_alpha)")
    alpha_lr: float = dynamic(3e-4, lo=0.0)
    target_entropy_scale: float = dynamic(1.0, doc="x HARL's target: -|A^i| (continuous), "
                                                   "0.98 log|A^i| (discrete)")
    gamma: float = dynamic(0.99, lo=0.0, hi=1.0)
    polyak: float = dynamic(0.005, lo=0.0, hi=1.0)
    huber_delta: float = dynamic(10.0, lo=0.0, doc="Huber critic loss; 0 = squared error")

    def check(self):
        length = self.buffer_size // self.num_envs
        if length < self.train_interval or length <= self.n_step:
            raise ConfigError(f"`algo.buffer_size={self.buffer_size}` holds {length} steps per env "
                              f"(buffer_size // num_envs); it must hold at least "
                              f"max(train_interval, n_step + 1) = "
                              f"{max(self.train_interval, self.n_step + 1)}.")


# ----------------------------------------------------------------------------- networks
# Actor: HARL's PlainMLP with a Gaussian (state-dependent log-std) or logits head
# (`nets.policies.PlainPolicyNet`); critics: twin `nets.critics.QNet` on concat(global state,
# every agent's action), HARL's ContinuousQNet.


class _Parts(struct.PyTreeNode):
    actor: policies.PlainPolicyNet = struct.field(pytree_node=False)
    critic: QNet = struct.field(pytree_node=False)
    buffer: Any = struct.field(pytree_node=False)
    n: int = struct.field(pytree_node=False)
    discrete: bool = struct.field(pytree_node=False)
    act_dim: int = struct.field(pytree_node=False)
    dim_mask: Any = struct.field(pytree_node=False)     # np [n, A]: 1 on real action dims
    low: Any = struct.field(pytree_node=False)          # np [A]
    high: Any = struct.field(pytree_node=False)
    target_entropy: Any = struct.field(pytree_node=False)   # np [n], times target_entropy_scale


def _parts(env, config):
    spec = env.spec
    sizes = np.asarray(spec.act_sizes)
    box = lambda b: np.broadcast_to(np.asarray(b, np.float32), (spec.act_dim,))
    target = 0.98 * np.log(sizes) if spec.discrete else -sizes.astype(np.float64)
    buffer = offpolicy.trajectory_buffer(num_envs=config.num_envs, batch_size=config.batch_size,
                                         n_step=config.n_step, buffer_size=config.buffer_size)
    return _Parts(policies.PlainPolicyNet(spec.act_dim, spec.discrete, config.hidden,
                                          config.layers, config.activation),
                  QNet(config.hidden, config.layers, config.activation),
                  buffer, spec.n_agents, spec.discrete, spec.act_dim, spec.dim_mask,
                  box(spec.action_low), box(spec.action_high), target.astype(np.float32))


# ----------------------------------------------------------------------------- policies
def policy_sample(p, out, mask, key, dim_mask, deterministic=False):
    """Any action type. Returns (env action, critic encoding [.., A], log_prob)."""
    if not p.discrete:
        action, logp = policies.squashed_sample(out, key, dim_mask, p.low, p.high, deterministic)
        return action, action, logp
    dist = policies.masked(True, out, mask)
    if deterministic:
        a = policies.mode(True, dist)
        logp = policies.log_prob_entropy(True, dist, a, None)[0]
    else:
        a, logp = policies.sample(True, key, dist, None)
    return a, jax.nn.one_hot(a, p.act_dim), logp


def encode(p, action):
    """Stored env action -> critic input encoding [..., n, A]."""
    return jax.nn.one_hot(action, p.act_dim) if p.discrete else action


def twin_q(p, critic, gstate, joint):
    """gstate [..., S], joint [..., n, A] -> [2, ...] (the two critics)."""
    return apply_twin(p.critic, critic, joint_input(gstate, joint))


# ----------------------------------------------------------------------------- state
@struct.dataclass
class State:
    actor: Any                # per-agent parameters stacked on a leading agent axis [n, ...]
    critic: Any               # twin critics stacked [2, ...]
    target_critic: Any
    actor_opt: Any            # [n, ...]
    critic_opt: Any
    log_alpha: jax.Array      # [n]
    alpha_opt: Any
    value_norm: ValueNorm
    buffer: Any               # flashbax TrajectoryBufferState, experience [E, L, ...]
    env_state: Any
    obs: jax.Array            # [E, n, obs_dim]
    key: jax.Array
    env_steps: jax.Array      # int32 transitions collected so far (all envs of this seed)
    update_idx: jax.Array     # int32 gradient updates done
    hp: Config


def _example_transition(env, p):
    spec = env.spec
    z = lambda *s, dt=jnp.float32: jnp.zeros(s, dt)
    tr = dict(obs=z(spec.n_agents, spec.obs_dim), gstate=z(spec.state_dim), reward=z(),
              done=z(dt=bool), term=z(dt=bool))
    if p.discrete:
        tr.update(action=z(spec.n_agents, dt=jnp.int32),
                  mask=z(spec.n_agents, spec.act_dim, dt=bool))
    else:
        tr.update(action=z(spec.n_agents, spec.act_dim))
    return tr


def init(key, env, config: Config) -> State:
    spec, p = env.spec, _parts(env, config)
    k_actor, k_critic, k_env, key = jax.random.split(key, 4)
    obs, env_state = jax.vmap(env.reset)(jax.random.split(k_env, config.num_envs))
    actor = init_agents(p.actor, k_actor, p.n, False, obs[0, 0])
    q_in = jnp.zeros((spec.state_dim + p.n * p.act_dim,))
    critic = init_twin(p.critic, k_critic, q_in)
    log_alpha = jnp.full((p.n,), jnp.log(jnp.maximum(jnp.asarray(config.alpha), 1e-12)))
    opt = optim.adam()
    return State(actor=actor, critic=critic, target_critic=critic,
                 actor_opt=jax.vmap(opt.init)(actor), critic_opt=opt.init(critic),
                 log_alpha=log_alpha, alpha_opt=opt.init(log_alpha),
                 value_norm=ValueNorm.create(),
                 buffer=p.buffer.init(_example_transition(env, p)), env_state=env_state, obs=obs,
                 key=key, env_steps=jnp.zeros((), jnp.int32),
                 update_idx=jnp.zeros((), jnp.int32), hp=jax.tree.map(jnp.asarray, config))


def env_steps_per_iter(config, env):
    return config.num_envs * config.train_interval


def act(config, env, state: State, obs, carry, mask, key, *, deterministic: bool):
    """One env: obs [n, obs_dim], mask [n, A] -> actions (int [n] or [n, A]), carry."""
    p = _parts(env, config)
    out = apply_agents(p.actor, state.actor, False, obs)
    keys = jax.random.split(key, p.n)
    sample = lambda o, m, k, dm: policy_sample(p, o, m, k, dm, deterministic)[0]
    return jax.vmap(sample)(out, mask, keys, jnp.asarray(p.dim_mask)), carry


# ----------------------------------------------------------------------------- step
def step(env, config: Config, *, iterations: int = 1):
    p = _parts(env, config)
    n, E = p.n, config.num_envs
    # numpy, not jax arrays: a concrete device array closed over by a traced function has to
    # be fetched while lowering, which can stall XLA:CPU's async dispatch
    dim_mask = p.dim_mask

    def actors(actor, obs):                          # obs [B, n, obs_dim]
        return apply_agents(p.actor, actor, False, obs, agent_axis=1)

    def sample_all(actor, obs, mask, key):
        """All agents: -> (env action, encoding [B, n, A], logp [B, n])."""
        out = actors(actor, obs)
        keys = jax.random.split(key, n)
        fn = lambda o, m, k, dm: policy_sample(p, o, m, k, dm)
        return jax.vmap(fn, in_axes=(1, 1, 0, 0), out_axes=1)(out, mask, keys, dim_mask)

    def masks(batch, prefix=""):
        return batch[prefix + "mask"] if p.discrete else jnp.ones(
            batch[prefix + "obs"].shape[:-1] + (p.act_dim,), bool)

    # --------------------------------------------------------------- collection
    def env_step(state, _):
        key, k_act, k_rand, k_env = jax.random.split(state.key, 4)
        mask = jax.vmap(env.action_mask)(state.env_state)
        gstate = jax.vmap(env.global_state)(state.env_state)
        policy_action, _, _ = sample_all(state.actor, state.obs, mask, k_act)
        warm = offpolicy.random_actions(k_rand, mask, discrete=p.discrete, low=p.low,
                                        high=p.high, dim_mask=p.dim_mask)
        action = jnp.where(state.env_steps < config.warmup_steps, warm, policy_action)
        obs, env_state, reward, done, info = jax.vmap(env.step)(
            jax.random.split(k_env, E), state.env_state, action)
        tr = dict(obs=state.obs, gstate=gstate, action=action, reward=env.spec.team_reward(reward, -1),
                  done=done[:, 0], term=info["terminated"])
        if p.discrete:
            tr["mask"] = mask
        state = state.replace(env_state=env_state, obs=obs, key=key,
                              env_steps=state.env_steps + E)
        return state, (tr, info)

    # --------------------------------------------------------------- one gradient update
    def critic_loss(critic, batch, target, hp, valid):
        q = twin_q(p, critic, batch["gstate"], encode(p, batch["action"]))   # [2, B]
        err = huber(q - target, hp.huber_delta)
        loss = jnp.sum(jnp.mean(err * valid, -1)) / jnp.maximum(valid.mean(), 1e-6)
        return loss, dict(q_mean=q.mean())

    def actor_loss(params_i, i, joint, batch, critic, alpha_i, key):
        """Agent i's soft objective with the other agents' actions fixed in `joint`."""
        out = p.actor.apply(params_i, batch["obs"][:, i])
        mask_i = masks(batch)[:, i]
        if not p.discrete:
            a, logp = policies.squashed_sample(out, key, jnp.asarray(dim_mask)[i], p.low, p.high)
            q = twin_q(p, critic, batch["gstate"], joint.at[:, i].set(a)).min(0)
            return -jnp.mean(q - alpha_i * logp), logp.mean()
        logits = D.mask_logits(out[0], mask_i)
        logp_all = jax.nn.log_softmax(logits, -1)
        if config.discrete_grad == "gumbel":     # HARL: straight-through Gumbel-softmax
            soft = jax.nn.softmax(logits + jax.random.gumbel(key, logits.shape), -1)
            hard = jax.nn.one_hot(jnp.argmax(soft, -1), p.act_dim)
            onehot = hard + soft - jax.lax.stop_gradient(soft)
            logp = jnp.sum(onehot * jnp.where(mask_i, logp_all, 0.0), -1)
            q = twin_q(p, critic, batch["gstate"], joint.at[:, i].set(onehot)).min(0)
            return -jnp.mean(q - alpha_i * logp), logp.mean()
        # exact expectation over a^i: one joint action per candidate a^i, [B, A, n, A]
        cands = jnp.broadcast_to(joint[:, None], (joint.shape[0], p.act_dim) + joint.shape[1:])
        cands = cands.at[:, :, i].set(jnp.eye(p.act_dim))
        gs = jnp.broadcast_to(batch["gstate"][:, None], cands.shape[:2] + batch["gstate"].shape[1:])
        q = twin_q(p, critic, gs, cands).min(0)                               # [B, A]
        probs = jnp.exp(logp_all)
        logp_all = jnp.where(mask_i, logp_all, 0.0)
        objective = jnp.sum(jnp.where(mask_i, probs * (q - alpha_i * logp_all), 0.0), -1)
        return -jnp.mean(objective), jnp.sum(probs * logp_all, -1).mean()

    actor_grad = jax.value_and_grad(actor_loss, has_aux=True)
    critic_grad = jax.value_and_grad(critic_loss, has_aux=True)
    opt = optim.adam()

    def update(state: State, key):
        hp = state.hp
        k_batch, k_next, k_joint, k_order, k_agents = jax.random.split(key, 5)
        batch = offpolicy.nstep_sample(state.buffer, k_batch, config.batch_size, config.n_step, hp.gamma)
        alpha = jnp.exp(state.log_alpha) if config.auto_alpha else jnp.full((n,), hp.alpha)
        alpha = jax.lax.stop_gradient(alpha)

        # critic: n-step soft target from the target critics and the current actors
        _, next_joint, next_logp = sample_all(state.actor, batch["boot_obs"],
                                              masks(batch, "boot_"), k_next)
        q_next = twin_q(p, state.target_critic, batch["boot_gstate"], next_joint).min(0)
        vn = state.value_norm
        if config.value_norm:
            q_next = vn.denormalize(q_next)
        target = batch["ret"] + batch["boot_disc"] * (q_next - next_logp @ alpha)
        if config.value_norm:
            vn = vn.update(target)
            target = vn.normalize(target)
        (c_loss, c_aux), grads = critic_grad(state.critic, batch, target, hp, batch["valid"])
        critic, critic_opt, c_norm = optim.apply(opt, state.critic, state.critic_opt, grads,
                                                 hp.critic_lr)

        # actors: one at a time in a random order, against the freshly updated critic (HARL)
        if config.successor_actions == "buffer":
            joint = encode(p, batch["action"])
        else:
            _, joint, _ = sample_all(state.actor, batch["obs"], masks(batch), k_joint)
        joint = jax.lax.stop_gradient(joint)
        order = sequential.agent_order(k_order, n, config.fixed_order)

        def agent_body(i, p_i, o_i, joint, k):
            k_loss, k_new = jax.random.split(k)
            (loss, logp), g = actor_grad(p_i, i, joint, batch, critic, alpha[i], k_loss)
            p_i, o_i, g_norm = optim.apply(opt, p_i, o_i, g, hp.lr)
            # successors see this agent's action re-sampled from its updated policy
            out = p.actor.apply(p_i, batch["obs"][:, i])
            _, a_new, _ = policy_sample(p, out, masks(batch)[:, i], k_new, jnp.asarray(dim_mask)[i])
            joint = joint.at[:, i].set(jax.lax.stop_gradient(a_new))
            return p_i, o_i, joint, dict(actor_loss=loss, logp=logp, actor_grad_norm=g_norm)

        actor, actor_opt, _, a_aux = sequential.agent_scan(
            agent_body, state.actor, state.actor_opt, joint, order, jax.random.split(k_agents, n))
        logp_by_agent = jnp.zeros((n,)).at[order].set(a_aux["logp"])

        # temperatures: HARL's loss -log_alpha * (log pi + target), each agent's own log pi
        # (from before its update; alpha_i enters only agent i's loss, so one joint step after
        # the scan equals HARL's per-agent steps)
        log_alpha, alpha_opt = state.log_alpha, state.alpha_opt
        target_ent = jnp.asarray(p.target_entropy) * hp.target_entropy_scale
        if config.auto_alpha:
            g_alpha = -(logp_by_agent + target_ent)
            log_alpha, alpha_opt, _ = optim.apply(opt, log_alpha, alpha_opt, g_alpha, hp.alpha_lr)

        target_critic = optim.polyak(state.target_critic, critic, hp.polyak)
        state = state.replace(actor=actor, actor_opt=actor_opt, critic=critic,
                              critic_opt=critic_opt, target_critic=target_critic,
                              log_alpha=log_alpha, alpha_opt=alpha_opt, value_norm=vn,
                              update_idx=state.update_idx + 1)
        metrics = dict(critic_loss=c_loss, q_mean=c_aux["q_mean"], target_mean=target.mean(),
                       critic_grad_norm=c_norm, actor_loss=a_aux["actor_loss"].mean(),
                       actor_grad_norm=a_aux["actor_grad_norm"].mean(),
                       entropy=-logp_by_agent.mean(), alpha=alpha.mean(),
                       valid_frac=batch["valid"].mean())
        return state, metrics

    def train_step(state: State):
        state, (tr, info) = jax.lax.scan(env_step, state, None, config.train_interval)
        state = state.replace(buffer=p.buffer.add(
            state.buffer, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), tr)))
        key, k_upd = jax.random.split(state.key)
        state = state.replace(key=key)
        keys = jax.random.split(k_upd, config.updates_per_train)
        ready = ((state.env_steps >= config.warmup_steps)
                 & (offpolicy.stored_steps(state.buffer) > config.n_step))

        def learn(s):
            s, aux = jax.lax.scan(update, s, keys)
            return s, jax.tree.map(jnp.mean, aux)

        state, metrics = offpolicy.learn_when_ready(ready, learn, state)
        metrics.update(episodes=EpisodeSums.of(info), learning=ready.astype(jnp.float32),
                       updates=state.update_idx.astype(jnp.float32))
        return state, metrics

    return train_step


register(Algorithm(
    name="hasac", Config=Config, init=init, step=step, act=act,
    env_steps_per_iter=env_steps_per_iter,
    doc="HASAC: off-policy soft actor-critic with sequential per-agent actor updates, twin "
        "centralised critics, n-step returns, auto temperature; discrete+continuous"))
