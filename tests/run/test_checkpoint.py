"""Checkpointer: exact round trip of a training-state-like pytree, the newest readable step wins,
unreadable or half-written steps fall back (with a warning) or fail with a message that says
what to delete, and a resumed run can write over the steps it skipped."""
import glob
import os
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from jaxdiff.run.checkpoint import CheckpointError, Checkpointer


@struct.dataclass
class State:
    params: dict
    step: jax.Array
    key: jax.Array
    done: jax.Array
    hp: float
    name: str = struct.field(pytree_node=False, default="x")


def _state(offset: int = 0) -> State:
    k = jax.random.split(jax.random.PRNGKey(offset), 2)
    return State(params={"w": jax.random.normal(k[0], (3, 4)) + offset,
                         "b": jnp.arange(4, dtype=jnp.float32) * offset,
                         "stack": [jnp.full((2,), offset, jnp.int32), jnp.zeros((1, 5))]},
                 step=jnp.asarray(10 * offset, jnp.int32), key=k[1],
                 done=jnp.array([True, False, offset % 2 == 1]),
                 hp=jnp.asarray(0.5 + offset, jnp.float32))


def _assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.asarray(x).dtype == np.asarray(y).dtype and np.shape(x) == np.shape(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _saved(directory, steps=(1, 2, 3), max_to_keep=3):
    ckpt = Checkpointer(str(directory), max_to_keep=max_to_keep)
    for s in steps:
        ckpt.save(s, _state(s), {"chunk": s, "step": 100 * s, "tag": [s, "x"]})
    return ckpt


def test_round_trip_is_exact_and_needs_only_shapes(tmp_path):
    ckpt = _saved(tmp_path / "c", steps=(7,))
    template = jax.eval_shape(lambda: _state(0))       # shapes and dtypes only, as the runner
    step, state, meta = ckpt.restore_latest(template)
    assert step == 7 and meta == {"chunk": 7, "step": 700, "tag": [7, "x"]}
    assert isinstance(state, State) and state.name == "x"
    _assert_same(state, _state(7))
    # a fresh Checkpointer on the same folder (a new process) sees the same
    step, state, _ = Checkpointer(str(tmp_path / "c")).restore_latest(_state(0))
    assert step == 7
    _assert_same(state, _state(7))


def test_newest_step_wins_and_old_ones_are_pruned(tmp_path):
    ckpt = _saved(tmp_path / "c", steps=(1, 2, 3, 4), max_to_keep=2)
    assert ckpt.steps() == [3, 4]
    step, state, meta = ckpt.restore_latest(_state(0))
    assert (step, meta["chunk"]) == (4, 4)
    _assert_same(state, _state(4))


def test_no_checkpoint_gives_none(tmp_path):
    assert Checkpointer(str(tmp_path / "empty")).restore_latest(_state(0)) is None


def _garble(path):
    for f in glob.glob(os.path.join(path, "**"), recursive=True):
        if os.path.isfile(f):
            with open(f, "wb") as fh:
                fh.write(b"not a checkpoint")


@pytest.mark.parametrize("damage", ["garbled", "state_missing", "meta_missing", "empty_step"])
def test_unreadable_newest_step_falls_back_with_a_warning(tmp_path, damage):
    d = tmp_path / "c"
    _saved(d)
    if damage == "garbled":
        _garble(str(d / "3" / "state"))
    elif damage == "state_missing":
        shutil.rmtree(d / "3" / "state")
    elif damage == "meta_missing":
        shutil.rmtree(d / "3" / "meta")
    else:                                   # a newer step folder with nothing in it
        os.makedirs(d / "4")
    bad = 4 if damage == "empty_step" else 3
    good = 3 if damage == "empty_step" else 2
    ckpt = Checkpointer(str(d), max_to_keep=3)
    with pytest.warns(UserWarning, match=f"{bad}: .*resumed from {good}"):
        step, state, meta = ckpt.restore_latest(_state(0))
    assert step == good and meta["chunk"] == good
    _assert_same(state, _state(good))


def test_half_written_temporary_folder_is_ignored(tmp_path):
    d = tmp_path / "c"
    _saved(d)
    shutil.copytree(d / "3", d / "4.orbax-checkpoint-tmp-1234")    # killed while writing 4
    _garble(str(d / "4.orbax-checkpoint-tmp-1234"))
    ckpt = Checkpointer(str(d), max_to_keep=3)
    assert ckpt.steps() == [1, 2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                             # no fallback happened
        step, state, _ = ckpt.restore_latest(_state(0))
    assert step == 3
    _assert_same(state, _state(3))


def test_nothing_readable_raises_and_names_the_folder(tmp_path):
    d = tmp_path / "c"
    _saved(d, steps=(1, 2))
    for s in (1, 2):
        _garble(str(d / str(s) / "state"))
    with pytest.raises(CheckpointError) as exc:
        Checkpointer(str(d)).restore_latest(_state(0))
    msg = str(exc.value)
    assert str(d) in msg and "Delete that folder" in msg and "1: " in msg and "2: " in msg


def test_a_changed_state_shape_is_refused_not_reshaped(tmp_path):
    """Resuming with another config (e.g. a wider network) must not restore old arrays."""
    d = tmp_path / "c"
    _saved(d, steps=(1,))
    wider = _state(0).replace(params=dict(_state(0).params, w=jnp.zeros((3, 5))))
    with pytest.raises(CheckpointError, match="shape"):
        Checkpointer(str(d)).restore_latest(wider)


def test_resume_after_a_fallback_can_write_the_skipped_steps_again(tmp_path):
    """The runner resumes from the newest readable step k and then saves k+1, k+2, ... If an
    unreadable k+1 is still on disk, that save must replace it (orbax alone refuses an existing
    step), and the next resume must find the new k+1, not fall back to k again."""
    d = tmp_path / "c"
    _saved(d, steps=(1, 2, 3), max_to_keep=2)
    _garble(str(d / "3" / "state"))
    ckpt = Checkpointer(str(d), max_to_keep=2)
    with pytest.warns(UserWarning):
        step, _, _ = ckpt.restore_latest(_state(0))
    assert step == 2
    ckpt.save(3, _state(30), {"chunk": 3})
    ckpt.save(4, _state(40), {"chunk": 4})
    fresh = Checkpointer(str(d), max_to_keep=2)
    assert fresh.steps() == [3, 4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step, state, meta = fresh.restore_latest(_state(0))
    assert step == 4 and meta == {"chunk": 4}
    _assert_same(state, _state(40))
