"""jaxdiff: JAX-native, end-to-end accelerated diffusion-model multi-agent RL.

Import what you use (`from jaxdiff import losses, diffusion`); nothing else is loaded, and
importing changes no environment variable and no JAX setting of your program. Scripts that want
one XLA device per CPU core (as the `jaxdiff` command has) call `jaxdiff.use_host_devices()`
before importing jax.

Train, sweep and evaluate from Python, composed exactly as the `jaxdiff` command does
(loaded on first use):

    import jaxdiff
    res = jaxdiff.train(algo="mappo", env="mpe_simple_spread", seeds=2, total_steps=100_000,
                        lr=3e-4)                    # algo.lr=3e-4; env options: env_kwargs={}
    print(res.summary["final"], res.run_dir)        # summary.json, the run folder
    params = res.state                              # final training state, one row per seed
    jaxdiff.evaluate(res.run_dir, episodes=100)     # and jaxdiff.sweep("<name>")

`jaxdiff list` / `jaxdiff help algo=<name>` on the command line list every algorithm, env and
setting.
"""
from __future__ import annotations

import os


def use_host_devices(n: int | None = None) -> None:
    """Expose one XLA host (CPU) device per available core, so that the runner can spread a
    run's ensemble members (seeds x grid points) over the cores of a CPU-only machine; on a GPU
    machine this only affects the CPU backend, which jaxdiff does not compute on.

    A program opts in by calling this BEFORE anything imports jax (JAX reads XLA_FLAGS once,
    when its backends start); the `jaxdiff` command and the test suite do. Importing jaxdiff
    never does it, so a library user's JAX configuration is left alone. An explicit
    `--xla_force_host_platform_device_count` in XLA_FLAGS wins; `n`, else the environment
    variable JAXDIFF_HOST_DEVICES=<n>, else the core count sets the count (1 = off)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    if n is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        n = int(os.environ.get("JAXDIFF_HOST_DEVICES", cores))
    if n > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


__version__ = "0.1.0"

_API = ("train", "sweep", "evaluate", "Result", "SweepResult")


def __getattr__(name: str):
    """`jaxdiff.train` & co. import `jaxdiff.api` (and JAX) on first use only, so that
    `import jaxdiff` stays cheap and free of side effects."""
    if name in _API:
        # By name: the package root is no layer, so it must not appear to import the top one
        # (every `import jaxdiff` in a lower layer would then seem to reach jaxdiff.api).
        import importlib
        return getattr(importlib.import_module("jaxdiff.api"), name)
    raise AttributeError(f"module 'jaxdiff' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
