"""`jaxdiff collect`: roll a policy out in vectorised envs on the device and store
(local history τ_i, global state s) data as a dataset (layout: `jaxdiff.data.dataset`).

    # a random policy on the SMACv2-style zerg task, sight range 5, H = 5, 100K train samples
    jaxdiff collect env=smax_zerg_5v5 policy=random env.sight_range=5 samples=100K out=datasets/zerg5

    # a trained policy: any `jaxdiff train` run directory of an algorithm with `act`. Checked end
    # to end on a busy 2-core CPU: train 3 min 52 s (win rate 0.375), collect 1 min 56 s
    # (mostly compilation; 7 MB on disk)
    jaxdiff train algo=mappo env=smax_protoss_5v5 seeds=1 total_steps=100000 chunks=2 \
        eval_episodes=8 algo.num_envs=32 algo.num_steps=64 run_dir=runs/mappo_protoss
    jaxdiff collect run_dir=runs/mappo_protoss samples=10000 out=datasets/protoss_10k

    # then, in Python
    ds = jaxdiff.data.load_dataset("datasets/protoss_10k")
    tau, s, alive = ds.train.tau(), ds.train.states(), ds.train.alive_mask()
    rows = ds.train.agent_rows()   # one (tau_i, s) row per alive agent, for denoiser training

Options (all `key=value`): `run_dir=` or `env=` (one is needed), `policy=random|run`
(default: run when `run_dir` is given), `samples=` (train joint timesteps; 10K, 100K (default),
500K; suffixes K/M allowed), `test_samples=` (default 10K, from fresh rollout seeds),
`history=` (H, default 5; the window length stored as context, loadable with any H' <= H),
`num_envs=` (parallel envs, default 128), `burn_in=` (default: the episode length), `seed=`,
`member=` (which seed/grid member of the run, default 0), `deterministic=` (default false: the
stochastic policy, as the paper rolls MAPPO out), `chunk_steps=` (steps per compiled chunk,
default 100), `out=` (default datasets/<env>_<policy>_<samples>), `overwrite=`, `progress=`,
`env.<option>=` (env options; with `run_dir` they override the run's, and the obs/action sizes
must stay the same).

What is recorded, per env and step t: o^t, the action a^t taken after it, whether o^t starts an
episode, the global state s^t that o^t was computed from (normalised to [0, 1] for SMAX, see
`jaxdiff.envs.smax_tasks`), and which agents are alive. One sample is one joint timestep (n rows
(τ_i, s), spec §7.9). The post-terminal observation of an episode is never recorded: the env
auto-resets and o^{t+1} is the new episode's first observation.

Sampling [CHOICE]: all envs start at reset, and env e holds its first observation until a
random step u_e ~ U{0, ..., burn_in - 1}, so after `burn_in` steps the envs are at spread-out
points of their episodes; the samples are the `ceil(samples / num_envs)` steps after the burn-in (whose last H
steps are kept as history context). Without it, short collections in many envs would hold
mostly early-episode states. The compiled rollout is a `lax.scan` of `chunk_steps` steps over
`vmap`-ed envs; the host writes each chunk to the Vault and updates the progress bar.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.data import dataset as ds_lib
from jaxdiff.data import history as hist

DEFAULTS = dict(samples=100_000, test_samples=10_000, history=5, num_envs=128, seed=0,
                member=0, chunk_steps=100)


@dataclasses.dataclass(frozen=True)
class Policy:
    """A per-env policy: `init_carry()` -> carry; `act(carry, obs, mask, key)` -> (actions, carry).

    obs [n_agents, obs_dim], mask bool[n_agents, act_dim]."""

    name: str
    init_carry: Callable
    act: Callable
    info: dict


def random_policy(env) -> Policy:
    """Uniform over the available actions (discrete) or over the action box (continuous)."""
    spec = env.spec

    def act(carry, obs, mask, key):
        if spec.discrete:
            return jax.random.categorical(key, jnp.where(mask, 0.0, -jnp.inf)).astype(jnp.int32), carry
        a = jax.random.uniform(key, (spec.n_agents, spec.act_dim), minval=spec.action_low,
                               maxval=spec.action_high)
        return a, carry

    return Policy("random", lambda: jnp.zeros((spec.n_agents,), jnp.float32), act, {})


# ----------------------------------------------------------------------------- env hooks
def _inner(env, state):
    """Peel `EpisodeStats`-style wrappers: (unwrapped env, its own state)."""
    while hasattr(env, "env") and hasattr(state, "env_state"):
        env, state = env.env, state.env_state
    return env, state


def state_fn(env):
    """(fn(state) -> f32[state_dim], state_dim, normalised?) for the target global state."""
    from jaxdiff.envs import smax_tasks
    from jaxdiff.envs.jaxmarl import SMAXAdapter

    inner = env.unwrapped
    if hasattr(inner, "normalised_state"):
        fn = lambda s: inner.normalised_state(_inner(env, s)[1])
    elif isinstance(inner, SMAXAdapter):
        fn = lambda s: smax_tasks.normalised_state(env, s)
    else:
        return env.global_state, env.spec.state_dim, False
    dim = jax.eval_shape(fn, jax.eval_shape(env.reset, jax.random.PRNGKey(0))[1]).shape[0]
    return fn, int(dim), True


def alive_fn(env):
    from jaxdiff.envs import smax_tasks
    from jaxdiff.envs.jaxmarl import SMAXAdapter

    inner = env.unwrapped
    if hasattr(inner, "alive"):
        return lambda s: inner.alive(_inner(env, s)[1])
    if isinstance(inner, SMAXAdapter):
        return lambda s: smax_tasks.allies_alive(env, s)
    return lambda s: jnp.ones((env.spec.n_agents,), bool)


# ----------------------------------------------------------------------------- rollout
def make_chunk(env, policy: Policy, num_envs: int, steps: int):
    """chunk(carry, j0, key) -> (carry, record): `steps` env steps in `num_envs` envs.

    carry = (obs, env_state, policy_carry, first, start_at) batched over envs; `j0` is the
    global index of the chunk's first step; record leaves are [num_envs, steps, ...]."""
    target, _, _ = state_fn(env)
    alive = alive_fn(env)
    where_env = lambda c, x, y: jax.tree.map(
        lambda a, b: jnp.where(c.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), x, y)

    def body(carry, x):
        obs, es, pc, first, start_at = carry
        j, key = x
        k_act, k_env = jax.random.split(key)
        mask = jax.vmap(env.action_mask)(es)
        actions, pc_next = jax.vmap(policy.act)(pc, obs, mask, jax.random.split(k_act, num_envs))
        rec = dict(obs=obs, action=actions, first=first, state=jax.vmap(target)(es),
                   alive=jax.vmap(alive)(es))
        obs_next, es_next, _, done, _ = jax.vmap(env.step)(jax.random.split(k_env, num_envs),
                                                           es, actions)
        # Staggered starts: env e holds its first observation until global step start_at[e]
        # (burn-in only); a held env keeps first=True, so no window reaches past its start.
        active = j >= start_at
        ended = done[:, 0] & active
        pc_next = where_env(ended, jax.vmap(lambda _: policy.init_carry())(ended), pc_next)
        obs, es, pc = where_env(active, (obs_next, es_next, pc_next), (obs, es, pc))
        first = jnp.where(active, ended, first)
        return (obs, es, pc, first, start_at), rec

    def chunk(carry, j0, key):
        xs = (j0 + jnp.arange(steps, dtype=jnp.int32), jax.random.split(key, steps))
        carry, rec = jax.lax.scan(body, carry, xs)
        return carry, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), rec)  # -> [E, steps, ...]

    return jax.jit(chunk, donate_argnums=0)


def init_carry(env, policy: Policy, num_envs: int, burn_in: int, key):
    k_reset, k_start = jax.random.split(key)
    obs, es = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))
    pc = jax.vmap(lambda _: policy.init_carry())(jnp.arange(num_envs))
    first = jnp.ones((num_envs,), bool)
    start_at = jax.random.randint(k_start, (num_envs,), 0, max(burn_in, 1)).astype(jnp.int32)
    # Strong types, as the chunk returns them (SMAX's reset leaves a weakly typed int in the
    # enemy policy state, which would otherwise compile the chunk twice per split).
    strong = lambda x: jnp.asarray(x, x.dtype)
    return jax.tree.map(strong, (obs, es, pc, first, start_at))


def rollout_split(env, policy, chunk_fn, *, num_envs: int, chunk_steps: int, burn_in: int,
                  context: int, steps: int, key, writer, bar=None, init_fn=None) -> None:
    """Run burn-in + `steps` sample steps; write steps [burn_in - context, burn_in + steps).
    `init_fn(key)`: a compiled `init_carry` (default: `init_carry` run eagerly)."""
    k_init, k_run = jax.random.split(key)
    carry = (init_fn(k_init) if init_fn is not None
             else init_carry(env, policy, num_envs, burn_in, k_init))
    lo, hi = max(burn_in - context, 0), burn_in + steps
    j = 0
    while j < hi:
        k_run, k_chunk = jax.random.split(k_run)
        carry, rec = chunk_fn(carry, jnp.int32(j), k_chunk)
        a, b = max(lo - j, 0), min(hi - j, chunk_steps)
        if b > a:
            rec = jax.device_get(rec)
            writer.write({k: v[:, a:b] for k, v in rec.items()})
        done_samples = min(j + chunk_steps, hi) - max(j, burn_in)
        if bar is not None and done_samples > 0:
            bar.update(done_samples * num_envs)
        j += chunk_steps


# ----------------------------------------------------------------------------- entry points
def collect(env, policy: Policy, out: str, *, samples: int = 100_000, test_samples: int = 10_000,
            history: int = 5, num_envs: int = 128, burn_in: int | None = None, seed: int = 0,
            chunk_steps: int = 100, overwrite: bool = False, progress: bool = True,
            env_name: str | None = None, env_kwargs: dict | None = None) -> ds_lib.Dataset:
    """Collect the train and test splits into `out` and return the loaded dataset."""
    for name, v, lo in (("samples", samples, 1), ("test_samples", test_samples, 1),
                        ("history", history, 1), ("num_envs", num_envs, 1),
                        ("chunk_steps", chunk_steps, 1), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
            raise ValueError(f"`{name}={v!r}` must be an integer >= {lo}.")
    burn_in = env.spec.max_steps if burn_in is None else burn_in
    if isinstance(burn_in, bool) or not isinstance(burn_in, int | np.integer) or burn_in < 0:
        raise ValueError(f"`burn_in={burn_in!r}` must be an integer >= 0.")
    num_envs = int(min(num_envs, samples, test_samples))
    # History context kept before the first sample; with a burn-in shorter than H everything
    # from the common reset at step 0 is kept, which is all the history there is.
    context = min(history, burn_in)
    _, state_dim, normalised = state_fn(env)
    spec = env.spec
    hspec = hist.HistorySpec(n_agents=spec.n_agents, obs_dim=spec.obs_dim,
                             n_actions=spec.act_dim, history=history, discrete=spec.discrete)
    out = os.path.abspath(out)
    ds_lib.prepare_dir(out, overwrite)
    steps = {s: ds_lib.samples_needed(n, num_envs) for s, n in
             (("train", samples), ("test", test_samples))}
    meta = dict(
        format=ds_lib.FORMAT, version=ds_lib.VERSION, complete=False,
        env=env_name or spec.name, env_spec_name=spec.name, env_kwargs=dict(env_kwargs or {}),
        n_agents=spec.n_agents, obs_dim=spec.obs_dim, n_actions=hspec.n_actions,
        discrete=spec.discrete, state_dim=state_dim, state_normalised=normalised,
        state_bounds=[0.0, 1.0] if normalised else None,
        history=history, context_steps=context, agent_id=hspec.agent_id, tau_dim=hspec.dim,
        policy=policy.name, **{f"policy_{k}": v for k, v in policy.info.items()},
        seed=seed, num_envs=num_envs, burn_in=burn_in, chunk_steps=chunk_steps,
        sample_unit="joint timestep (n_agents rows of (tau_i, s))",
        splits={s: dict(samples=n, num_envs=num_envs, steps=steps[s],
                        stored_steps=context + steps[s],
                        key=dict(seed=seed, fold_in=i))
                for i, (s, n) in enumerate((("train", samples), ("test", test_samples)))},
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        jaxdiff_version=_version(),
    )
    ds_lib.write_meta(out, meta)
    chunk_fn = make_chunk(env, policy, num_envs, chunk_steps)
    # One compiled reset for both splits (run eagerly, the vmapped SMAX reset is ~10 s per split).
    init_fn = jax.jit(lambda k: init_carry(env, policy, num_envs, burn_in, k))
    root = jax.random.PRNGKey(seed)
    t0 = time.time()
    for i, split in enumerate(ds_lib.SPLITS):
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps[split] * num_envs, unit="sample", unit_scale=True,
                       desc=f"collect {split}", file=sys.stderr, dynamic_ncols=True)
        writer = ds_lib.VaultWriter(out, split, dict(env=meta["env"], split=split))
        try:
            rollout_split(env, policy, chunk_fn, num_envs=num_envs, chunk_steps=chunk_steps,
                          burn_in=burn_in, context=context, steps=steps[split],
                          key=jax.random.fold_in(root, i), writer=writer, bar=bar,
                          init_fn=init_fn)
        finally:
            if bar is not None:
                bar.close()
    meta.update(complete=True, collect_s=round(time.time() - t0, 3))
    ds_lib.write_meta(out, meta)
    return ds_lib.load_dataset(out)


def _version() -> str:
    import jaxdiff
    return jaxdiff.__version__


# ----------------------------------------------------------------------------- CLI
KEYS = ("run_dir", "env", "policy", "samples", "test_samples", "history", "num_envs", "burn_in",
        "seed", "member", "deterministic", "chunk_steps", "out", "overwrite", "progress", "debug")


def parse_count(key: str, text) -> int:
    """'10000', '1e5', '100K', '0.5M' -> int."""
    if isinstance(text, int | np.integer) and not isinstance(text, bool):
        return int(text)
    s = str(text).strip().upper().replace("_", "")
    mult = {"K": 1_000, "M": 1_000_000}.get(s[-1:], 1)
    if mult > 1:
        s = s[:-1]
    try:
        value = float(s) * mult
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or value != int(value):
        raise ValueError(f"`{key}={text}` must be a whole number (e.g. 10000, 1e5, 100K).")
    return int(value)


def _bool(key: str, text) -> bool:
    s = str(text).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    raise ValueError(f"`{key}={text}` must be true or false.")
