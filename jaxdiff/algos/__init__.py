"""Algorithms: each module registers itself; `get(name)` loads the built-in ones.

Algorithm modules are peers and never import each other; what several need lives in the shared
modules `base` (the contract), `onpolicy`, `offpolicy`, `sequential` and `returns`."""
from jaxdiff.algos.base import (Algorithm, ConfigError, EpisodeSums, UnknownAlgorithmError, get,
                                make_config, names, register)

__all__ = ["Algorithm", "ConfigError", "EpisodeSums", "UnknownAlgorithmError", "get",
           "make_config", "names", "register"]
