"""HAQO: heterogeneous-agent Q-weighted diffusion policy optimisation (paper 003; spec-haqo §3.7).

One diffusion actor per agent (`jaxdiff.nets.diffusion_actor.DiffusionActor`, parameters stacked
on an agent axis, no sharing) conditioned on the agent's own observation; one centralised twin
Q critic on (global state, joint action) with a Polyak target; a replay buffer. One training
iteration, all inside one compiled step:

1. collect `rollout_len` steps in `num_envs` envs: after warm-up each agent draws K_b candidates
   and executes the one its Q ranks highest with the other agents at their first (reference)
   candidates (Alg. 1 lines 4-5);
2. `critic_updates` TD steps: y = r + gamma (1 - term) min_k Qbar(s', a'), a' the best of K_t
   next-action candidates per agent by the target critic (terminations cut the bootstrap, time
   limits do not: s' is the env's pre-reset state, `step_final`);
3. the sequential actor update: a fresh permutation of the agents (`sequential.agent_scan`); for
   agent i the other agents' actions are sampled from the CURRENT stack (predecessors already at
   their new parameters, successors still old), K_p candidates from agent i's pre-update policy
   are scored by Q, rectified advantages A = q - mean_K q give the QV weights (qadv / qcut), and
   agent i minimises J^QV + alpha J^ent (uniform-action denoising, Eq. 9) over minibatches; then a
   backtracking line search scales the step so the chain KL(pi_old || pi_new) <= delta.

Choices the paper leaves open are the spec's §8 (minimise J^QV + J^ent; advantages from the
action-conditioned Q, no likelihood ratios; chain KL as the trust-region measure; one shared
centralised critic; actors on o^i). Decentralised evaluation: each agent draws one sample from
its own actor given its observation; the critic is never used by `act`.

Discrete actions (SMAX, discrete MPE): "analog one-hot" (spec §3.7.1): the actor works on
x in [-1, 1]^{|A|}, an action decodes as the available argmax, the training target of a sampled
candidate is 2 onehot(a) - 1 and the critic sees onehot(a).

Gaussian ablation (`actor=gaussian`, spec §7 F23, §9's "weighted-MLE Gaussian"): the same
pipeline (critic, buffer, best-of-K_b behaviour, K_p candidates, QV weights, sequential scan, line
search) with `jaxdiff.nets.gaussian_actor.GaussianActor` per agent: an MLP on o^i giving a latent
mean and a state-dependent clipped log-std, actions tanh-squashed into the box. Its fit to the
weighted candidates is weighted maximum likelihood, mean_{b,k} w~ (-log pi(x0 | o)) with the same
normalised weights w~ as J^QV (the exact change-of-variables density of the squashed sample; the
minimiser is the weighted mean and std of the latents). Its entropy term is the closed-form
cross-entropy of the uniform box action under the policy, E_{u~U} -log pi(u | o): the diffusion
J^ent is a denoising loss on the same uniform actions, i.e. a bound on that same cross-entropy,
so alpha weighs "fit the uniform" against "fit the weighted candidates" in both actors (and
q_scaled / adaptive alpha apply unchanged). Its trust-region measure is the analytic
KL(pi_old || pi_new) of the latent Gaussians (exact for the squashed ones) averaged over the
`kl_states` states; the line search is unchanged. Discrete envs work as for diffusion: samples in
(-1, 1)^{|A|} decode by the available argmax and the fit targets 2 onehot(a) - 1 are pulled inside
the box to +-0.999 before atanh. `act(deterministic=True)` returns tanh(mean).

Layouts: batch axis first, then candidates, then the agent axis: [B, K, n, A].
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdiff import losses, optim
from jaxdiff.algos import offpolicy, sequential
from jaxdiff.algos.base import Algorithm, ConfigError, EpisodeSums, dynamic, register, static
from jaxdiff.nets.critics import QNet, apply_twin, init_twin, joint_input
from jaxdiff.nets.diffusion_actor import DiffusionActor, to_box
from jaxdiff.nets.gaussian_actor import GaussianActor
from jaxdiff.nets.mlp import ACTIVATIONS

DRIFTS = ("linesearch", "kl_penalty", "ppo_clip", "none")
ACTORS = ("diffusion", "gaussian")


# ----------------------------------------------------------------------------- config
@struct.dataclass
class Config:
    """HAQO. [PAPER] = paper 003, [QVPO] = the QVPO code base the spec follows, [CHOICE] =
    spec-haqo §5.2 / §8."""
    num_envs: int = static(16, lo=1, doc="[CHOICE] parallel envs")
    rollout_len: int = static(32, lo=1, doc="[CHOICE] env steps per env per iteration")
    critic_updates: int = static(256, lo=1, doc="[CHOICE] TD steps per iteration (UTD 0.5)")
    critic_block: int = static(16, lo=1, doc="[CHOICE] TD steps whose next-action candidates "
                                             "are drawn in one reverse process (speed/memory "
                                             "only; the largest divisor of critic_updates <= "
                                             "this)")
    batch_size: int = static(256, lo=1, doc="[QVPO] critic / actor minibatch B")
    actor_states: int = static(2048, lo=1, doc="[CHOICE] B_a states per agent per iteration "
                                               "(B_a / B minibatches, one epoch)")
    kl_states: int = static(256, lo=1, doc="[CHOICE] states for the chain-KL line search")
    buffer_size: int = static(100_000, lo=1, doc="[CHOICE] transitions kept ([QVPO] 1e6; the "
                                                 "buffer is part of the seed-vmapped state)")
    warmup_steps: int = static(10_000, lo=0, doc="[QVPO] uniform random transitions first")
    steps: int = static(20, lo=1, doc="[CHOICE] denoising steps T (paper: 8/16/20/50)")
    schedule: str = static("vp", choices=("vp", "cosine", "linear"), doc="[QVPO] noise schedule")
    hidden: int = static(256, lo=1, doc="[QVPO] denoiser and critic width (lightweight: 128)")
    layers: int = static(3, lo=1, doc="[QVPO] denoiser and critic depth")
    activation: str = static("mish", choices=tuple(ACTIVATIONS), doc="[QVPO] mish")
    time_features: int = static(32, lo=1, doc="[QVPO] sinusoidal time embedding size")
    k_behaviour: int = static(4, lo=1, doc="[PAPER] K_b candidates per agent when acting")
    k_target: int = static(2, lo=1, doc="[PAPER] K_t next-action candidates for the TD target")
    k_train: int = static(8, lo=2, doc="[PAPER] K_p candidates per state for the QV loss")
    n_entropy: int = static(10, lo=1, doc="[QVPO] uniform actions per state for J^ent")
    weight: str = static("qadv", choices=("qadv", "qcut"),
                         doc="[PAPER] qadv (Eq. 6, continuous) or qcut (Eq. 7, discrete)")
    drift: str = static("linesearch", choices=DRIFTS,
                        doc="[PAPER] linesearch: hard chain-KL <= delta by backtracking; "
                            "kl_penalty: + beta_kl KL in the loss; ppo_clip: + c_ppo x the PPO "
                            "clip loss on the exact reverse-chain ratio of the K_p candidates "
                            "(Alg. 1 lines 17-18; diffusion actor only); none")
    alpha_mode: str = static("constant", choices=("constant", "q_scaled", "adaptive"),
                             doc="[CHOICE] entropy coefficient: fixed, weighted per state by the "
                                 "QV weights ([QVPO]), or Eq. 142's dispersion rule")
    sequential: bool = static(True, doc="[PAPER] sequential per-agent updates in a random order "
                                        "(false: every agent against the pre-round snapshot)")
    actor: str = static("diffusion", choices=ACTORS,
                        doc="[PAPER] diffusion, or the Gaussian ablation (tanh-squashed, weighted "
                            "MLE fit, uniform cross-entropy as J^ent, analytic KL trust region; "
                            "steps/schedule/time_features unused)")
    actor_lr: float = dynamic(1e-4, lo=0.0, doc="[QVPO] Adam lr of the denoisers")
    critic_lr: float = dynamic(3e-4, lo=0.0, doc="[QVPO] Adam lr of the critic")
    max_grad_norm: float = dynamic(2.0, lo=0.0, doc="[QVPO] global-norm gradient clip")
    gamma: float = dynamic(0.99, lo=0.0, hi=1.0, doc="[QVPO]")
    polyak: float = dynamic(0.005, lo=0.0, hi=1.0, doc="[QVPO] target critic tau")
    alpha: float = dynamic(0.02, lo=0.0, doc="[PAPER] entropy coefficient alpha (optimal "
                                             "0.01-0.05; 0 disables J^ent)")
    kappa: float = dynamic(0.05, lo=0.0, hi=1.0, doc="[CHOICE] adaptive alpha: dispersion floor "
                                                     "as a fraction of the uniform's")
    delta: float = dynamic(0.01, lo=0.0, doc="[PAPER] trust radius on the mean chain KL")
    beta_kl: float = dynamic(1.0, lo=0.0, doc="[CHOICE] kl_penalty weight")
    c_ppo: float = dynamic(1.0, lo=0.0, doc="[CHOICE] ppo_clip weight")
    ppo_eps: float = static(0.2, lo=1e-6, doc="[CHOICE] ppo_clip range epsilon")
    cut_scale: float = dynamic(0.25, lo=0.0, doc="[CHOICE] qcut threshold = cut_scale * std(A)")
    reward_scale: float = dynamic(1.0, doc="[CHOICE] reward multiplier in the TD target")

    def check(self):
        if self.drift == "ppo_clip" and self.actor == "gaussian":
            raise ConfigError("`algo.drift=ppo_clip` needs the diffusion actor's reverse chains; "
                              "the Gaussian ablation supports drift=linesearch, kl_penalty or "
                              "none.")
        if self.buffer_size < max(self.batch_size, self.actor_states):
            raise ConfigError(f"`algo.buffer_size={self.buffer_size}` must hold at least "
                              f"`algo.batch_size` and `algo.actor_states` transitions; raise it.")
        if self.actor_states % self.batch_size:
            raise ConfigError(f"`algo.actor_states={self.actor_states}` must be a multiple of "
                              f"`algo.batch_size={self.batch_size}` (one epoch of minibatches).")


# ----------------------------------------------------------------------------- parts
class _Parts(struct.PyTreeNode):
    actor: Any = struct.field(pytree_node=False)        # DiffusionActor | GaussianActor
    critic: QNet = struct.field(pytree_node=False)
    buffer: Any = struct.field(pytree_node=False)
    actor_sampler: Any = struct.field(pytree_node=False)  # same storage, B_a-state samples
    n: int = struct.field(pytree_node=False)
    act_dim: int = struct.field(pytree_node=False)
    obs_dim: int = struct.field(pytree_node=False)
    discrete: bool = struct.field(pytree_node=False)
    dim_mask: Any = struct.field(pytree_node=False)     # np f32 [n, A]: real dims (continuous)
    low: Any = struct.field(pytree_node=False)          # np [A] (continuous)
    high: Any = struct.field(pytree_node=False)


def _parts(env, config) -> _Parts:
    spec = env.spec
    box = lambda b: np.broadcast_to(np.asarray(b, np.float32), (spec.act_dim,))
    if config.actor == "gaussian":
        actor = GaussianActor(act_dim=spec.act_dim, hidden=config.hidden, layers=config.layers,
                              activation=config.activation)
    else:
        actor = DiffusionActor(act_dim=spec.act_dim, steps=config.steps,
                               schedule=config.schedule, step="posterior", hidden=config.hidden,
                               layers=config.layers, activation=config.activation,
                               time_features=config.time_features)
    buffer = offpolicy.item_buffer(buffer_size=config.buffer_size,
                                   batch_size=config.batch_size)
    actor_sampler = offpolicy.item_buffer(buffer_size=config.buffer_size,
                                          batch_size=config.actor_states)
    dim_mask = (np.ones((spec.n_agents, spec.act_dim), np.float32) if spec.discrete
                else spec.dim_mask)
    low, high = ((None, None) if spec.discrete
                 else (box(spec.action_low), box(spec.action_high)))
    return _Parts(actor, QNet(config.hidden, config.layers, config.activation), buffer,
                  actor_sampler, spec.n_agents, spec.act_dim, spec.obs_dim, spec.discrete,
                  dim_mask, low, high)


# ----------------------------------------------------------------------------- actions
def decode(p: _Parts, x, mask):
    """Actor output x [..., n, A] in [-1, 1] -> the env's action: discrete int32 [..., n] (the
    available argmax; `mask` bool [..., n, A]), continuous [..., n, A] in the env box."""
    if p.discrete:
        return jnp.argmax(jnp.where(mask, x, -1e9), -1).astype(jnp.int32)
    return to_box(x, p.low, p.high) * jnp.asarray(p.dim_mask)


def critic_action(p: _Parts, x, mask):
    """What the critic sees of x [..., n, A]: onehot(decoded action) (discrete) or x with the
    padded dims zeroed (continuous, normalised box)."""
    if p.discrete:
        return jax.nn.one_hot(decode(p, x, mask), p.act_dim, dtype=jnp.float32)
    return x * jnp.asarray(p.dim_mask)


def training_target(p: _Parts, x, mask):
    """The denoising target of a sampled x: itself (continuous) or 2 onehot(a) - 1 (discrete)."""
    if p.discrete:
        return 2.0 * critic_action(p, x, mask) - 1.0
    return x * jnp.asarray(p.dim_mask)


def q_min(p: _Parts, critic, gstate, joint):
    """min over the twins of Q(s, joint): gstate [..., S], joint [..., n, A] -> [...]."""
    gstate = jnp.broadcast_to(gstate, joint.shape[:-2] + gstate.shape[-1:])
    return apply_twin(p.critic, critic, joint_input(gstate, joint)).min(0)


def with_agent(joint, i, a_i):
    """joint [..., n, A] with agent i's action replaced by a_i [..., A] (i may be traced)."""
    n = joint.shape[-2]
    sel = (jnp.arange(n) == i)[:, None]
    return jnp.where(sel, a_i[..., None, :], joint)


def best_of_k(p: _Parts, critic, gstate, cand, mask):
    """Per-agent best candidate (Alg. 1 lines 4-5): cand [B, K, n, A] -> x [B, n, A]; agent i's
    K candidates are scored with the others at their first (reference) candidates."""
    B, K, n, A = cand.shape
    ref = critic_action(p, cand[:, 0], mask)                                        # [B, n, A]
    feats = critic_action(p, cand, mask[:, None])                                   # [B,K,n,A]
    joint = jnp.where(jnp.eye(n, dtype=bool)[None, None, :, :, None],
                      feats[:, :, :, None, :], ref[:, None, None])                  # [B,K,i,n,A]
    q = q_min(p, critic, gstate[:, None, None], joint)                              # [B, K, n]
    best = jnp.argmax(q, 1)                                                         # [B, n]
    return jnp.take_along_axis(cand, best[:, None, :, None], 1)[:, 0]


def sample_candidates(p: _Parts, params, obs, key, k: int):
    """k samples per agent from the stacked actors: obs [B, n, O] -> [B, k, n, A] in [-1, 1]."""
    cond = jnp.broadcast_to(obs[:, None], (obs.shape[0], k) + obs.shape[1:])
    return p.actor.sample(params, cond, key) * jnp.asarray(p.dim_mask)


def one_agent(params_i):
    """Agent i's parameters as a stack of one (leaves [1, ...]) for the stacked actor."""
    return jax.tree.map(lambda x: x[None], params_i)


def actor_kl(p: _Parts, params_old, params_new, obs, key, dim_mask):
    """One agent's KL(pi_old || pi_new) per state: obs [M, O] -> [M, 1]. Diffusion: the chain KL
    on one old-policy chain per state (spec §3.7.3, `key` fixes the chains); Gaussian: the
    analytic KL over the real action dims `dim_mask` [A]."""
    if isinstance(p.actor, GaussianActor):
        return p.actor.kl(one_agent(params_old), one_agent(params_new), obs[:, None],
                          mask=dim_mask)
    return p.actor.chain_kl(one_agent(params_old), one_agent(params_new), obs[:, None], key)


def gaussian_fit_losses(p: _Parts, params_i, x0, obs, w, mask, ent_weights=None):
    """The Gaussian ablation's two loss terms for one agent (the counterparts of J^QV and J^ent):
    weighted MLE of the candidates, mean_{b,k} w~_bk (-log pi(x0_bk | o_b)) with w~ = w / (mean w
    + 1e-8) as in `losses.qv_weighted`, and the uniform cross-entropy mean_b E_u -log pi(u | o_b)
    (per-state `ent_weights` [B] for alpha_mode=q_scaled). x0 [B, K, A], obs [B, O], w [B, K],
    mask [A] (real action dims). -> (fit, ent, aux) with qv_weighted's aux keys."""
    mean, log_std = p.actor.dist(one_agent(params_i), obs[:, None])                # [B, 1, A]
    mean, log_std = mean[:, 0], log_std[:, 0]
    x0, w = jax.lax.stop_gradient(x0), jax.lax.stop_gradient(w)
    nll = p.actor.nll(mean[:, None], log_std[:, None], x0, mask)                    # [B, K]
    mean_w = jnp.mean(w)
    fit = jnp.mean(w / (mean_w + 1e-8) * nll)
    ce = p.actor.uniform_cross_entropy(mean, log_std, mask)                         # [B]
    ent = jnp.mean(ce if ent_weights is None else jax.lax.stop_gradient(ent_weights) * ce)
    aux = {"frac_nonzero_weights": jnp.mean((w > 0).astype(nll.dtype)), "mean_weight": mean_w}
    return fit, ent, aux


# ----------------------------------------------------------------------------- state
@struct.dataclass
class State:
    actor: Any                # stacked denoisers [n, ...]
    actor_opt: Any
    critic: Any               # twin [2, ...]
    target_critic: Any
    critic_opt: Any
    buffer: Any
    env_state: Any
    obs: jax.Array            # [E, n, O]
    key: jax.Array
    env_steps: jax.Array      # int32 transitions collected
    alpha: jax.Array          # f32 [n] entropy coefficients (adaptive mode moves them)
    hp: Config


def _example_item(env, p: _Parts):
    spec = env.spec
    z = lambda *s, dt=jnp.float32: jnp.zeros(s, dt)
    return dict(gstate=z(spec.state_dim), obs=z(p.n, p.obs_dim), action=z(p.n, p.act_dim),
                mask=z(p.n, p.act_dim, dt=bool), reward=z(), next_gstate=z(spec.state_dim),
                next_obs=z(p.n, p.obs_dim), next_mask=z(p.n, p.act_dim, dt=bool),
                term=z(dt=bool), valid=z())


def init(key, env, config: Config) -> State:
    p = _parts(env, config)
    k_actor, k_critic, k_env, key = jax.random.split(key, 4)
    obs, env_state = jax.vmap(env.reset)(jax.random.split(k_env, config.num_envs))
    actor = p.actor.init(k_actor, p.n, p.obs_dim)
    critic = init_twin(p.critic, k_critic, jnp.zeros((env.spec.state_dim + p.n * p.act_dim,)))
    opt = optim.adam()
    hp = jax.tree.map(jnp.asarray, config)
    return State(actor=actor, actor_opt=jax.vmap(opt.init)(actor), critic=critic, target_critic=critic,
                 critic_opt=opt.init(critic), buffer=p.buffer.init(_example_item(env, p)),
                 env_state=env_state, obs=obs, key=key, env_steps=jnp.zeros((), jnp.int32),
                 alpha=jnp.full((p.n,), hp.alpha, jnp.float32), hp=hp)


def env_steps_per_iter(config, env):
    return config.num_envs * config.rollout_len


def act(config, env, state: State, obs, carry, mask, key, *, deterministic: bool):
    """Decentralised execution: one sample from each agent's own actor given its observation
    (no critic; a diffusion policy has no mode, so `deterministic` samples too; the Gaussian
    ablation's deterministic action is tanh(mean))."""
    p = _parts(env, config)
    if deterministic and config.actor == "gaussian":
        x = p.actor.mode(state.actor, obs) * jnp.asarray(p.dim_mask)
    else:
        x = p.actor.sample(state.actor, obs, key) * jnp.asarray(p.dim_mask)
    return decode(p, x, mask), carry


# ----------------------------------------------------------------------------- collection
def make_env_step(env, config):
    p = _parts(env, config)
    E = config.num_envs
    step = env.step_final if env.reports_final else env.step

    def env_step(state: State, _):
        key, k_cand, k_rand, k_env = jax.random.split(state.key, 4)
        gstate = jax.vmap(env.global_state)(state.env_state)
        mask = jax.vmap(env.action_mask)(state.env_state)
        cand = sample_candidates(p, state.actor, state.obs, k_cand, config.k_behaviour)
        x_pol = best_of_k(p, state.critic, gstate, cand, mask)
        if p.discrete:   # uniform over the available actions, as an analog one-hot
            a_rand = offpolicy.random_actions(k_rand, mask, discrete=True)
            x_rand = 2.0 * jax.nn.one_hot(a_rand, p.act_dim) - 1.0
        else:
            x_rand = jax.random.uniform(k_rand, state.obs.shape[:2] + (p.act_dim,),
                                        minval=-1.0, maxval=1.0) * jnp.asarray(p.dim_mask)
        x = jnp.where(state.env_steps < config.warmup_steps, x_rand, x_pol)
        obs, env_state, reward, done, info = jax.vmap(step)(
            jax.random.split(k_env, E), state.env_state, decode(p, x, mask))
        next_gstate = jax.vmap(env.global_state)(env_state)
        next_mask = jax.vmap(env.action_mask)(env_state)
        ended, term = done[:, 0], info["terminated"]
        if "final_obs" in info:        # the true s' of an episode end (before the auto-reset)
            next_obs = jnp.where(ended[:, None, None], info["final_obs"], obs)
            next_gstate = jnp.where(ended[:, None], info["final_state"], next_gstate)
            valid = jnp.ones((E,))
        else:                          # s' of a time-limit end unknown: keep it out of the TD loss
            next_obs, valid = obs, (~(ended & ~term)).astype(jnp.float32)
        tr = dict(gstate=gstate, obs=state.obs, action=x, mask=mask,
                  reward=env.spec.team_reward(reward, -1), next_gstate=next_gstate,
                  next_obs=next_obs, next_mask=next_mask, term=term, valid=valid)
        state = state.replace(env_state=env_state, obs=obs, key=key,
                              env_steps=state.env_steps + E)
        return state, (tr, info)

    return env_step


# ----------------------------------------------------------------------------- critic
def make_critic_update(env, config):
    p = _parts(env, config)
    opt = optim.adam()

    def loss_fn(critic, batch, y):
        a = critic_action(p, batch["action"], batch["mask"])
        q = apply_twin(p.critic, critic, joint_input(batch["gstate"], a))           # [2, B]
        valid = batch["valid"]
        err = jnp.mean((q - y) ** 2 * valid, 1).sum() / jnp.maximum(valid.mean(), 1e-6)
        return err, (q.mean(), jnp.abs(q.min(0) - y).mean())

    grad = jax.value_and_grad(loss_fn, has_aux=True)

    def update(state: State, key):
        """One TD step on a fresh minibatch (its K_t candidates drawn here)."""
        k_batch, k_next = jax.random.split(key)
        batch = p.buffer.sample(state.buffer, k_batch).experience
        cand = sample_candidates(p, state.actor, batch["next_obs"], k_next, config.k_target)
        return fit(state, batch, cand)

    def fit(state: State, batch, cand):
        """One TD step on `batch` whose next-action candidates `cand` [B, K_t, n, A] were drawn
        from the current actors."""
        hp = state.hp
        x_next = best_of_k(p, state.target_critic, batch["next_gstate"], cand,
                           batch["next_mask"])
        q_next = q_min(p, state.target_critic, batch["next_gstate"],
                       critic_action(p, x_next, batch["next_mask"]))
        boot = hp.gamma * (1.0 - batch["term"].astype(jnp.float32))
        y = jax.lax.stop_gradient(batch["reward"] * hp.reward_scale + boot * q_next)
        (loss, (q_mean, td)), g = grad(state.critic, batch, y)
        critic, critic_opt, _ = optim.apply(opt, state.critic, state.critic_opt, g,
                                            hp.critic_lr, hp.max_grad_norm)
        target = optim.polyak(state.target_critic, critic, hp.polyak)
        state = state.replace(critic=critic, critic_opt=critic_opt, target_critic=target)
        return state, dict(q_loss=loss, q_mean=q_mean, td_abs=td)

    update.fit = fit
    return update


def critic_block(config) -> int:
    """Critic updates per block of `make_critic_phase`: the largest divisor of
    `critic_updates` that is at most `critic_block`."""
    u = config.critic_updates
    return max(d for d in range(1, min(config.critic_block, u) + 1) if u % d == 0)


def make_critic_phase(env, config):
    """(state, key) -> (state, metrics [critic_updates]): the iteration's TD steps. The actors do
    not change during the critic phase, so the K_t next-action candidates of a block of
    `critic_block(config)` minibatches are drawn together, one vmapped reverse process over all
    their states (larger, fewer denoiser calls), and the TD steps of the block then run in order,
    each picking its best candidate with the target critic of that moment. With the same keys
    this is exactly `critic_updates` calls of `make_critic_update(...)(state, key)` in a row
    (key j of block b = split(split(key, U / G)[b], G)[j])."""
    p = _parts(env, config)
    update = make_critic_update(env, config)
    U, G = config.critic_updates, critic_block(config)

    def block(state: State, key):
        k_batch, k_next = jnp.moveaxis(jax.vmap(jax.random.split)(jax.random.split(key, G)), 1, 0)
        batches = jax.vmap(lambda k: p.buffer.sample(state.buffer, k).experience)(k_batch)
        cand = jax.vmap(lambda o, k: sample_candidates(p, state.actor, o, k, config.k_target))(
            batches["next_obs"], k_next)                                            # [G,B,K,n,A]
        return jax.lax.scan(lambda s, xs: update.fit(s, *xs), state, (batches, cand))

    def phase(state: State, key):
        state, metrics = jax.lax.scan(block, state, jax.random.split(key, U // G))
        return state, jax.tree.map(lambda x: x.reshape((U,) + x.shape[2:]), metrics)

    return phase


# ----------------------------------------------------------------------------- actors
def make_agent_update(env, config):
    """(buffer, critic, hp) -> body(i, params_i, opt_i, carry, key) for
    `sequential.agent_scan`: agent i's QV + entropy update and its trust region.
    carry = dict(stack: the actors the contexts are sampled from, alpha [n])."""
    p = _parts(env, config)
    opt = optim.adam()
    gaussian = config.actor == "gaussian"
    sched = None if gaussian else p.actor.diffusion_schedule()
    net = None if gaussian else p.actor.net()
    K, B, Ba = config.k_train, config.batch_size, config.actor_states

    def losses_i(params_i, mb, alpha_i, hp, key):
        mask_i = mb["dim_mask"]
        ent_w = mb["ent_w"] if config.alpha_mode == "q_scaled" else None
        if gaussian:
            l_qv, l_ent, aux = gaussian_fit_losses(p, params_i, mb["x0"], mb["obs"], mb["w"],
                                                   mask_i, ent_w)
        else:
            k_qv, k_ent = jax.random.split(key)
            eps_fn = lambda x_t, t, c: net.apply(params_i, x_t, t, c)
            l_qv, aux = losses.qv_weighted(eps_fn, sched, k_qv, mb["x0"], mb["obs"], mb["w"],
                                           mask=mask_i)
            l_ent = losses.diffusion_entropy(eps_fn, sched, k_ent, mb["obs"],
                                             n_samples=config.n_entropy, d=p.act_dim,
                                             mask=mask_i, weights=ent_w)
        total = l_qv + alpha_i * l_ent
        if config.drift == "kl_penalty":
            kl = actor_kl(p, mb["old"], params_i, mb["obs_kl"], mb["k_kl"], mask_i)
            total = total + hp.beta_kl * kl.mean()
        if config.drift == "ppo_clip":
            # log rho of each stored candidate chain (spec §3.7.5) against the pre-update actor
            cond = jnp.broadcast_to(mb["obs"][:, None, None], mb["adv"].shape + (1, p.obs_dim))
            chain = {k: jnp.moveaxis(mb[k], 1, 0) for k in ("x_t", "x_prev")}
            log_ratio = p.actor.chain_log_ratio(one_agent(params_i), one_agent(mb["old"]),
                                                chain, cond, mask=mask_i)[..., 0]     # [B, K]
            l_ppo = losses.ppo_clip_loss(log_ratio, mb["adv"], clip=config.ppo_eps)
            total = total + hp.c_ppo * l_ppo
            aux = dict(aux, ppo_loss=l_ppo, ppo_ratio_dev=jnp.abs(jnp.exp(log_ratio) - 1).mean(),
                       ppo_clip_frac=(jnp.abs(jnp.exp(log_ratio) - 1) > config.ppo_eps).mean())
        return total, dict(qv_loss=l_qv, ent_loss=l_ent, **aux)

    grad = jax.value_and_grad(losses_i, has_aux=True)

    def make_body(buffer, critic, hp):
        def body(i, params_i, opt_i, carry, key):
            k_s, k_ctx, k_cand, k_mb, k_kl = jax.random.split(key, 5)
            batch = p.actor_sampler.sample(buffer, k_s).experience
            obs, gstate, mask = batch["obs"], batch["gstate"], batch["mask"]            # [Ba, ...]
            # other agents: current stack (predecessors new, successors old), one sample each
            ctx = sample_candidates(p, carry["stack"], obs, k_ctx, 1)[:, 0]               # [Ba,n,A]
            ctx = critic_action(p, ctx, mask)
            obs_i = obs[:, i]                                                             # [Ba, O]
            mask_i = mask[:, i]                                                           # [Ba, A]
            cond = jnp.broadcast_to(obs_i[:, None, None], (Ba, K, 1, p.obs_dim))
            if config.drift == "ppo_clip":   # keep the chains (last step noised: a density)
                cand, chain = p.actor.sample_chain(one_agent(params_i), cond, k_cand,
                                                   last_step_noise=True)
                chain = {k: jnp.moveaxis(chain[k], 0, 1) for k in ("x_t", "x_prev")}  # [Ba,H,.]
            else:
                cand, chain = p.actor.sample(one_agent(params_i), cond, k_cand), {}
            cand = cand[:, :, 0] * jnp.asarray(p.dim_mask)[i]                             # [Ba,K,A]
            feat = critic_action(p, cand[:, :, None], mask_i[:, None, None])[:, :, 0]     # [Ba,K,A]
            q = q_min(p, critic, gstate[:, None],
                      with_agent(ctx[:, None], i, feat))                                  # [Ba, K]
            adv = q - q.mean(1, keepdims=True)
            eps_cut = hp.cut_scale * adv.std()
            w = jax.lax.stop_gradient(losses.qv_weights(q, mode=config.weight, eps_cut=eps_cut))
            x0 = jax.lax.stop_gradient(training_target(p, cand[:, :, None],
                                                       mask_i[:, None, None])[:, :, 0])
            disp = losses.dispersion_ratio(jnp.moveaxis(cand, 1, 0),
                                           mask=jnp.asarray(p.dim_mask)[i]).mean()
            alpha_i = carry["alpha"][i]
            if config.alpha_mode == "adaptive":
                alpha_i = losses.adaptive_alpha(alpha_i, disp, kappa=hp.kappa, alpha0=hp.alpha)
            w_state = w.mean(1) / (w.mean() + 1e-8)                                       # [Ba]
            data = dict(x0=x0, obs=obs_i, w=w, ent_w=w_state, **chain)
            if config.drift == "ppo_clip":
                data["adv"] = jax.lax.stop_gradient(adv)
            data = jax.tree.map(lambda x: x.reshape((Ba // B, B) + x.shape[1:]), data)
            old = params_i
            obs_kl = obs_i[:config.kl_states] if config.kl_states <= Ba else obs_i

            def mb_step(c, xs):
                params, o = c
                mb, k = xs
                mb = dict(mb, dim_mask=jnp.asarray(p.dim_mask)[i], old=old, obs_kl=obs_kl,
                          k_kl=k_kl)
                (_, aux), g = grad(params, mb, alpha_i, hp, k)
                params, o, gnorm = optim.apply(opt, params, o, g, hp.actor_lr, hp.max_grad_norm)
                return (params, o), dict(aux, grad_norm=gnorm)

            (new, opt_i), aux = jax.lax.scan(mb_step, (params_i, opt_i),
                                             (data, jax.random.split(k_mb, Ba // B)))
            kl_fn = lambda prm: actor_kl(p, old, prm, obs_kl, k_kl,
                                         jnp.asarray(p.dim_mask)[i]).mean()
            if config.drift == "linesearch":
                new, c_star, kl_raw, kl_real = losses.line_search(kl_fn, old, new, delta=hp.delta)
            else:
                kl_raw = kl_real = kl_fn(new)
                c_star = jnp.ones(())
            stack = sequential.put_agent(carry["stack"], i, new) if config.sequential \
                else carry["stack"]
            carry = dict(carry, stack=stack, alpha=carry["alpha"].at[i].set(alpha_i))
            metrics = dict(jax.tree.map(jnp.mean, aux), kl_raw=kl_raw, kl_real=kl_real,
                           c_star=c_star, q_cand_mean=q.mean(), q_cand_std=q.std(1).mean(),
                           weight_nonzero=(w > 0).mean(), dispersion=disp, alpha=alpha_i)
            return new, opt_i, carry, metrics
        return body

    return make_body


# ----------------------------------------------------------------------------- step
def step(env, config: Config, *, iterations: int = 1):
    p = _parts(env, config)
    env_step = make_env_step(env, config)
    critic_phase = make_critic_phase(env, config)
    make_body = make_agent_update(env, config)

    def learn(state: State):
        key, k_c, k_perm, k_agents = jax.random.split(state.key, 4)
        state, c_metrics = critic_phase(state, k_c)
        order = sequential.agent_order(k_perm, p.n, fixed=False)
        carry = dict(stack=state.actor, alpha=state.alpha)
        actor, actor_opt, carry, a_metrics = sequential.agent_scan(
            make_body(state.buffer, state.critic, state.hp), state.actor, state.actor_opt, carry,
            order,
            jax.random.split(k_agents, p.n))
        state = state.replace(actor=actor, actor_opt=actor_opt, alpha=carry["alpha"], key=key)
        metrics = jax.tree.map(jnp.mean, c_metrics)
        metrics.update(jax.tree.map(jnp.mean, a_metrics))
        return state, metrics

    def train_step(state: State):
        state, (tr, info) = jax.lax.scan(env_step, state, None, config.rollout_len)
        tr = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tr)              # [L*E]
        state = state.replace(buffer=p.buffer.add(state.buffer, tr))
        ready = ((state.env_steps >= config.warmup_steps)
                 & p.buffer.can_sample(state.buffer) & p.actor_sampler.can_sample(state.buffer))
        state, metrics = offpolicy.learn_when_ready(ready, learn, state)
        metrics.update(episodes=EpisodeSums.of(info), learning=ready.astype(jnp.float32))
        return state, metrics

    return train_step


register(Algorithm(
    name="haqo", Config=Config, init=init, step=step, act=act,
    env_steps_per_iter=env_steps_per_iter,
    doc="HAQO: per-agent diffusion actors, Q-weighted denoising with diffusion entropy, "
        "sequential per-agent updates under a chain-KL trust region"))
