"""jaxdiff: JAX-native, end-to-end accelerated diffusion-model multi-agent RL.

Submodules load on first use, so `from jaxdiff import losses` stays light.
"""
from __future__ import annotations

import importlib
import os

# XLA:CPU's concurrency-optimised scheduler deadlocks (all threads idle, main thread waiting on
# buffers) on some vmapped programs of ours, e.g. a vmapped MAPPO `init`, under jaxlib 0.10.2.
# Turning it off costs nothing measurable here; it must be set before JAX starts its backend.
_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

__version__ = "0.1.0"
_SUBMODULES = ("algos", "data", "diffusion", "envs", "losses", "nets", "run", "cli")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxdiff.{name}")
    raise AttributeError(f"module 'jaxdiff' has no attribute {name!r}")
