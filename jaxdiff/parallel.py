"""Splitting one ensemble member's environments over devices (data parallelism inside a member).

The runner shards the ensemble (grid x seed) axis over a mesh axis "ensemble". When the
ensemble is smaller than the device count (one seed on a two-core machine), the devices left over
form a second mesh axis, "data", and an algorithm that declares an env axis it can split
(`Algorithm.env_split`) has its env-batched arrays (env states, observations, rollout buffers,
minibatches) constrained to that axis: every device steps its share of the envs and computes its
share of each minibatch's loss, and XLA's SPMD partitioner adds the gradient all-reduce. The
parameters stay replicated. The math is the same program's; only where it runs changes.

Algorithms call `shard_envs(tree, axis)` where an array with an env (or minibatch-row) axis is
made; it is a no-op unless the runner traces the step inside `env_parallel(mesh)` with a "data"
axis of size > 1, so the same algorithm code runs unchanged on one device.
"""
from __future__ import annotations

import contextlib

import jax

_MESH = None   # the mesh of the step being traced, when it has a "data" axis of size > 1


@contextlib.contextmanager
def env_parallel(mesh):
    """Trace steps inside this context to split their env axes over `mesh`'s "data" axis."""
    global _MESH
    old = _MESH
    _MESH = mesh if mesh is not None and dict(mesh.shape).get("data", 1) > 1 else None
    try:
        yield
    finally:
        _MESH = old


def data_shards() -> int:
    """Number of devices the env axis is split over in the step being traced (1 = none)."""
    return 1 if _MESH is None else dict(_MESH.shape)["data"]


def shard_envs(tree, axis: int = 0):
    """Constrain every leaf's `axis` (an env or minibatch-row axis) to the "data" mesh axis.
    Leaves whose axis does not divide evenly are left to the partitioner."""
    if _MESH is None:
        return tree
    from jax.sharding import NamedSharding, PartitionSpec
    d = data_shards()

    def constrain(x):
        if not hasattr(x, "ndim") or x.ndim <= axis or x.shape[axis] % d:
            return x
        spec = [None] * x.ndim
        spec[axis] = "data"
        return jax.lax.with_sharding_constraint(x, NamedSharding(_MESH, PartitionSpec(*spec)))

    return jax.tree.map(constrain, tree)


_LOCAL = False   # True while tracing the per-device body of `local_mean`


def local_mean(fn, data_axes):
    """fn(replicated, data) -> a pytree of means over data rows (a loss's gradients and
    statistics). Under a "data" split, evaluate fn on each device's rows and average the results
    over devices with one all-reduce (equal shares, so the mean of the means is the mean), instead
    of leaving the backward pass to the partitioner, which all-reduces gradient accumulators at
    every time step of a recurrent backward loop. `data_axes` is a pytree like `data` holding each
    leaf's row axis. Inside fn, `mean(x)` gives means over all devices' rows (for statistics such
    as advantage normalisation that must not depend on the split). Otherwise fn itself."""
    if _MESH is None:
        return fn
    from jax.sharding import PartitionSpec as P

    def body(rep, data):
        global _LOCAL
        old, _LOCAL = _LOCAL, True
        try:
            return jax.lax.pmean(fn(rep, data), "data")
        finally:
            _LOCAL = old

    specs = jax.tree.map(lambda ax: P(*([None] * ax + ["data"])), data_axes)
    return jax.shard_map(body, mesh=_MESH, in_specs=(P(), specs), out_specs=P(),
                         axis_names=frozenset({"data"}), check_vma=False)


def mean(x):
    """Mean of x over its rows on every device (inside `local_mean`), else x.mean()."""
    return jax.lax.pmean(x.mean(), "data") if _LOCAL else x.mean()


def std(x):
    """Population std over every device's rows (inside `local_mean`), else x.std()."""
    if not _LOCAL:
        return x.std()
    m = mean(x)
    return jax.numpy.sqrt(jax.numpy.maximum(mean(jax.numpy.square(x - m)), 0.0))
