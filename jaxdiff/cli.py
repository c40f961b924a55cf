"""`jaxdiff train|sweep|eval|bench|collect`: Hydra-composed configs, validated before anything compiles.

    jaxdiff train algo=<name> env=<name> seeds=<n> total_steps=<int> run_dir=<path> [algo.k=v] [env.k=v]
    jaxdiff sweep sweep=<name> [seeds=<n>] [total_steps=<int>] [out=<dir>]
    jaxdiff eval run_dir=<path> [episodes=<n>] [video=<file.gif>]
    jaxdiff bench [quick=true] [only=<substring>]
    jaxdiff collect (run_dir=<path> | env=<name> policy=random) [samples=100K] [history=5] [out=<dir>]
"""
from __future__ import annotations

import os
import sys

from jaxdiff.config import (CONFIG_DIR, UsageError, _choose, collect_command, compose, options,
                            parse, run_spec)

def cmd_train(argv: list[str]) -> int:
    from jaxdiff.run import runner
    cfg = compose(argv)
    spec = run_spec(cfg)
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
    kv = dict(parse(argv))
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
    kv = dict(parse(argv))
    name = kv.pop("sweep", None)
    if name is None:
        raise UsageError(f"`jaxdiff sweep` needs `sweep=<name>`; valid: {', '.join(options('sweep'))}.")
    _choose("sweep", name, options("sweep"))
    kv.pop("debug", None)
    sweep.main(CONFIG_DIR / "sweep" / f"{name}.yaml", overrides=kv, compose=compose)
    return 0


def cmd_bench(argv: list[str]) -> int:
    from jaxdiff.benchmarks import bench
    kv = dict(parse(argv))
    kv.pop("debug", None)
    bench.main(**kv)
    return 0


def cmd_collect(argv: list[str]) -> int:
    return collect_command(parse(argv))


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
