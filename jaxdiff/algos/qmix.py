"""QMIX: monotonic value factorisation for cooperative discrete-action MARL (Rashid et al., 2018).

Follows pymarl's QMIX (`src/config/algs/qmix.yaml`, `default.yaml`, `QMixer`, `QLearner`):
GRU agent networks shared by all agents, fed [obs, one-hot last action, one-hot agent id];
a mixer whose weights come from hypernetworks of the global state, made non-negative by `abs`
so that dQ_tot/dQ_i >= 0; double Q-learning (online argmax over AVAILABLE actions, target
networks evaluate it); hard target updates (copy every `target_update_interval` gradient steps;
`tau < 1` turns each copy into a Polyak step); epsilon-greedy exploration over available actions
with epsilon annealed linearly over env steps; RMSprop (alpha 0.99, eps 1e-5) with gradient
clipping at norm 10. `td_lambda > 0` gives TD(lambda) targets as in pymarl2; 0 (the default) is
pymarl's 1-step target.

Vectorised replay of fixed-length sequences instead of pymarl's padded whole episodes: `num_envs`
envs keep running across iterations (auto-reset); each `step` collects `num_steps` transitions
per env and stores each env's sequence as one replay item, together with the GRU state at its
start (R2D2's "stored state") and one extra bootstrap step, so every transition of the sequence
gets a target and no env step is wasted. Episode boundaries inside a sequence reset the GRU and
the last action and cut the bootstrap. Every episode end is treated as terminal, time limits
included (as in JaxMARL's QMIX; SMAX exposes no terminal observation to bootstrap from).

The flashbax item buffer lives in `State.buffer`, so checkpoints hold the replay memory and a
resumed run is bit-identical to an uninterrupted one. Learning starts once it holds
`batch_size` sequences; then every `step` runs `updates_per_iter` gradient steps.

Departures from pymarl, each for a stated reason: the online and target networks both start a
sampled sequence from its stored GRU state (there is no episode start to start from); the
hypernetworks' output layers are initialised small (`mixer_init_scale`, as JaxMARL's QMIX does)
because SMAX's world state holds raw map coordinates, which otherwise put the initial Q_tot in
the hundreds; SMAX rewards are scaled by 10 (`reward_scale`, JaxMARL's REW_SCALE) back to SMAC's
range; the update ratio (4 updates of 32 sequences per 8 x 64 env steps) and target period
(100 updates) are counted in gradient steps, pymarl counts episodes (one update of 32 episodes
per episode, a copy every 200 episodes).

Layouts: a rollout is [T, E, ...]; each env's sequence is one replay item ([T(+1), ...]);
sampled batches are time-major [T(+1), B, ...]; agent inputs [..., n, in_dim].
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from jaxdiff import optim
from jaxdiff.algos import offpolicy
from jaxdiff.algos.base import Algorithm, ConfigError, EpisodeSums, dynamic, register, static
from jaxdiff.algos.returns import gae
from jaxdiff.nets import distributions as D
from jaxdiff.nets.agents import apply_agents, init_agents, with_agent_id
from jaxdiff.nets.mlp import MLP, Torso, dense


# ----------------------------------------------------------------------------- config
@struct.dataclass
class Config:
    num_envs: int = static(8, lo=1, doc="parallel environments per seed")
    num_steps: int = static(64, lo=1, doc="sequence length collected per env per iteration")
    buffer_size: int = static(1024, lo=1, doc="replay capacity in sequences")
    batch_size: int = static(32, lo=1, doc="sequences per gradient step (and minimum fill)")
    updates_per_iter: int = static(4, lo=1, doc="gradient steps per iteration")
    target_update_interval: int = static(100, lo=1, doc="gradient steps between target updates")
    hidden: int = static(64, lo=1, doc="agent GRU width")
    mixer_embed: int = static(32, lo=1, doc="mixing network width")
    hypernet_embed: int = static(64, lo=1, doc="hypernetwork hidden width")
    last_action: bool = static(True, doc="feed the agent's previous action (one-hot)")
    agent_id: bool = static(True, doc="feed a one-hot agent id to the shared agent network")
    mixer_init_scale: float = static(0.01, lo=0.0, doc="gain of the hypernetworks' output "
                                     "layers (SMAX's world state is unnormalised)")
    optimizer: str = static("rmsprop", choices=("rmsprop", "adam"))
    lr: float = dynamic(5e-4, lo=0.0)
    gamma: float = dynamic(0.99, lo=0.0, hi=1.0)
    td_lambda: float = dynamic(0.0, lo=0.0, hi=1.0, doc="0: one-step targets")
    eps_start: float = dynamic(1.0, lo=0.0, hi=1.0)
    eps_finish: float = dynamic(0.05, lo=0.0, hi=1.0, doc="also used by act(deterministic=False)")
    eps_anneal_steps: float = dynamic(50_000.0, lo=0.0, doc="env steps of linear annealing")
    tau: float = dynamic(1.0, lo=0.0, hi=1.0, doc="1: hard target copy; < 1: Polyak step")
    max_grad_norm: float = dynamic(10.0, lo=0.0)
    reward_scale: float = dynamic(1.0, lo=0.0)

    def check(self):
        if self.buffer_size < max(self.batch_size, self.num_envs):
            raise ConfigError(f"`algo.buffer_size={self.buffer_size}` must be at least "
                              f"`algo.batch_size` ({self.batch_size}) and `algo.num_envs` "
                              f"({self.num_envs}).")


# ----------------------------------------------------------------------------- networks
class QAgent(nn.Module):
    """pymarl's RNNAgent: Dense -> ReLU -> GRU -> Dense(n_actions). One time step."""
    n_actions: int
    hidden: int

    @nn.compact
    def __call__(self, carry, x, reset):
        carry, h = Torso(self.hidden, "relu", recurrent=True, layers=1)(carry, x, reset)
        return carry, dense(self.n_actions, 1.0)(h)


class Mixer(nn.Module):
    """Q_tot(q [..., n], s [..., S]) -> [...], monotonic in every q_i (abs hyper-weights)."""
    embed: int
    hypernet_embed: int
    init_scale: float

    @nn.compact
    def __call__(self, q, s):
        n, g = q.shape[-1], self.init_scale
        w1 = jnp.abs(MLP((self.hypernet_embed,), "relu", out=self.embed * n, out_scale=g)(s))
        w1 = w1.reshape(s.shape[:-1] + (n, self.embed))
        b1 = dense(self.embed, g)(s)
        w2 = jnp.abs(MLP((self.hypernet_embed,), "relu", out=self.embed, out_scale=g)(s))
        v = MLP((self.embed,), "relu", out=1, out_scale=g)(s)[..., 0]   # V(s), the last bias
        h = nn.elu(jnp.einsum("...n,...ne->...e", q, w1) + b1)
        return jnp.einsum("...e,...e->...", h, w2) + v


# ----------------------------------------------------------------------------- pieces
def masked_argmax(q, mask):
    """Greedy action among available ones. q: [..., A]; mask: bool [..., A] -> int [...]."""
    return jnp.argmax(jnp.where(mask, q, -jnp.inf), axis=-1)


def epsilon_greedy(key, q, mask, eps):
    """With probability eps a uniformly random AVAILABLE action, else the masked argmax."""
    k_explore, k_random = jax.random.split(key)
    random = D.categorical_sample(k_random, D.mask_logits(jnp.zeros_like(q), mask))
    explore = jax.random.uniform(k_explore, q.shape[:-1]) < eps
    return jnp.where(explore, random, masked_argmax(q, mask))


def double_q_values(q_online, q_target, mask):
    """Double Q: argmax of the online network over available actions, valued by the target.
    q_online, q_target: [..., A]; mask: bool [..., A] -> [...]."""
    a = masked_argmax(q_online, mask)
    return jnp.take_along_axis(q_target, a[..., None], axis=-1)[..., 0]


def td_targets(rewards, dones, target_tot, gamma, lam):
    """TD(lambda) targets G_t = r_t + gamma (1 - d_t) [(1 - lam) Q'_{t+1} + lam G_{t+1}], with
    G_T = Q'_T (lam = 0: the 1-step target). rewards, dones: [T, ...]; target_tot: [T+1, ...]
    target-mixer values at the double-Q actions. The lambda-return is GAE's return with the
    target values as baseline, so it reuses `returns.gae`."""
    _, returns = gae(rewards, target_tot[:-1], dones, target_tot[-1], gamma, lam)
    return returns


def epsilon(hp, env_steps):
    frac = jnp.clip(env_steps / jnp.maximum(hp.eps_anneal_steps, 1.0), 0.0, 1.0)
    return hp.eps_start + frac * (hp.eps_finish - hp.eps_start)


def _optimiser(config):
    return optim.rmsprop() if config.optimizer == "rmsprop" else optim.adam()   # torch RMSprop


# ----------------------------------------------------------------------------- state
@struct.dataclass
class State:
    params: Any               # {"agent": ..., "mixer": ...}
    target: Any               # same structure
    opt: Any
    buffer: Any               # flashbax TrajectoryBufferState of sequence items
    env_state: Any
    obs: jax.Array            # [E, n, obs_dim]
    done: jax.Array           # [E] the previous transition ended an episode (GRU reset)
    last_action: jax.Array    # [E, n] int32, -1 at episode start
    carry: jax.Array          # [E, n, hidden]
    key: jax.Array
    env_steps: jax.Array      # int32: transitions collected per env-seed (epsilon schedule)
    grad_steps: jax.Array     # int32
    hp: Config


class _Parts(struct.PyTreeNode):
    agent: QAgent = struct.field(pytree_node=False)
    mixer: Mixer = struct.field(pytree_node=False)
    buffer: Any = struct.field(pytree_node=False)
    n: int = struct.field(pytree_node=False)
    n_actions: int = struct.field(pytree_node=False)


def _parts(env, config):
    spec = env.spec
    buffer = offpolicy.item_buffer(buffer_size=config.buffer_size, batch_size=config.batch_size)
    return _Parts(QAgent(spec.act_dim, config.hidden),
                  Mixer(config.mixer_embed, config.hypernet_embed, config.mixer_init_scale),
                  buffer, spec.n_agents, spec.act_dim)


def _agent_in(config, p, obs, last_action):
    """obs [..., n, obs_dim], last_action int [..., n] (-1: none) -> [..., n, in_dim]."""
    x = obs
    if config.last_action:
        x = jnp.concatenate([x, jax.nn.one_hot(last_action, p.n_actions, dtype=x.dtype)], -1)
    if config.agent_id:
        x = with_agent_id(x, x.ndim - 2, p.n)
    return x


def _example_item(env, config):
    spec, T = env.spec, config.num_steps
    z = lambda *s, dt=jnp.float32: jnp.zeros(s, dt)
    return dict(obs=z(T + 1, spec.n_agents, spec.obs_dim), state=z(T + 1, spec.state_dim),
                mask=z(T + 1, spec.n_agents, spec.act_dim, dt=bool), reset=z(T + 1, dt=bool),
                last_action=z(T + 1, spec.n_agents, dt=jnp.int32),
                action=z(T, spec.n_agents, dt=jnp.int32), reward=z(T), done=z(T, dt=bool),
                carry=z(spec.n_agents, config.hidden))


# ----------------------------------------------------------------------------- init
def init(key, env, config: Config) -> State:
    spec, p = env.spec, _parts(env, config)
    k_agent, k_mixer, k_env, key = jax.random.split(key, 4)
    E, n, h = config.num_envs, spec.n_agents, config.hidden
    obs, env_state = jax.vmap(env.reset)(jax.random.split(k_env, E))
    last_action = -jnp.ones((E, n), jnp.int32)
    x = _agent_in(config, p, obs, last_action)[0, 0]
    agent = init_agents(p.agent, k_agent, n, True, jnp.zeros((h,)), x, jnp.zeros((), bool))
    mixer = p.mixer.init(k_mixer, jnp.zeros((n,)), jnp.zeros((spec.state_dim,)))
    params = dict(agent=agent, mixer=mixer)
    return State(params=params, target=params, opt=_optimiser(config).init(params),
                 buffer=p.buffer.init(_example_item(env, config)), env_state=env_state,
                 obs=obs, done=jnp.zeros((E,), bool), last_action=last_action,
                 carry=jnp.zeros((E, n, h)), key=key, env_steps=jnp.zeros((), jnp.int32),
                 grad_steps=jnp.zeros((), jnp.int32), hp=jax.tree.map(jnp.asarray, config))


def init_carry(config, env):
    n = env.spec.n_agents
    return dict(h=jnp.zeros((n, config.hidden)), last_action=-jnp.ones((n,), jnp.int32))


def env_steps_per_iter(config, env):
    return config.num_envs * config.num_steps


# ----------------------------------------------------------------------------- act
def act(config, env, state: State, obs, carry, mask, key, *, deterministic: bool):
    """One env: obs [n, obs_dim], carry {h [n, hidden], last_action [n]}, mask [n, A]."""
    p = _parts(env, config)
    x = _agent_in(config, p, obs, carry["last_action"])
    h, q = apply_agents(p.agent, state.params["agent"], True, carry["h"], x,
                        jnp.zeros((p.n,), bool))
    if deterministic:
        a = masked_argmax(q, mask)
    else:
        a = epsilon_greedy(key, q, mask, state.hp.eps_finish)
    return a, dict(h=h, last_action=a.astype(jnp.int32))


# ----------------------------------------------------------------------------- step
def step(env, config: Config, *, iterations: int = 1):
    p = _parts(env, config)
    E = config.num_envs

    def agent_apply(params, carry, x, reset):     # x [B, n, in]; reset [B] (episode level)
        reset = jnp.broadcast_to(reset[:, None], x.shape[:2])
        return apply_agents(p.agent, params, True, carry, x, reset, agent_axis=1)

    def env_step(state, _):
        key, k_act, k_env = jax.random.split(state.key, 3)
        mask = jax.vmap(env.action_mask)(state.env_state)
        gstate = jax.vmap(env.global_state)(state.env_state)
        x = _agent_in(config, p, state.obs, state.last_action)
        carry, q = agent_apply(state.params["agent"], state.carry, x, state.done)
        eps = epsilon(state.hp, state.env_steps)
        action = epsilon_greedy(k_act, q, mask, eps)
        obs, env_state, reward, done, info = jax.vmap(env.step)(
            jax.random.split(k_env, E), state.env_state, action)
        ended = done[:, 0]
        tr = dict(obs=state.obs, state=gstate, mask=mask, reset=state.done,
                  last_action=state.last_action, action=action.astype(jnp.int32),
                  reward=env.spec.team_reward(reward, -1) * state.hp.reward_scale, done=ended,
                  info=info, eps=eps)
        last = jnp.where(ended[:, None], -1, action.astype(jnp.int32))
        state = state.replace(env_state=env_state, obs=obs, done=ended, last_action=last,
                              carry=carry, key=key, env_steps=state.env_steps + E)
        return state, tr

    def collect(state):
        """-> state, items (leaves [E, ...] with time axes T or T+1), info [T, E], eps [T]."""
        carry0 = state.carry
        state, tr = jax.lax.scan(env_step, state, None, config.num_steps)
        boot = dict(obs=state.obs, state=jax.vmap(env.global_state)(state.env_state),
                    mask=jax.vmap(env.action_mask)(state.env_state), reset=state.done,
                    last_action=state.last_action)
        items = {k: jnp.concatenate([tr[k], v[None]], 0) for k, v in boot.items()}
        items.update(action=tr["action"], reward=tr["reward"], done=tr["done"])
        items = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), items)   # env-major items
        items["carry"] = carry0
        return state, items, tr["info"], tr["eps"]

    def q_sequence(agent_params, batch):
        """Agent Q-values along the sampled sequences: [T+1, B, n, A]."""
        x = _agent_in(config, p, batch["obs"], batch["last_action"])

        def body(carry, inp):
            carry, q = agent_apply(agent_params, carry, *inp)
            return carry, q
        _, q = jax.lax.scan(body, batch["carry"], (x, batch["reset"]))
        return q

    def loss_fn(params, target, hp, batch):
        q = q_sequence(params["agent"], batch)                          # [T+1, B, n, A]
        q_tgt = q_sequence(target["agent"], batch)
        q_next = double_q_values(jax.lax.stop_gradient(q), q_tgt, batch["mask"])  # [T+1, B, n]
        target_tot = p.mixer.apply(target["mixer"], q_next, batch["state"])   # [T+1, B]
        y = jax.lax.stop_gradient(td_targets(batch["reward"], batch["done"], target_tot,
                                             hp.gamma, hp.td_lambda))
        q_taken = jnp.take_along_axis(q[:-1], batch["action"][..., None], -1)[..., 0]
        q_tot = p.mixer.apply(params["mixer"], q_taken, batch["state"][:-1])  # [T, B]
        td = q_tot - y
        return jnp.mean(td ** 2), dict(q_taken=q_taken.mean(), q_tot=q_tot.mean(),
                                       target=y.mean(), td_abs=jnp.abs(td).mean())

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    opt = _optimiser(config)

    def update(state, key):
        hp = state.hp
        batch = p.buffer.sample(state.buffer, key).experience            # leaves [B, ...]
        batch = {k: v if k == "carry" else jnp.swapaxes(v, 0, 1) for k, v in batch.items()}
        (loss, aux), grads = grad_fn(state.params, state.target, hp, batch)
        params, opt_state, gnorm = optim.apply(opt, state.params, state.opt, grads, hp.lr,
                                               hp.max_grad_norm)
        grad_steps = state.grad_steps + 1
        due = grad_steps % config.target_update_interval == 0
        # every target_update_interval steps: a Polyak step (an exact copy when tau = 1)
        target = jax.tree.map(lambda t, u: jnp.where(due, u, t), state.target,
                              optim.polyak(state.target, params, hp.tau))
        state = state.replace(params=params, target=target, opt=opt_state, grad_steps=grad_steps)
        return state, dict(aux, loss=loss, grad_norm=gnorm)

    def train_step(state: State):
        state, items, info, eps = collect(state)
        state = state.replace(buffer=p.buffer.add(state.buffer, items))
        key, k_upd = jax.random.split(state.key)
        state = state.replace(key=key)
        keys = jax.random.split(k_upd, config.updates_per_iter)

        def learn(s):
            s, aux = jax.lax.scan(update, s, keys)
            return s, jax.tree.map(jnp.mean, aux)

        can = p.buffer.can_sample(state.buffer)
        state, metrics = offpolicy.learn_when_ready(can, learn, state)
        metrics.update(episodes=EpisodeSums.of(info), epsilon=eps.mean(),
                       learning=can.astype(jnp.float32), grad_steps=state.grad_steps)
        return state, metrics

    return train_step


register(Algorithm(name="qmix", Config=Config, init=init, step=step, act=act,
                   init_carry=init_carry, env_steps_per_iter=env_steps_per_iter,
                   action_types=("discrete",),
                   doc="QMIX: GRU agents, monotonic hypernetwork mixer, double Q, "
                       "episode-sequence replay (discrete actions)"))
