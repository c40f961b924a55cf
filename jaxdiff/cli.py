"""`jaxdiff train|sweep|eval|bench|collect|list|help`: Hydra-composed configs, validated before anything compiles.

    jaxdiff train algo=<name> env=<name> seeds=<n> total_steps=<int> run_dir=<path> [algo.k=v] [env.k=v]
    jaxdiff sweep sweep=<name> [seeds=<n>] [total_steps=<int>] [out=<dir>]
    jaxdiff eval run_dir=<path> [episodes=<n>] [video=<file.gif>]
    jaxdiff bench [quick=true] [only=<substring>]
    jaxdiff collect (run_dir=<path> | env=<name> policy=random) [samples=100K] [history=5] [out=<dir>]
    jaxdiff list [algos|envs|sweeps]          what exists, one line each
    jaxdiff help algo=<name> | env=<name>     every setting with its doc, default and range
    jaxdiff <command> --help                  that command's usage
"""
from __future__ import annotations

import os
import sys

from jaxdiff.config import (CONFIG_DIR, UsageError, _choose, algo_help, collect_command, compose,
                            default_run_dir, env_help, list_lines, options, parse, run_spec,
                            top_bool, top_int)

# `jaxdiff <command> --help`: the usage of each command (the module docstring is the overview).
USAGE = dict(
    train="""jaxdiff train algo=<name> env=<name> [seeds=3] [total_steps=1000000] [run_dir=<path>]
              [algo.<key>=<value> ...] [env.<key>=<value> ...]
  Train (or resume: rerun the same command) `seeds` seeds of an algorithm on an env, vmapped in
  one compiled program. Top-level settings: seeds, total_steps (env steps per seed, rounded up to
  whole chunks), seed, chunks (evaluation/checkpoint points), eval_episodes, checkpoint_every,
  run_dir (default: runs/<algo>-<env>[-<settings that differ from the defaults>]),
  tensorboard=true, progress=false, debug=true (tracebacks).
  Several processes/hosts: distributed=true [coordinator=<host:port> num_processes=<n>
  process_id=<i> timeout=<s>] on every process (README, "Several processes / hosts").
  `jaxdiff list algos|envs`, `jaxdiff help algo=<name>`, `jaxdiff help env=<name>` show the
  names and settings.""",
    eval="""jaxdiff eval run_dir=<path> [episodes=100] [seed=1] [video=<file.gif|file.mp4>]
  Evaluate the last checkpoint of a run, every seed; writes <run_dir>/eval.json. `video=` saves one
  deterministic episode (MPE and SMAX envs only).""",
    sweep="""jaxdiff sweep sweep=<name> [seeds=<n>] [total_steps=<int>] [out=runs/sweeps/<name>]
              [progress=false]
  Run a YAML grid from configs/sweep/<name>.yaml (`jaxdiff list sweeps`): float settings are one
  vmapped axis, shape-changing ones one compile each. Writes results.md, results.json, sweep.png.
  distributed=true [coordinator=... num_processes=... process_id=...]: as for `jaxdiff train`.""",
    bench="""jaxdiff bench [quick=true] [only=<substring>]
  Env-steps/s and compile time of every algorithm on its envs -> bench/results/.""",
    collect="""jaxdiff collect (run_dir=<path> | env=<name> policy=random) [samples=100K] [history=5]
                [out=<dir>] [env.<key>=<value> ...]
  Roll out a trained policy (or a random one) and store (history, global state) pairs for the
  state-diffusion algorithms.""",
    list="""jaxdiff list [algos|envs|sweeps]
  One line per registered algorithm, env or sweep file, with its description (all three when
  no argument is given).""",
    help="""jaxdiff help algo=<name> | env=<name> | <command>
  algo=<name>: every `algo.<key>` with its default, type, range or choices, per-env-family preset
  and doc. env=<name>: every `env.<key>` with its default and doc. <command>: its usage.""",
)

def _start_processes(argv: list[str]) -> tuple[list[str], bool]:
    """Join the other processes of a `distributed=true` job (before anything touches a device);
    -> (the rest of the command line, whether this process prints: process 0 or the only one)."""
    from jaxdiff.run import distributed
    argv, opts = distributed.pop_options(argv)
    distributed.initialize(opts)
    return argv, distributed.is_main()


def cmd_train(argv: list[str]) -> int:
    from jaxdiff.run import runner
    argv, main = _start_processes(argv)
    cfg = compose(argv)
    spec = run_spec(cfg)
    run_dir = cfg["run_dir"] or default_run_dir(cfg)
    runner.prepare(spec)  # every config error surfaces here, before any compile
    if main:
        print(f"[jaxdiff] {spec.algo} on {spec.env}, {spec.seeds} seed(s), {spec.total_steps:,} "
              f"env steps per seed -> {run_dir}", file=sys.stderr)
    summary = runner.train(spec, run_dir, progress=top_bool(cfg, "progress"),
                           tensorboard=top_bool(cfg, "tensorboard"), debug=top_bool(cfg, "debug"))
    if not summary.get("complete", True):
        return 130  # the runner said where it stopped and how to resume; no final numbers
    if main:
        _print_summary(summary, run_dir)
    return 0


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
    kv.setdefault("episodes", 100)
    kv.setdefault("seed", 1)
    evaluate.main(kv["run_dir"], episodes=top_int(kv, "episodes"), video=kv.get("video"),
                  seed=top_int(kv, "seed"))
    return 0


def cmd_sweep(argv: list[str]) -> int:
    from jaxdiff.run import sweep
    argv, _ = _start_processes(argv)
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


def cmd_list(argv: list[str]) -> int:
    if len(argv) > 1:
        raise UsageError(f"`jaxdiff list` takes at most one of algos, envs, sweeps; got {argv}.")
    print("\n".join(list_lines(argv[0] if argv else "all")))
    return 0


def cmd_help(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 0
    if len(argv) == 1 and "=" not in argv[0]:
        return _usage(argv[0])
    kv = parse(argv)
    if len(kv) != 1 or kv[0][0] not in ("algo", "env"):
        raise UsageError("`jaxdiff help` takes one of `algo=<name>`, `env=<name>` or a command "
                         f"name ({', '.join(COMMANDS)}).")
    key, name = kv[0]
    print("\n".join(algo_help(name) if key == "algo" else env_help(name)))
    return 0


def _usage(cmd: str) -> int:
    if cmd not in COMMANDS:
        import difflib
        close = difflib.get_close_matches(cmd, list(COMMANDS), n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        print(f"jaxdiff: unknown command `{cmd}`.{hint} Valid: {', '.join(COMMANDS)}.",
              file=sys.stderr)
        return 2
    print("usage: " + (USAGE.get(cmd) or (COMMANDS[cmd].__doc__ or "").strip() or cmd))
    return 0


def cmd_compare(argv: list[str]) -> int:
    """jaxdiff compare <run or sweep folder> ... [out=runs/compare]
  Overlay the evaluation curves of runs (mean over seeds, min..max band) and write a table of
  final and best evaluation return with IQM and 95% stratified bootstrap CIs (rliable), plus
  marl_eval.json for marl-eval's tools -> out/compare.{md,json,png}."""
    from jaxdiff.run import compare
    folders = [a for a in argv if "=" not in a]
    kv = dict(parse([a for a in argv if "=" in a]))
    kv.pop("debug", None)
    out = kv.pop("out", "runs/compare")
    if kv:
        raise UsageError(f"Unknown compare setting(s) {sorted(kv)}; valid: out=<dir>.")
    compare.main(folders, out=out)
    return 0


COMMANDS = dict(train=cmd_train, eval=cmd_eval, sweep=cmd_sweep, bench=cmd_bench,
                collect=cmd_collect, list=cmd_list, help=cmd_help,
                compare=cmd_compare)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The command owns its process: one XLA host device per core, before anything imports jax
    # (importing jaxdiff as a library sets nothing).
    import jaxdiff
    jaxdiff.use_host_devices()
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    debug = any(a.lower() in ("debug=true", "debug=1") for a in rest)
    if cmd not in COMMANDS:
        return _usage(cmd)
    if any(a in ("-h", "--help") for a in rest):
        return _usage(cmd)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return COMMANDS[cmd](rest)
    except KeyboardInterrupt as e:
        _tell_peers(e)
        print("jaxdiff: aborted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `jaxdiff help ... | head`: the reader left; not an error
        sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as e:  # noqa: BLE001 -- user-facing boundary
        _tell_peers(e)
        if debug:
            raise
        from jaxdiff.run.errors import user_facing
        if not user_facing(e):
            raise
        print(f"jaxdiff {cmd}: {e}\n(add debug=true for a traceback)", file=sys.stderr)
        if type(e).__name__ == "DistributedError":   # a peer is gone: do not wait for it
            sys.modules["jaxdiff.run.distributed"].exit_now(2)
        return 3 if type(e).__name__ == "NonFiniteError" else 2


def _tell_peers(e: BaseException) -> None:
    """In a `distributed=true` job, end the other processes' waits with this error's message."""
    if "jaxdiff.run.distributed" in sys.modules:
        sys.modules["jaxdiff.run.distributed"].report_failure(e)


if __name__ == "__main__":
    sys.exit(main())
