"""Env registry: `make(name, **kw)`, `names()`, `register(name, factory)`.

A factory is a callable taking keyword options and returning an unwrapped env (`base.Env`);
`make` validates the options against the factory's signature and wraps the env in
`EpisodeStats`. Heavy imports (jaxmarl, brax) happen inside factories, on first `make`.

Wrapper options: `register_wrapper(option_names, wrap)` adds options that every env accepts
(default None = off); `make` builds the env without them and then calls `wrap(env, options)`.
Packages above `envs` use it to plug in observation wrappers without `envs` importing them
(`inferred_state`, from `jaxdiff.statediff.augment`, is registered by `jaxdiff.run`).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from jaxdiff.envs.base import Env
from jaxdiff.envs.wrappers import EpisodeStats

_REGISTRY: dict[str, Callable[..., Env]] = {}
_WRAPPERS: list[tuple[tuple[str, ...], Callable[[Env, dict], Env]]] = []


class UnknownEnvError(ValueError):
    """Raised by `make` for a name that is not registered."""


def register(name: str, factory: Callable[..., Env], *, overwrite: bool = False) -> None:
    """Register `factory(**kw) -> Env` under `name`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"env name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not overwrite and _REGISTRY[name] is not factory:
        raise ValueError(f"env {name!r} is already registered (pass overwrite=True to replace)")
    _REGISTRY[name] = factory


def register_wrapper(option_names, wrap: Callable[[Env, dict], Env]) -> None:
    """Options `option_names` (accepted by every env, default None) handled by
    `wrap(env, {name: value})`, applied before `EpisodeStats`."""
    option_names = tuple(option_names)
    if any(option_names == names_ for names_, _ in _WRAPPERS):
        return
    _WRAPPERS.append((option_names, wrap))


def wrapper_options() -> list[str]:
    """Options every env accepts through a registered wrapper (e.g. `inferred_state`, which
    `jaxdiff.run` registers)."""
    return [n for names_, _ in _WRAPPERS for n in names_]


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
    """The env's own keyword options, with their defaults (every env also accepts the wrapper
    options of `wrapper_options()`, default None)."""
    sig = inspect.signature(_factory(name))
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }



def _own_options(factory: Callable[..., Env]) -> list[str] | None:
    """The factory's keyword options (None when it takes **kwargs)."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _check_kwargs(name: str, factory: Callable[..., Env], kw: Mapping[str, Any]) -> None:
    own = _own_options(factory)
    if own is None or all(k in own for k in kw):
        return
    allowed = own + wrapper_options()
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
    own = _own_options(factory)
    wrapped = wrapper_options()
    wrapper_kw = {k: v for k, v in kw.items()
                  if (k not in own if own is not None else k in wrapped)}
    env = factory(**{k: v for k, v in kw.items() if k not in wrapper_kw})
    if wrapper_kw:
        for names_, wrap in _WRAPPERS:
            opts = {n: wrapper_kw.get(n) for n in names_}
            if any(v is not None for v in opts.values()):
                env = wrap(env, opts)
    return EpisodeStats(env)


def make_from_config(cfg: Mapping[str, Any]) -> Env:
    """`make` from a Hydra env config: `{"name": ..., **options}`."""
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ValueError(f"env config needs a 'name' key; got keys {sorted(cfg)}")
    name = cfg.pop("name")
    return make(name, **cfg)
