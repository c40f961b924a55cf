"""Orbax checkpoints of the whole vmapped training state, written between chunks.

Orbax writes each step into a temporary folder and renames it once complete, so a process
killed mid-write leaves at most an unfinished temporary folder that is ignored on restore.
A step folder that exists but cannot be read (a truncated or garbled file, missing metadata,
an empty folder) is moved aside as `unreadable-<step>-<reason>/` next to the good ones (a name
orbax does not take for a step), and the run resumes from the newest readable step with one
warning line; library errors are summarised in that line unless `debug=True`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
import weakref

import jax

_log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    pass


class CheckpointWarning(UserWarning):
    """A checkpoint could not be read and was moved aside (the run resumed from an older one)."""


def _ocp():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import orbax.checkpoint as ocp
    logging.getLogger("absl").setLevel(logging.ERROR)
    return ocp


@contextlib.contextmanager
def _quiet_libraries(debug: bool):
    """Orbax logs each failed read through absl at ERROR level before raising; the raised
    error is what we report, so the log line is noise unless debugging."""
    absl = logging.getLogger("absl")
    old = absl.level
    if not debug:
        absl.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        absl.setLevel(old)


def summarise_error(e: BaseException, debug: bool = False, width: int = 160) -> str:
    """`Type: first line of the message` cut to `width` characters (TensorStore and orbax
    errors run to several lines of nested context); the whole text with `debug`."""
    text = str(e).strip()
    if debug:
        return f"{type(e).__name__}: {text}"
    first = text.splitlines()[0] if text else ""
    line = f"{type(e).__name__}: {first}"
    return line if len(line) <= width else line[:width - 3] + "..."


def _reason(e: BaseException) -> str:
    """A short folder-name slug saying why a step could not be read."""
    text = f"{type(e).__name__} {e}".lower()
    for needle, slug in (("out_of_range", "truncated-data"), ("byte range", "truncated-data"),
                         ("utf-8", "garbled-metadata"), ("json", "garbled-metadata"),
                         ("not found", "missing-files"), ("no such file", "missing-files"),
                         ("does not exist", "missing-files"), ("data_loss", "garbled-data"),
                         ("checksum", "garbled-data"), ("corrupt", "garbled-data")):
        if needle in text:
            return slug
    if isinstance(e, FileNotFoundError):
        return "missing-files"
    return re.sub(r"[^a-z0-9]+", "-", type(e).__name__.lower()).strip("-") or "error"


class Checkpointer:
    """Save and restore numbered steps under `directory`; `debug=True` keeps the libraries'
    full error texts and logs. Close it (or use it as a context manager) when done: orbax's
    manager owns threads and an event loop that must not be left to interpreter teardown."""

    def __init__(self, directory: str, max_to_keep: int = 2, debug: bool = False):
        self.directory = os.path.abspath(directory)
        self.max_to_keep = max_to_keep
        self.debug = debug
        self._m = None
        self._open()

    def _open(self) -> None:
        ocp = _ocp()
        if self._m is not None:
            self._m.close()
        opts = ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep,
                                            enable_async_checkpointing=False)
        with _quiet_libraries(self.debug):   # it reads every step's metadata file
            self._m = ocp.CheckpointManager(self.directory, options=opts)
        self._finalizer = weakref.finalize(self, self._m.close)

    def close(self) -> None:
        """Wait for pending work and release orbax's threads (idempotent)."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

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
        from jaxdiff.run import distributed
        with distributed.collective(f"saving checkpoint {step}"):
            self._m.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)), force=True)
            self._m.wait_until_finished()

    def restore_latest(self, abstract_state):
        """Restore the newest readable checkpoint -> (step, state, meta), or None if none.

        Unreadable steps newer than a readable one are moved aside (`move_aside`) with one
        `CheckpointWarning` line; they are known to be damaged because an older step restores
        into the same template. When no step can be read nothing is moved (the template itself
        may be wrong, e.g. a changed network size) and the error says what to delete.
        """
        ocp = _ocp()
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract_state)
        failed = []
        from jaxdiff.run import distributed
        for step in reversed(self.steps()):
            try:
                with _quiet_libraries(self.debug), distributed.collective(f"restoring {step}"):
                    out = self._m.restore(step, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
            except distributed.DistributedError:
                raise   # a lost peer says nothing about the checkpoint: keep it
            except Exception as e:  # noqa: BLE001 -- any read failure means 'unreadable'
                failed.append((step, e))
                continue
            if failed:
                moved = [f"{s} ({summarise_error(e, self.debug)}) moved to "
                         f"{os.path.basename(self._move_aside_once(s, e))}/" for s, e in failed]
                self._open()   # the manager caches the step list
                warnings.warn(f"unreadable checkpoint {'; '.join(moved)} in {self.directory}; "
                              f"resuming from checkpoint {step}", CheckpointWarning, stacklevel=2)
            return step, out["state"], out["meta"]
        if failed:
            reasons = "; ".join(f"{s}: {summarise_error(e, self.debug)}" for s, e in failed)
            raise CheckpointError(
                f"No checkpoint under {self.directory} can be read ({reasons}). "
                f"Delete that folder to start over, or pass a different run_dir.")
        return None

    def _move_aside_once(self, step: int, error: BaseException) -> str:
        """`move_aside` by process 0 of a multi-process job (the others wait for it)."""
        if jax.process_count() == 1:
            return self.move_aside(step, error)
        from jax.experimental import multihost_utils
        dst = self.move_aside(step, error) if jax.process_index() == 0 else "(by process 0)"
        multihost_utils.sync_global_devices(f"jaxdiff-move-aside-{step}")
        return dst

    def move_aside(self, step: int, error: BaseException) -> str:
        """Rename step folder `step` to `unreadable-<step>-<reason>[-n]` (outside orbax's step
        names: no digits-only name, no `_<digits>` suffix) with the full error in REASON.txt;
        returns the new path. A rename is atomic, so a kill here leaves one or the other."""
        src = os.path.join(self.directory, str(step))
        base = os.path.join(self.directory, f"unreadable-{step}-{_reason(error)}")
        dst, n = base, 1
        while os.path.exists(dst):
            n += 1
            dst = f"{base}-{n}"
        os.rename(src, dst)
        with open(os.path.join(dst, "REASON.txt"), "w") as f:
            f.write(f"checkpoint {step} could not be restored:\n{type(error).__name__}: "
                    f"{error}\n")
        return dst
