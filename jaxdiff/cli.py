"""`jaxdiff train|sweep|eval|bench|collect`: Hydra-composed configs, validated before anything compiles.

    jaxdiff train algo=<name> env=<name> seeds=<n> total_steps=<int> run_dir=<path> [algo.k=v] [env.k=v]
    jaxdiff sweep sweep=<name> [seeds=<n>] [total_steps=<int>] [out=<dir>]
    jaxdiff eval run_dir=<path> [episodes=<n>] [video=<file.gif>]
    jaxdiff bench [quick=true] [only=<substring>]
    jaxdiff collect (run_dir=<path> | env=<name> policy=random) [samples=100K] [history=5] [out=<dir>]
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


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _choose(group: str, value: str, valid: list[str]) -> None:
    if value not in valid:
        close = difflib.get_close_matches(value, valid, n=1)
        hint = f" Did you mean `{group}={close[0]}`?" if close else ""
        raise UsageError(f"Unknown {group} `{value}`.{hint} Valid names: {', '.join(valid)}.")


def _parse(argv: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for arg in argv:
        if "=" not in arg:
            raise UsageError(f"Cannot read argument `{arg}`: arguments are `key=value` "
                             f"(e.g. `algo=mappo`, `algo.lr=3e-4`, `seeds=3`).")
        key, value = arg.split("=", 1)
        pairs.append((key.lstrip("+"), value))
    return pairs


def _yaml_value(text: str) -> Any:
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

    pairs = _parse(argv)
    chosen = dict(algo="mappo", env="mpe_simple_spread")
    for key, value in pairs:
        if key in ("algo", "env"):
            chosen[key] = value
    _choose("algo", chosen["algo"], sorted(set(algos.names()) & set(_options("algo"))))
    env_names = _options("env")
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
            user_algo[sub] = _yaml_value(value)
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
            env_cfg[key[4:]] = _yaml_value(value)
    cfg.update(algo_name=chosen["algo"], env_name=chosen["env"], algo=algo_cfg, env=env_cfg)
    return cfg


def _spec(cfg: dict):
    from jaxdiff.run.runner import RunSpec
    return RunSpec(algo=cfg["algo_name"], env=cfg["env_name"], env_kwargs=cfg["env"],
                   algo_overrides=cfg["algo"], seeds=int(cfg["seeds"]),
                   total_steps=int(float(cfg["total_steps"])), seed=int(cfg["seed"]),
                   chunks=int(cfg["chunks"]), eval_episodes=int(cfg["eval_episodes"]),
                   checkpoint_every=int(cfg["checkpoint_every"]))


def cmd_train(argv: list[str]) -> int:
    from jaxdiff.run import runner
    cfg = compose(argv)
    spec = _spec(cfg)
    run_dir = cfg["run_dir"] or os.path.join(
        "runs", f"{spec.algo}_{spec.env}_{spec.seeds}s_{spec.total_steps}")
    runner.prepare(spec)  # every config error surfaces here, before any compile
    print(f"[jaxdiff] {spec.algo} on {spec.env}, {spec.seeds} seed(s), {spec.total_steps:,} env "
          f"steps per seed -> {run_dir}", file=sys.stderr)
    summary = runner.train(spec, run_dir, progress=bool(cfg["progress"]),
                           tensorboard=bool(cfg["tensorboard"]))
    _print_summary(summary, run_dir)
    return 0 if summary.get("complete", True) else 130


def _print_summary(summary: dict, run_dir: str) -> None:
    f, b = summary["final"], summary["best"]
    line = (f"final eval return {f.get('return_mean', float('nan')):.3f} "
            f"± {f.get('return_std', float('nan')):.3f} (IQM {f.get('return_iqm', float('nan')):.3f})"
            f", best {b.get('return_mean', float('nan')):.3f}")
    if "win_rate_mean" in f:
        line += f", win rate {f['win_rate_mean']:.3f}"
    sps = summary.get("env_steps_per_s")
    if sps:
        line += f"; {sps:,.0f} env-steps/s over all seeds, compile {summary['compile_s']:.1f} s"
    print(line)
    print(f"run directory: {os.path.abspath(run_dir)} (summary.json, metrics.jsonl, curves.png, "
          f"checkpoints/)")


def cmd_eval(argv: list[str]) -> int:
    from jaxdiff.run import evaluate
    kv = dict(_parse(argv))
    if "run_dir" not in kv:
        raise UsageError("`jaxdiff eval` needs `run_dir=<path>` (a folder written by jaxdiff train).")
    unknown = set(kv) - {"run_dir", "episodes", "video", "seed", "debug"}
    if unknown:
        raise UsageError(f"Unknown eval setting(s) {sorted(unknown)}; valid: run_dir, episodes, "
                         f"video, seed.")
    evaluate.main(kv["run_dir"], episodes=int(kv.get("episodes", 100)), video=kv.get("video"),
                  seed=int(kv.get("seed", 1)))
    return 0


def cmd_sweep(argv: list[str]) -> int:
    from jaxdiff.run import sweep
    kv = dict(_parse(argv))
    name = kv.pop("sweep", None)
    if name is None:
        raise UsageError(f"`jaxdiff sweep` needs `sweep=<name>`; valid: {', '.join(_options('sweep'))}.")
    _choose("sweep", name, _options("sweep"))
    kv.pop("debug", None)
    sweep.main(CONFIG_DIR / "sweep" / f"{name}.yaml", overrides=kv, compose=compose)
    return 0


def cmd_bench(argv: list[str]) -> int:
    from jaxdiff.run import bench
    kv = dict(_parse(argv))
    kv.pop("debug", None)
    bench.main(**kv)
    return 0


def cmd_collect(argv: list[str]) -> int:
    from jaxdiff.data import collect
    return collect.main(_parse(argv))


COMMANDS = dict(train=cmd_train, eval=cmd_eval, sweep=cmd_sweep, bench=cmd_bench,
                collect=cmd_collect)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    debug = any(a.lower() in ("debug=true", "debug=1") for a in rest)
    if cmd not in COMMANDS:
        print(f"jaxdiff: unknown command `{cmd}`; valid: {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return COMMANDS[cmd](rest)
    except KeyboardInterrupt:
        print("jaxdiff: aborted.", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- user-facing boundary
        if debug:
            raise
        from jaxdiff.run.errors import user_facing
        if not user_facing(e):
            raise
        print(f"jaxdiff {cmd}: {e}\n(add debug=true for a traceback)", file=sys.stderr)
        return 3 if type(e).__name__ == "NonFiniteError" else 2


if __name__ == "__main__":
    sys.exit(main())
