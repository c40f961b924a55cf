"""Orbax checkpoints of the whole vmapped training state, written between chunks.

Orbax writes each step into a temporary folder and renames it once complete, so a process
killed mid-write leaves at most an unfinished temporary folder that is ignored on restore.
"""
from __future__ import annotations

import logging
import os
import warnings

import jax

_log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    pass


def _ocp():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import orbax.checkpoint as ocp
    logging.getLogger("absl").setLevel(logging.ERROR)
    return ocp


class Checkpointer:
    def __init__(self, directory: str, max_to_keep: int = 2):
        ocp = _ocp()
        self.directory = os.path.abspath(directory)
        opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                            enable_async_checkpointing=False)
        self._m = ocp.CheckpointManager(self.directory, options=opts)

    def steps(self) -> list[int]:
        return sorted(self._m.all_steps())

    def save(self, step: int, state, meta: dict) -> None:
        """Write `state` and `meta` as `step`, replacing any checkpoint at `step` or later.

        Such checkpoints are left over from before a resume (`restore_latest` skipped them as
        unreadable, or the run went back to an earlier step): orbax refuses to write an existing
        step (StepAlreadyExistsError, even with force=True), and `max_to_keep` would otherwise
        delete good older checkpoints while keeping the stale newer ones."""
        ocp = _ocp()
        for stale in [s for s in self._m.all_steps() if s >= step]:
            self._m.delete(stale)
        self._m.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   meta=ocp.args.JsonSave(meta)), force=True)
        self._m.wait_until_finished()

    def restore_latest(self, abstract_state):
        """Restore the newest readable checkpoint -> (step, state, meta), or None if none.

        An unreadable newest checkpoint falls back to the one before it (with a warning);
        when none can be read the error says which files to remove.
        """
        ocp = _ocp()
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract_state)
        errors = []
        for step in reversed(self.steps()):
            try:
                out = self._m.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
                if errors:
                    warnings.warn(f"checkpoint(s) {errors} could not be read; resumed from {step}")
                return step, out["state"], out["meta"]
            except Exception as e:  # noqa: BLE001 -- any read failure means 'corrupt'
                errors.append(f"{step}: {type(e).__name__}: {str(e)[:200]}")
        if errors:
            raise CheckpointError(
                f"No checkpoint under {self.directory} can be read ({'; '.join(errors)}). "
                f"Delete that folder to start over, or pass a different run_dir.")
        return None
