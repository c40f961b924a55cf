"""jaxdiff: JAX-native, end-to-end accelerated diffusion-model multi-agent RL.

Import what you use (`from jaxdiff import losses, diffusion`); nothing else is loaded.
"""
from __future__ import annotations

import os


def _host_devices() -> None:
    """One XLA host (CPU) device per available core, so that the runner can spread a run's
    ensemble members (seeds x grid points) over the cores of a CPU-only machine; on a GPU machine
    this only affects the CPU backend, which jaxdiff does not compute on. Must happen before JAX
    starts its backends; an explicit `--xla_force_host_platform_device_count` in XLA_FLAGS wins,
    and JAXDIFF_HOST_DEVICES=<n> sets the count (1 = off)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    n = int(os.environ.get("JAXDIFF_HOST_DEVICES", cores))
    if n > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


_host_devices()

__version__ = "0.1.0"
