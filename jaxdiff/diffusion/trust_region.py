"""A hard trust region by backtracking line search, for policies whose divergence is only
available as a function of the parameters (HAQO's chain KL between two diffusion actors, paper
003 A.12.4 and spec-haqo §3.7.2):

    c* = the largest c in {1, shrink, shrink^2, .., shrink^(max_steps-1)} with
         kl_fn(old + c (new - old)) <= delta, or 0 (keep the old parameters) when none is.

All candidate scales are evaluated at once (one `vmap`), so the search is one compiled program
with no Python branching on values: it runs inside a jitted, scanned per-agent update. Give
kl_fn fixed random numbers (e.g. `DiffusionActor.chain_kl` with one key) so every scale is
judged on the same chains.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def _scaled(params_old, delta, c):
    """old + c * delta leaf by leaf; c scalar, or [n] scaling each leaf's leading agent axis."""
    def leaf(p, d):
        cc = jnp.reshape(c, jnp.shape(c) + (1,) * (p.ndim - jnp.ndim(c))).astype(p.dtype)
        return p + cc * d
    return jax.tree.map(leaf, params_old, delta)


def line_search(
    kl_fn: Callable,
    params_old,
    params_new,
    *,
    delta,
    shrink: float = 0.8,
    max_steps: int = 10,
):
    """Backtracking line search on the step params_new - params_old (spec-haqo §3.7.2).

    kl_fn(params) -> the divergence of `params` from params_old: a scalar, or one value per
    agent [n] when the leaves carry a leading agent axis [n, ...] (then each agent gets its
    own c*, as in a simultaneous update). delta: the bound (scalar or [n]). A NaN or inf
    divergence counts as infeasible.

    Returns (params, c_star, kl_raw, kl_real): the accepted parameters old + c* (new - old),
    the scale c* (0 when no scale is feasible, and then params are params_old exactly), the
    divergence of the full proposal (c = 1) and of the accepted one (kl_fn(params_old) is taken
    as 0 when c* = 0, which holds for any divergence). kl_real <= delta always.
    """
    if not 0.0 < shrink < 1.0:
        raise ValueError(f"line_search(shrink={shrink}): the backtracking factor must be in "
                         "(0, 1) (0.8 in the paper's A.12.4).")
    if max_steps < 1:
        raise ValueError(f"line_search(max_steps={max_steps}): need at least one scale (the "
                         "full step c = 1).")
    step = jax.tree.map(lambda n, o: n - o, params_new, params_old)
    scales = shrink ** jnp.arange(max_steps, dtype=jnp.float32)            # 1, .8, .., .8^9
    kls = jax.vmap(lambda c: kl_fn(_scaled(params_old, step, c)))(scales)   # [L, ...]
    kls = jnp.asarray(kls, jnp.float32)
    ok = kls <= jnp.asarray(delta, jnp.float32)                           # NaN -> False
    c_grid = jnp.reshape(scales, (max_steps,) + (1,) * (kls.ndim - 1))
    c_star = jnp.max(jnp.where(ok, c_grid, 0.0), axis=0)
    first = jnp.argmax(ok, axis=0)                                  # largest feasible scale
    kl_at = jnp.take_along_axis(kls, first[None], axis=0)[0]
    kl_real = jnp.where(jnp.any(ok, axis=0), kl_at, 0.0)
    params = _scaled(params_old, step, c_star)
    # c* = 0 must give params_old bit for bit (old + 0 * step can differ when step is inf).
    params = jax.tree.map(
        lambda p, o: jnp.where(jnp.reshape(c_star > 0, jnp.shape(c_star) + (1,) * (
            p.ndim - jnp.ndim(c_star))), p, o), params, params_old)
    return params, c_star, kls[0], kl_real
