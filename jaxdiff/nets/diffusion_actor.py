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
