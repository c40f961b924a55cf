"""Algorithms: each module registers itself; `get(name)` loads the built-in ones."""
from jaxdiff.algos.base import (Algorithm, ConfigError, UnknownAlgorithmError, get, make_config,
                                names, register)

__all__ = ["Algorithm", "ConfigError", "UnknownAlgorithmError", "get", "make_config", "names",
           "register"]
