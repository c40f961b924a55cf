"""Config composition: the command line (`key=value` pairs) -> validated settings, exactly as
`jaxdiff train` composes them (Hydra groups in configs/, the algorithm's per-env-family presets,
then the user's overrides). The CLI, the benchmarks, `jaxdiff collect` and the experiments all
compose through here.

    cfg = compose(["algo=mappo", "env=smax_3m", "algo.lr=1e-3"])
    spec = run_spec(cfg)          # a jaxdiff.run.runner.RunSpec
"""
from __future__ import annotations

import re

import difflib
import os
import sys
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
TOP_KEYS = ("seeds", "total_steps", "seed", "chunks", "eval_episodes", "checkpoint_every",
            "run_dir", "tensorboard", "progress", "debug")


class UsageError(ValueError):
    pass


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _choose(group: str, value: str, valid: list[str]) -> None:
    if value not in valid:
        close = difflib.get_close_matches(value, valid, n=1)
        hint = f" Did you mean `{group}={close[0]}`?" if close else ""
        raise UsageError(f"Unknown {group} `{value}`.{hint} Valid names: {', '.join(valid)}.")


def parse(argv: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for arg in argv:
        if "=" not in arg:
            raise UsageError(f"Cannot read argument `{arg}`: arguments are `key=value` "
                             f"(e.g. `algo=mappo`, `algo.lr=3e-4`, `seeds=3`).")
        key, value = arg.split("=", 1)
        pairs.append((key.lstrip("+"), value))
    return pairs


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def yaml_value(text: str) -> Any:
    """A command-line value as YAML reads it, except that `1e-3` is a float (YAML 1.1 wants
    `1.0e-3`; people write the short form)."""
    import yaml
    if _FLOAT.fullmatch(text.strip()):
        return float(text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def compose(argv: list[str]) -> dict:
    """Validate the command line, then let Hydra compose configs/train.yaml with it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from jaxdiff import envs as envs_lib
    from jaxdiff.algos import base as algos

    pairs = parse(argv)
    chosen = dict(algo="mappo", env="mpe_simple_spread")
    for key, value in pairs:
        if key in ("algo", "env"):
            chosen[key] = value
    _choose("algo", chosen["algo"], sorted(set(algos.names()) & set(options("algo"))))
    env_names = options("env")
    if chosen["env"] not in env_names:
        try:  # a registered env without its own yaml still works through the registry
            envs_lib.make(chosen["env"])
        except envs_lib.UnknownEnvError as e:
            raise UsageError(str(e)) from None
    config_cls = algos.get(chosen["algo"]).Config
    fields = algos.config_fields(config_cls)
    overrides, user_algo = [], {}
    for key, value in pairs:
        if key in ("algo", "env"):
            overrides.append(f"{key}={value}" if key == "algo" or value in env_names else "")
            continue
        group, _, sub = key.partition(".")
        if group in ("algo", "env") and sub in algos.RUNNER_KEYS and sub not in (
                fields if group == "algo" else _env_options(chosen["env"])):
            raise algos.runner_key_error(sub, group)
        if group == "algo" and sub:
            if sub not in fields:
                close = difflib.get_close_matches(sub, list(fields), n=1)
                hint = f" Did you mean `algo.{close[0]}`?" if close else ""
                raise UsageError(f"`{key}` is not a setting of algorithm `{chosen['algo']}`.{hint} "
                                 f"Valid keys: {', '.join(sorted(fields))}.")
            user_algo[sub] = yaml_value(value)
            continue
        if group == "env" and sub:
            overrides.append(f"++{key}={value}")
            continue
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(key, list(TOP_KEYS) + ["algo", "env"], n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise UsageError(f"Unknown setting `{key}`.{hint} Valid: algo, env, algo.<key>, "
                             f"env.<key>, {', '.join(TOP_KEYS)}.")
        overrides.append(f"{key}={value}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = hydra_compose(config_name="train", overrides=[o for o in overrides if o])
    cfg = OmegaConf.to_container(cfg, resolve=True)
    algo_cfg = dict(cfg["algo"])
    algo_cfg.pop("name", None)
    presets = algo_cfg.pop("presets", {}) or {}
    family = chosen["env"].split("_", 1)[0]
    algo_cfg.update(presets.get(family, {}))
    algo_cfg.update(user_algo)
    env_cfg = dict(cfg.get("env") or {}) if chosen["env"] in env_names else {}
    env_cfg.pop("name", None)
    for key, value in pairs:
        if key.startswith("env."):
            env_cfg[key[4:]] = yaml_value(value)
    cfg.update(algo_name=chosen["algo"], env_name=chosen["env"], algo=algo_cfg, env=env_cfg)
    return cfg


def _env_options(name: str) -> list[str]:
    from jaxdiff import envs as envs_lib
    try:
        return list(envs_lib.options(name)) + envs_lib.wrapper_options()
    except envs_lib.UnknownEnvError:
        return []


def top_int(cfg: dict, key: str) -> int:
    """`cfg[key]` as an integer (`1e5` and `100000.0` read as 100000), or a UsageError that
    names the key (int() alone says only "invalid literal")."""
    value = cfg[key]
    try:
        number = float(value)
        if not number.is_integer():
            raise ValueError
        return int(number)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"`{key}={value}` must be a whole number (such as 3, 100000 or "
                         f"1e5).") from None


def top_bool(cfg: dict, key: str) -> bool:
    value = cfg[key]
    if isinstance(value, bool):
        return value
    low = str(value).strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise UsageError(f"`{key}={value}` must be true or false.")


def run_spec(cfg: dict):
    """The `RunSpec` of a composed config (`compose(argv)`); every top-level value is checked
    for its type here, with an error that names the key."""
    from jaxdiff.run.runner import RunSpec
    for key in ("progress", "tensorboard", "debug"):
        if key in cfg:
            top_bool(cfg, key)
    return RunSpec(algo=cfg["algo_name"], env=cfg["env_name"], env_kwargs=cfg["env"],
                   algo_overrides=cfg["algo"], seeds=top_int(cfg, "seeds"),
                   total_steps=top_int(cfg, "total_steps"), seed=top_int(cfg, "seed"),
                   chunks=top_int(cfg, "chunks"), eval_episodes=top_int(cfg, "eval_episodes"),
                   checkpoint_every=top_int(cfg, "checkpoint_every"))


def env_config(name: str) -> dict:
    """Options of configs/env/<name>.yaml (Hydra's env group), without `name`."""
    from omegaconf import OmegaConf

    path = CONFIG_DIR / "env" / f"{name}.yaml"
    if not path.exists():
        return {}
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    cfg.pop("name", None)
    return cfg


def collect_command(pairs: list[tuple[str, str]]) -> int:
    """`jaxdiff collect key=value ...` (see `jaxdiff.data.collect`)."""
    import difflib

    import yaml

    from jaxdiff import envs as envs_lib
    from jaxdiff.data.collect import (DEFAULTS, KEYS, _bool, collect, parse_count,
                                      random_policy)
    from jaxdiff.run.policy import run_policy

    kv, env_over = {}, {}
    for key, value in pairs:
        if key.startswith("env."):
            env_over[key[4:]] = yaml.safe_load(value) if value != "" else value
            continue
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise ValueError(f"Unknown collect setting `{key}`.{hint} Valid: "
                             f"{', '.join(k for k in KEYS if k != 'debug')}, env.<option>.")
        kv[key] = value
    run_dir = kv.get("run_dir")
    policy_name = kv.get("policy", "run" if run_dir else "random")
    if policy_name not in ("random", "run"):
        raise ValueError(f"`policy={policy_name}` is not allowed; use `policy=random` or "
                         f"`run_dir=<a jaxdiff train run>` (policy=run).")
    if policy_name == "run" and not run_dir:
        raise ValueError("`policy=run` needs `run_dir=<path>` (a folder written by "
                         "`jaxdiff train`); or use `policy=random env=<name>`.")
    if not run_dir and "env" not in kv:
        raise ValueError("`jaxdiff collect` needs `run_dir=<a jaxdiff train run>` or "
                         "`env=<name> policy=random` (e.g. env=smax_zerg_5v5).")
    opt = {k: parse_count(k, kv.get(k, DEFAULTS[k])) for k in DEFAULTS}
    burn_in = parse_count("burn_in", kv["burn_in"]) if "burn_in" in kv else None
    deterministic = _bool("deterministic", kv.get("deterministic", "false"))
    overwrite = _bool("overwrite", kv.get("overwrite", "false"))
    progress = _bool("progress", kv.get("progress", "true"))

    if run_dir:
        policy, run_env, spec = run_policy(run_dir, member=opt["member"],
                                           deterministic=deterministic)
        env_name = kv.get("env", spec.env)
        if env_name != spec.env:
            raise ValueError(f"`env={env_name}` differs from the run's env `{spec.env}`; the "
                             f"policy only fits its own env (change options with env.<key>=).")
        env_kwargs = {**spec.env_kwargs, **env_over}
        env = envs_lib.make(env_name, **env_kwargs) if env_over else run_env
        a, b = env.spec, run_env.spec
        if (a.n_agents, a.obs_dim, a.act_dim, a.discrete) != (b.n_agents, b.obs_dim, b.act_dim,
                                                             b.discrete):
            raise ValueError(f"env options {env_over} change the observation/action sizes of "
                             f"`{env_name}`, so the run's policy cannot act in it.")
        if policy_name == "random":
            policy = random_policy(env)
    else:
        env_name = kv["env"]
        env_kwargs = {**env_config(env_name), **env_over}
        env = envs_lib.make(env_name, **env_kwargs)
        policy = random_policy(env)
    tag = "random" if policy.name == "random" else os.path.basename(os.path.normpath(run_dir))
    out = kv.get("out") or os.path.join("datasets", f"{env_name}_{tag}_{opt['samples']}")
    print(f"[jaxdiff] collect {env_name} with the {policy.name} policy"
          + (f" of {run_dir}" if policy.name == "run" else "")
          + f": {opt['samples']:,} train + {opt['test_samples']:,} test joint samples, "
            f"H={opt['history']}, {min(opt['num_envs'], opt['samples'], opt['test_samples'])} "
            f"envs -> {out}", file=sys.stderr)
    data = collect(env, policy, out, samples=opt["samples"], test_samples=opt["test_samples"],
                   history=opt["history"], num_envs=opt["num_envs"], burn_in=burn_in,
                   seed=opt["seed"], chunk_steps=opt["chunk_steps"], overwrite=overwrite,
                   progress=progress, env_name=env_name, env_kwargs=env_kwargs)
    m = data.meta
    print(f"dataset: {data.path} ({data.train.samples:,} train / {data.test.samples:,} test "
          f"joint samples, tau dim {m['tau_dim']}, state dim {m['state_dim']}"
          f"{' in [0, 1]' if m['state_normalised'] else ''}; {m['collect_s']:.1f} s). "
          f"Open it with jaxdiff.data.load_dataset(path).")
    return 0


# ---- `jaxdiff list` / `jaxdiff help`: what exists, and every setting with its doc ----------

LISTABLE = ("algos", "envs", "sweeps")


def _first_line(text: str | None) -> str:
    lines = [x.strip() for x in (text or "").strip().splitlines()]
    return lines[0] if lines else ""


def _yaml_comments(path: Path) -> dict[str, str]:
    """`key: value  # comment` -> {key: comment}: the env YAMLs document their options inline."""
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, rest = line.partition(":")
            if sep and not line.startswith((" ", "#")) and "#" in rest:
                out[key.strip()] = rest.split("#", 1)[1].strip()
    return out


def _sweep_description(path: Path) -> str:
    import yaml
    doc = yaml.safe_load(path.read_text()) or {}
    if isinstance(doc, dict) and doc.get("description"):
        return _first_line(str(doc["description"]))
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return f"{doc.get('algo', '?')} on {doc.get('env', '?')}"


def list_lines(what: str = "all") -> list[str]:
    """One line per algorithm / env / sweep, each with its description (`jaxdiff list`)."""
    from jaxdiff import envs as envs_lib
    from jaxdiff.algos import base as algos

    if what not in LISTABLE + ("all",):
        close = difflib.get_close_matches(what, LISTABLE, n=1)
        hint = f" Did you mean `jaxdiff list {close[0]}`?" if close else ""
        raise UsageError(f"Cannot list `{what}`.{hint} Valid: {', '.join(LISTABLE)}.")
    lines = []
    if what in ("algos", "all"):
        usable = set(options("algo"))
        lines.append("algorithms (algo=<name>; `jaxdiff help algo=<name>` for its settings):")
        for name in algos.names():
            if name in usable:
                lines.append(f"  {name:<18} {_first_line(algos.get(name).doc)}")
    if what in ("envs", "all"):
        from jaxdiff.envs import registry
        lines.append("envs (env=<name>; `jaxdiff help env=<name>` for its options):")
        for name in envs_lib.names():
            lines.append(f"  {name:<28} {_first_line(registry._factory(name).__doc__)}")
    if what in ("sweeps", "all"):
        lines.append("sweeps (jaxdiff sweep sweep=<name>; files in configs/sweep/):")
        for name in options("sweep"):
            lines.append(f"  {name:<18} {_sweep_description(CONFIG_DIR / 'sweep' / f'{name}.yaml')}")
    return lines


def _range_text(meta: dict) -> str:
    if meta.get("choices") is not None:
        return "one of " + "|".join(map(str, meta["choices"]))
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is None and hi is None:
        return ""
    return f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"


def algo_help(name: str) -> list[str]:
    """Every `algo.<key>` of algorithm `name`: default, range or choices, the per-env-family
    presets of configs/algo/<name>.yaml, and its doc."""
    import yaml

    from jaxdiff.algos import base as algos
    _choose("algo", name, sorted(set(algos.names()) & set(options("algo"))))
    algorithm = algos.get(name)
    presets = (yaml.safe_load((CONFIG_DIR / "algo" / f"{name}.yaml").read_text()) or {}).get(
        "presets") or {}
    lines = [f"{name}: {algorithm.doc}",
             "Settings: `algo.<key>=<value>`. A per-env-family preset (configs/algo/"
             f"{name}.yaml) replaces the default on envs of that family; your value replaces "
             "both.",
             "static = shape-changing (one compile per value in a sweep); dynamic = a float "
             "that sweeps vmap over.", ""]
    for key, field in algos.config_fields(algorithm.Config).items():
        meta = field.metadata
        kind = "static" if meta.get("static", True) else "dynamic"
        rng = _range_text(meta)
        fam = ", ".join(f"{f}: {p[key]!r}" for f, p in presets.items() if key in (p or {}))
        lines.append(f"  algo.{key} = {field.default!r}  ({type(field.default).__name__}, "
                     f"{kind}{', ' + rng if rng else ''})"
                     + (f"  presets: {fam}" if fam else ""))
        if meta.get("doc"):
            lines.append(f"      {meta['doc']}")
    owned = sorted({v for v in algos.RUNNER_KEYS.values() if "=" not in v})
    lines += ["", f"Set by the runner, top-level only: {', '.join(owned)} "
                  f"(e.g. `total_steps=100000`, not `algo.total_steps`)."]
    return lines


def env_help(name: str) -> list[str]:
    """Every `env.<key>` of env `name`: the factory's default, the value configs/env/<name>.yaml
    sets (what `jaxdiff train env=<name>` uses) and its doc."""
    from jaxdiff import envs as envs_lib
    from jaxdiff.envs import registry
    try:
        defaults = envs_lib.options(name)
    except envs_lib.UnknownEnvError as e:
        raise UsageError(str(e)) from None
    yaml_cfg = env_config(name)
    docs = _yaml_comments(CONFIG_DIR / "env" / f"{name}.yaml")
    lines = [f"{name}: {_first_line(registry._factory(name).__doc__)}",
             f"Options: `env.<key>=<value>` (defaults from configs/env/{name}.yaml where it "
             f"exists, else the env factory's).", ""]
    for key, default in defaults.items():
        value = yaml_cfg.get(key, default)
        note = f"  (factory default {default!r})" if key in yaml_cfg and value != default else ""
        lines.append(f"  env.{key} = {value!r}{note}")
        if docs.get(key):
            lines.append(f"      {docs[key]}")
    wrappers = envs_lib.wrapper_options()
    if wrappers:
        lines.append(f"  every env also accepts: {', '.join('env.' + w for w in wrappers)} "
                     f"(default off)")
    return lines


# ---- default run folders ---------------------------------------------------------------------

RUN_KEYS = ("seeds", "total_steps", "seed", "chunks", "eval_episodes", "checkpoint_every")
MAX_RUN_NAME = 96


def _short(value) -> str:
    import re
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = ",".join(_short(v) for v in value)
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._,+-]+", "_", text).strip("_") or "_"


def _same(a, b) -> bool:
    """Equal as settings: `1e-3` (YAML reads it as a string) equals 0.001."""
    def norm(v):
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                return v
        return v
    return a == b or norm(a) == norm(b)


def changed_settings(cfg: dict) -> dict[str, Any]:
    """The settings of a composed config (`compose(argv)`) that differ from what
    `compose(["algo=<a>", "env=<e>"])` gives: name -> value, env options first, then algo
    settings, then top-level ones (`seeds`, `total_steps`, ...). An env option named like an
    algorithm setting is prefixed `env.`."""
    base = compose([f"algo={cfg['algo_name']}", f"env={cfg['env_name']}"])
    missing = object()
    env_diff = {k: v for k, v in sorted(cfg["env"].items())
                if not _same(base["env"].get(k, missing), v)}
    algo_diff = {k: v for k, v in sorted(cfg["algo"].items())
                 if not _same(base["algo"].get(k, missing), v)}
    out = {(f"env.{k}" if k in algo_diff else k): v for k, v in env_diff.items()}
    out.update(algo_diff)
    for key in RUN_KEYS:
        try:
            value, default = top_int(cfg, key), top_int(base, key)
        except UsageError:
            value, default = cfg.get(key), base.get(key)
        if value != default:
            out[key] = value
    return out


def default_run_dir(cfg: dict, root: str = "runs") -> str:
    """`runs/<algo>-<env>[-<key>=<value>...]` from the settings that differ from the defaults
    (`changed_settings`), so runs with different overrides never share (and refuse) a folder.
    A name longer than MAX_RUN_NAME keeps its readable start and ends in a hash of all the
    changed settings."""
    import hashlib
    import json

    changed = changed_settings(cfg)
    parts = [cfg["algo_name"], cfg["env_name"]] + [f"{k}={_short(v)}" for k, v in changed.items()]
    name = "-".join(parts)
    if len(name) > MAX_RUN_NAME:
        digest = hashlib.sha1(json.dumps(changed, sort_keys=True, default=str).encode())
        name = name[:MAX_RUN_NAME - 10].rstrip("-") + "-h" + digest.hexdigest()[:8]
    return os.path.join(root, name)
