"""Off-policy pieces shared by HASAC and QMIX (and the diffusion families after them): flashbax
replay held in the algorithm's state (so checkpoints hold the replay memory and a resumed run is
bit-identical), n-step windows sampled from a trajectory buffer, warm-up with uniform random
actions, learning only once the buffer is ready. Polyak targets are `jaxdiff.optim.polyak`.

Layouts: trajectory-buffer experience [E, L, ...] (env, time); sampled batches [B, ...].
"""
from __future__ import annotations

from typing import Callable

import flashbax as fbx
import jax
import jax.numpy as jnp

from jaxdiff.nets import distributions as D


def _strong_types(tree):
    """Leaves with a concrete dtype instead of JAX's weak type. flashbax starts its write index
    as a weakly typed int; a checkpoint restores it strongly typed, and the compiled step would
    then be compiled a second time for the restored state (same values, other type)."""
    return jax.tree.map(lambda x: x.astype(x.dtype) if getattr(x, "weak_type", False) else x,
                        tree)


def _strong_init(buffer):
    return buffer.replace(init=lambda example: _strong_types(buffer.init(example)))


def trajectory_buffer(*, num_envs: int, batch_size: int, n_step: int, buffer_size: int):
    """A flashbax trajectory buffer of `buffer_size` transitions (buffer_size // num_envs per
    env) from which `nstep_sample` draws windows of n_step + 1 steps."""
    return _strong_init(fbx.make_trajectory_buffer(
        add_batch_size=num_envs, sample_batch_size=batch_size,
        sample_sequence_length=n_step + 1, period=1, min_length_time_axis=n_step + 1,
        max_length_time_axis=buffer_size // num_envs))


def item_buffer(*, buffer_size: int, batch_size: int):
    """A flashbax item buffer (one replay item per added row, e.g. an env's whole sequence);
    it can sample once it holds `batch_size` items."""
    return _strong_init(fbx.make_item_buffer(max_length=buffer_size, min_length=batch_size,
                                             sample_batch_size=batch_size, add_batches=True))


def stored_steps(buffer_state):
    """Time steps per env a trajectory buffer holds."""
    return jnp.where(buffer_state.is_full, buffer_state.experience["reward"].shape[1],
                     buffer_state.current_index)


def nstep_sample(buffer_state, key, batch_size: int, n: int, gamma,
                 fields=("obs", "gstate", "action", "mask"), boot_fields=("obs", "gstate", "mask")):
    """Uniform n-step windows from the trajectory buffer, gathering only what the loss needs.

    The experience needs `reward` [E, L], `done` [E, L] (episode ended with this transition) and
    `term` [E, L] (it ended by termination, not by a time limit). Returns a dict with the first
    step's `fields`, ret [B] (discounted rewards inside the episode), boot_disc [B] (gamma^m
    where a bootstrap is due, else 0), boot_* (`boot_fields` at s_{t+m}) and valid [B] (0 for a
    transition whose own step is a time-limit end: no successor to bootstrap from).

    Truncated episodes: adapters auto-reset and expose no terminal observation, so a window that
    reaches a time-limit end at offset j bootstraps from s_{t+j}, the last state whose successor
    is known (rewards up to j-1); terminations cut the bootstrap."""
    exp = buffer_state.experience
    E, L = exp["reward"].shape
    size = jnp.where(buffer_state.is_full, L, buffer_state.current_index)
    head = jnp.where(buffer_state.is_full, buffer_state.current_index, 0)
    k_env, k_time = jax.random.split(key)
    env = jax.random.randint(k_env, (batch_size,), 0, E)
    # windows t..t+n must be stored: logical starts 0..size-n-1 (as flashbax's `sample`)
    start = (head + jax.random.randint(k_time, (batch_size,), 0, jnp.maximum(size - n, 1))) % L
    win = (start[:, None] + jnp.arange(n)) % L
    r, d, term = (exp[k][env[:, None], win] for k in ("reward", "done", "term"))
    alive = jnp.cumsum(d, -1) - d == 0                     # no episode end before offset k
    truncated_k = d & ~term
    ret = jnp.sum(jnp.where(alive & ~truncated_k, gamma ** jnp.arange(n) * r, 0.0), -1)
    any_done, j = d.any(-1), jnp.argmax(d, -1)
    truncated = any_done & ~term[jnp.arange(batch_size), j]
    m = jnp.where(any_done, j, n)
    boot = ~any_done | truncated
    out = {k: v[env, start] for k, v in exp.items() if k in fields}
    b_idx = (start + m) % L
    out.update({"boot_" + k: v[env, b_idx] for k, v in exp.items() if k in boot_fields})
    out.update(ret=ret, boot_disc=jnp.where(boot, gamma ** m, 0.0),
               valid=(~(truncated & (j == 0))).astype(jnp.float32))
    return out


def random_actions(key, mask, *, discrete: bool, low=None, high=None, dim_mask=None):
    """Uniform warm-up actions: over the available actions (discrete; mask bool [..., A]) or over
    the box [low, high] (continuous; the shape of `mask`, padded dims zeroed by dim_mask)."""
    if discrete:
        return D.categorical_sample(key, D.mask_logits(jnp.zeros(mask.shape), mask))
    u = jax.random.uniform(key, mask.shape, minval=low, maxval=high)
    return u * dim_mask


def learn_when_ready(ready, learn: Callable, state):
    """`learn(state) -> (state, metrics)` when `ready` (a traced bool), else the state unchanged
    and zeros of the same metric structure: one `lax.cond`, so warm-up costs no update."""
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(learn, state)[1])
    return jax.lax.cond(ready, learn, lambda s: (s, zeros), state)
