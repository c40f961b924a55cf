"""HAQO Figs. 1/2 and 5 (spec-haqo §6.4 b, c; §7 F29): do the trained decentralised policies
cover all targets?

Two toys, each trained through the runner (seeds vmapped; the alpha arms of one actor class are
one run with alpha as a vmapped grid axis, so they share one compile):

- `haqo_occupation` (§6.4b, Figs. 1/2): two point masses harvest four decaying resources at
  (±0.6, ±0.6). Arms: HAQO diffusion alpha = 0.02 (the default), HAQO diffusion alpha = 0 (no
  entropy term), HAQO Gaussian (`actor=gaussian`, the paper's "unimodal Gaussian" contrast).
- `haqo_landmarks` (§6.4c, Fig. 5): MPE spread, 2 agents, 3 landmarks fixed on a circle. Arms:
  alpha = 0 vs alpha = 0.05 (the paper's useful range is 0.01-0.05).

After training, every member's decentralised policy (HAQO's `act`: one sample per agent from
its own actor given its observation, no critic) plays `--episodes` full episodes, and the
agents' positions at the start of every step (the positions the occupation reward pays) give
the coverage numbers of `jaxdiff.envs.toys.haqo_toys`:
occupation: visit shares per target, #targets with share >= 0.1, coverage entropy H(v)/log 4,
return; landmarks: per-landmark share of steps with an agent within 0.2, #landmarks visited
(share >= 1/4 of the best landmark's share: "essentially unvisited" made a number, a CHOICE
of this script), return. Numbers are means over seeds; the uniform-random policy, measured by
the same rollout, is the reference row.

The paper's claims are qualitative (pictures, no numbers); the table prints each beside the
measured row and says whether it is reproduced AT THIS SCALE. HAQO is slow on a CPU (a few
hundred env steps/s here even at the small size below), so both scales are far below anything
the paper ran (its toy budgets are not stated):

    python experiments/haqo/coverage.py --quick   # 24.6k / 16.4k steps, 2 seeds (~7 min on 2 cores)
    python experiments/haqo/coverage.py           # 131k / 65.5k steps, 3 seeds (~20 min on 2 cores)

Writes results/coverage.json (commit, command, scale, per-arm numbers and claim verdicts) and
results/coverage.png (visit shares per arm as bars); `--quick` writes coverage_quick.{json,png}
so the two scales do not overwrite each other. Run folders: results/runs/coverage_<scale>/ (not committed).
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

from jaxdiff.envs.toys import haqo_toys
from jaxdiff.run import runner
from jaxdiff.run.logging import git_commit

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
LANDMARK_VISITED = 0.25   # a landmark is "visited" with >= 1/4 of the best landmark's share

# CPU-scale HAQO (every value a CHOICE of this script; the preset is 3x256 nets, T = 20,
# 256 critic updates and 2048 actor states per iteration, 10k warm-up).
# actor_lr 1e-3 (preset 1e-4): at 1e-4 the chain KL per iteration was ~1e-3, a tenth of the
# trust radius delta = 0.01, so the few hundred iterations a CPU affords barely moved the actors.
CPU_ALGO = dict(steps=5, hidden=64, layers=2, critic_updates=32, actor_states=512,
                batch_size=128, kl_states=128, warmup_steps=2048, num_envs=16, rollout_len=16,
                buffer_size=50_000, k_behaviour=4, k_target=2, k_train=8, n_entropy=8,
                actor_lr=1e-3)


@dataclasses.dataclass(frozen=True)
class Scale:
    occupation_steps: int
    landmark_steps: int
    seeds: int
    chunks: int
    episodes: int          # evaluation episodes per member for the coverage metrics


SCALES = {
    "quick": Scale(occupation_steps=24_576, landmark_steps=16_384, seeds=2, chunks=2,
                   episodes=32),
    "full": Scale(occupation_steps=131_072, landmark_steps=65_536, seeds=3, chunks=4,
                  episodes=64),
}

# (run name, env, static overrides, grid of dynamic overrides with one label each)
RUNS = (
    ("occupation_diffusion", "haqo_occupation", {},
     ((dict(alpha=0.02), "HAQO diffusion, alpha=0.02"), (dict(alpha=0.0), "HAQO diffusion, alpha=0"))),
    ("occupation_gaussian", "haqo_occupation", dict(actor="gaussian"),
     ((dict(alpha=0.02), "HAQO Gaussian, alpha=0.02"),)),
    ("landmarks_diffusion", "haqo_landmarks", {},
     ((dict(alpha=0.0), "HAQO diffusion, alpha=0"), (dict(alpha=0.05), "HAQO diffusion, alpha=0.05"))),
)

CLAIMS = {
    "HAQO diffusion, alpha=0.02": "Figs. 1/2 + spec: balanced coverage, >= 3 of 4 targets",
    "HAQO diffusion, alpha=0": "Fig. 1 middle: covers more than Gaussian, imbalanced",
    "HAQO Gaussian, alpha=0.02": "Figs. 1/2: collapses onto a subset, fewer targets than HAQO",
    "landmarks HAQO diffusion, alpha=0": "Fig. 5 left: one landmark essentially unvisited (2/3)",
    "landmarks HAQO diffusion, alpha=0.05": "Fig. 5 right: all three landmarks visited (3/3)",
    "random": "reference (F29: HAQO return must beat it)",
}


def run_spec(scale: str, env: str, static: dict, grid: tuple) -> runner.RunSpec:
    sc = SCALES[scale]
    steps = sc.occupation_steps if env == "haqo_occupation" else sc.landmark_steps
    return runner.RunSpec(algo="haqo", env=env, env_kwargs={},
                          algo_overrides={**CPU_ALGO, **static}, seeds=sc.seeds,
                          total_steps=steps, chunks=sc.chunks, eval_episodes=8,
                          grid=[dict(point) for point, _ in grid])


# ----------------------------------------------------------------------------- rollouts
def rollout(algorithm, env, config, state, key, episodes: int, *, random: bool = False):
    """`episodes` full episodes of one member's decentralised policy (HAQO's `act`, stochastic:
    a diffusion policy has no mode) or of the uniform-random policy on the env's action box.
    -> (positions f32[episodes, H, n, 2] at the start of every step, returns f32[episodes]
    = the summed team reward). Exactly H = max_steps steps: no auto-reset state is logged."""
    spec = env.spec
    k_reset, k_loop = jax.random.split(key)
    obs, es = jax.vmap(env.reset)(jax.random.split(k_reset, episodes))
    carry0 = algorithm.init_carry(config, env)
    carry = jax.tree.map(lambda c: jnp.broadcast_to(c, (episodes,) + c.shape), carry0)

    def body(c, k):
        obs, es, carry = c
        k_act, k_env = jax.random.split(k)
        pos = haqo_toys.agent_positions(es)
        mask = jax.vmap(env.action_mask)(es)
        if random:
            actions = jax.random.uniform(k_act, (episodes, spec.n_agents, spec.act_dim),
                                         minval=spec.action_low, maxval=spec.action_high)
        else:
            act = lambda o, h, m, kk: algorithm.act(config, env, state, o, h, m, kk,
                                                    deterministic=False)
            actions, carry = jax.vmap(act)(obs, carry, mask, jax.random.split(k_act, episodes))
        obs, es, reward, _, _ = jax.vmap(env.step)(jax.random.split(k_env, episodes), es,
                                                   actions)
        return (obs, es, carry), (pos, spec.team_reward(reward, -1))

    _, (pos, rew) = jax.lax.scan(body, (obs, es, carry),
                                 jax.random.split(k_loop, spec.max_steps))
    return jnp.swapaxes(pos, 0, 1), jnp.sum(rew, axis=0)


def coverage(env_name: str, positions, returns) -> dict:
    """The coverage numbers of one policy from its rollouts: positions [E, H, n, 2] (pooled
    over episodes), returns [E]."""
    p = jnp.asarray(positions).reshape((-1,) + positions.shape[-2:])
    out = {"return": float(jnp.mean(returns))}
    if env_name == "haqo_occupation":
        m = haqo_toys.occupation_metrics(p)
        out.update(visit_shares=np.asarray(m["visit_shares"]).tolist(),
                   n_targets=int(m["n_targets"]), coverage_entropy=float(m["coverage_entropy"]),
                   visit_rate=float(m["visit_rate"]))
    else:
        shares = np.asarray(haqo_toys.landmark_shares(p))
        top = shares.max()
        out.update(landmark_shares=shares.tolist(),
                   n_landmarks=int(np.sum((shares > 0) & (shares >= LANDMARK_VISITED * top))),
                   min_over_max=float(shares.min() / top) if top > 0 else 0.0)
    return out


def mean_over_seeds(rows: list[dict]) -> dict:
    """Mean of every number (and of every share vector) over the seeds' metric dicts, plus the
    per-seed rows."""
    out = {}
    for k in rows[0]:
        v = np.mean([np.asarray(r[k], np.float64) for r in rows], axis=0)
        out[k] = v.round(4).tolist()
    out["per_seed"] = rows
    return out


def evaluate_members(run_dir: str, episodes: int, seed: int = 1234) -> dict:
    """Restore a finished run and measure every member: -> {grid index: [metrics per seed]},
    and the random policy's metrics per seed on the same env (same episode keys)."""
    spec, algorithm, env, base, state, members = runner.restore_state(run_dir)
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(seed), s) for _, s in members])
    fn = jax.jit(jax.vmap(lambda st, k: rollout(algorithm, env, base, st, k, episodes)))
    pos, ret = jax.device_get(fn(state, keys))
    per_grid: dict[int, list] = {}
    for m, (g, _) in enumerate(members):
        per_grid.setdefault(g, []).append(coverage(spec.env, pos[m], ret[m]))
    return per_grid


def random_reference(env_name: str, seeds: int, episodes: int, seed: int = 1234) -> list[dict]:
    """The uniform-random policy measured exactly as the trained members (one row per seed)."""
    from jaxdiff import envs as envs_lib
    from jaxdiff.algos import base as algos
    env = envs_lib.make(env_name)
    algorithm = algos.get("haqo")
    config = algos.make_config(algorithm.Config, dict(CPU_ALGO))
    fn = jax.jit(lambda k: rollout(algorithm, env, config, None, k, episodes, random=True))
    rows = []
    for s in range(seeds):
        pos, ret = jax.device_get(fn(jax.random.fold_in(jax.random.PRNGKey(seed), s)))
        rows.append(coverage(env_name, pos, ret))
    return rows


# ----------------------------------------------------------------------------- verdicts
def verdicts(res: dict) -> dict:
    """The paper's qualitative claims as checks on the seed means: label -> (holds, why)."""
    occ, lm = res["haqo_occupation"], res["haqo_landmarks"]
    h, h0 = occ["HAQO diffusion, alpha=0.02"], occ["HAQO diffusion, alpha=0"]
    g, r = occ["HAQO Gaussian, alpha=0.02"], occ["random"]
    l0, l1 = lm["HAQO diffusion, alpha=0"], lm["HAQO diffusion, alpha=0.05"]
    return {
        "HAQO diffusion, alpha=0.02": (
            h["n_targets"] >= 3 and h["return"] > r["return"],
            f"{h['n_targets']:.2f} targets (>= 3), return {h['return']:.2f} vs random "
            f"{r['return']:.2f}"),
        "HAQO diffusion, alpha=0": (
            h0["n_targets"] >= g["n_targets"]
            and h0["coverage_entropy"] < h["coverage_entropy"],
            f"targets {h0['n_targets']:.2f} >= Gaussian {g['n_targets']:.2f} and entropy "
            f"{h0['coverage_entropy']:.3f} < alpha=0.02's {h['coverage_entropy']:.3f}"),
        "HAQO Gaussian, alpha=0.02": (
            g["n_targets"] < h["n_targets"],
            f"targets {g['n_targets']:.2f} < HAQO's {h['n_targets']:.2f}"),
        "F29 (spec smoke)": (
            h["return"] > r["return"] and h["n_targets"] >= 2,
            f"HAQO return {h['return']:.2f} > random {r['return']:.2f}, "
            f"{h['n_targets']:.2f} >= 2 targets"),
        "landmarks HAQO diffusion, alpha=0": (
            l0["n_landmarks"] <= 2,
            f"{l0['n_landmarks']:.2f} landmarks visited (<= 2), min/max share "
            f"{l0['min_over_max']:.2f}"),
        "landmarks HAQO diffusion, alpha=0.05": (
            l1["n_landmarks"] == 3,
            f"{l1['n_landmarks']:.2f} landmarks visited (= 3), min/max share "
            f"{l1['min_over_max']:.2f}"),
    }


def print_table(res: dict, checks: dict, scale: str) -> None:
    print(f"\nhaqo_occupation ({scale}; seed means)")
    print(f"{'arm':28s}{'return':>8s}{'targets':>8s}{'entropy':>8s}  {'visit shares':30s}"
          f"paper / spec claim -> reproduced here?")
    for label, m in res["haqo_occupation"].items():
        ok = checks.get(label)
        verdict = "" if ok is None else (" -> YES" if ok[0] else " -> NO")
        shares = " ".join(f"{s:.2f}" for s in m["visit_shares"])
        print(f"{label:28s}{m['return']:8.2f}{m['n_targets']:8.2f}{m['coverage_entropy']:8.3f}  "
              f"{shares:30s}{CLAIMS[label]}{verdict}")
    print(f"\nhaqo_landmarks ({scale}; seed means)")
    print(f"{'arm':28s}{'return':>8s}{'visited':>8s}{'min/max':>8s}  {'landmark shares':30s}"
          f"paper claim -> reproduced here?")
    for label, m in res["haqo_landmarks"].items():
        key = label if label == "random" else f"landmarks {label}"
        ok = checks.get(key)
        verdict = "" if ok is None else (" -> YES" if ok[0] else " -> NO")
        shares = " ".join(f"{s:.2f}" for s in m["landmark_shares"])
        print(f"{label:28s}{m['return']:8.2f}{m['n_landmarks']:8.2f}{m['min_over_max']:8.2f}  "
              f"{shares:30s}{CLAIMS[key]}{verdict}")
    print("\nchecks:")
    for k, (ok, why) in checks.items():
        print(f"  {'REPRODUCED' if ok else 'NOT reproduced':15s} {k}: {why}")


def plot(res: dict, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, env_name, key, names in (
            (axes[0], "haqo_occupation", "visit_shares",
             ["(+,+)", "(+,-)", "(-,+)", "(-,-)"]),
            (axes[1], "haqo_landmarks", "landmark_shares", ["90°", "210°", "330°"])):
        arms = res[env_name]
        width = 0.8 / len(arms)
        x = np.arange(len(names))
        for j, (label, m) in enumerate(arms.items()):
            ax.bar(x + (j - (len(arms) - 1) / 2) * width, m[key], width, label=label)
        ax.set_xticks(x, names)
        ax.set_title(env_name + (" (visit share per target)" if key == "visit_shares"
                                 else " (share of steps near each landmark)"), fontsize=9)
        ax.legend(fontsize=7)
    import textwrap
    fig.suptitle("\n".join(textwrap.wrap(title, 140)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the ~10 min scale (2 seeds)")
    ap.add_argument("--episodes", type=int, help="override the evaluation episodes per member")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    scale = "quick" if args.quick else "full"
    sc = SCALES[scale]
    episodes = args.episodes or sc.episodes
    if episodes < 1:
        ap.error("--episodes must be >= 1")
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    res: dict = {"haqo_occupation": {}, "haqo_landmarks": {}}
    runs = {}
    for name, env_name, static, grid in RUNS:
        spec = run_spec(scale, env_name, static, grid)
        run_dir = os.path.join(args.out, "runs", f"coverage_{scale}", name)
        t = time.time()
        summary = runner.train(spec, run_dir, progress=True)
        train_s = time.time() - t
        per_grid = evaluate_members(run_dir, episodes)
        for g, (_, label) in enumerate(grid):
            res[env_name][label] = mean_over_seeds(per_grid[g])
        runs[name] = dict(spec=dataclasses.asdict(spec), train_wall_s=round(train_s, 1),
                          env_steps_per_s=summary["env_steps_per_s"],
                          compile_s=summary["compile_s"])
        print(f"[coverage] {name}: trained in {train_s:.0f} s "
              f"({summary['env_steps_per_s']:.0f} env steps/s over all members)", flush=True)
    for env_name in res:
        res[env_name]["random"] = mean_over_seeds(random_reference(env_name, sc.seeds, episodes))
    checks = verdicts(res)
    scale_line = (f"scale {scale}: {sc.occupation_steps:,} (occupation) / {sc.landmark_steps:,} "
                  f"(landmarks) env steps per member, {sc.seeds} seeds, CPU-size HAQO "
                  f"(T={CPU_ALGO['steps']}, {CPU_ALGO['layers']}x{CPU_ALGO['hidden']}, "
                  f"{CPU_ALGO['critic_updates']} critic updates, {CPU_ALGO['actor_states']} actor "
                  f"states / iteration, warm-up {CPU_ALGO['warmup_steps']}); {episodes} eval "
                  f"episodes per member")
    print_table(res, checks, scale)
    print(f"\n{scale_line}; far below any paper budget: read the verdicts as 'at this scale'.")
    doc = dict(commit=git_commit(HERE),
               command="python " + " ".join([os.path.relpath(__file__)]
                                            + [shlex.quote(a) for a in sys.argv[1:]]),
               scale=scale, scale_detail=scale_line, algo_overrides=CPU_ALGO,
               episodes=episodes, landmark_visited_rule=f"share >= {LANDMARK_VISITED} x max share",
               wall_s=round(time.time() - t0, 1), runs=runs, results=res,
               claims={k: dict(claim=CLAIMS.get(k, "spec F29: return > random, >= 2 targets"),
                               reproduced=bool(v[0]), measured=v[1]) for k, v in checks.items()})
    stem = os.path.join(args.out, "coverage" + ("_quick" if args.quick else ""))
    with open(stem + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    try:
        plot(res, stem + ".png", scale_line + " (seed means)")
    except ImportError:
        pass
    print(f"[coverage] wrote {stem}.json in "
          f"{time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
