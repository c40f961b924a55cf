"""Config composition: the command line (`key=value` pairs) -> validated settings, exactly as
`jaxdiff train` composes them (Hydra groups in configs/, the algorithm's per-env-family presets,
then the user's overrides). The CLI, the benchmarks, `jaxdiff collect` and the experiments all
compose through here.

    cfg = compose(["algo=mappo", "env=smax_3m", "algo.lr=1e-3"])
    spec = run_spec(cfg)          # a jaxdiff.run.runner.RunSpec
"""
from __future__ import annotations

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


def yaml_value(text: str) -> Any:
    import yaml
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


def run_spec(cfg: dict):
    """The `RunSpec` of a composed config (`compose(argv)`)."""
    from jaxdiff.run.runner import RunSpec
    return RunSpec(algo=cfg["algo_name"], env=cfg["env_name"], env_kwargs=cfg["env"],
                   algo_overrides=cfg["algo"], seeds=int(cfg["seeds"]),
                   total_steps=int(float(cfg["total_steps"])), seed=int(cfg["seed"]),
                   chunks=int(cfg["chunks"]), eval_episodes=int(cfg["eval_episodes"]),
                   checkpoint_every=int(cfg["checkpoint_every"]))


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
