"""The runner: any registered algorithm, any env, an ensemble of (grid point x seed) members.

    state = vmap(init)(keys, configs)                       # leading ensemble axis
    loop over chunks on the host:
        state, metrics = jit(scan(vmap(step), K), donate)(state)
        evaluate, write metrics.jsonl, NaN check, checkpoint, progress bar

A chunk is the unit of resume: rerunning the same command restores the last complete
checkpoint and replays nothing else, so a resumed run ends bit-identical to an uninterrupted one.
The ensemble axis is the only batch axis the host sees; a device mesh only has to shard it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import envs as envs_lib
from jaxdiff.algos import base as algos
from jaxdiff.run import distributed
from jaxdiff.run import logging as runlog
from jaxdiff.run.checkpoint import Checkpointer, CheckpointWarning


class NonFiniteError(FloatingPointError):
    pass


class RunConfigMismatch(ValueError):
    pass


class _Absent:
    def __repr__(self):
        return "(not set)"


_ABSENT = _Absent()


def config_diff(saved: dict, now: dict, prefix: str = "",
                labels: tuple[str, str] = ("saved", "now")) -> list[str]:
    """Every differing key of two run identities, with both values: `env_kwargs.action_type:
    saved 'discrete', now 'continuous'` (nested dicts are compared key by key; `labels` name
    the two sides)."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key, _ABSENT), now.get(key, _ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{key}.", labels)
        elif (a is _ABSENT or b is _ABSENT
              or json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True)):
            out.append(f"{prefix}{key}: {labels[0]} {a!r}, {labels[1]} {b!r}")
    return out


@dataclasses.dataclass
class RunSpec:
    """Everything that defines a run (what must match for a resume)."""
    algo: str
    env: str
    env_kwargs: dict
    algo_overrides: dict
    seeds: int = 1
    total_steps: int = 100_000
    seed: int = 0
    chunks: int = 20            # number of host round-trips (eval/log/checkpoint points)
    eval_episodes: int = 32
    checkpoint_every: int = 1   # in chunks
    grid: list | None = None    # list of dicts of DYNAMIC overrides (vmapped sweep axis)

    def identity(self) -> dict:
        return dataclasses.asdict(self)


def _check_writable(run_dir: str) -> None:
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, f".write_probe-{os.getpid()}")  # processes may share it
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise PermissionError(f"Run directory `{run_dir}` is not writable ({e.strerror}). "
                              f"Pass a writable `run_dir=...`.") from None


def prepare(spec: RunSpec):
    """Validate everything and build (algorithm, env, configs) without compiling anything."""
    if spec.seeds < 1:
        raise algos.ConfigError(f"`seeds={spec.seeds}` must be >= 1.")
    if spec.total_steps < 1:
        raise algos.ConfigError(f"`total_steps={spec.total_steps}` must be >= 1.")
    if spec.chunks < 1 or spec.eval_episodes < 1 or spec.checkpoint_every < 1:
        raise algos.ConfigError("`chunks`, `eval_episodes` and `checkpoint_every` must be >= 1.")
    algorithm = algos.get(spec.algo)
    env = envs_lib.make(spec.env, **spec.env_kwargs)
    algos.check_action_type(algorithm, env.spec)
    overrides = dict(spec.algo_overrides)
    base = algos.make_config(algorithm.Config, overrides)
    configs = []
    for point in spec.grid or [{}]:
        for key in point:
            if key in algos.config_fields(algorithm.Config) and algos.is_static(algorithm.Config, key):
                raise algos.ConfigError(f"`algo.{key}` changes shapes; it cannot be a vmapped grid "
                                        f"axis (sweeps compile one program per value of it).")
        configs.append(algos.make_config(algorithm.Config, {**overrides, **point}))
    return algorithm, env, base, configs


def ensemble_sharding(n_members: int, env_split: int = 1):
    """Split the leading ensemble axis over the default backend's devices: a NamedSharding over
    a ("ensemble", "data") mesh whose "ensemble" axis is the largest device count that divides
    `n_members` (None with one device). On a CPU-only machine `jaxdiff.use_host_devices()`
    (which the `jaxdiff` command calls) exposes one XLA host device per core, so the members of
    a run execute on all cores at once; on GPUs this is
    data parallelism over members. Devices left over (fewer members than devices) form the
    "data" axis when the algorithm can split an env axis of size `env_split` over it
    (`Algorithm.env_split`, `jaxdiff.parallel`); arrays placed with the returned sharding
    are replicated along "data"."""
    if jax.process_count() > 1:
        return _multiprocess_sharding(n_members, env_split)
    devices = jax.devices()
    k = max(d for d in range(1, min(len(devices), n_members) + 1) if n_members % d == 0)
    rest = len(devices) // k
    d = max(x for x in range(1, rest + 1) if env_split % x == 0) if env_split > 1 else 1
    if k * d == 1:
        return None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    mesh = Mesh(np.array(devices[:k * d]).reshape(k, d), ("ensemble", "data"))
    return NamedSharding(mesh, PartitionSpec("ensemble"))


def _multiprocess_sharding(n_members: int, env_split: int = 1):
    """`ensemble_sharding` over every process's devices: each of the P processes holds a
    contiguous slice of n_members / P members, spread over the largest number of its own
    devices that divides that slice (process p's devices form rows p*k..(p+1)*k-1 of the
    ("ensemble", "data") mesh; a row's "data" devices are all on the same process)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    P = jax.process_count()
    check_process_split(n_members)
    by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(P)]
    local = min(len(ds) for ds in by_process)
    per = n_members // P
    k = max(d for d in range(1, min(local, per) + 1) if per % d == 0)
    rest = local // k
    d = max(x for x in range(1, rest + 1) if env_split % x == 0) if env_split > 1 else 1
    rows = [ds[i * d:(i + 1) * d] for ds in by_process for i in range(k)]
    mesh = Mesh(np.array(rows).reshape(P * k, d), ("ensemble", "data"))
    return NamedSharding(mesh, PartitionSpec("ensemble"))


def check_process_split(n_members: int) -> None:
    """Several processes hold equal slices of the ensemble: refuse a count they do not divide."""
    P = jax.process_count()
    if n_members % P:
        raise algos.ConfigError(
            f"{n_members} ensemble members (grid points x seeds) cannot be split evenly over "
            f"{P} processes: choose `seeds` (or the grid) so that their product is a multiple "
            f"of {P}, or launch a number of processes that divides it.")


def member_sharding(algorithm, env, config, n_members: int):
    """The runner's placement for an ensemble of `n_members` of `algorithm` (see
    `ensemble_sharding`). Devices left over split a member's envs when the algorithm supports
    it and either the devices are accelerators or the env's steps are serial chains of small ops
    (`EnvSpec.split_envs`: on MPE a CPU split measured slower, on SMAX ~1.4x and on MABrax
    ~2x faster, see `make bench`). `JAXDIFF_ENV_SPLIT=1` / `=0` forces the split on / off."""
    forced = os.environ.get("JAXDIFF_ENV_SPLIT", "")
    if forced not in ("", "0", "1"):
        raise ValueError(f"JAXDIFF_ENV_SPLIT={forced!r}: use 1 (split envs over idle devices), "
                         f"0 (never) or leave it unset (automatic).")
    wanted = (forced == "1" or (forced == "" and (jax.default_backend() != "cpu"
                                                  or getattr(env.spec, "split_envs", False))))
    split = int(algorithm.env_split(config, env)) if wanted and algorithm.env_split else 1
    return ensemble_sharding(n_members, split)


def place(tree, sharding):
    """Put an ensemble-leading pytree on `sharding` (a no-op for None)."""
    return tree if sharding is None else jax.device_put(tree, sharding)


def replicate(tree, sharding):
    """Put a member-independent pytree (a dataset) on every device of `sharding`'s mesh."""
    if sharding is None or tree is None:
        return tree
    from jax.sharding import NamedSharding, PartitionSpec
    return jax.device_put(tree, NamedSharding(sharding.mesh, PartitionSpec()))


def chunk_shardings(chunk, state, data, sharding):
    """Output shardings of a chunk (state, metrics[K, M, ...], *per_member[M, ...]): every state
    leaf stays split on the ensemble axis (a leaf XLA would otherwise replicate, e.g. a constant,
    must not change sharding between chunks), metrics on their second axis, any further
    per-member outputs on their first. None without a mesh."""
    if sharding is None:
        return None
    from jax.sharding import NamedSharding, PartitionSpec
    out_state, out_metrics, *per_member = jax.eval_shape(chunk, state, data)
    per_iter = NamedSharding(sharding.mesh, PartitionSpec(None, "ensemble"))
    member = NamedSharding(sharding.mesh, PartitionSpec("ensemble"))
    return (jax.tree.map(lambda _: sharding, out_state),
            jax.tree.map(lambda _: per_iter, out_metrics),
            *jax.tree.map(lambda _: member, per_member))


def make_chunk(step_fn, iters: int, sharding):
    """chunk(state, data) -> (state, metrics[iters, M, ...]): `iters` steps of the vmapped
    member step `step_fn(state, data)`, the ensemble axis bound to the mesh's "ensemble" axis."""
    vmapped = jax.vmap(step_fn, in_axes=(0, None),
                       spmd_axis_name=None if sharding is None else "ensemble")
    return lambda state, data: jax.lax.scan(lambda s, _: vmapped(s, data), state, None,
                                            length=iters)


def with_finite_check(chunk):
    """chunk(state, data) -> (state, metrics, ok[M]): ok = every floating leaf of member m's
    state is finite, computed inside the compiled chunk (no second program to compile)."""
    def leaves_ok(m):
        flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(m)
                 if jnp.issubdtype(x.dtype, jnp.floating)]
        return jnp.all(jnp.stack(flags)) if flags else jnp.bool_(True)

    def checked(state, data):
        state, metrics = chunk(state, data)
        return state, metrics, jax.vmap(leaves_ok)(state)
    return checked


def compile_chunk(chunk, state, data, sharding):
    """jit(chunk) with the state donated, lowered for (state, data) on `sharding`'s mesh (env
    axes split over its "data" axis) and compiled; returns (compiled, compile seconds)."""
    from jaxdiff import parallel
    t0 = time.perf_counter()
    with parallel.env_parallel(None if sharding is None else sharding.mesh):
        compiled = jax.jit(chunk, donate_argnums=0,
                           out_shardings=chunk_shardings(chunk, state, data, sharding)
                           ).lower(state, data).compile()
    return compiled, time.perf_counter() - t0


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def _ensemble(spec: RunSpec, algorithm, env, configs):
    """members [(grid, seed)], their keys and stacked configs, and the vmapped init."""
    members = [(g, s) for g in range(len(configs)) for s in range(spec.seeds)]
    root = jax.random.PRNGKey(spec.seed)
    # The same seed index gets the same key at every grid point (common random numbers).
    keys = jnp.stack([jax.random.fold_in(root, s) for _, s in members])
    hp = _stack([configs[g] for g, _ in members])
    init_fn = jax.jit(jax.vmap(lambda k, c: algorithm.init(k, env, c)))
    return members, root, keys, hp, init_fn


def plan(algorithm, env, config, total_steps: int, chunks: int):
    """How a run of `total_steps` env steps (or samples) per member is laid out:
    (steps per iteration, iterations per chunk K, number of chunks, total iterations = K x
    chunks). The run takes at least `total_steps` (rounded up to whole chunks)."""
    per_iter = algorithm.env_steps_per_iter(config, env)
    total_iters = max(1, math.ceil(total_steps / per_iter))
    K = max(1, math.ceil(total_iters / chunks))
    n_chunks = math.ceil(total_iters / K)
    return per_iter, K, n_chunks, K * n_chunks


def _step_and_eval(algorithm, env, config, episodes: int, iterations: int):
    """(step(state, data), evaluate(state, key, data), data) for one ensemble member, whether or
    not the algorithm takes a data input (`Algorithm.data`; None when it does not)."""
    step = algorithm.step(env, config, iterations=iterations)
    evaluate = (algorithm.evaluate(config, env) if algorithm.evaluate is not None
                else make_evaluate(algorithm, env, config, episodes))
    if algorithm.data is not None:
        return step, evaluate, algorithm.data(config, env)
    # No data input: a None placeholder keeps one calling convention for the runner.
    return (lambda state, data: step(state)), (lambda state, key, data: evaluate(state, key)), None


def make_evaluate(algorithm, env, config, episodes: int):
    """evaluate(state, key) -> dict of scalars for one ensemble member."""
    max_steps = env.spec.max_steps

    def rollout(state, key, deterministic):
        k_reset, k_loop = jax.random.split(key)
        obs, es = jax.vmap(env.reset)(jax.random.split(k_reset, episodes))
        carry0 = algorithm.init_carry(config, env)
        carry = jax.tree.map(lambda c: jnp.broadcast_to(c, (episodes,) + c.shape), carry0)
        zeros = jnp.zeros((episodes,))

        def body(c, k):
            obs, es, carry, seen, ret, won = c
            k_act, k_env = jax.random.split(k)
            mask = jax.vmap(env.action_mask)(es)
            act = lambda o, h, m, kk: algorithm.act(config, env, state, o, h, m, kk,
                                                    deterministic=deterministic)
            actions, carry = jax.vmap(act)(obs, carry, mask, jax.random.split(k_act, episodes))
            obs, es, _, _, info = jax.vmap(env.step)(jax.random.split(k_env, episodes), es, actions)
            ended = info["returned_episode"]
            first = ended & ~seen
            ret = jnp.where(first, info["episode_return"], ret)
            won = jnp.where(first, info["won"], won)
            carry = jax.tree.map(
                lambda h, h0: jnp.where(ended.reshape((-1,) + (1,) * (h.ndim - 1)), h0, h),
                carry, jax.tree.map(lambda c: jnp.broadcast_to(c, (episodes,) + c.shape), carry0))
            return (obs, es, carry, seen | ended, ret, won), None

        init = (obs, es, carry, jnp.zeros((episodes,), bool), zeros, zeros)
        (_, _, _, seen, ret, won), _ = jax.lax.scan(body, init,
                                                     jax.random.split(k_loop, max_steps + 1))
        n = jnp.maximum(seen.sum(), 1)
        return (ret * seen).sum() / n, (won * seen).sum() / n

    def evaluate(state, key):
        k_det, k_sto = jax.random.split(key)
        ret_d, won_d = rollout(state, k_det, True)
        ret_s, won_s = rollout(state, k_sto, False)
        out = dict(eval_return=ret_d, eval_return_stochastic=ret_s)
        if env.spec.has_win:
            out.update(eval_win_rate=won_d, eval_win_rate_stochastic=won_s)
        return out

    return evaluate


def _flat_metrics(metrics: dict) -> dict:
    """Name -> array for every metric leaf (an `EpisodeSums` contributes its fields)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, algos.EpisodeSums):
            out.update({f"{k}.{f.name}": np.asarray(getattr(v, f.name))
                        for f in dataclasses.fields(v)})
        else:
            out[k] = np.asarray(v)
    return out


def _finite_report(metrics_np: dict, params_ok: np.ndarray, members) -> str | None:
    for name, v in metrics_np.items():
        bad = ~np.isfinite(v)
        if bad.any():
            m = int(np.argwhere(bad.any(axis=0) if v.ndim > 1 else bad)[0][0])
            g, s = members[m]
            return f"metric `{name}` is not finite for seed {s}" + (f" (grid {g})" if g else "")
    if not params_ok.all():
        g, s = members[int(np.argmin(params_ok))]
        return f"parameters are not finite for seed {s}" + (f" (grid {g})" if g else "")
    return None


def _aggregate(metrics: dict) -> dict:
    """[K, M] per-iteration metrics -> per-member chunk values. The kind is the type: an
    `EpisodeSums` is pooled over the chunk's finished episodes (train_return, train_length,
    train_win_rate; NaN when none ended; train_episodes counts them), anything else averaged."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, algos.EpisodeSums):
            count = np.asarray(v.count, dtype=np.float64).sum(0)
            out["train_episodes"] = count
            for name, total in (("train_return", v.return_sum), ("train_length", v.length_sum),
                                ("train_win_rate", v.won_sum)):
                total = np.asarray(total, dtype=np.float64).sum(0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[name] = np.where(count > 0, total / count, np.nan)
        else:
            out[k] = np.asarray(v, dtype=np.float64).mean(0)
    return out


class _Interrupt:
    def __init__(self):
        self.hit = False

    def __enter__(self):
        self._old = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handler(self, *_):
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True
        print("\n[jaxdiff] interrupt received: finishing the chunk, saving, exiting "
              "(press Ctrl-C again to abort without saving)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def train(spec: RunSpec, run_dir: str, *, progress: bool = True, tensorboard: bool = False,
          grid_labels: dict | None = None, quiet: bool = False,
          max_chunks: int | None = None, debug: bool = False) -> dict:
    """Train (or resume) the run in `run_dir`; `max_chunks` stops early after that many chunks
    of this invocation, checkpointed, as an interrupt would. `debug` keeps the checkpoint
    library's full error texts (otherwise summarised in one line)."""
    algorithm, env, base, configs = prepare(spec)
    identity = spec.identity()
    # several processes: the same run everywhere, else every process refuses before compiling
    distributed.agree("run configuration", dict(identity, run_dir=run_dir))
    check_process_split(len(configs) * spec.seeds)   # before the run folder is claimed
    main = distributed.is_main()
    _check_writable(run_dir)
    verdict = _claim_run_dir(run_dir, spec, base, identity) if main else None
    verdict = distributed.from_main("run_dir verdict", verdict)
    if verdict:
        raise RunConfigMismatch(verdict)
    # after the config check: a refused resume leaves the folder exactly as it was
    ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"), debug=debug)

    S = spec.seeds
    members, root, keys, hp, init_fn = _ensemble(spec, algorithm, env, configs)
    per_iter, K, n_chunks, iterations = plan(algorithm, env, base, spec.total_steps, spec.chunks)

    step_fn, evaluate_one, data = _step_and_eval(algorithm, env, base, spec.eval_episodes,
                                                 iterations)
    sharding = member_sharding(algorithm, env, base, len(members))
    quiet = quiet or not main
    keys, hp, data = place(keys, sharding), place(hp, sharding), replicate(data, sharding)
    chunk = with_finite_check(make_chunk(step_fn, K, sharding))

    evaluate = jax.jit(jax.vmap(evaluate_one, in_axes=(0, None, None)))

    abstract = jax.eval_shape(init_fn, keys, hp)
    if distributed.active():   # each process reads back only its slice of the members
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                               sharding=sharding), abstract)
    restored = restore_reporting(ckpt, abstract)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    if restored is None:
        start, state = 0, place(init_fn(keys, hp), sharding)
        if main and os.path.exists(metrics_path):
            os.remove(metrics_path)
    else:
        done_chunk, state, _ = restored
        state = place(state, sharding)
        start = done_chunk
        if main:
            runlog.truncate_jsonl(metrics_path, done_chunk - 1)

    if not quiet:
        for line in _plan_lines(spec, algorithm, per_iter, K, n_chunks, start):
            print(f"[jaxdiff] {line}", file=sys.stderr)
    # nothing to train (a rerun of a complete run): no compile, the summary is rewritten
    compiled, compile_s = (compile_chunk(chunk, state, data, sharding) if start < n_chunks
                           else (None, 0.0))
    eval_key = jax.random.fold_in(root, 10_000_019)

    bar = None
    if progress and not quiet and start < n_chunks:
        from tqdm.auto import tqdm

        # One rate: the postfix's env-steps/s over all members, timed on the compiled chunks
        # only (tqdm's own rate would count evaluation and checkpoint time, per member).
        bar = tqdm(total=n_chunks * K * per_iter, initial=start * K * per_iter,
                   unit=algorithm.unit, unit_scale=True, dynamic_ncols=True,
                   desc=f"{spec.algo}/{spec.env}", file=sys.stderr,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                              "[{elapsed}<{remaining}{postfix}]")
    tb = runlog.TensorBoard(run_dir) if tensorboard and main else None
    run_time, run_steps, interrupted = 0.0, 0, False
    with _Interrupt() as stop:
        for c in range(start, n_chunks):
            t = time.perf_counter()
            state, metrics, ok = compiled(state, data)
            metrics, ok = distributed.gather((metrics, ok))
            dt = time.perf_counter() - t
            run_time += dt
            run_steps += K * per_iter * len(members)
            problem = _finite_report(_flat_metrics(metrics), np.asarray(ok), members)
            if problem:
                if bar:
                    bar.close()
                raise NonFiniteError(
                    f"Stopped at chunk {c + 1}/{n_chunks}: {problem}. The last good checkpoint "
                    f"(chunk {ckpt.steps()[-1] if ckpt.steps() else 'none'}) is kept in "
                    f"{ckpt.directory}; lower the learning rate or check the inputs.")
            chunk_vals = _aggregate(metrics)
            ev = distributed.gather(evaluate(state, jax.random.fold_in(eval_key, c), data))
            step_count = (c + 1) * K * per_iter
            rows = []
            for m, (g, s) in enumerate(members):
                row = dict(step=step_count, chunk=c, seed=s, grid=g)
                row.update({k: _py(v[m]) for k, v in chunk_vals.items()})
                row.update({k: _py(v[m]) for k, v in ev.items()})
                rows.append(row)
            if main:
                runlog.write_jsonl(metrics_path, rows)
            if tb:
                tb.log(rows)
            last = c + 1 == n_chunks
            stop.hit = distributed.any_process(stop.hit)   # an interrupt stops every process
            if last or (c + 1) % spec.checkpoint_every == 0 or stop.hit:
                ckpt.save(c + 1, state, dict(chunk=c + 1, step=step_count))
            if bar:
                bar.update(K * per_iter)
                bar.set_postfix_str(
                    f"{_si(run_steps / max(run_time, 1e-9))} {algorithm.unit}s/s, "
                    f"{algorithm.score.removeprefix('eval_')} "
                    f"{np.nanmean(ev[algorithm.score]):.3g}", refresh=False)
            if max_chunks is not None and c + 1 - start >= max_chunks and not last:
                if (c + 1) % spec.checkpoint_every:
                    ckpt.save(c + 1, state, dict(chunk=c + 1, step=step_count))
                interrupted = True
                break
            if stop.hit and not last:
                interrupted = True
                break
    if bar:
        bar.close()
    if tb:
        tb.close()
    ckpt.close()
    if not main:   # process 0 wrote the files; every process returns its summary
        return json.loads(distributed.from_main("summary", None))
    rows = runlog.read_jsonl(metrics_path)
    summary = _summary(spec, rows, env, run_steps, run_time, compile_s, grid_labels, configs,
                       score=algorithm.score)
    summary["complete"] = not interrupted
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    runlog.plot_curves(rows, os.path.join(run_dir, "curves.png"),
                       title=f"{spec.algo} on {spec.env} ({S} seeds)", labels=grid_labels)
    distributed.from_main("summary", json.dumps(summary))
    if interrupted and stop.hit:
        print(f"[jaxdiff] interrupted at chunk {c + 1}/{n_chunks} (saved to {ckpt.directory}) "
              f"— rerun the same command to resume.", file=sys.stderr)
    return summary


def _claim_run_dir(run_dir: str, spec: RunSpec, base, identity: dict) -> str | None:
    """Write the run's config.json/config.yaml into a new `run_dir`, or check that the run
    already there is this one: None, or the message that refuses the resume."""
    cfg_path = os.path.join(run_dir, "config.json")
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            old = json.load(f)
        if old != json.loads(json.dumps(identity)):
            diff = config_diff(old, json.loads(json.dumps(identity)))
            return (f"`{run_dir}` holds a run with a different configuration, so it is not "
                    f"resumed: {'; '.join(diff)}. Use another `run_dir=...` (or leave `run_dir` "
                    f"out: the default folder is named from your settings), or delete that "
                    f"folder.")
    else:
        with open(cfg_path, "w") as f:
            json.dump(identity, f, indent=2)
        _write_yaml(os.path.join(run_dir, "config.yaml"), spec, base)
    return None


def _si(x: float) -> str:
    """12345.6 -> '12.3k' (the progress bar's rate)."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def _plan_lines(spec, algorithm, per_iter: int, K: int, n_chunks: int, start: int) -> list[str]:
    """What the run will do, said once at its start: the budget when whole chunks round it up,
    and where a rerun resumes (or that there is nothing left to do)."""
    lines = []
    actual = n_chunks * K * per_iter
    if actual != spec.total_steps:
        lines.append(f"total_steps={spec.total_steps:,} runs as {actual:,} {algorithm.unit}s per "
                     f"seed: {n_chunks} chunks x {K} iterations x {per_iter:,} {algorithm.unit}s "
                     f"per iteration (whole chunks; the budget is rounded up).")
    if start >= n_chunks:
        lines.append(f"already complete ({n_chunks}/{n_chunks} chunks); nothing to train.")
    elif start > 0:
        lines.append(f"resuming from chunk {start}/{n_chunks}.")
    return lines


def _py(x):
    x = np.asarray(x)
    return float(x) if x.dtype.kind == "f" else int(x)


def _summary(spec, rows, env, run_steps, run_time, compile_s, grid_labels, configs,
             score="eval_return"):
    per_grid = runlog.summarise(rows, score=score)
    g0 = per_grid.get(0, dict(final={}, best={}, per_seed=[]))
    summary = dict(algo=spec.algo, env=spec.env, seeds=spec.seeds, total_steps=spec.total_steps,
                   final=g0["final"], best=g0["best"], per_seed=g0["per_seed"],
                   env_steps_per_s=(run_steps / run_time) if run_time > 0 else None,
                   env_steps_per_s_per_member=(run_steps / run_time / (len(configs) * spec.seeds))
                   if run_time > 0 else None,
                   compile_s=compile_s)
    if spec.grid:
        summary["grid"] = [dict(point=spec.grid[g], label=(grid_labels or {}).get(g), **v)
                           for g, v in per_grid.items()]
    return summary


def _write_yaml(path: str, spec: RunSpec, config) -> None:
    import yaml
    doc = dict(algo=dict(name=spec.algo, **algos.config_to_dict(config)),
               env=dict(name=spec.env, **spec.env_kwargs),
               seeds=spec.seeds, total_steps=spec.total_steps, seed=spec.seed,
               chunks=spec.chunks, eval_episodes=spec.eval_episodes, grid=spec.grid)
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)


def restore_state(run_dir: str):
    """Load a finished or interrupted run: (spec, algorithm, env, base_config, state)."""
    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"`{run_dir}` is not a jaxdiff run directory (no config.json). "
                                f"Pass the run_dir printed by `jaxdiff train`.")
    with open(cfg_path) as f:
        spec = RunSpec(**json.load(f))
    algorithm, env, base, configs = prepare(spec)
    members, _, keys, hp, init_fn = _ensemble(spec, algorithm, env, configs)
    with Checkpointer(os.path.join(run_dir, "checkpoints")) as ckpt:
        restored = restore_reporting(ckpt, jax.eval_shape(init_fn, keys, hp))
    if restored is None:
        raise FileNotFoundError(f"`{run_dir}` has no checkpoint yet; train first.")
    return spec, algorithm, env, base, restored[1], members


def restore_reporting(ckpt: Checkpointer, abstract):
    """`ckpt.restore_latest(abstract)`, its warnings (an unreadable checkpoint moved aside)
    printed as one `[jaxdiff] warning:` line each on stderr instead of Python's two-line
    warning format with a source line."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CheckpointWarning)
        restored = ckpt.restore_latest(abstract)
    for w in caught:
        if issubclass(w.category, CheckpointWarning):
            print(f"[jaxdiff] warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return restored


def _register_env_options():
    # `env.inferred_state=<state_diffusion run>`: a wrapper that needs this module's
    # `restore_state`, so it is registered here, above both envs and statediff.
    from jaxdiff.statediff import augment
    augment.register_env_options(restore_state)


_register_env_options()
