"""Sequential heterogeneous-agent updates: the machinery HAPPO, HATRPO, HAA2C and HASAC share.

HARL's scheme (Kuba et al. 2022; Zhong et al. 2024): every agent owns its parameters; each
iteration draws a fresh random order of the agents (or keeps index order, `fixed_order`) and
updates them one after another. `agent_scan` is that loop: one `lax.scan` over the permutation
whose carry is what the family passes from one agent to the next (HAPPO's M factor, HASAC's
joint action re-sampled from the updated predecessors). Parameters and optimiser states are
stacked on a leading agent axis; the body reads agent i with a dynamic index and writes it back
with `.at[i].set`, so the update is traced once whatever the number of agents.

For the on-policy family, agent i_m optimises its surrogate with the advantage weighted, per
sample, by the compounded factor

    M = prod_{j<m} pi_new^{i_j}(a^{i_j} | o^{i_j}) / pi_old^{i_j}(a^{i_j} | o^{i_j}),

so it improves the joint policy *given* the changes its predecessors already made. With M = 1
(`sequential=False`) the same code is the simultaneous update. The rollout, GAE, networks and
minibatching are the shared on-policy pieces (`jaxdiff.algos.onpolicy`); the critic is one shared
centralised network trained after the actors as in HARL: by default HARL's EP form, one V(s)
per env on the global state and the team reward, whose advantage every agent shares
(`critic_state="ep"`); `critic_state="agent"` gives every agent row its own V(s, id) (the
SMAC presets, where HARL uses agent-specific FP states).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from jaxdiff import optim, parallel
from jaxdiff.algos import onpolicy
from jaxdiff.algos.base import ConfigError, EpisodeSums, dynamic, static
from jaxdiff.algos.returns import huber, linear_anneal
from jaxdiff.nets.agents import apply_agents
from jaxdiff.nets.mlp import ACTIVATIONS


# ----------------------------------------------------------------------------- config
@struct.dataclass
class Config(onpolicy.Config):
    """Settings every sequential on-policy algorithm has. Defaults: HARL's
    configs/algos_cfgs/*.yaml."""
    num_envs: int = static(20, lo=1, doc="parallel environments per seed (HARL n_rollout_threads)")
    num_steps: int = static(200, lo=1, doc="rollout length per update (HARL episode_length)")
    hidden: int = static(128, lo=1)
    activation: str = static("relu", choices=tuple(ACTIVATIONS))
    critic_state: str = static(
        "ep", choices=("ep", "agent"),
        doc="ep: one V(s) per env on the global state and the team reward (HARL's EP, its "
            "default); agent: one value per agent row, V(s, id) (HARL's FP role, used for SMAC)")
    agent_id: bool = static(True, doc="append a one-hot agent id to the shared critic's input "
                                      "(critic_state=agent)")
    value_norm: bool = static(True)
    fixed_order: bool = static(False, doc="update agents in index order, not a random permutation")
    sequential: bool = static(True, doc="carry the M factor; False = simultaneous update (M = 1)")
    critic_epochs: int = static(5, lo=1)
    critic_minibatches: int = static(1, lo=1)
    anneal_lr: bool = static(False, doc="anneal the learning rates linearly to 0 over the run")
    # HARL's std = sigmoid(p) * 0.5 starts at sigmoid(1) * 0.5 = 0.366 = exp(-1.0)
    init_log_std: float = static(-1.0)
    lr: float = dynamic(5e-4, lo=0.0, doc="actor learning rate")
    critic_lr: float = dynamic(5e-4, lo=0.0)
    clip_eps: float = dynamic(0.2, lo=0.0, doc="PPO ratio clip and value clip")
    max_grad_norm: float = dynamic(10.0, lo=0.0)
    huber_delta: float = dynamic(10.0, lo=0.0, doc="Huber value loss; 0 = squared error")

    def check(self):
        if self.critic_state == "ep" and not self.centralised_critic:
            raise ConfigError("`algo.critic_state=ep` evaluates V on the global state; it needs "
                              "`algo.centralised_critic=true` (or use `algo.critic_state=agent`).")
        onpolicy.check_split(self, "critic_minibatches", self.critic_minibatches)
        if hasattr(self, "num_minibatches"):
            onpolicy.check_split(self, "num_minibatches", self.num_minibatches)


def parts(env, config: Config) -> onpolicy.Parts:
    """Per-agent actors (never shared: heterogeneous agents), one shared critic."""
    return onpolicy.parts(env, config, actor_shared=False, critic_shared=True,
                          ep=config.critic_state == "ep")


act = onpolicy.make_act(parts)


def env_split(config, env):
    """The env axis a step can split over devices (`Algorithm.env_split`): all envs
    (feed-forward), or the envs of one recurrent minibatch of both the actors and the critic."""
    if not config.recurrent:
        return config.num_envs
    m = math.lcm(config.critic_minibatches, getattr(config, "num_minibatches", 1))
    return config.num_envs // m if config.num_envs % m == 0 else 1


# ----------------------------------------------------------------------------- agent axis
def agent_order(key, n: int, fixed: bool):
    """The update order of one iteration: int32[n]."""
    return jnp.arange(n, dtype=jnp.int32) if fixed else jax.random.permutation(key, n)


def take_agent(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def put_agent(tree, i, sub):
    return jax.tree.map(lambda x, s: x.at[i].set(s), tree, sub)


def conditional_advantages(q, probs, order):
    """The sequential advantage decomposition of one state (paper 003 Lemma A.6, Eqs. 20-22),
    tabular: the reference the sequential learners' sampled advantages estimate.

    With the conditional value chain Q^(m)(a^{i_1:m}) = E_{a^{i_m+1:n} ~ pi} Q(a) (Q^(n) = Q,
    Q^(0) = V), the increments Delta_m = Q^(m) - Q^(m-1) sum to A = Q - V for every order, and
    E_{a^{i_m} ~ pi^{i_m}} Delta_m = 0: agent i_m's own zero-mean advantage given its
    predecessors' actions, with its successors marginalised under their current policies.

    q: [A] * n joint action values; probs: [n, A] per-agent policies (a smaller agent puts
    zero mass on its padded actions); order: int32[n] permutation (may be traced).
    Returns [n, A, ..., A]: Delta_m at position m - 1 as a function of the full joint action
    (it is constant in the successors' actions).
    """
    n = probs.shape[0]
    if q.ndim != n or any(s != probs.shape[1] for s in q.shape):
        raise ValueError(f"conditional_advantages: q must be [A] * n = {[probs.shape[1]] * n} "
                         f"for probs [n, A] = {list(probs.shape)}, got {list(q.shape)}")

    def marginalise(t, j):   # E over agent j's action, kept broadcast along its axis
        w = probs[j].reshape((1,) * j + (-1,) + (1,) * (n - 1 - j))
        return jnp.broadcast_to((t * w).sum(j, keepdims=True), t.shape)

    chain = [q]                                      # Q^(n), Q^(n-1), ..., Q^(0)
    for m in range(n - 1, -1, -1):                   # marginalise agent i_{m+1} (0-based m)
        options = jnp.stack([marginalise(chain[-1], j) for j in range(n)])
        chain.append(options[order[m]])
    chain = chain[::-1]                              # Q^(0), ..., Q^(n)
    return jnp.stack([chain[m + 1] - chain[m] for m in range(n)])


def agent_scan(body: Callable, params, opt_state, carry, order, keys, unroll: bool = False):
    """Update agents one at a time in `order` (one `lax.scan` over the permutation).

    params, opt_state: pytrees with a leading agent axis [n, ...].
    body(i, params_i, opt_i, carry, key) -> (params_i, opt_i, carry, metrics): agent i's update
        given what its predecessors passed on in `carry`.
    order: int32[n]; keys: [n, 2].
    unroll: trace the body once per agent (what a Python loop does); only for the compile-time
        benchmark, which shows why the default traces it once.
    Returns (params, opt_state, carry after the last agent, metrics stacked per position).
    """
    def step(c, xs):
        params, opt_state, carry = c
        i, key = xs
        p_i, o_i, carry, metrics = body(i, take_agent(params, i), take_agent(opt_state, i),
                                        carry, key)
        return (put_agent(params, i, p_i), put_agent(opt_state, i, o_i), carry), metrics

    (params, opt_state, carry), metrics = jax.lax.scan(step, (params, opt_state, carry),
                                                       (order, keys), unroll=unroll)
    return params, opt_state, carry, metrics


def sequential_update(update_agent: Callable, log_prob: Callable, params, opt_state, data,
                      order, keys, factor0, sequential: bool = True, unroll: bool = False):
    """`agent_scan` with HAPPO's carry, the M factor.

    data: pytree with a leading agent axis [n, ...].
    log_prob(i, params_i, data_i) -> [S]: agent i's log-probability of its own stored actions
        (its pre-update value is `data["logp"]` when data has one, e.g. from the rollout).
    update_agent(i, params_i, opt_i, data_i, key) -> (params_i, opt_i, metrics); `data_i` gets
        `logp` (the agent's pre-update log-probs) and `factor` (M from its predecessors).
    factor0: [S] (ones). Returns (params, opt_state, final factor, metrics per position).
    """
    def body(i, p_i, o_i, factor, key):
        d_i = take_agent(data, i)
        # Agent i has not moved since the rollout, so the log-probs stored then are its
        # pre-update ones (HARL's buffer `old_action_log_probs`); recompute when none are given.
        logp_old = d_i["logp"] if "logp" in d_i else log_prob(i, p_i, d_i)
        p_i, o_i, metrics = update_agent(i, p_i, o_i, dict(d_i, logp=logp_old, factor=factor),
                                         key)
        ratio = jnp.exp(log_prob(i, p_i, d_i) - logp_old)
        metrics = dict(metrics, factor_mean=factor.mean(), factor_max=factor.max(),
                       ratio_dev=jnp.abs(ratio - 1.0).mean())
        if sequential:
            factor = factor * ratio
        return p_i, o_i, factor, metrics

    return agent_scan(body, params, opt_state, factor0, order, keys, unroll)


# ----------------------------------------------------------------------------- one agent
def agent_forward(p: onpolicy.Parts, params_i, mb):
    """One agent's action distributions. mb leaves [T', B', ...] (no agent axis), ca0 [B', h]."""
    def body(carry, x):
        ax, reset, mask = x
        carry, out = p.actor.apply(params_i, carry, ax, reset)
        return carry, onpolicy.dist(p, out, mask)
    return time_scan(body, mb["ca0"], (mb["a_x"], mb["reset"], mb["mask"]))


def time_scan(body, carry, xs):
    """Outputs of a scan over the leading time axis; feed-forward minibatches have T' = 1, and
    calling the body directly saves the scan (and the while loop of its gradient)."""
    if jax.tree.leaves(xs)[0].shape[0] == 1:
        _, out = body(carry, jax.tree.map(lambda x: x[0], xs))
        return jax.tree.map(lambda o: o[None], out)
    return jax.lax.scan(body, carry, xs)[1]


def dim_mask_of(p: onpolicy.Parts, i):
    return jnp.asarray(p.dim_mask)[i]   # [act_dim]; 0 on a heterogeneous agent's padding


def full_batch(config, data_i):
    """One agent's whole rollout as a single unshuffled minibatch: feed-forward data becomes
    [1, T*E, ...] (one big batch instead of a T-step scan), recurrent data stays [T, E, ...]."""
    if config.recurrent:
        return data_i
    B = config.num_steps * config.num_envs
    out = {k: v.reshape((1, B) + v.shape[2:]) for k, v in data_i.items() if k != "ca0"}
    out["ca0"] = jnp.zeros((B,) + data_i["ca0"].shape[1:])
    return out


def per_sample(config, x):
    """Undo `full_batch` on a per-sample array: -> [T, E]."""
    return x.reshape(config.num_steps, config.num_envs)


def log_prob_fn(p: onpolicy.Parts, config):
    def log_prob(i, params_i, data_i):
        full = full_batch(config, data_i)
        logp, _ = onpolicy.log_prob_entropy(p, agent_forward(p, params_i, full), full["action"],
                                            dim_mask_of(p, i))
        return per_sample(config, logp)
    return log_prob


def sgd(loss_fn, params, opt_state, data, key, config, *, num_minibatches: int, epochs: int,
        lr, max_grad_norm):
    """`epochs` passes of Adam over `num_minibatches` shuffled minibatches of `data` (leaves
    [T, E, ...], `onpolicy.minibatches`). loss_fn(params, mb) -> (loss, aux).
    Returns (params, opt_state, mean aux)."""
    grad_fn = jax.grad(loss_fn, has_aux=True)
    opt = optim.adam()

    def minibatch(carry, mb):
        params, opt_state = carry
        rows = {k: 0 if k in ("ca0", "cc0") else 1 for k in mb}   # each leaf's row axis
        grads, aux = parallel.local_mean(grad_fn, rows)(params, mb)
        params, opt_state, gnorm = optim.apply(opt, params, opt_state, grads, lr, max_grad_norm)
        return (params, opt_state), dict(aux, grad_norm=gnorm)

    def epoch(carry, k):
        mbs = onpolicy.minibatches(k, data, num_minibatches=num_minibatches,
                                   num_steps=config.num_steps, num_envs=config.num_envs,
                                   recurrent=config.recurrent)
        return jax.lax.scan(minibatch, carry, mbs)

    (params, opt_state), aux = jax.lax.scan(epoch, (params, opt_state),
                                            jax.random.split(key, epochs))
    return params, opt_state, jax.tree.map(jnp.mean, aux)


def surrogate_update(p: onpolicy.Parts, config, hp, lr, *, clipped: bool = True):
    """The per-agent update of HAPPO (clipped) and HAA2C (plain): `update_epochs` x
    `num_minibatches` Adam steps on the M-weighted surrogate

        max E[ M * min(r * A, clip(r, 1 - eps, 1 + eps) * A) ]   (clipped; else E[M r A])

    minus `ent_coef` times the entropy (M > 0, so weighting the clipped term equals HARL's
    `factor * min(surr1, surr2)`)."""
    def update(i, params, opt_state, data, key):
        dim_mask = dim_mask_of(p, i)

        def loss_fn(params, mb):
            dist = agent_forward(p, params, mb)
            logp, entropy = onpolicy.log_prob_entropy(p, dist, mb["action"], dim_mask)
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

        return sgd(loss_fn, params, opt_state, data, key, config,
                   num_minibatches=config.num_minibatches, epochs=config.update_epochs,
                   lr=lr, max_grad_norm=hp.max_grad_norm)

    return update


# ----------------------------------------------------------------------------- critic
def critic_update(p: onpolicy.Parts, config, hp, lr, critic, opt_state, batch, key):
    """HARL's critic step: clipped, Huber value loss on the shared centralised critic.
    batch: c_x [T, E, r, d], reset/value/target [T, E, r], cc0 [E, r, h]; r = n agent rows,
    or 1 for the EP critic."""
    def loss_fn(critic, mb):
        def body(carry, x):
            cx, reset = x
            return apply_agents(p.critic, critic, True, carry, cx, reset, agent_axis=1)
        value = time_scan(body, mb["cc0"], (mb["c_x"], mb["reset"]))
        v_clip = mb["value"] + jnp.clip(value - mb["value"], -hp.clip_eps, hp.clip_eps)
        loss = jnp.maximum(huber(value - mb["target"], hp.huber_delta),
                           huber(v_clip - mb["target"], hp.huber_delta)).mean()
        return loss, dict(value_loss=loss)

    return sgd(loss_fn, critic, opt_state, batch, key, config,
               num_minibatches=config.critic_minibatches, epochs=config.critic_epochs, lr=lr,
               max_grad_norm=hp.max_grad_norm)


# ----------------------------------------------------------------------------- init / step
def init(key, env, config: Config, *, actor_optimiser: bool = True) -> onpolicy.State:
    """The on-policy state with per-agent actors (and per-agent Adam states) and one shared
    critic."""
    return onpolicy.init(key, env, config, parts(env, config), per_agent_opt=True,
                         actor_optimiser=actor_optimiser)


def make_step(env, config: Config, agent_update: Callable, *, iterations: int = 1,
              unroll: bool = False):
    """The training iteration of a sequential on-policy algorithm.

    agent_update(p, config, hp, lr) -> update(i, params_i, opt_i, data_i, key)
        -> (params_i, opt_i, metrics); data_i leaves are one agent's [T, E, ...] rollout
        (a_x, mask, reset, action, adv) plus ca0 [E, h], logp and factor [T, E].
    iterations: how many steps the run takes (learning-rate annealing).
    """
    p = parts(env, config)
    n = p.n
    collect = onpolicy.rollout_fn(env, config, p)
    log_prob = log_prob_fn(p, config)

    def train_step(state):
        ca0, cc0 = state.actor_carry, state.critic_carry
        state, tr, adv, target, vn = collect(state)
        hp = state.hp
        lr = linear_anneal(hp.lr, state.update_idx, iterations, config.anneal_lr)
        critic_lr = linear_anneal(hp.critic_lr, state.update_idx, iterations, config.anneal_lr)
        # HARL normalises advantages once over the whole batch, before any M weighting, so
        # every agent sees the same scale whatever its position in the order.
        adv_n = (adv - adv.mean()) / (adv.std() + 1e-5)
        agent_major = lambda x: jnp.moveaxis(x, 2, 0)   # [T, E, n, ...] -> [n, T, E, ...]
        data = {k: agent_major(tr[k]) for k in ("a_x", "mask", "reset", "action", "logp")}
        data.update(adv=agent_major(adv_n), ca0=jnp.moveaxis(ca0, 1, 0))

        key, k_order, k_agents, k_critic = jax.random.split(state.key, 4)
        order = agent_order(k_order, n, config.fixed_order)
        factor0 = jnp.ones((config.num_steps, config.num_envs))
        actor, actor_opt, factor, aux = sequential_update(
            agent_update(p, config, hp, lr), log_prob, state.actor, state.actor_opt, data,
            order, jax.random.split(k_agents, n), factor0, config.sequential, unroll)

        c_reset = tr["reset"][..., :1] if p.ep else tr["reset"]
        c_batch = dict(c_x=tr["c_x"], reset=c_reset, value=tr["value"], target=target, cc0=cc0)
        critic, critic_opt, c_aux = critic_update(p, config, hp, critic_lr, state.critic,
                                                  state.critic_opt, c_batch, k_critic)
        state = state.replace(actor=actor, critic=critic, actor_opt=actor_opt,
                              critic_opt=critic_opt, value_norm=vn, key=key,
                              update_idx=state.update_idx + 1)
        metrics = jax.tree.map(jnp.mean, aux)          # averaged over the agents
        metrics["actor_grad_norm"] = metrics.pop("grad_norm")
        metrics.update(value_loss=c_aux["value_loss"], critic_grad_norm=c_aux["grad_norm"],
                       final_factor_mean=factor.mean(), lr=lr,
                       episodes=EpisodeSums.of(tr["info"]))
        return state, metrics

    return train_step
