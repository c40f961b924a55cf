"""The algorithm contract, its registry, and typed configs with validation.

This is the one place the contract is written down. An algorithm is a few pure functions
bundled in an `Algorithm` (keyword-only fields, see its docstring) and registered by name:

    Config                       flax.struct dataclass; static fields (shapes, counts) are
                                 `pytree_node=False` (`static(...)`), dynamic ones (floats) are
                                 leaves (`dynamic(...)`), so a batch of configs is itself a
                                 pytree that sweeps vmap over.
    init(key, env, config)       -> State (a pytree; it carries `hp`, the config as arrays)
    step(env, config, *, iterations)
                                 -> fn(State) -> (State, metrics); `iterations` is the number of
                                 steps the run will take (for schedules), passed by the runner
    act(config, env, state, obs, carry, mask, key, *, deterministic)
                                 -> (actions, carry) for ONE env: obs [n, obs_dim], mask
                                 [n, act_dim], carry as `init_carry` returns it
    init_carry(config, env)      -> recurrent carry of ONE env ([n_agents, ...]); {} if none
    env_steps_per_iter(config, env) -> how many env transitions (or samples) one step consumes

Metrics declare their kind by type: a plain scalar array is a per-iteration value (averaged over
a chunk), an `EpisodeSums` holds sums over the episodes that ended (pooled over a chunk into
train_return, train_length, train_win_rate, train_episodes), and evaluation metrics are what
`evaluate` returns.

`step` must read dynamic hyper-parameters from `state.hp`, never from the closed-over
config, otherwise a vmapped sweep would silently train every grid point with one value.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import Any, Callable

import jax
from flax import struct


class ConfigError(ValueError):
    """A user-facing configuration problem (bad key, value or combination)."""


def static(default, *, choices=None, lo=None, hi=None, doc=""):
    """A shape-changing hyper-parameter (compiled once per value in a sweep)."""
    return struct.field(pytree_node=False, default=default,
                        metadata=dict(choices=choices, lo=lo, hi=hi, doc=doc, static=True))


def dynamic(default, *, lo=None, hi=None, doc=""):
    """A float hyper-parameter: a pytree leaf, so grids over it are one vmapped program."""
    return struct.field(pytree_node=True, default=default,
                        metadata=dict(choices=None, lo=lo, hi=hi, doc=doc, static=False))


def config_fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def is_static(cls, name: str) -> bool:
    return bool(config_fields(cls)[name].metadata.get("static", True))


def _coerce(name: str, value: Any, default: Any):
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "1", "yes"):
                    return True
                if low in ("false", "0", "no"):
                    return False
                raise ValueError
            if isinstance(value, (bool, int)) and value in (0, 1, True, False):
                return bool(value)
            raise ValueError
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(float(value)) if isinstance(value, str) else int(value)
        if kind is float:
            return float(value)
        if kind is str:
            return str(value)
        if kind is tuple:
            return tuple(value)
    except (TypeError, ValueError):
        raise ConfigError(f"`{name}={value!r}` has the wrong type: expected {kind.__name__} "
                          f"(default {default!r}).") from None
    return value


# Settings the runner owns (it derives them or injects them into every algorithm and env):
# key under `algo.`/`env.` -> the top-level setting to use instead. A config that could set
# them would silently fight the runner (an `algo.total_steps` schedule running past zero).
RUNNER_KEYS = {
    "total_steps": "total_steps", "total_timesteps": "total_steps", "num_updates": "total_steps",
    "iterations": "total_steps", "num_iterations": "total_steps",
    "seeds": "seeds", "num_seeds": "seeds", "seed": "seed", "chunks": "chunks",
    "eval_episodes": "eval_episodes", "checkpoint_every": "checkpoint_every",
    "run_dir": "run_dir", "grid": "sweep=<name>",
}


def runner_key_error(key: str, prefix: str = "algo") -> "ConfigError | None":
    """The error for `<prefix>.<key>` when the runner owns `key` (None otherwise)."""
    if key not in RUNNER_KEYS:
        return None
    top = RUNNER_KEYS[key]
    use = top if "=" in top else f"{top}=<value>"
    return ConfigError(f"`{prefix}.{key}` is set by the runner, not by the "
                       f"{'algorithm' if prefix == 'algo' else 'env'}: use the top-level "
                       f"setting `{use}` instead (e.g. `jaxdiff train ... {use}`).")


def make_config(cls, overrides: dict[str, Any] | None = None, *, prefix: str = "algo"):
    """Build `cls` from `overrides`, checking every key, type and range before any compile."""
    fields = config_fields(cls)
    values = {}
    for key, value in (overrides or {}).items():
        if key not in fields and key in RUNNER_KEYS:
            raise runner_key_error(key, prefix)
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" Did you mean `{prefix}.{close[0]}`?" if close else ""
            raise ConfigError(f"`{prefix}.{key}` is not a setting of {cls.__module__}.Config.{hint} "
                              f"Valid keys: {', '.join(sorted(fields))}.")
        field = fields[key]
        values[key] = _coerce(f"{prefix}.{key}", value, field.default)
    config = cls(**values)
    validate_config(config, prefix=prefix)
    return config


def validate_config(config, *, prefix: str = "algo"):
    for name, field in config_fields(type(config)).items():
        value = getattr(config, name)
        meta = field.metadata
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise ConfigError(f"`{prefix}.{name}={value!r}` is not allowed; choose one of "
                              f"{list(meta['choices'])}.")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = meta.get("lo"), meta.get("hi")
            if lo is not None and value < lo or hi is not None and value > hi:
                rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
                raise ConfigError(f"`{prefix}.{name}={value!r}` is out of range; allowed: {rng}.")
    check = getattr(config, "check", None)
    if check is not None:
        check()


def config_to_dict(config) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


@struct.dataclass
class EpisodeSums:
    """Sums over the episodes that ended during one training iteration (a metric kind: the
    runner pools them over a chunk and divides by `count`)."""
    count: jax.Array
    return_sum: jax.Array
    length_sum: jax.Array
    won_sum: jax.Array

    @classmethod
    def of(cls, info) -> "EpisodeSums":
        """From the episode-statistics wrapper's info, leaves [T, n_envs] (or any shape)."""
        ended = info["returned_episode"].astype(jax.numpy.float32)
        return cls(count=ended.sum(), return_sum=(info["episode_return"] * ended).sum(),
                   length_sum=(info["episode_length"] * ended).sum(),
                   won_sum=(info["won"] * ended).sum())


def _no_carry(config, env):
    return {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Algorithm:
    """A registered algorithm (see the module docstring for each function's signature).

    Required: name, Config, init, step, act, env_steps_per_iter.
    Optional:
      init_carry     recurrent carry of one env (default: none)
      action_types   the action types it supports ("discrete", "continuous")
      doc            one line for `jaxdiff list`
      evaluate       (config, env) -> evaluate(state, key[, data]) -> dict of scalars for ONE
                     ensemble member, replacing the runner's env-rollout evaluation (offline or
                     supervised algorithms: e.g. PSNR on a held-out set)
      score          the evaluation metric summaries rank by
      unit           what `env_steps_per_iter` counts, singular ("env-step", or "sample" for an
                     algorithm trained from a dataset); the progress bar's unit
      data           (config, env) -> pytree of read-only arrays (an offline dataset), loaded once
                     on the host and passed, un-vmapped and un-checkpointed, as a second argument
                     to the step function (`step(...)(state, data)`) and to `evaluate(...)(state,
                     key, data)`. Large arrays must come in this way: closed over, jit would embed
                     them in the program.
      env_split      (config, env) -> size of the env axis the step can split over devices (its
                     env-batched arrays pass through `jaxdiff.parallel.shard_envs`); the runner
                     uses it when an ensemble has fewer members than devices.
    """
    name: str
    Config: type
    init: Callable
    step: Callable
    act: Callable
    env_steps_per_iter: Callable
    init_carry: Callable = _no_carry
    action_types: tuple[str, ...] = ("discrete", "continuous")
    doc: str = ""
    evaluate: Callable | None = None
    score: str = "eval_return"
    unit: str = "env-step"
    data: Callable | None = None
    env_split: Callable | None = None


# The built-in algorithms: name -> the module that registers it, imported on first use (so
# `import jaxdiff` loads none of them and algorithm modules never import each other).
BUILTIN = {
    "mappo": "jaxdiff.algos.mappo",
    "ippo": "jaxdiff.algos.mappo",
    "happo": "jaxdiff.algos.happo",
    "haa2c": "jaxdiff.algos.haa2c",
    "hatrpo": "jaxdiff.algos.hatrpo",
    "hasac": "jaxdiff.algos.hasac",
    "qmix": "jaxdiff.algos.qmix",
    "state_diffusion": "jaxdiff.algos.state_diffusion",
    "ddpl": "jaxdiff.algos.ddpl",
    "ddpl_gaussian": "jaxdiff.algos.ddpl",
    "decspg_gaussian": "jaxdiff.algos.ddpl",
    "haqo": "jaxdiff.algos.haqo",
}

_REGISTRY: dict[str, Algorithm] = {}


class UnknownAlgorithmError(ValueError):
    pass


def register(algorithm: Algorithm) -> Algorithm:
    """Make `algorithm` available by `algorithm.name` (`get`, `jaxdiff train algo=<name>`)."""
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"register() takes an Algorithm, got {type(algorithm).__name__}.")
    _REGISTRY[algorithm.name] = algorithm
    return algorithm


def names() -> list[str]:
    return sorted(set(_REGISTRY) | set(BUILTIN))


def get(name: str) -> Algorithm:
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _REGISTRY:
        valid = names()
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise UnknownAlgorithmError(f"Unknown algorithm `{name}`.{hint} "
                                    f"Valid algorithms: {', '.join(valid)}.")
    return _REGISTRY[name]


def check_action_type(algorithm: Algorithm, spec) -> None:
    kind = "discrete" if spec.discrete else "continuous"
    if kind not in algorithm.action_types:
        raise ConfigError(f"Algorithm `{algorithm.name}` does not support {kind} actions "
                          f"(env `{spec.name}`); it supports: {', '.join(algorithm.action_types)}. "
                          f"Pick another env or set `env.action_type="
                          f"{algorithm.action_types[0]}` (MPE and SMAX have both).")
