"""Env registry: `make(name, **kw)`, `names()`, `register(name, factory)`.

A factory is a callable taking keyword options and returning an unwrapped env (`base.Env`);
`make` validates the options against the factory's signature and wraps the env in
`EpisodeStats`. Heavy imports (jaxmarl, brax) happen inside factories, on first `make`.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from jaxdiff.envs.base import Env
from jaxdiff.envs.wrappers import EpisodeStats

_REGISTRY: dict[str, Callable[..., Env]] = {}


class UnknownEnvError(ValueError):
    """Raised by `make` for a name that is not registered."""


def register(name: str, factory: Callable[..., Env], *, overwrite: bool = False) -> None:
    """Register `factory(**kw) -> Env` under `name`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"env name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not overwrite and _REGISTRY[name] is not factory:
        raise ValueError(f"env {name!r} is already registered (pass overwrite=True to replace)")
    _REGISTRY[name] = factory


def names() -> list[str]:
    """All registered env names, sorted."""
    return sorted(_REGISTRY)


def _factory(name: str) -> Callable[..., Env]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(str(name), _REGISTRY, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownEnvError(
        f"unknown env {name!r}.{hint} Valid names: {', '.join(names())}"
    )


def options(name: str) -> dict[str, Any]:
    """The keyword options `name` accepts, with their defaults."""
    sig = inspect.signature(_factory(name))
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def _check_kwargs(name: str, factory: Callable[..., Env], kw: Mapping[str, Any]) -> None:
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    allowed = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key, value in kw.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown env option {key}={value!r} for env {name!r}.{hint} "
                f"Allowed options: {', '.join(allowed) or '(none)'}"
            )


def make(name: str, **kw) -> Env:
    """Build the registered env `name` with options `kw`, wrapped in `EpisodeStats`."""
    factory = _factory(name)
    _check_kwargs(name, factory, kw)
    return EpisodeStats(factory(**kw))


def make_from_config(cfg: Mapping[str, Any]) -> Env:
    """`make` from a Hydra env config: `{"name": ..., **options}`."""
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ValueError(f"env config needs a 'name' key; got keys {sorted(cfg)}")
    name = cfg.pop("name")
    return make(name, **cfg)
