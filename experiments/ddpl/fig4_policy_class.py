"""Paper 002 (DDPL), Fig. 4: the policy class inside Algorithm 2 -- diffusion (`ddpl`) vs
Gaussian (`ddpl_gaussian`) on SMAX 3s_vs_5z with continuous actions, with the action
distributions of two agents at one fixed state over training.

    python experiments/ddpl/fig4_policy_class.py --scale tiny     # harness check, minutes on CPU
    python experiments/ddpl/fig4_policy_class.py --scale cpu      # 2e5 steps per seed (hours)
    python experiments/ddpl/fig4_policy_class.py --scale paper    # 5e7 steps, 3 seeds (a GPU)

The paper (spec-ddpl §6.4; the task is not named, its return scale says a SMAX map, 3s_vs_5z
assumed, §8.18): the Gaussian variant converges early to a suboptimal return ≈ 0.65 with a
unimodal action distribution that barely changes; DDPL keeps multi-modal action distributions
early, finds modes the Gaussian never visits and converges to ≈ 2 (the maximum).

How: each algorithm trains through the runner one chunk per invocation (`runner.train(...,
max_chunks=1)`: a checkpointed stop, the next call resumes), so after every chunk the run
folder's checkpoint is the policy at that point; `runner.restore_state` loads it and
`algorithm.act` samples `--samples` actions of agents 0 and 1 at ONE fixed state (the first
observation of a reset with a fixed key, the same for both algorithms and all checkpoints) from
seed 0's policy. Panels: per agent, the histograms of movement radius and angle (action dims 2
and 3; dims 0-1 are shoot probabilities) at each checkpoint, plus the evaluation return curves.

Writes results/fig4_policy_class.{png,json,md} (commit, command, scale). Scales [CHOICE]:

| | tiny | cpu | paper |
|---|---|---|---|
| env steps per seed | 3,000 | 200,000 | 5e7 |
| checkpoints (= chunks) | 3 | 5 | 10 |
| seeds / eval episodes | 1 / 4 | 1 / 16 | 3 / 50 |
| warm-up, buffer | 500, 5e3 | preset (3e4), 1e5 | preset, 1e6 |

`tiny` only shows that the pipeline runs (a few hundred updates: nothing can be read from the
histograms about the paper's claim); the scale is printed on the figure and in the JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time

import jaxdiff

jaxdiff.use_host_devices()  # one XLA host device per core, before JAX starts

# isort: split
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.config import compose
from jaxdiff.run import logging as runlog
from jaxdiff.run import runner

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
ENV = "smax_3s_vs_5z"
ALGOS = ("ddpl", "ddpl_gaussian")
DIMS = ((2, "radius"), (3, "angle / 2π"))        # SMAX continuous action layout (spec §4.9)


@dataclasses.dataclass(frozen=True)
class Scale:
    steps: int
    chunks: int
    seeds: int
    eval_episodes: int
    algo: dict


SCALES = {
    "tiny": Scale(3_000, 3, 1, 4, dict(warmup_steps=500, buffer_size=5_000)),
    "cpu": Scale(200_000, 5, 1, 16, {}),
    "paper": Scale(50_000_000, 10, 3, 50, dict(buffer_size=1_000_000)),
}


def spec_for(scale: str, algo: str) -> runner.RunSpec:
    sc = SCALES[scale]
    cfg = compose([f"algo={algo}", f"env={ENV}", "env.action_type=continuous"]
                  + [f"algo.{k}={v}" for k, v in sc.algo.items()])
    return runner.RunSpec(algo=algo, env=ENV, env_kwargs=cfg["env"], algo_overrides=cfg["algo"],
                          seeds=sc.seeds, total_steps=sc.steps, chunks=sc.chunks,
                          eval_episodes=sc.eval_episodes)


def fixed_obs(env, seed: int = 7):
    """The observation every snapshot is sampled at: the first one of a reset with a fixed key."""
    obs, _ = env.reset(jax.random.PRNGKey(seed))
    return obs


def sample_actions(run_dir: str, obs, samples: int, seed: int = 0) -> np.ndarray:
    """[samples, n_agents, act_dim] env-box actions of seed 0's policy at `obs` (stochastic)."""
    spec, algorithm, env, base, state, _ = runner.restore_state(run_dir)
    member = jax.tree.map(lambda x: x[0], state)
    carry = algorithm.init_carry(base, env)
    mask = jnp.ones((env.spec.n_agents, env.spec.act_dim), bool)

    def one(key):
        return algorithm.act(base, env, member, obs, carry, mask, key, deterministic=False)[0]

    keys = jax.random.split(jax.random.PRNGKey(seed), samples)
    return np.asarray(jax.jit(jax.vmap(one))(keys))


def train_with_snapshots(scale: str, algo: str, obs, samples: int) -> dict:
    spec = spec_for(scale, algo)
    run_dir = os.path.join(RESULTS, "runs", f"fig4_{scale}", algo)
    snaps = []
    t = time.time()
    for _ in range(spec.chunks):
        summary = runner.train(spec, run_dir, progress=True, max_chunks=1)
        rows = runlog.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
        step = rows[-1]["step"] if rows else 0
        if snaps and snaps[-1]["step"] == step:      # already complete (a rerun): one snapshot
            break
        snaps.append(dict(step=step, actions=sample_actions(run_dir, obs, samples)))
    rows = runlog.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    curve = {}
    for r in rows:
        curve.setdefault(r["step"], []).append(r["eval_return"])
    return dict(algo=algo, spec=dataclasses.asdict(spec), snaps=snaps, wall_s=time.time() - t,
                curve=sorted((s, float(np.mean(v)), float(np.std(v))) for s, v in curve.items()),
                highest=runlog.highest_mean(rows), final=summary["final"],
                env_steps_per_s=summary["env_steps_per_s"])


def modes(x: np.ndarray, bins: int = 20) -> int:
    """Number of local maxima of a histogram on [0, 1] holding >= 5% of the samples each: a
    crude multi-modality count for the table."""
    h, _ = np.histogram(np.clip(x, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    h = h / max(h.sum(), 1)
    padded = np.concatenate([[0.0], h, [0.0]])
    peaks = (padded[1:-1] >= padded[:-2]) & (padded[1:-1] > padded[2:]) & (padded[1:-1] >= 0.05)
    return int(peaks.sum())


def plot(results: list[dict], path: str, scale: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter
    fig, axes = plt.subplots(len(results), 5, figsize=(17, 3.2 * len(results)), squeeze=False)
    for row, res in zip(axes, results):
        cmap = plt.get_cmap("viridis")
        for col, (agent, (dim, name)) in enumerate([(a, d) for a in (0, 1) for d in DIMS]):
            ax = row[col]
            for i, s in enumerate(res["snaps"]):
                ax.hist(s["actions"][:, agent, dim], bins=40, range=(0, 1), histtype="step",
                        density=True, color=cmap(i / max(1, len(res["snaps"]) - 1)),
                        label=f"{runlog.steps_label(s['step'])} steps")
            ax.set_title(f"{res['algo']}: agent {agent}, {name}", fontsize=9)
            ax.set_xlabel("action (env box [0, 1])")
            if col == 0:
                ax.set_ylabel("density at the fixed state")
                ax.legend(fontsize=7)
        ax = row[4]
        steps, mean, std = (np.array(v) for v in zip(*res["curve"]))
        ax.plot(steps, mean, marker="o")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.3)
        ax.set_title(f"{res['algo']}: eval return (max 2)", fontsize=9)
        ax.xaxis.set_major_formatter(FuncFormatter(runlog.steps_label))
        ax.set_xlabel("env steps per seed")
    fig.suptitle(f"DDPL Fig. 4 on {ENV} (continuous): diffusion vs Gaussian policy class -- "
                 f"scale `{scale}` ({SCALES[scale].steps:,} env steps per seed; paper 5e7)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _commit() -> str:
    from jaxdiff.run.logging import git_commit
    return git_commit(HERE)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", choices=tuple(SCALES), default="tiny")
    ap.add_argument("--samples", type=int, default=2000, help="actions per snapshot")
    args = ap.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    from jaxdiff import envs as envs_lib
    obs = fixed_obs(envs_lib.make(ENV, action_type="continuous"))
    results = [train_with_snapshots(args.scale, a, obs, args.samples) for a in ALGOS]
    plot(results, os.path.join(RESULTS, "fig4_policy_class.png"), args.scale)
    table = []
    for res in results:
        for s in res["snaps"]:
            for agent in (0, 1):
                a = s["actions"][:, agent]
                table.append(dict(algo=res["algo"], step=s["step"], agent=agent,
                                  **{f"{n.split()[0]}_{k}": v for d, n in DIMS for k, v in
                                     (("mean", float(a[:, d].mean())),
                                      ("std", float(a[:, d].std())),
                                      ("modes", modes(a[:, d])))}))
    doc = dict(scale=args.scale, commit=_commit(),
               command="python " + " ".join(shlex.quote(x) for x in
                                            [os.path.relpath(__file__, os.getcwd())]
                                            + (argv if argv is not None else sys.argv[1:])),
               env=ENV, samples=args.samples,
               runs=[{k: v for k, v in r.items() if k != "snaps"} for r in results],
               snapshots=table,
               paper="Gaussian converges early to return ~0.65 with a unimodal, barely changing "
                     "action distribution; DDPL keeps multi-modal distributions early and "
                     "converges to ~2 (spec-ddpl §6.4)")
    with open(os.path.join(RESULTS, "fig4_policy_class.json"), "w") as fh:
        json.dump(doc, fh, indent=2)
    lines = [f"# DDPL Fig. 4 (policy class) on {ENV} at scale `{args.scale}`", "",
             f"Commit {doc['commit']}; command `{doc['command']}`; "
             f"{SCALES[args.scale].steps:,} env steps per seed (paper: 5e7), "
             f"{SCALES[args.scale].seeds} seed(s). Paper: {doc['paper']}.", "",
             "![fig4](fig4_policy_class.png)", "",
             "| algo | highest eval return (mean ± std, step) | final | env steps/s | wall s |",
             "|---|---|---|---|---|"]
    for r in results:
        h = r["highest"]
        lines.append(f"| {r['algo']} | {h.get('mean', float('nan')):.3f} ± "
                     f"{h.get('std', float('nan')):.3f} ({h.get('step')}) | "
                     f"{r['final'].get('return_mean', float('nan')):.3f} | "
                     f"{r['env_steps_per_s'] or float('nan'):.0f} | {r['wall_s']:.0f} |")
    lines += ["", "Action statistics at the fixed state (seed 0, "
              f"{args.samples} samples; modes = histogram peaks with >= 5% mass, 20 bins):", "",
              "| algo | step | agent | radius mean ± std (modes) | angle mean ± std (modes) |",
              "|---|---|---|---|---|"]
    for t in table:
        lines.append(f"| {t['algo']} | {t['step']:,} | {t['agent']} | {t['radius_mean']:.3f} ± "
                     f"{t['radius_std']:.3f} ({t['radius_modes']}) | {t['angle_mean']:.3f} ± "
                     f"{t['angle_std']:.3f} ({t['angle_modes']}) |")
    if args.scale != "paper":
        lines += ["", f"Scale `{args.scale}` is a pipeline check: far too few updates to test "
                  "the paper's claim; run `--scale paper` on a GPU."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(RESULTS, "fig4_policy_class.md"), "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
