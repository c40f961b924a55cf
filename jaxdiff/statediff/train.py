"""Eq. 1 training of the shared denoiser: MSE(f, sigma) = E ||s - f(tau_i, s + sigma z)||^2.

`train_step` is the unit a runner-driven algorithm wrapper scans; `train` is the standalone
loop (one jitted `lax.scan` of Adam steps) used by the experiments and tests. Batches are
independent (tau_i, s) rows with the agents mixed together (spec §2.5); `row_sampler` draws
them uniformly with replacement from an on-device table, or the caller supplies any
`batch_fn(key) -> {"tau", "s"[, "weight"]}`.

Noise [CHOICE, spec §2.1]: sigma = A e^t with t ~ U[0, ln(sigma_max / A)], A = sigma_min, i.e.
log-uniform sigma in [0.01, 2.0] — the paper's VE schedule with t uniform. The target is the
clean state (x0 prediction) and the loss sums squared errors over state dims, averaged over the
batch.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxdiff.diffusion import denoising_errors_x0, ve_schedule, weighted_mean
from jaxdiff.statediff.denoiser import Denoiser, init_params


@struct.dataclass
class TrainHParams:
    """Everything a training step needs. model/optimizer are static (they fix shapes and the
    update rule); the noise range is dynamic, so it can be vmapped in a sweep."""

    model: Denoiser = struct.field(pytree_node=False)
    optimizer: optax.GradientTransformation = struct.field(pytree_node=False)
    sigma_min: float | jax.Array = 0.01
    sigma_max: float | jax.Array = 2.0


def make_optimizer(
    lr: float = 1e-3,
    *,
    clip_norm: float | None = None,
    cosine_steps: int | None = None,
) -> optax.GradientTransformation:
    """Adam, optionally with global-norm clipping and a cosine decay to 0 over cosine_steps.

    Toys: Adam 1e-3, no clipping, constant lr; SMAX: 3e-4, cosine over the run, clip 1.0
    (spec §2.5 [CHOICE]). No EMA, no weight decay.
    """
    schedule = optax.cosine_decay_schedule(lr, cosine_steps) if cosine_steps else lr
    adam = optax.adam(schedule)
    return optax.chain(optax.clip_by_global_norm(clip_norm), adam) if clip_norm else adam


def make_hparams(
    state_dim: int,
    *,
    width: int = 256,
    depth: int = 3,
    activation: str = "silu",
    lr: float = 1e-3,
    clip_norm: float | None = None,
    cosine_steps: int | None = None,
    sigma_min: float = 0.01,
    sigma_max: float = 2.0,
) -> TrainHParams:
    """Toy defaults of spec §5.8: W 256, depth 3, SiLU, Adam 1e-3, sigma in [0.01, 2]."""
    return TrainHParams(
        model=Denoiser(state_dim=state_dim, width=width, depth=depth, activation=activation),
        optimizer=make_optimizer(lr, clip_norm=clip_norm, cosine_steps=cosine_steps),
        sigma_min=sigma_min,
        sigma_max=sigma_max,
    )


def init(key: jax.Array, hp: TrainHParams, tau_dim: int):
    """(params, opt_state) for conditioning vectors of size tau_dim."""
    params = init_params(key, hp.model, tau_dim)
    return params, hp.optimizer.init(params)


def per_sample_errors(params, batch: dict, key: jax.Array, hp: TrainHParams) -> jax.Array:
    """||s - f(tau, s + sigma z)||^2 per row, sigma log-uniform. batch["tau"]: [B, tau_dim],
    batch["s"]: [B, state_dim] -> [B]."""
    schedule = ve_schedule(2, A=hp.sigma_min, sigma_max=hp.sigma_max)
    x0_fn = lambda y, sigma: hp.model.apply(params, batch["tau"], y)  # blind: sigma unused
    return denoising_errors_x0(x0_fn, schedule, key, batch["s"])


def loss_fn(params, batch: dict, key: jax.Array, hp: TrainHParams) -> jax.Array:
    """Eq. 1, with optional per-row weights batch["weight"] ([B]; e.g. an alive mask)."""
    return weighted_mean(per_sample_errors(params, batch, key, hp), batch.get("weight"))


def train_step(params, opt_state, batch: dict, key: jax.Array, hp: TrainHParams):
    """One Adam step on Eq. 1. Pure: jit/scan/vmap it. Returns (params, opt_state, metrics)."""
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, key, hp)
    updates, opt_state = hp.optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}


def row_sampler(rows: dict, batch_size: int) -> Callable[[jax.Array], dict]:
    """batch_fn(key) drawing batch_size rows uniformly with replacement from rows
    ({"tau": [N, tau_dim], "s": [N, state_dim], ...}; every leaf shares the leading N)."""
    n = jax.tree.leaves(rows)[0].shape[0]

    def batch_fn(key):
        idx = jax.random.randint(key, (batch_size,), 0, n)
        return jax.tree.map(lambda leaf: leaf[idx], rows)

    return batch_fn


def train(
    key: jax.Array,
    params,
    opt_state,
    hp: TrainHParams,
    batch_fn: Callable[[jax.Array], dict],
    num_steps: int,
):
    """num_steps Adam steps as one lax.scan. Returns (params, opt_state, metrics), each metric
    a [num_steps] array. Wrap in jax.jit (hp, batch_fn and num_steps static) or call as is:
    the scan body is compiled once either way."""

    def body(carry, step_key):
        params, opt_state = carry
        key_batch, key_noise = jax.random.split(step_key)
        params, opt_state, metrics = train_step(params, opt_state, batch_fn(key_batch), key_noise, hp)
        return (params, opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(
        body, (params, opt_state), jax.random.split(key, num_steps)
    )
    return params, opt_state, metrics


def fit(
    key: jax.Array,
    hp: TrainHParams,
    rows: dict,
    *,
    num_steps: int,
    batch_size: int = 512,
    chunk: int | None = None,
):
    """Initialise and train on a table of rows; returns (params, metrics as numpy [num_steps]).

    chunk: run the scan in compiled chunks of this many steps (bounds the compiled loop, lets
    callers interleave progress output); default one chunk.
    """
    key_init, key_train = jax.random.split(key)
    params, opt_state = init(key_init, hp, rows["tau"].shape[-1])

    # rows travel as an argument: closing over them would bake the table into the program.
    @jax.jit(static_argnums=0)
    def run(length, k, params, opt_state, rows):
        return train(k, params, opt_state, hp, row_sampler(rows, batch_size), length)

    chunk = min(chunk or num_steps, num_steps)
    lengths = [chunk] * (num_steps // chunk) + ([num_steps % chunk] if num_steps % chunk else [])
    history = []
    for length, k in zip(lengths, jax.random.split(key_train, len(lengths))):
        params, opt_state, metrics = run(length, k, params, opt_state, rows)
        history.append(metrics)
    metrics = jax.tree.map(lambda *xs: jnp.concatenate(xs), *history)
    return params, jax.device_get(metrics)
