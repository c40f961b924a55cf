"""On-disk (local history, global state) datasets: layout, writer and `load_dataset`.

A dataset is a folder:

    <path>/dataset.json        metadata (format, env and its options, history length H, policy,
                               seed, sizes, state normalisation, "complete": true once written)
    <path>/train/vault/        flashbax Vault (zarr via tensorstore, gzip): the training split
    <path>/test/vault/         flashbax Vault: the test split (fresh rollout seeds)

Each Vault holds the rollout trajectories, batch-major like a flashbax trajectory buffer
(E = parallel envs, S = stored steps per env):

    obs     f32[E, S, n_agents, obs_dim]   o_i^t
    action  i32[E, S, n_agents]            a_i^t, taken after observing o^t
            (f32[E, S, n_agents, act_dim] for continuous actions)
    first   bool[E, S]                     o^t is the first observation of an episode
    state   f32[E, S, state_dim]           global state s^t (the state o^t came from),
                                           normalised to [0, 1] when "state_normalised"
    alive   bool[E, S, n_agents]           agent i is alive at t (SMAX; all True elsewhere)

The first `context_steps` (= H) steps of every env are history context only: they let the
windows of the first samples reach back H steps without crossing into unrecorded time. The samples
are the steps after them, in time-major order (t, then env), truncated to the requested count.
τ_i is not stored (it repeats each observation H times); `Split.tau` rebuilds it exactly from
the trajectories with `jaxdiff.data.history.windows`, for any window length up to the stored H.

    ds = jaxdiff.data.load_dataset("datasets/zerg")
    tau, s, alive = ds.train.tau(), ds.train.states(), ds.train.alive_mask()
    # tau [N, n_agents, n + H*(obs_dim + n_actions)], s [N, state_dim], alive [N, n_agents]

Any other program can read the splits with flashbax alone:
`flashbax.vault.Vault("train", rel_dir=path, vault_uid="vault").read().experience`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.data import history as hist

FORMAT = "jaxdiff.state_dataset"
VERSION = 1
META_FILE = "dataset.json"
VAULT_UID = "vault"
SPLITS = ("train", "test")
FIELDS = ("obs", "action", "first", "state", "alive")


class DatasetError(ValueError):
    """A dataset folder that cannot be used; the message says what to do."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No dataset at the given path."""


def _collect_hint(path: str) -> str:
    return (f"Create one with `jaxdiff collect env=<name> policy=random out={path}` or "
            f"`jaxdiff collect run_dir=<a jaxdiff train run> out={path}`.")


# ----------------------------------------------------------------------------- writing
class VaultWriter:
    """Appends trajectory chunks (leaves [E, L, ...]) of one split to a flashbax Vault."""

    def __init__(self, path: str, split: str, metadata: dict):
        self.path, self.split, self.metadata = os.path.abspath(path), split, metadata
        self.vault = None
        self.steps = 0

    def write(self, chunk: dict) -> None:
        from flashbax.buffers.trajectory_buffer import TrajectoryBufferState
        from flashbax.vault import Vault

        chunk = {k: np.asarray(chunk[k]) for k in FIELDS}
        length = chunk["first"].shape[1]
        if length == 0:
            return
        with contextlib.redirect_stdout(io.StringIO()):  # the Vault prints on create
            if self.vault is None:
                self.vault = Vault(self.split, experience_structure=chunk, rel_dir=self.path,
                                   vault_uid=VAULT_UID, metadata=self.metadata)
            state = TrajectoryBufferState(experience=chunk, current_index=np.int32(length),
                                          is_full=np.bool_(False))
            self.steps += self.vault.write(state, source_interval=(0, length))


def write_meta(path: str, meta: dict) -> None:
    tmp = os.path.join(path, META_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=False)
    os.replace(tmp, os.path.join(path, META_FILE))


def prepare_dir(path: str, overwrite: bool) -> None:
    """Make `path` ready for a new dataset; refuse to replace a complete one unless `overwrite`."""
    meta_path = os.path.join(path, META_FILE)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise DatasetError(f"`out={path}` is a file, not a folder; pick another `out=`.")
        complete = False
        if os.path.exists(meta_path):
            try:
                with open(meta_path) as f:
                    complete = bool(json.load(f).get("complete"))
            except (OSError, ValueError):
                complete = False
        if complete and not overwrite:
            raise DatasetError(f"A complete dataset already exists at `{path}`. Pass "
                               f"`overwrite=true` to replace it, or pick another `out=`.")
        if os.listdir(path) and not os.path.exists(meta_path) and not overwrite:
            raise DatasetError(f"`{path}` exists and is not a jaxdiff dataset; refusing to write "
                               f"into it. Pick another `out=` (or pass `overwrite=true`).")
        for split in SPLITS:  # an interrupted or replaced dataset: start clean
            shutil.rmtree(os.path.join(path, split), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(meta_path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"Cannot create dataset folder `{path}` ({e.strerror}). Pass a "
                              f"writable `out=...`.") from None


# ----------------------------------------------------------------------------- reading
@dataclasses.dataclass
class Split:
    """One split: trajectories (numpy, batch-major [E, S, ...]) and sample indexing."""

    name: str
    obs: np.ndarray
    action: np.ndarray
    first: np.ndarray
    state: np.ndarray
    alive: np.ndarray
    context: int            # leading history-only steps per env
    samples: int            # number of joint samples (N)
    history_spec: hist.HistorySpec
    _dev: tuple | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def num_envs(self) -> int:
        return self.first.shape[0]

    @property
    def num_samples(self) -> int:
        return self.samples

    def index(self) -> tuple[np.ndarray, np.ndarray]:
        """(env index, time index) of every sample, time-major; int32[N] each."""
        E, S = self.first.shape
        t = np.repeat(np.arange(self.context, S, dtype=np.int32), E)
        e = np.tile(np.arange(E, dtype=np.int32), S - self.context)
        return e[: self.samples], t[: self.samples]

    def _take(self, x: np.ndarray, idx) -> np.ndarray:
        e, t = self.index()
        if idx is not None:
            e, t = e[idx], t[idx]
        return x[e, t]

    def states(self, idx=None) -> np.ndarray:
        """Global states f32[N, state_dim] (rows `idx` of the samples when given)."""
        return self._take(self.state, idx)

    def alive_mask(self, idx=None) -> np.ndarray:
        """bool[N, n_agents]."""
        return self._take(self.alive, idx)

    def observations(self, idx=None) -> np.ndarray:
        """f32[N, n_agents, obs_dim]: the current observation o^t of every sample."""
        return self._take(self.obs, idx)

    def _device_arrays(self):
        """(obs, action, first, episode starts) on the device, uploaded once per split."""
        if self._dev is None:
            first = jnp.asarray(self.first)
            self._dev = (jnp.asarray(self.obs), jnp.asarray(self.action), first,
                         jax.vmap(hist.episode_starts)(first))
        return self._dev

    def tau(self, history: int | None = None, idx=None, batch: int = 8192) -> np.ndarray:
        """Local histories τ f32[N, n_agents, dim] with window `history` (default: the stored H;
        at most the stored H), for all samples or rows `idx`. Built on the device in batches of
        `batch` samples."""
        spec = self.history_spec
        if history is not None:
            if isinstance(history, bool) or not isinstance(history, int | np.integer) or not (
                    1 <= history <= spec.history):
                raise DatasetError(f"history={history!r} is not available: this dataset stores "
                                   f"{spec.history} steps of context, so 1 <= history <= "
                                   f"{spec.history}. Collect with `history={history}` for more.")
            spec = spec.replace_history(int(history))
        e, t = self.index()
        if idx is not None:
            e, t = e[idx], t[idx]
        fn = _tau_fn(spec)
        arrays = self._device_arrays()
        out = []
        for i in range(0, len(e), batch):
            ei, ti = e[i:i + batch], t[i:i + batch]
            pad = batch - len(ei) if len(e) > batch else 0  # one compiled shape for all batches
            ei, ti = np.pad(ei, (0, pad)), np.pad(ti, (0, pad))
            out.append(np.asarray(fn(*arrays, ei, ti))[: batch - pad])
        if not out:
            return np.zeros((0, spec.n_agents, spec.dim), np.float32)
        return np.concatenate(out)

    def arrays(self, history: int | None = None) -> dict[str, np.ndarray]:
        """{"tau" [N, n, dim], "state" [N, state_dim], "alive" [N, n]} for every sample."""
        return dict(tau=self.tau(history), state=self.states(), alive=self.alive_mask())

    def agent_rows(self, history: int | None = None, alive_only: bool = True) -> dict:
        """One row per (sample, agent): {"tau" [M, dim], "state" [M, state_dim], "agent" [M],
        "sample" [M]}; rows of dead agents are dropped when `alive_only` (spec §5.3)."""
        tau, state, alive = self.tau(history), self.states(), self.alive_mask()
        n = tau.shape[1]
        keep = alive.reshape(-1) if alive_only else np.ones(alive.size, bool)
        sample = np.repeat(np.arange(len(tau)), n)[keep]
        return dict(tau=tau.reshape(-1, tau.shape[-1])[keep], state=state[sample],
                    agent=np.tile(np.arange(n), len(tau))[keep], sample=sample)


_TAU_FNS: dict = {}


def _tau_fn(spec: hist.HistorySpec):
    if spec not in _TAU_FNS:
        def fn(obs, action, first, starts, e, t):  # -> f32[B, n, dim]
            return hist.windows(spec, obs, action, first, t, env_index=e, starts=starts)
        _TAU_FNS[spec] = jax.jit(fn)
    return _TAU_FNS[spec]


@dataclasses.dataclass
class Dataset:
    path: str
    meta: dict
    train: Split
    test: Split

    @property
    def history_spec(self) -> hist.HistorySpec:
        return self.train.history_spec

    def __getitem__(self, split: str) -> Split:
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        return getattr(self, split)

    def __repr__(self) -> str:
        m = self.meta
        return (f"Dataset({self.path!r}: env={m['env']}, policy={m['policy']}, H={m['history']}, "
                f"train={self.train.samples}, test={self.test.samples}, "
                f"state_dim={m['state_dim']})")


_REQUIRED = ("format", "version", "complete", "env", "n_agents", "obs_dim", "n_actions",
             "discrete", "state_dim", "history", "context_steps", "agent_id", "splits")


def _corrupt(path: str, why: str) -> DatasetError:
    return DatasetError(f"The dataset at `{path}` is unreadable: {why}. Delete the folder and "
                        f"collect it again (`jaxdiff collect ... out={path} overwrite=true`).")


def load_meta(path: str) -> dict:
    """Read and check `dataset.json` (raises `DatasetError` with what to do)."""
    path = str(path)
    if not os.path.exists(path):
        raise DatasetNotFoundError(f"No dataset at `{path}`. {_collect_hint(path)}")
    meta_path = os.path.join(path, META_FILE)
    if not os.path.isdir(path) or not os.path.exists(meta_path):
        raise DatasetNotFoundError(f"`{path}` is not a jaxdiff dataset (no {META_FILE}). "
                                   f"{_collect_hint(path)}")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise _corrupt(path, f"{META_FILE} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _corrupt(path, f"{META_FILE} is not a {FORMAT} file")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise _corrupt(path, f"{META_FILE} lacks {', '.join(missing)}")
    if int(meta["version"]) > VERSION:
        raise DatasetError(f"The dataset at `{path}` has format version {meta['version']}; this "
                           f"jaxdiff reads up to {VERSION}. Upgrade jaxdiff or collect it again.")
    if not meta["complete"]:
        raise DatasetError(f"The dataset at `{path}` is incomplete (its collection was "
                           f"interrupted). Rerun the same `jaxdiff collect` command; it replaces "
                           f"an incomplete dataset.")
    return meta


def _read_split(path: str, name: str, meta: dict, spec: hist.HistorySpec) -> Split:
    from flashbax.vault import Vault

    vault_dir = os.path.join(path, name, VAULT_UID)
    if not os.path.isdir(vault_dir):
        raise _corrupt(path, f"the `{name}` split ({vault_dir}) is missing")
    info = meta["splits"].get(name)
    if not isinstance(info, dict):
        raise _corrupt(path, f"{META_FILE} has no entry for the `{name}` split")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exp = Vault(name, rel_dir=path, vault_uid=VAULT_UID).read().experience
        arrays = {k: np.asarray(exp[k]) for k in FIELDS}
    except Exception as e:  # noqa: BLE001  tensorstore, JSON and key errors all mean "corrupt"
        raise _corrupt(path, f"the `{name}` vault cannot be read ({type(e).__name__}: {e})") from None
    E, S = arrays["first"].shape
    n, d = meta["n_agents"], meta["obs_dim"]
    want = dict(obs=(E, S, n, d), first=(E, S), state=(E, S, meta["state_dim"]),
                alive=(E, S, n))
    for k, shape in want.items():
        if arrays[k].shape != shape:
            raise _corrupt(path, f"`{name}/{k}` has shape {arrays[k].shape}, expected {shape}")
    if S != info["stored_steps"] or E != info["num_envs"]:
        raise _corrupt(path, f"the `{name}` split holds {E} envs x {S} steps, but {META_FILE} "
                             f"says {info['num_envs']} x {info['stored_steps']}")
    available = E * (S - meta["context_steps"])
    if info["samples"] > available:
        raise _corrupt(path, f"the `{name}` split holds {available} samples, fewer than the "
                             f"{info['samples']} recorded")
    return Split(name=name, context=int(meta["context_steps"]), samples=int(info["samples"]),
                 history_spec=spec, **arrays)


def history_spec_from_meta(meta: dict) -> hist.HistorySpec:
    return hist.HistorySpec(n_agents=int(meta["n_agents"]), obs_dim=int(meta["obs_dim"]),
                            n_actions=int(meta["n_actions"]), history=int(meta["history"]),
                            discrete=bool(meta["discrete"]), agent_id=bool(meta["agent_id"]))


def load_dataset(path) -> Dataset:
    """Open a dataset written by `jaxdiff collect` (see the module docstring for the layout).

    Raises `DatasetNotFoundError` when `path` holds no dataset and `DatasetError` when it is
    incomplete or corrupt; both messages say what to do."""
    path = os.path.abspath(str(path))
    meta = load_meta(path)
    spec = history_spec_from_meta(meta)
    splits = {name: _read_split(path, name, meta, spec) for name in SPLITS}
    return Dataset(path=path, meta=meta, **splits)


def samples_needed(samples: int, num_envs: int) -> int:
    """Steps per env that give at least `samples` joint samples."""
    return math.ceil(samples / num_envs)
