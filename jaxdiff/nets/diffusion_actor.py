"""A diffusion actor any algorithm can use: per-agent stacked noise-prediction networks
eps_i(a_t, t, cond_i) (one parameter set per agent, no sharing, applied with one `vmap`) and the
DDPM reverse process that turns them into a policy over [-1, 1]^A (DDPL, paper 002 §2.2 and §4.1;
spec-ddpl §4.3-4.4). The loss belongs to the algorithm (`jaxdiff.losses.issm` for DDPL).

    actor = DiffusionActor(act_dim=2, steps=20)                 # Table 3: linear 0.001 -> 0.999
    params = actor.init(key, n_agents, cond_dim)                # leaves [n, ...]
    a = actor.sample(params, cond, key)                         # cond [..., n, C] -> [..., n, A]
    env_a = to_box(a, spec.action_low, spec.action_high)        # [-1, 1] -> env box
    log.update(actor.log_prob_free_stats(a))                    # per-agent spread

    # ISSM for agent-stacked params: actions [B, n, A] from the old policy, q [B, n] from the
    # critics; each agent's batch is its pool (axis=0), t is drawn per (b, i): t [B, n]
    weights, ess = losses.importance_weights(q, axis=0)
    eps_fn = lambda a_t, t: actor.eps(params, a_t, t, cond)     # cond [B, n, C]
    loss = losses.issm(eps_fn, actor.diffusion_schedule(), key, actions, weights)

The bare network is still available for other samplers:

    net = EpsNet(act_dim=2, hidden=256, layers=3)
    params = init_stacked(net, key, n_agents, cond_dim)        # leaves [n, ...]
    eps = apply_stacked(net, params, a_t, t, cond)            # a_t [..., n, A], t [..., n]
"""
from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.diffusion.sampling import ddpm_sample
from jaxdiff.diffusion.schedules import Schedule, make_schedule
from jaxdiff.nets.embeddings import TimeEmbedding
from jaxdiff.nets.mlp import ACTIVATIONS


class EpsNet(nn.Module):
    """eps(a_t [..., A], t [...], cond [..., C]) -> [..., A]: an MLP on [a_t, emb(t), cond]
    (DACER/EDP-style; `t` is the integer step or any float level)."""
    act_dim: int
    hidden: int = 256
    layers: int = 3
    activation: str = "mish"
    time_features: int = 16

    @nn.compact
    def __call__(self, a_t, t, cond):
        act = ACTIVATIONS[self.activation]
        emb = TimeEmbedding(self.time_features, self.activation)(t)
        x = jnp.concatenate([a_t, jnp.broadcast_to(emb, a_t.shape[:-1] + emb.shape[-1:]), cond],
                            -1)
        for _ in range(self.layers):
            x = act(nn.Dense(self.hidden)(x))
        return nn.Dense(self.act_dim)(x)


def init_stacked(net: EpsNet, key, n_agents: int, cond_dim: int):
    """n_agents independent parameter sets of `net`, stacked on a leading agent axis.

    `lax.map` rather than `vmap` over the keys: the same values, but XLA compiles the vmapped
    threefry/truncated-normal initialisers ~2.5x slower on CPU, and init runs once."""
    example = (jnp.zeros((net.act_dim,)), jnp.zeros(()), jnp.zeros((cond_dim,)))
    return jax.lax.map(lambda k: net.init(k, *example), jax.random.split(key, n_agents))


def apply_stacked(net: EpsNet, params, a_t, t, cond, agent_axis: int = -2):
    """Agent i's network on agent i's inputs. a_t [..., n, A], cond [..., n, C] (agent axis at
    `agent_axis` of a_t/cond), t broadcastable to a_t.shape[:-1] -> eps [..., n, A]."""
    axis = agent_axis % a_t.ndim
    t = jnp.broadcast_to(t, a_t.shape[:-1])
    return jax.vmap(net.apply, in_axes=(0, axis, axis, axis), out_axes=axis)(params, a_t, t, cond)


# ---------------------------------------------------------------------------------------------
# The actor: network + schedule + reverse process, as one static (hashable) description.

SCHEDULES = ("linear", "cosine", "vp")
STEPS = ("posterior", "ho", "paper")
# Reverse-step variance of each step variant, in `ddpm_sample`'s names.
_VARIANCE = {"posterior": "posterior", "ho": "beta", "paper": "beta_over_alpha"}
# The paper's sigma^2 = beta/alpha above this is wider than the N(0, I) start: the chain diverges.
_MAX_PAPER_VARIANCE = 1.0


def _actor_schedule(name: str, steps: int) -> Schedule:
    if name == "linear":                      # Table 3, not linear_schedule's Ho default
        return make_schedule("linear", steps, beta_start=0.001, beta_end=0.999)
    return make_schedule(name, steps)


@functools.lru_cache(maxsize=None)
def _max_paper_variance(name: str, steps: int) -> float:
    """max_t beta_t / alpha_t, concrete even when the actor is built inside a jit; one small
    compiled program per (schedule, H) instead of dozens of eager ops."""
    with jax.ensure_compile_time_eval():
        worst = jax.jit(lambda: jnp.max((lambda s: s.betas / s.alphas)(
            _actor_schedule(name, steps))))()
        return float(worst)


@dataclasses.dataclass(frozen=True)
class DiffusionActor:
    """Per-agent DDPM policy a_i ~ pi_i(. | cond_i) over [-1, 1]^act_dim.

    Static and hashable, so it can be a jit static argument or closed over. Every method is pure:
    parameters and keys are explicit.

    Reverse step a_{t-1} = mean(a_t, eps) + std_t z from a_H ~ N(0, I) (the paper's start), with
    x0 = (a_t - sqrt(1 - abar) eps) / sqrt(abar) clipped to [-clip_x0, clip_x0] (clip_x0=None: no
    clipping) and `step` choosing std_t^2:
      "posterior"  beta-tilde_t (the DDPM posterior; DACER/SDAC code base; spec-ddpl §8.6 default),
      "ho"         beta_t,
      "paper"      beta_t / alpha_t (paper 002 §2.2 "in this paper"). With clip_x0=None the step is
                   literally a_{t-1} = (a_t + beta_t s)/sqrt(alpha_t) + sigma_t z with
                   s = -eps/sqrt(1 - abar) (the sign of s fixed as in spec-ddpl §1.2).
    The paper wins over the spec where they disagree, but here the paper's own choice is unusable
    with its own Table 3 schedule: sigma_H^2 = beta_H/alpha_H ~ 999 for linear 0.001 -> 0.999 (and
    for cosine, whose last beta is capped at 0.999), so "paper" is refused (ValueError) whenever
    max sigma^2 > 1; use schedule="vp" (steps >= 14) with it. Finally a_0 is projected onto the box (clip to
    [-1, 1]), the paper's Proj_A.

    Schedules (H = `steps`): "linear" is Table 3's beta linear in 0.001 -> 0.999; "cosine" is
    Nichol-Dhariwal (s = 0.008, beta capped at 0.999); "vp" the discretised VP-SDE (0.1, 10).
    At H = 20 the posterior step is under-dispersed (oracle N(0.3, 0.1^2) -> std ~0.05 on linear),
    which is why `log_prob_free_stats` reports the per-agent spread.

    `sample` runs the fused reverse process by default (`fused=True`, see `_fused_sample`: the
    same chain up to float rounding, with everything that does not depend on a_t hoisted out of
    the scan); `fused=False` runs the generic `reverse` with `eps`, the reference it is tested
    against. `unroll` is the scan's unroll factor (`steps` unrolls fully, which also lets XLA's
    cost analysis count every step: it counts a loop body once).
    """
    act_dim: int
    steps: int = 20
    schedule: str = "linear"
    step: str = "posterior"
    hidden: int = 256
    layers: int = 3
    activation: str = "mish"
    time_features: int = 16
    clip_x0: float | None = 1.0
    fused: bool = True
    unroll: int = 1

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"DiffusionActor(schedule={self.schedule!r}): expected one of "
                             f"{SCHEDULES}.")
        if self.step not in STEPS:
            raise ValueError(f"DiffusionActor(step={self.step!r}): expected one of {STEPS}.")
        if self.unroll < 1:
            raise ValueError(f"DiffusionActor(unroll={self.unroll}): the scan unroll factor "
                             "must be >= 1 (1 = a rolled loop, steps = fully unrolled).")
        if self.act_dim < 1 or self.steps < 1:
            raise ValueError(f"DiffusionActor needs act_dim >= 1 and steps >= 1, got "
                             f"act_dim={self.act_dim}, steps={self.steps}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"DiffusionActor(activation={self.activation!r}): expected one of "
                             f"{sorted(ACTIVATIONS)}.")
        if self.step == "paper":
            worst = _max_paper_variance(self.schedule, self.steps)
            if not worst <= _MAX_PAPER_VARIANCE:
                raise ValueError(
                    f"DiffusionActor(step='paper', schedule={self.schedule!r}, "
                    f"steps={self.steps}): the paper's reverse variance sigma^2 = beta/alpha "
                    f"reaches {worst:.3g} (> {_MAX_PAPER_VARIANCE}), so sampling diverges. Use a "
                    "mild schedule with step='paper' (schedule='vp', steps >= 14), or "
                    "step='posterior' (the default) or 'ho'.")

    def net(self) -> EpsNet:
        return EpsNet(self.act_dim, self.hidden, self.layers, self.activation,
                      self.time_features)

    def diffusion_schedule(self) -> Schedule:
        """The H-step schedule as arrays (built on demand; constant-folded under jit)."""
        return _actor_schedule(self.schedule, self.steps)

    def init(self, key, n_agents: int, cond_dim: int):
        """n_agents independent eps-network parameter sets, leaves [n_agents, ...]. Compiled as
        one program (an eager flax init dispatches hundreds of small ops)."""
        return jax.jit(lambda k: init_stacked(self.net(), k, n_agents, cond_dim))(key)

    def eps(self, params, a_t, t, cond):
        """Agent i's noise prediction on agent i's inputs: a_t [..., n, A], cond [..., n, C], t an
        integer step index (0-based schedule index) broadcastable to a_t.shape[:-1]."""
        return apply_stacked(self.net(), params, a_t, t, cond)

    def reverse(self, eps_fn, key, shape, *, return_trajectory: bool = False):
        """The actor's reverse process for any eps_fn(a_t [*shape], t int32 [shape[0]]) -> eps:
        one `lax.scan` over the H steps, then the projection onto [-1, 1]. `sample` uses it with
        the stacked network; tests use it with an analytic score."""
        out = ddpm_sample(key, eps_fn, self.diffusion_schedule(), tuple(shape),
                          clip_x0=self.clip_x0, variance=_VARIANCE[self.step],
                          return_trajectory=return_trajectory)
        if return_trajectory:
            a0, traj = out
            return jnp.clip(a0, -1.0, 1.0), traj
        return jnp.clip(out, -1.0, 1.0)

    def sample(self, params, cond, key):
        """a_0 ~ pi(. | cond) for every agent and every leading index: cond [..., n, C] ->
        [..., n, A] in [-1, 1]. Leading dims are flattened into one batch, so the H steps are one
        scan whose body applies all agents' networks to the whole batch at once. Jittable,
        vmappable, differentiable w.r.t. params (and cond) through the whole chain."""
        cond = jnp.asarray(cond)
        if cond.ndim < 2:
            raise ValueError(f"DiffusionActor.sample: cond must be [..., n_agents, cond_dim], "
                             f"got shape {cond.shape}; add the agent axis (n_agents=1 is fine).")
        lead, (n, c) = cond.shape[:-2], cond.shape[-2:]
        flat = cond.reshape((math.prod(lead), n, c))

        if self.fused:
            return _fused_sample(self, params, flat, key).reshape(lead + (n, self.act_dim))

        def eps_fn(a_t, t):                     # a_t [M, n, A], t [M] -> one t per sample
            return self.eps(params, a_t, t[:, None], flat)

        a0 = self.reverse(eps_fn, key, (flat.shape[0], n, self.act_dim))
        return a0.reshape(lead + (n, self.act_dim))

    # -----------------------------------------------------------------------------------------
    # Reverse chains as data: HAQO's trust region (chain KL, spec-haqo §3.7.3) and its optional
    # chain-ratio PPO clip (§3.7.5). The diffusion policy has no tractable log-density of its
    # action, but each reverse transition is Gaussian (the x0 clip only enters the mean), so
    # divergences between two actors' whole chains are exact and cheap.

    def _flat_cond(self, cond, who: str):
        cond = jnp.asarray(cond)
        if cond.ndim < 2:
            raise ValueError(f"DiffusionActor.{who}: cond must be [..., n_agents, cond_dim], got "
                             f"shape {cond.shape}; add the agent axis (n_agents=1 is fine).")
        lead, (n, c) = cond.shape[:-2], cond.shape[-2:]
        return cond.reshape((math.prod(lead), n, c)), lead

    def _flat_mask(self, mask, lead, n, who: str):
        """mask broadcastable to [..., n, A] -> [M, n, A] (or None)."""
        if mask is None:
            return None
        full = lead + (n, self.act_dim)
        mask = jnp.asarray(mask, jnp.float32)
        try:
            mask = jnp.broadcast_to(mask, full)
        except ValueError:
            raise ValueError(f"DiffusionActor.{who}: mask {mask.shape} must broadcast against "
                             f"the actions {full} (e.g. [A] or [n, A]; 1 = real dim, 0 = "
                             "padded).") from None
        return mask.reshape((math.prod(lead), n, self.act_dim))

    def chain_variances(self):
        """sigma~_t^2 of the chain KL and ratio, [H] in the order the sampler visits t = H..1:
        the actor's own step variance (`step`), with the noiseless last step (t = 1) floored at
        the next one's (beta-tilde_2 for the posterior step, spec §3.7.3; beta_1 when H = 1,
        where there is no next step)."""
        s = self.diffusion_schedule()
        var = {"posterior": s.posterior_variance, "ho": s.betas,
               "paper": s.betas / s.alphas}[self.step]
        floor = var[1] if self.steps >= 2 else s.betas[0]
        return var.at[0].set(floor)[::-1]

    def _reverse_mean(self, params, x, c, cond):
        """mu(x_t, t) of the reverse step `sample` takes: x [M, n, A], c one step's entry of
        `_reverse_coefficients` (t, rx, re, c0, ct), cond [M, n, C]."""
        x0 = c["rx"] * x - c["re"] * self.eps(params, x, c["t"], cond)
        if self.clip_x0 is not None:
            x0 = jnp.clip(x0, -self.clip_x0, self.clip_x0)
        return c["c0"] * x0 + c["ct"] * x

    def _chain_draws(self, key, shape, last_step_noise: bool):
        """x_H, the per-step noise [H, *shape] (split as `sample` splits its key, so the same
        key gives the same chain) and the per-step std [H] (last step: 0, or the floor)."""
        keys = jax.random.split(key, self.steps + 1)
        x_init = jax.random.normal(keys[0], shape)
        noise = jax.vmap(lambda k: jax.random.normal(k, shape))(keys[1:])
        coef = _reverse_coefficients(self)
        std = coef["std"]
        if last_step_noise:
            std = std.at[-1].set(jnp.sqrt(self.chain_variances()[-1]))
        return x_init, noise, std, coef

    def sample_chain(self, params, cond, key, *, last_step_noise: bool = False):
        """a_0 ~ pi(. | cond) as `sample` draws it (same key, same chain up to float rounding),
        plus the chain: cond [..., n, C] -> (a0 [..., n, A], chain) with chain
          "x_t"     [H, ..., n, A]  the state entering each reverse step (x_H first),
          "x_prev"  [H, ..., n, A]  the state it produced (the last one is x_0 before the box
                                    projection),
          "noise"   [H, ..., n, A]  the N(0, I) draws, "std" [H] their scales, "t" [H] the steps.
        last_step_noise adds N(0, sigma~_1^2) noise at the last step (sigma~_1 from
        `chain_variances`), which `chain_log_ratio` needs (a noiseless step has no density); it
        changes the policy slightly, so use it for the behaviour chains of the ppo_clip mode
        only."""
        flat, lead = self._flat_cond(cond, "sample_chain")
        M, n, _ = flat.shape
        x_init, noise, std, coef = self._chain_draws(key, (M, n, self.act_dim), last_step_noise)
        steps = {k: coef[k] for k in ("t", "rx", "re", "c0", "ct")}

        def step(x, xs):
            c, z, sd = xs
            x_prev = self._reverse_mean(params, x, c, flat) + sd * z
            return x_prev, (x, x_prev)

        x0, (x_t, x_prev) = jax.lax.scan(step, x_init, (steps, noise, std), unroll=self.unroll)
        out = lambda v: v.reshape((self.steps,) + lead + (n, self.act_dim))   # noqa: E731
        chain = {"x_t": out(x_t), "x_prev": out(x_prev), "noise": out(noise), "std": std,
                 "t": coef["t"]}
        return jnp.clip(x0, -1.0, 1.0).reshape(lead + (n, self.act_dim)), chain

    def chain_kl(self, params_old, params_new, cond, key, *, mask=None):
        """KL between the reverse chains of two parameter sets, per agent (spec §3.7.3):

            KL_chain(old || new; o) = E_{x_H..x_1 ~ p_old} sum_t ||mu_old(x_t) - mu_new(x_t)||^2 / (2 sigma~_t^2)

        one chain per leading index of cond [..., n, C] -> [..., n], drawn from params_old with
        `key` exactly as `sample_chain(params_old, cond, key)` draws it, so one key gives the
        same chains for every params_new (common random numbers for a line search over step
        scales). sigma~_t^2 from `chain_variances`. It is the exact KL between the two Gaussian
        chains: 0 at params_new = params_old, >= 0, and (with the last step noised) an upper
        bound on the KL of the action marginals. The chain states are data (stop_gradient), so
        its gradient w.r.t. params_new is that of a penalty on fixed states. mask
        (broadcastable to [..., n, A]) drops padded action dims."""
        flat, lead = self._flat_cond(cond, "chain_kl")
        M, n, _ = flat.shape
        mask = self._flat_mask(mask, lead, n, "chain_kl")
        x_init, noise, std, coef = self._chain_draws(key, (M, n, self.act_dim), False)
        steps = {k: coef[k] for k in ("t", "rx", "re", "c0", "ct")}

        def step(x, xs):
            c, z, sd, var = xs
            x = jax.lax.stop_gradient(x)
            mu_old = self._reverse_mean(params_old, x, c, flat)
            diff = (mu_old - self._reverse_mean(params_new, x, c, flat)) ** 2
            if mask is not None:
                diff = diff * mask
            return mu_old + sd * z, jnp.sum(diff, -1) / (2.0 * var)

        _, kl = jax.lax.scan(step, x_init, (steps, noise, std, self.chain_variances()),
                             unroll=self.unroll)
        return jnp.sum(kl, axis=0).reshape(lead + (n,))

    def chain_log_ratio(self, params_new, params_old, chain, cond, *, mask=None):
        """log p_new(chain) - log p_old(chain) of a stored reverse chain (spec §3.7.5):
        sum_t log N(x_{t-1}; mu_new(x_t), sigma~_t^2 I) - log N(x_{t-1}; mu_old(x_t), sigma~_t^2 I),
        -> [..., n] for cond [..., n, C] and a chain from `sample_chain(params_old, cond, key,
        last_step_noise=True)` (without last-step noise its last transition has no density and
        the ratio is not the sampler's). 0 at params_new = params_old; exp of it is the
        PPO ratio for `losses.ppo_clip_loss`. Differentiable w.r.t. params_new; the chain is
        data. mask (broadcastable to [..., n, A]) drops padded action dims."""
        flat, lead = self._flat_cond(cond, "chain_log_ratio")
        M, n, _ = flat.shape
        expected = (self.steps,) + lead + (n, self.act_dim)
        if chain["x_t"].shape != expected or chain["x_prev"].shape != expected:
            raise ValueError(
                f"DiffusionActor.chain_log_ratio: chain x_t {chain['x_t'].shape} and x_prev "
                f"{chain['x_prev'].shape} must be [H, ..., n, A] = {expected} for cond "
                f"{lead + (n, flat.shape[-1])}; pass the chain sample_chain returned for it.")
        mask = self._flat_mask(mask, lead, n, "chain_log_ratio")
        coef = _reverse_coefficients(self)
        steps = {k: coef[k] for k in ("t", "rx", "re", "c0", "ct")}
        x_t, x_prev = (jax.lax.stop_gradient(chain[k]).reshape((self.steps, M, n, self.act_dim))
                       for k in ("x_t", "x_prev"))

        def sq(v):
            v = v**2 if mask is None else v**2 * mask
            return jnp.sum(v, -1)

        def step(carry, xs):
            c, x, xp, var = xs
            mu_new = self._reverse_mean(params_new, x, c, flat)
            mu_old = self._reverse_mean(params_old, x, c, flat)
            return carry + (sq(xp - mu_old) - sq(xp - mu_new)) / (2.0 * var), None

        total, _ = jax.lax.scan(step, jnp.zeros((M, n)),
                                (steps, x_t, x_prev, self.chain_variances()), unroll=self.unroll)
        return total.reshape(lead + (n,))

    @staticmethod
    def log_prob_free_stats(actions) -> dict:
        """Spread of sampled actions, the diffusion policy's stand-in for an entropy (it has no
        tractable log-prob). actions [..., n, A] with at least one leading sample axis ->
        {"action_spread": [n] std over samples averaged over action dims,
         "action_spread_mean": scalar, "action_saturation": [n] fraction at the box edge}."""
        actions = jnp.asarray(actions)
        if actions.ndim < 3:
            raise ValueError(f"log_prob_free_stats needs actions [samples..., n_agents, act_dim] "
                             f"with a sample axis, got shape {actions.shape}.")
        flat = actions.reshape((-1,) + actions.shape[-2:])
        spread = jnp.mean(jnp.std(flat, axis=0), axis=-1)
        saturated = jnp.mean(jnp.abs(flat) >= 1.0 - 1e-6, axis=(0, 2))
        return {"action_spread": spread, "action_spread_mean": jnp.mean(spread),
                "action_saturation": saturated}


# ---------------------------------------------------------------------------------------------
# The fused reverse process: `ddpm_sample` with the stacked EpsNet, everything that does not
# depend on a_t hoisted out of the scan.


def _reverse_coefficients(actor: DiffusionActor):
    """The per-step scalars `ddpm_sample` gathers inside its loop, read once in the order the
    scan visits t = H-1 .. 0: x0 = rx a_t - re eps, mean = c0 clip(x0) + ct a_t, then + std z
    (std = 0 at the last step). -> dict of [H] arrays."""
    s = actor.diffusion_schedule()
    var = {"posterior": s.posterior_variance, "ho": s.betas, "paper": s.betas / s.alphas}
    ts = jnp.arange(actor.steps - 1, -1, -1, dtype=jnp.int32)
    return dict(t=ts, rx=s.sqrt_recip_alphas_cumprod[ts], re=s.sqrt_recipm1_alphas_cumprod[ts],
                c0=s.posterior_mean_coef1[ts], ct=s.posterior_mean_coef2[ts],
                std=jnp.sqrt(jnp.where(ts > 0, var[actor.step][ts], 0.0)))


def _dense_layers(params) -> list:
    """The stacked EpsNet's Dense_0 .. Dense_L parameter dicts in order (leaves [n, ...])."""
    p = params["params"]
    names = sorted((k for k in p if k.startswith("Dense_")), key=lambda k: int(k.split("_")[1]))
    return [p[k] for k in names]


def _fused_sample(actor: DiffusionActor, params, cond, key):
    """a_0 for cond [M, n, C] -> [M, n, A]; the chain of `reverse` with `eps`, same keys.

    EpsNet's first layer acts on [a_t, emb(t), cond], so it splits into a_t W_a + emb(t) W_e +
    (cond W_c + b): the cond term is computed once per sample instead of H times, and the time
    embedding (an MLP of its own) once per (agent, step) instead of per (sample, agent, step).
    The per-step coefficients and the noise are drawn up front, and the carry is agent-major
    [n, M, A], so every layer in the loop body is one batched matmul over the agent axis (no
    transposes, no gathers inside the scan). Only the summation order of the first layer
    differs from `reverse`, i.e. float rounding."""
    M, n, _ = cond.shape
    A, F = actor.act_dim, actor.time_features
    coef = _reverse_coefficients(actor)
    keys = jax.random.split(key, actor.steps + 1)            # as ddpm_sample splits them
    shape = (M, n, A)
    a_init = jnp.swapaxes(jax.random.normal(keys[0], shape), 0, 1)                 # [n, M, A]
    noise = jnp.swapaxes(jax.vmap(lambda k: jax.random.normal(k, shape))(keys[1:]), 1, 2)
    act = ACTIVATIONS[actor.activation]
    first, *hidden, out = _dense_layers(params)
    w_a, w_e, w_c = jnp.split(first["kernel"], [A, A + F], axis=1)                  # [n, ., h]
    emb = jax.vmap(lambda p: TimeEmbedding(F, actor.activation).apply({"params": p}, coef["t"]))(
        params["params"]["TimeEmbedding_0"])                                          # [n, H, F]
    h_time = jnp.swapaxes(jnp.einsum("nsf,nfh->nsh", emb, w_e), 0, 1)               # [H, n, h]
    h_cond = jnp.einsum("mnc,nch->nmh", cond, w_c) + first["bias"][:, None]          # [n, M, h]

    def eps(a, h_t):                                      # a [n, M, A], h_t [n, h]
        x = act(jnp.einsum("nma,nah->nmh", a, w_a) + h_cond + h_t[:, None])
        for layer in hidden:
            x = act(jnp.einsum("nmh,nhk->nmk", x, layer["kernel"]) + layer["bias"][:, None])
        return jnp.einsum("nmh,nha->nma", x, out["kernel"]) + out["bias"][:, None]

    def step(a, xs):
        h_t, z, c = xs
        x0 = c["rx"] * a - c["re"] * eps(a, h_t)
        if actor.clip_x0 is not None:
            x0 = jnp.clip(x0, -actor.clip_x0, actor.clip_x0)
        return c["c0"] * x0 + c["ct"] * a + c["std"] * z, None

    scalars = {k: v for k, v in coef.items() if k != "t"}
    a0, _ = jax.lax.scan(step, a_init, (h_time, noise, scalars), unroll=actor.unroll)
    return jnp.swapaxes(jnp.clip(a0, -1.0, 1.0), 0, 1)


# ---------------------------------------------------------------------------------------------
# The actor's [-1, 1] actions <-> an environment's action box.


def _check_box(low, high):
    try:
        lo, hi = np.asarray(low), np.asarray(high)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return                                   # traced bounds: checked where they were built
    if np.any(~(hi > lo)):
        raise ValueError(f"action box needs high > low everywhere, got low={lo}, high={hi}; an "
                         "unbounded or degenerate dimension cannot be mapped to [-1, 1].")


def to_box(a, low, high):
    """[-1, 1] -> [low, high] affinely (a clipped first, so the result is always in the box)."""
    _check_box(low, high)
    a = jnp.clip(a, -1.0, 1.0)
    return low + 0.5 * (a + 1.0) * (high - low)


def from_box(x, low, high):
    """[low, high] -> [-1, 1], the inverse of `to_box` (x clipped to the box first)."""
    _check_box(low, high)
    x = jnp.clip(x, low, high)
    return 2.0 * (x - low) / (high - low) - 1.0
