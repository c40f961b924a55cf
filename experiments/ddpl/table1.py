"""Paper 002 (DDPL), Table 1: DDPL, DDPL-Gaussian, HASAC, HAPPO, MAPPO on every Table 1 task
that runs in JAX, next to the paper's numbers.

    python experiments/ddpl/table1.py --scale tiny --tasks mpe     # harness check, ~10 min CPU
    python experiments/ddpl/table1.py --scale cpu                  # CPU budgets (hours per cell)
    python experiments/ddpl/table1.py --scale paper                # the paper's budgets (a GPU)
    python experiments/ddpl/table1.py --scale paper --plan         # print the cells, run nothing
    python experiments/ddpl/table1.py --table-only                 # rewrite table1.md from JSON

Cells: one per (task, algorithm); each trains `seeds` seeds (vmapped, one program) through the
runner and is reduced by `jaxdiff.run.logging.highest_mean`: the evaluation point where the
across-seed mean return is highest, ± the across-seed std at that point (spec-ddpl §4.11, the
protocol of the paper's Table 1). Every cell is its own run folder under
results/runs/<scale>/ (git-ignored checkpoints), so an interrupted invocation resumes and cells
already done are reused; the JSON keeps the cells of earlier invocations (other --tasks/--algos)
of the same scale.

Scales [CHOICE] (spec-ddpl §5.1 budgets; evaluation every 5e4 MPE, 5e5 SMAX, 1e5 MABrax steps):

| | tiny | cpu | paper (a GPU) |
|---|---|---|---|
| env steps per seed | 3,000 | MPE/SMAX 1e6, MABrax 2e5 | MPE 5e6, SMAX 5e7, MABrax 1e7 |
| evaluation points | 3 | 20 | 100 |
| eval episodes | 8 | 16 (MABrax 4) | 50 |
| DDPL/HASAC warm-up, buffer | 500, 5e3 | presets (1e4/3e4), 1e5 | presets, 1e6 (1e5 HumanoidStandup) |
| HASAC net | presets | presets | HARL's 256 wide, batch 1000 |
| MAPPO/HAPPO rollout | 8 envs x 64 | presets | presets |

`tiny` proves the harness (numbers meaningless: a few hundred updates); DDPL trains at about
50-150 env steps/s on a 2-core CPU (one update of 256 samples x 20 denoising steps per 20 env
steps), so `cpu` is hours per cell and `paper` needs a GPU. The output states the scale.

Env mapping (spec-ddpl §4.9): MPE Simple-Reference and SMAX with `env.action_type=continuous`;
MaMuJoCo Ant / HumanoidStandup -> MABrax partitions (Brax physics and rewards: absolute returns
are not comparable with the paper's MuJoCo numbers, only orderings); ShadowHandOver (IsaacLab)
has no JAX version and is listed as not run.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

import jaxdiff

jaxdiff.use_host_devices()  # one XLA host device per core, before JAX starts

# isort: split
from jaxdiff.config import compose
from jaxdiff.run import logging as runlog
from jaxdiff.run import runner

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
ALGOS = ("ddpl", "ddpl_gaussian", "hasac", "happo", "mappo")
PAPER_ALGOS = ("ddpl", "hasac", "happo", "mappo")     # Table 1 has no DDPL-Gaussian column

# task: (paper row, jaxdiff env, env options, family)
TASKS = {
    "ant_2x4": ("Ant-v2-2x4", "mabrax_ant_2x4", {}, "mabrax"),
    "ant_4x2": ("Ant-v2-4x2", "mabrax_ant_4x2", {}, "mabrax"),
    "ant_8x1": ("Ant-v2-8x1", "mabrax_ant_8x1", {}, "mabrax"),
    "humanoidstandup_17x1": ("HumanoidStandup-v2-17x1", "mabrax_humanoidstandup_17x1", {},
                             "mabrax"),
    "mpe": ("Simple-Reference-v2", "mpe_simple_reference", {"action_type": "continuous"}, "mpe"),
    "shadowhandover": ("ShadowHandOver", None, {}, None),
    "3s_vs_5z": ("3s_vs_5z", "smax_3s_vs_5z", {"action_type": "continuous"}, "smax"),
    "6h_vs_8z": ("6h_vs_8z", "smax_6h_vs_8z", {"action_type": "continuous"}, "smax"),
}
NOT_RUN = {"shadowhandover": "IsaacLab (Isaac Sim / PhysX) has no JAX version; out of scope "
                             "(spec-ddpl §6.5)"}

# Spec-ddpl §6.3, verbatim from the paper: (mean, std) per row, columns DDPL HASAC HAPPO MAPPO.
PAPER = {
    "Ant-v2-2x4": ((6650.32, 94.18), (6301.93, 422.64), (5881.92, 87.50), (5215.60, 922.76)),
    "Ant-v2-4x2": ((6460.28, 242.05), (6408.54, 161.96), (6176.43, 22.57), (6011.51, 195.10)),
    "Ant-v2-8x1": ((6633.27, 121.71), (6204.69, 153.57), (5949.69, 45.61), (4977.60, 706.16)),
    "HumanoidStandup-v2-17x1": ((172373.97, 24918.25), (160698.78, 2993.16),
                                (167491.90, 10143.52), (116959.76, 11131.91)),
    "Simple-Reference-v2": ((-10.35, 0.52), (-9.59, 0.35), (-15.89, 1.31), (-14.20, 1.92)),
    "ShadowHandOver": ((669.25, 44.82), (532.07, 26.87), (18.07, 1.65), (16.68, 0.60)),
    "3s_vs_5z": ((2.00, 0.00), (0.86, 0.06), (0.59, 0.03), (0.42, 0.01)),
    "6h_vs_8z": ((1.97, 0.02), (0.77, 0.03), (0.71, 0.03), (0.65, 0.02)),
}

# Budgets per env family and scale: (env steps per seed, evaluation points, eval episodes).
BUDGET = {
    "tiny": {"mpe": (3_000, 3, 8), "smax": (3_000, 3, 8), "mabrax": (3_000, 3, 2)},
    "cpu": {"mpe": (1_000_000, 20, 16), "smax": (1_000_000, 20, 16),
            "mabrax": (200_000, 20, 4)},
    "paper": {"mpe": (5_000_000, 100, 50), "smax": (50_000_000, 100, 50),
              "mabrax": (10_000_000, 100, 50)},
}


def overrides(scale: str, algo: str, task: str) -> dict:
    """`algo.*` settings of a cell on top of the algorithm's env-family preset."""
    if scale == "tiny":
        if algo in ("ddpl", "ddpl_gaussian", "hasac"):
            return dict(warmup_steps=500, buffer_size=5_000)
        return dict(num_envs=8, num_steps=64)
    if scale == "paper":
        big = 100_000 if task == "humanoidstandup_17x1" else 1_000_000  # 17 x 244-dim obs
        if algo in ("ddpl", "ddpl_gaussian"):
            return dict(buffer_size=big)
        if algo == "hasac":
            return dict(hidden=256, batch_size=1000, buffer_size=big)
    return {}


def cell_spec(scale: str, algo: str, task: str, seeds: int) -> runner.RunSpec:
    _, env, env_kw, family = TASKS[task]
    steps, points, episodes = BUDGET[scale][family]
    argv = [f"algo={algo}", f"env={env}"] + [f"env.{k}={v}" for k, v in env_kw.items()]
    argv += [f"algo.{k}={v}" for k, v in overrides(scale, algo, task).items()]
    cfg = compose(argv)
    return runner.RunSpec(algo=algo, env=env, env_kwargs=cfg["env"], algo_overrides=cfg["algo"],
                          seeds=seeds, total_steps=steps, chunks=points, eval_episodes=episodes)


def run_cell(scale: str, algo: str, task: str, seeds: int) -> dict:
    spec = cell_spec(scale, algo, task, seeds)
    run_dir = os.path.join(RESULTS, "runs", scale, f"{algo}_{task}")
    t = time.time()
    summary = runner.train(spec, run_dir, progress=True)
    rows = runlog.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    out = dict(task=task, algo=algo, env=spec.env, env_kwargs=spec.env_kwargs,
               algo_overrides=spec.algo_overrides, steps=spec.total_steps, seeds=seeds,
               eval_points=spec.chunks, eval_episodes=spec.eval_episodes,
               highest=runlog.highest_mean(rows), final=summary["final"],
               env_steps_per_s=summary["env_steps_per_s"], compile_s=summary["compile_s"],
               wall_s=time.time() - t, complete=summary.get("complete", True),
               run_dir=os.path.relpath(run_dir, HERE))
    if any("eval_win_rate" in r for r in rows):
        out["highest_win_rate"] = runlog.highest_mean(rows, "eval_win_rate")
    return out


def _commit() -> str:
    from jaxdiff.run.logging import git_commit
    return git_commit(HERE)


def _pm(h: dict | None, digits: int = 2) -> str:
    if not h:
        return "–"
    return f"{h['mean']:.{digits}f} ± {h['std']:.{digits}f}"


def markdown(doc: dict) -> str:
    cells = {(c["task"], c["algo"]): c for c in doc["cells"]}
    scale = doc["scale"]
    lines = [f"# DDPL Table 1 (paper 002) at scale `{scale}`", "",
             f"Commit {doc['commit']}; command `{doc['command']}`; {doc['machine']}.", "",
             f"**Scale `{scale}`**: env steps per seed: "
             + ", ".join(f"{f} {BUDGET[scale][f][0]:,}" for f in ("mpe", "smax", "mabrax"))
             + " (paper: MPE 5e6, SMAX 5e7, MABrax/MaMuJoCo 1e7). "
             + ("These are harness checks, far too short to compare with the paper: numbers "
                "here say only that each algorithm trains and evaluates on the task."
                if scale != "paper" else ""), "",
             "Ours: highest across-seed mean evaluation return over the evaluation points ± the "
             "across-seed std at that point (spec-ddpl §4.11), `eval_return` of the runner "
             "(DDPL samples its diffusion policy: stochastic; the Gaussian/PPO policies: their "
             "mean action). Paper: Table 1 verbatim (MaMuJoCo v2 / PettingZoo MPE v2 / IsaacLab;"
             " ours: MABrax / JaxMARL MPE v3 / SMAX -- compare orderings, not values). "
             "`not run` = no cell at this scale yet.", "",
             "| task | env | " + " | ".join(f"{a} (ours)" for a in ALGOS)
             + " | " + " | ".join(f"{a} (paper)" for a in PAPER_ALGOS) + " |",
             "|---|---|" + "---|" * (len(ALGOS) + len(PAPER_ALGOS))]
    for task, (row, env, _, _) in TASKS.items():
        if task in NOT_RUN:
            ours = [f"not run: {NOT_RUN[task]}"] + [""] * (len(ALGOS) - 1)
        else:
            ours = []
            for a in ALGOS:
                c = cells.get((task, a))
                if c is None:
                    ours.append("not run")
                else:
                    digits = 3 if TASKS[task][3] == "smax" else 2
                    ours.append(_pm(c["highest"], digits) + f" @{c['highest'].get('step', 0):,}"
                                + ("" if c.get("complete", True) else " (interrupted)"))
        paper = [f"{m:.2f} ± {s:.2f}" for m, s in PAPER[row]]
        lines.append(f"| {row} | {env or '–'} | " + " | ".join(ours) + " | "
                     + " | ".join(paper) + " |")
    lines += ["", "## Cells run", "",
              "| task | algo | env steps/seed | seeds | eval points x episodes | highest mean ± "
              "std (step) | final mean ± std | env steps/s (all seeds) | compile s | wall s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in doc["cells"]:
        f = c["final"]
        lines.append(
            f"| {c['task']} | {c['algo']} | {c['steps']:,} | {c['seeds']} | "
            f"{c['eval_points']} x {c['eval_episodes']} | {_pm(c['highest'])} "
            f"({c['highest'].get('step', '–')}) | "
            f"{f.get('return_mean', float('nan')):.2f} ± {f.get('return_std', float('nan')):.2f} | "
            f"{c['env_steps_per_s'] or float('nan'):.0f} | {c['compile_s']:.0f} | "
            f"{c['wall_s']:.0f} |")
    lines += ["", "## Notes", "",
              "- Random policy on Simple-Reference (continuous): -53.97 ± 20.79 (spec-ddpl §4.9,"
              " 64 episodes); SMAX random: 0.227 (3s_vs_5z), 0.281 (6h_vs_8z); max SMAX "
              "return 2.",
              "- The paper's claims (DDPL best on 7 of 8 tasks; HASAC best on Simple-Reference; "
              "DDPL near the maximum 2 on both SMAX maps) need the paper's budgets: "
              "`--scale paper` on a GPU. At a scale below that, this table cannot confirm or "
              "refute them." + (" At `tiny` nothing can be read from the values." if scale ==
                                "tiny" else "")]
    return "\n".join(lines) + "\n"


def write(doc: dict) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "table1.json"), "w") as fh:
        json.dump(doc, fh, indent=2)
    text = markdown(doc)
    with open(os.path.join(RESULTS, "table1.md"), "w") as fh:
        fh.write(text)
    print(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", choices=tuple(BUDGET), default="tiny")
    ap.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    ap.add_argument("--tasks", nargs="+", default=[t for t in TASKS if t not in NOT_RUN],
                    choices=tuple(TASKS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--plan", action="store_true", help="print the cells; train nothing")
    ap.add_argument("--table-only", action="store_true", help="rewrite table1.md from the JSON")
    args = ap.parse_args(argv)
    path = os.path.join(RESULTS, "table1.json")
    if args.table_only:
        with open(path) as fh:
            write(json.load(fh))
        return
    todo = [(t, a) for t in args.tasks if t not in NOT_RUN for a in args.algos]
    for t in args.tasks:
        if t in NOT_RUN:
            print(f"[table1] {t}: not run -- {NOT_RUN[t]}", file=sys.stderr)
    if args.plan:
        for t, a in todo:
            s = cell_spec(args.scale, a, t, args.seeds)
            print(f"{t:22s} {a:14s} {s.env} env={s.env_kwargs} algo={s.algo_overrides} "
                  f"steps={s.total_steps:,} evals={s.chunks}x{s.eval_episodes} seeds={s.seeds}")
        return
    doc = dict(scale=args.scale, commit=_commit(),
               command="python " + " ".join(shlex.quote(x) for x in
                                            [os.path.relpath(__file__, os.getcwd())]
                                            + (argv if argv is not None else sys.argv[1:])),
               machine=f"{os.cpu_count()} CPU cores" if jaxdiff_backend() == "cpu"
               else jaxdiff_backend(), cells=[])
    if os.path.exists(path):
        with open(path) as fh:
            old = json.load(fh)
        if old.get("scale") == args.scale:   # keep other invocations' cells of this scale
            doc["cells"] = [c for c in old["cells"] if (c["task"], c["algo"]) not in todo]
    for t, a in todo:
        print(f"[table1 {time.strftime('%H:%M:%S')}] {a} on {t} ({args.scale})", file=sys.stderr)
        doc["cells"].append(run_cell(args.scale, a, t, args.seeds))
        doc["cells"].sort(key=lambda c: (list(TASKS).index(c["task"]), ALGOS.index(c["algo"])))
        write(doc)                          # after every cell: a long run shows progress


def jaxdiff_backend() -> str:
    import jax
    return jax.default_backend()


if __name__ == "__main__":
    main()
