"""The Python entry point: `jaxdiff.train`, `jaxdiff.sweep`, `jaxdiff.evaluate`.

These compose settings exactly as the `jaxdiff` command does (`jaxdiff.config.compose`: Hydra
groups, the algorithm's per-env-family presets, then your overrides), so

    jaxdiff.train(algo="mappo", env="smax_3m", seeds=2, total_steps=200_000, lr=1e-3)

runs what `jaxdiff train algo=mappo env=smax_3m seeds=2 total_steps=200000 algo.lr=1e-3`
runs, in the same default folder, and resumes it the same way. Keyword overrides: a top-level
setting by its name (`seed`, `chunks`, `eval_episodes`, `checkpoint_every`, `run_dir`,
`tensorboard`, `progress`, `debug`), an algorithm setting by its name (`lr=1e-3` means
`algo.lr=1e-3`), an env option through `env_kwargs={...}`; dotted names work too
(`**{"algo.lr": 1e-3, "env.action_type": "continuous"}`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from jaxdiff import config as cfglib


@dataclasses.dataclass
class Result:
    """What a training run produced: `summary` (the dict written to summary.json), `run_dir`,
    `state` (the final training state, ensemble axis first: seeds x grid points) and `spec`
    (the `RunSpec` that defines the run)."""
    summary: dict
    run_dir: str
    state: Any
    spec: Any


@dataclasses.dataclass
class SweepResult:
    """`rows` (one per grid point, as in results.json) and `out_dir` (results.md, sweep.png and
    one run folder per shape-changing combination)."""
    rows: list
    out_dir: str


def _text(value) -> str:
    """A Python value as the command line would spell it (YAML flow style)."""
    import yaml
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def argv(algo: str = "mappo", env: str = "mpe_simple_spread", *, env_kwargs: dict | None = None,
         **overrides) -> list[str]:
    """The `jaxdiff train` arguments equivalent to these keyword settings."""
    out = [f"algo={algo}", f"env={env}"]
    for key, value in (env_kwargs or {}).items():
        out.append(f"env.{key}={_text(value)}")
    for key, value in overrides.items():
        if value is None and key in ("seeds", "total_steps"):
            continue                   # not given: the configs' default
        if key in cfglib.TOP_KEYS or "." in key:
            out.append(f"{key}={_text(value)}")
        else:
            out.append(f"algo.{key}={_text(value)}")
    return out


def compose(algo: str = "mappo", env: str = "mpe_simple_spread", **overrides) -> dict:
    """The composed settings (`jaxdiff.config.compose`) of these keyword settings, without
    training: `compose(algo="mappo", env="smax_3m")["algo"]` shows the SMAX preset."""
    return cfglib.compose(argv(algo, env, **overrides))


def train(algo: str = "mappo", env: str = "mpe_simple_spread", seeds: int | None = None,
          total_steps: int | None = None, *, env_kwargs: dict | None = None,
          progress: bool = False, **overrides) -> Result:
    """Train (or resume) a run and return its `Result`. `seeds`/`total_steps` default to the
    configs' (3 and 1,000,000); see the module docstring for `overrides`. Errors in the settings
    are raised before anything compiles, with the message the command line prints."""
    from jaxdiff.run import runner
    cfg = compose(algo, env, seeds=seeds, total_steps=total_steps, env_kwargs=env_kwargs,
                  progress=progress, **overrides)
    spec = cfglib.run_spec(cfg)
    run_dir = cfg["run_dir"] or cfglib.default_run_dir(cfg)
    runner.prepare(spec)
    summary = runner.train(spec, run_dir, progress=bool(cfg["progress"]),
                           tensorboard=bool(cfg["tensorboard"]), debug=bool(cfg["debug"]))
    state = runner.restore_state(run_dir)[4]
    return Result(summary=summary, run_dir=run_dir, state=state, spec=spec)


def sweep(name: str, *, seeds: int | None = None, total_steps: int | None = None,
          out: str | None = None, progress: bool = False) -> SweepResult:
    """Run configs/sweep/<name>.yaml (`jaxdiff list sweeps`) as `jaxdiff sweep sweep=<name>`
    does; returns its rows and output folder."""
    import os

    from jaxdiff.run import sweep as sweep_lib
    cfglib._choose("sweep", name, cfglib.options("sweep"))
    path = cfglib.CONFIG_DIR / "sweep" / f"{name}.yaml"
    doc = sweep_lib.load(path)
    out = out or os.path.join("runs", "sweeps", name)
    rows = sweep_lib.run(doc, out, seeds=seeds, total_steps=total_steps,
                         compose=cfglib.compose, progress=progress)
    return SweepResult(rows=rows, out_dir=out)


def evaluate(run_dir: str, episodes: int = 100, *, seed: int = 1,
             video: str | None = None) -> dict:
    """Evaluate a run's last checkpoint as `jaxdiff eval` does (writes <run_dir>/eval.json);
    returns {episodes, members: [per grid point and seed], mean}."""
    from jaxdiff.run import evaluate as evaluate_lib
    return evaluate_lib.main(run_dir, episodes=episodes, video=video, seed=seed)
