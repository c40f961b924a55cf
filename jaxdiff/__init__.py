"""jaxdiff: JAX-native, end-to-end accelerated diffusion-model multi-agent RL.

Submodules load on first use, so `from jaxdiff import losses` stays light.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"
_SUBMODULES = ("algos", "data", "diffusion", "envs", "losses", "nets", "run", "cli")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxdiff.{name}")
    raise AttributeError(f"module 'jaxdiff' has no attribute {name!r}")
