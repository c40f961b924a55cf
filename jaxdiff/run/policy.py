"""The policy of a finished (or interrupted) `jaxdiff train` run, as a data-collection policy."""
from __future__ import annotations

import os

import jax

from jaxdiff.data.collect import Policy
from jaxdiff.run.runner import restore_state


def run_policy(run_dir: str, *, member: int = 0, deterministic: bool = False):
    """The policy of a `jaxdiff train` run (last checkpoint) -> (Policy, env, run spec)."""
    spec, algorithm, env, config, state, members = restore_state(run_dir)
    if not (0 <= member < len(members)):
        raise ValueError(f"member={member} is out of range: run `{run_dir}` has {len(members)} "
                         f"member(s) (grid points x seeds), so 0 <= member < {len(members)}.")
    params = jax.tree.map(lambda x: x[member], state)
    grid, seed = members[member]

    def act(carry, obs, mask, key):
        return algorithm.act(config, env, params, obs, carry, mask, key,
                             deterministic=deterministic)

    info = dict(run_dir=os.path.abspath(run_dir), algo=spec.algo, member=member, grid=grid,
                seed_index=seed, deterministic=deterministic, total_steps=spec.total_steps)
    return Policy("run", lambda: algorithm.init_carry(config, env), act, info), env, spec
