"""Which exceptions are the user's to fix (one-paragraph message, no traceback)."""
from __future__ import annotations


def user_facing(e: BaseException) -> bool:
    from jaxdiff.algos.base import ConfigError, UnknownAlgorithmError
    from jaxdiff.run.checkpoint import CheckpointError
    from jaxdiff.run.distributed import DistributedError
    from jaxdiff.run.runner import NonFiniteError, RunConfigMismatch
    kinds = (ConfigError, UnknownAlgorithmError, CheckpointError, NonFiniteError,
             RunConfigMismatch, PermissionError, FileNotFoundError, DistributedError)
    if isinstance(e, kinds):
        return True
    # Usage errors of the CLI, the env registry and the sweep files are ValueErrors raised
    # before anything compiles; `debug=true` shows the traceback of any of them.
    return isinstance(e, (ValueError, TypeError))
