"""The algorithm contract, its registry, and typed configs with validation.

An algorithm is four pure pieces (see DESIGN.md):

    Config                      flax.struct dataclass; static fields (shapes, counts) are
                                `pytree_node=False`, dynamic ones (floats) are leaves, so a
                                batch of configs is itself a pytree that sweeps vmap over.
    init(key, env, config)      -> State (a pytree; it carries `hp`, the dynamic config)
    step(env, config)           -> fn(State) -> (State, metrics: dict of scalars)
    act(config, state, obs, carry, mask, key, deterministic) -> (actions, carry)
    init_carry(config, env)     -> recurrent carry of ONE env ([n_agents, ...]); {} if none

`step` must read dynamic hyper-parameters from `state.hp`, never from the closed-over
config, otherwise a vmapped sweep would silently train every grid point with one value.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable

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


def make_config(cls, overrides: dict[str, Any] | None = None, *, prefix: str = "algo"):
    """Build `cls` from `overrides`, checking every key, type and range before any compile."""
    fields = config_fields(cls)
    values = {}
    for key, value in (overrides or {}).items():
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


@dataclasses.dataclass(frozen=True)
class Algorithm:
    name: str
    Config: type
    init: Callable
    step: Callable
    act: Callable
    init_carry: Callable
    env_steps_per_iter: Callable  # (config, env) -> env transitions consumed by one `step`
    action_types: tuple[str, ...] = ("discrete", "continuous")
    doc: str = ""
    # Optional: (config, env) -> evaluate(state, key) -> dict of scalars for ONE ensemble member,
    # replacing the runner's env-rollout evaluation (offline/supervised algorithms: e.g. PSNR on a
    # held-out set). `score` names the metric summaries rank by, `step_unit` what
    # `env_steps_per_iter` counts (env steps, or samples for an algorithm trained from a dataset).
    evaluate: Callable | None = None
    score: str = "eval_return"
    step_unit: str = "env-steps"
    # Optional: (config, env) -> pytree of read-only arrays (an offline dataset), loaded once on
    # the host and passed, un-vmapped and un-checkpointed, as a second argument to the step
    # function (`step(env, config)(state, data)`) and to `evaluate(...)(state, key, data)`.
    # Large arrays must come in this way: closed over, jit would embed them in the program.
    data: Callable | None = None
    # Optional: (config, env) -> size of the env axis the step can split over devices (its
    # env-batched arrays pass through `jaxdiff.run.parallel.shard_envs`). The runner uses it when
    # an ensemble has fewer members than devices (one seed on a multi-core CPU or multi-GPU host).
    env_split: Callable | None = None


_REGISTRY: dict[str, Algorithm] = {}


class UnknownAlgorithmError(ValueError):
    pass


def register(name: str, algorithm: Algorithm) -> Algorithm:
    _REGISTRY[name] = algorithm
    return algorithm


def names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get(name: str) -> Algorithm:
    _load_builtin()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise UnknownAlgorithmError(f"Unknown algorithm `{name}`.{hint} "
                                    f"Valid algorithms: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def check_action_type(algorithm: Algorithm, spec) -> None:
    kind = "discrete" if spec.discrete else "continuous"
    if kind not in algorithm.action_types:
        raise ConfigError(f"Algorithm `{algorithm.name}` does not support {kind} actions "
                          f"(env `{spec.name}`); it supports: {', '.join(algorithm.action_types)}. "
                          f"Pick another env or set `env.action_type`.")


_LOADED = False


def _load_builtin():
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    # Importing a module registers its algorithm(s).
    from jaxdiff.algos import mappo  # noqa: F401
    from jaxdiff.algos import haa2c, happo, hatrpo  # noqa: F401
    from jaxdiff.algos import qmix  # noqa: F401
    from jaxdiff.algos import hasac  # noqa: F401
    from jaxdiff.algos import state_diffusion  # noqa: F401
