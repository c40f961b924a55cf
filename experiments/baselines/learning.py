"""Learning curves of the on-policy baselines next to JaxMARL's reference numbers.

    python experiments/baselines/learning.py [--quick] [--only mpe] [--out DIR]

Each case trains 3 seeds (vmapped, one program) through the runner with the JaxMARL baseline
hyper-parameters, measures a uniform-random policy on the same env, and writes
results/learning.json, results/learning.md (table next to the reference) and one run folder
(curves.png, metrics.jsonl) per case under results/runs/.
"""
from __future__ import annotations

import argparse
import json
import os

import jaxdiff

jaxdiff.use_host_devices()  # one XLA host device per core, before JAX starts
import jax
import jax.numpy as jnp

from jaxdiff import envs as envs_lib
from jaxdiff.config import compose
from jaxdiff.run import runner

HERE = os.path.dirname(os.path.abspath(__file__))

# HARL tuned_configs/mamujoco/Ant-v2-4x2/mappo/config.json in jaxdiff's MAPPO keys.
HARL_ANT_MAPPO = dict(num_envs=20, num_steps=200, update_epochs=5, num_minibatches=1, hidden=128,
                      layers=3, activation="relu", value_norm=True, anneal_lr=False,
                      init_log_std=-1.0, lr=5.0e-4, clip_eps=0.1, ent_coef=0.0, vf_coef=1.0,
                      max_grad_norm=10.0)

# name: (algo, env, env steps per seed, quick steps, extra overrides, reference text)
CASES = {
    "ippo_mpe": ("ippo", "mpe_simple_spread", 2_000_000, 300_000, {},
                 "JaxMARL IPPO-FF: -65.0 at 2M, -59.0 at 1e7; random -82.9"),
    "mappo_mpe": ("mappo", "mpe_simple_spread", 2_000_000, 300_000, {},
                  "(JaxMARL IPPO-FF row: -65.0 at 2M)"),
    "mappo_smax_3m": ("mappo", "smax_3m", 1_000_000, 200_000, {},
                      "JaxMARL MAPPO-RNN: win 0.79 at 1e6 (0.5 near 3e5); random return 0.18, win 0"),
    "ippo_ant_4x2": ("ippo", "mabrax_ant_4x2", 2_000_000, 200_000, {},
                     "JaxMARL IPPO-FF: below random (-119) at 1.3e6"),
    # Heterogeneous-agent baselines (HARL hyper-parameters; HAQO paper Table 3 at 5e6 steps,
    # PettingZoo MPE -- same scenarios, returns comparable only in ordering).
    "mappo_spread_cont": ("mappo", "mpe_simple_spread", 2_000_000, 200_000, {},
                          "HAQO Tab. 3 Spread-cont.: MAPPO -69.2, HAPPO -64.3, HASAC n/a"),
    "happo_spread_cont": ("happo", "mpe_simple_spread", 2_000_000, 200_000, {},
                          "HAQO Tab. 3 Spread-cont.: HAPPO -64.3 (MAPPO -69.2)"),
    "hasac_spread_cont": ("hasac", "mpe_simple_spread", 500_000, 50_000, {},
                          "HARL: HASAC >= HAPPO on MPE (MEHARL, ICLR 2024)"),
    "mappo_reference_cont": ("mappo", "mpe_simple_reference", 2_000_000, 200_000, {},
                             "HAQO Tab. 3 Reference-cont.: MAPPO -10.1, HAPPO -9.1"),
    "happo_reference_cont": ("happo", "mpe_simple_reference", 2_000_000, 200_000, {},
                             "HAQO Tab. 3 Reference-cont.: HAPPO -9.1 (MAPPO -10.1)"),
    "hasac_reference_cont": ("hasac", "mpe_simple_reference", 500_000, 50_000, {},
                             "HARL: HASAC >= HAPPO on MPE (MEHARL, ICLR 2024)"),
    "happo_smax_3m": ("happo", "smax_3m", 1_000_000, 200_000, {},
                      "(MAPPO-RNN row above; HARL SMAC 3m: both ~100% win)"),
    "qmix_smax_3m": ("qmix", "smax_3m", 1_000_000, 200_000, {},
                     "JaxMARL QMIX SMAX 3m: solves it (win ~1.0) within 1e6-2e6"),
    # MABrax ant_4x2 with HARL's tuned MAMuJoCo Ant-v2-4x2 configs (tuned_configs/mamujoco/
    # Ant-v2-4x2/{mappo,happo,hasac}/config.json). HAPPO/HASAC: the `mabrax` presets of
    # configs/algo/{happo,hasac}.yaml are those files already. MAPPO: configs/algo/mappo.yaml's
    # `mabrax` preset is JaxMARL's IPPO setting, so the case overrides it with HARL's tuned MAPPO
    # (20 envs x 200 steps, 5 epochs x 1 minibatch, MLP [128]*3 ReLU, lr 5e-4, clip 0.1, no
    # entropy, ValueNorm, value-loss coef 1, max_grad_norm 10, no lr decay, init std
    # sigmoid(1) * 0.5 -> log std -1, shared parameters). Not modelled: Huber value loss,
    # input LayerNorm.
    "mappo_ant_4x2": ("mappo", "mabrax_ant_4x2", 300_000, 100_000, HARL_ANT_MAPPO,
                      "HAQO Tab. 1 Ant-v2 4x2 (MAMuJoCo, 1e7): MAPPO 5874, HAPPO 5793; "
                      "HARL tuned MAPPO config"),
    "happo_ant_4x2": ("happo", "mabrax_ant_4x2", 300_000, 100_000, {},
                      "HAQO Tab. 1 Ant-v2 4x2 (MAMuJoCo, 1e7): HAPPO 5793 (MAPPO 5874); "
                      "HARL tuned HAPPO config"),
    # HASAC: HARL's tuned Ant config at CPU scale (hidden 128, batch 256 instead of 256 / 1000,
    # as in the `mpe` preset: ~8x fewer FLOPs per update); on a GPU drop the override and add
    # `algo.buffer_size=1000000`.
    "hasac_ant_4x2": ("hasac", "mabrax_ant_4x2", 100_000, 50_000,
                      dict(hidden=128, batch_size=256),
                      "HARL (MEHARL, ICLR 2024): HASAC > HAPPO/MAPPO on MAMuJoCo; "
                      "HARL tuned HASAC config at CPU scale (hidden 128, batch 256, buffer 1e5)"),
}
NOTES = [
    "MPE episodes here are 25 steps (JaxMARL's scripts run 26: see jaxdiff/envs/jaxmarl.py), "
    "so returns are ~4% smaller in magnitude than JaxMARL's at equal skill.",
    "HAQO/HARL numbers are PettingZoo MPE at 5e6-1e7 steps: compare orderings, not values.",
    "HAPPO on MPE and MABrax uses HARL's EP critic (one V(s) on the global state, trained on "
    "the team reward = sum of the agents' rewards, one advantage for all agents; "
    "`algo.critic_state=ep`, the default); on SMAX per-agent V(s, id) (`critic_state=agent`, "
    "HARL's SMAC runs use agent-specific FP states).",
    "ant_4x2, why JaxMARL's IPPO stays below random: Brax's Ant charges 0.5*sum(a^2) on the "
    "action it is given while the physics clips it to [-1, 1]; JaxMARL passes unclipped "
    "Gaussian samples (std 1 at init), so it pays for action magnitude that does nothing. "
    "`experiments/baselines/ant_ctrl_cost.py` (16 episodes each): N(0,1) unclipped -986 per "
    "episode, the same policy clipped (our adapter) -353, uniform random -185, standing still "
    "(zero action) +751. Our adapter clips to the action bounds before the env sees the action, "
    "so the cheapest improvement (shrinking the action) is also what the reward measures.",
    "ant_4x2 at 2M: the deterministic evaluation (+723) is at the level of standing still "
    "(+751 ± 431 in ant_ctrl_cost.py), i.e. the policy has learned to stay upright cheaply; the "
    "budget does not show locomotion yet (JaxMARL's paper curve needs ~1e7 steps for ~3500).",
    "ant_4x2 HA rows (HARL's tuned configs, 300k steps for MAPPO/HAPPO, 100k for HASAC, 4 seeds, "
    "3-1% of the papers' 1e7): the deterministic evaluations sit at the standing-still level "
    "(+750, +752, +603); the training-episode returns of the stochastic policies tell them apart: "
    "HAPPO +396 > MAPPO +364 > HASAC -160 (random -171; HASAC has seen 100k steps). Above random, "
    "but far too early to check HARL's ordering (HASAC > HAPPO ~ MAPPO at 1e7); `--full` runs "
    "the papers' budget on a GPU.",
]
# Env options per case (default: the env's own defaults).
ENV_KW = {k: {"action_type": "continuous"} for k in CASES if k.endswith("_cont")}
# The papers' budgets, for `--full` on a GPU (HARL MPE 1e7; HAQO 5e6 MPE/SMAX, 1e7 MABrax).
FULL_STEPS = {k: 10_000_000 for k in CASES}
# Runner settings per case where the defaults cost too much: MABrax episodes are 1000 steps, so
# 20 evaluations x 32 episodes x 2 modes would cost more than the training itself on a CPU.
RUN_KW = {"ippo_ant_4x2": dict(chunks=10, eval_episodes=8)}
# The HA rows on ant_4x2 ran at small budgets on a shared, busy 2-core machine: 5 evaluations.
RUN_KW.update({k: dict(chunks=5, eval_episodes=8) for k in CASES
               if k.endswith("_ant_4x2") and k != "ippo_ant_4x2"})


def random_policy(env_name: str, env_kw: dict | None = None, episodes: int = 64,
                  seed: int = 0) -> dict:
    """Uniform-random actions (masked for discrete envs): mean episode return and win rate."""
    env = envs_lib.make(env_name, **(env_kw or {}))
    spec = env.spec

    def rollout(key):
        k0, key = jax.random.split(key)
        obs, es = env.reset(k0)

        def body(c, k):
            es, seen, ret, won = c
            ka, ke = jax.random.split(k)
            if spec.discrete:
                logits = jnp.where(env.action_mask(es), 0.0, -1e9)
                a = jax.random.categorical(ka, logits)
            else:
                a = jax.random.uniform(ka, (spec.n_agents, spec.act_dim), minval=spec.action_low,
                                       maxval=spec.action_high)
            _, es, _, _, info = env.step(ke, es, a)
            first = info["returned_episode"] & ~seen
            ret = jnp.where(first, info["episode_return"], ret)
            won = jnp.where(first, info["won"], won)
            return (es, seen | info["returned_episode"], ret, won), None

        (_, _, ret, won), _ = jax.lax.scan(body, (es, False, 0.0, 0.0),
                                           jax.random.split(key, spec.max_steps + 1))
        return ret, won

    ret, won = jax.jit(jax.vmap(rollout))(jax.random.split(jax.random.PRNGKey(seed), episodes))
    return dict(return_mean=float(ret.mean()), win_rate=float(won.mean()))


def run(name: str, quick: bool, out: str, seeds: int = 3, full: bool = False) -> dict:
    algo, env, steps, quick_steps, extra, reference = CASES[name]
    steps = FULL_STEPS[name] if full else quick_steps if quick else steps
    env_kw = ENV_KW.get(name, {})
    cfg = compose([f"algo={algo}", f"env={env}"] + [f"algo.{k}={v}" for k, v in extra.items()]
                  + [f"env.{k}={v}" for k, v in env_kw.items()])
    spec = runner.RunSpec(algo=algo, env=env, env_kwargs=cfg["env"], algo_overrides=cfg["algo"],
                          seeds=seeds, total_steps=steps,
                          **{"chunks": 20, **RUN_KW.get(name, {})})
    run_dir = os.path.join(out, "runs", f"{name}_{steps}")
    summary = runner.train(spec, run_dir)
    rnd = random_policy(env, env_kw)
    import shutil  # curves next to the table (run folders themselves are not versioned)
    shutil.copy(os.path.join(run_dir, "curves.png"), os.path.join(out, f"{name}_curves.png"))
    return dict(case=name, algo=algo, env=env, env_kwargs=env_kw, steps=steps,
                train=_last_chunk(run_dir), seeds=seeds, final=summary["final"],
                best=summary["best"], random=rnd, reference=reference, run_dir=run_dir,
                env_steps_per_s=summary["env_steps_per_s"], compile_s=summary["compile_s"])


def _last_chunk(run_dir: str) -> dict:
    """Mean over seeds of the training metrics of the run's last chunk."""
    from jaxdiff.run.logging import read_jsonl
    rows = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    if not rows:
        return {}
    last = [r for r in rows if r["chunk"] == rows[-1]["chunk"]]
    keys = [k for k in ("train_return", "train_win_rate") if k in last[0]]
    return {k: sum(r[k] for r in last) / len(last) for k in keys}


def write(rows: list[dict], out: str, quick: bool) -> None:
    lines = ["# Baselines: jaxdiff next to the reference numbers (JaxMARL, HARL, HAQO paper)", "",
             f"Scale: {'--quick (smoke budgets)' if quick else 'CPU budgets (column 3)'}; seeds per"
             " row in column 3 (3, or 4 where the run was split over the 2 cores), mean ± std over seeds of the final deterministic evaluation (32 episodes per seed, 8 on MABrax);"
             " CPU (2 cores).", "",
             "Train columns: training-rollout episodes of the last chunk (what JaxMARL's scripts"
             " log), mean over seeds.", "",
             "| case | env steps/seed | seeds | final eval return | eval win rate | train return | "
             "train win rate | random policy | reference |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["final"]
        win = f"{f['win_rate_mean']:.2f}" if "win_rate_mean" in f else "–"
        rnd = f"{r['random']['return_mean']:.2f}" + (
            f" (win {r['random']['win_rate']:.2f})" if "win_rate_mean" in f else "")
        last = r.get("train") or _last_chunk(r["run_dir"])
        tr = f"{last['train_return']:.2f}" if "train_return" in last else "–"
        twin = f"{last['train_win_rate']:.2f}" if "win_rate_mean" in f else "–"
        case = r["case"] + "".join(f" ({v})" for v in r.get("env_kwargs", {}).values())
        lines.append(f"| {case} | {r['steps']:,} | {r.get('seeds', 3)} | {f['return_mean']:.2f} ± "
                     f"{f['return_std']:.2f} | {win} | {tr} | {twin} | {rnd} | {r['reference']} |")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in NOTES]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "learning.md"), "w") as fh:
        fh.write(text)
    curves = [f"![{r['case']}](results/{r['case']}_curves.png)" for r in rows
              if os.path.exists(os.path.join(out, f"{r['case']}_curves.png"))]
    if os.path.abspath(out) == os.path.abspath(os.path.join(HERE, "results")):
        with open(os.path.join(HERE, "results.md"), "w") as fh:
            fh.write(text + "\n## Curves (mean ± std over seeds)\n\n" + "\n".join(curves) + "\n")
    with open(os.path.join(out, "learning.json"), "w") as fh:
        json.dump(rows, fh, indent=2)
    print(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--full", action="store_true", help="the papers' budgets (1e7; for a GPU)")
    ap.add_argument("--only", default="", help="substring filter on case names")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--seeds", type=int, default=3,
                    help="seeds per case (an even count runs on both cores of a 2-core machine)")
    ap.add_argument("--table-only", action="store_true", help="rewrite the table from the JSON")
    args = ap.parse_args()
    if args.table_only:
        with open(os.path.join(args.out, "learning.json")) as fh:
            write(json.load(fh), args.out, args.quick)
        return
    os.makedirs(args.out, exist_ok=True)
    names = [n for n in CASES if any(o in n for o in args.only.split(","))]
    rows = [run(n, args.quick, args.out, seeds=args.seeds, full=args.full) for n in names]
    # Keep earlier cases' rows (runs of other --only filters) in the same table.
    path = os.path.join(args.out, "learning.json")
    if os.path.exists(path):
        with open(path) as fh:
            done = {r["case"] for r in rows}
            rows = [r for r in json.load(fh) if r["case"] not in done] + rows
    rows.sort(key=lambda r: list(CASES).index(r["case"]))
    write(rows, args.out, args.quick)


if __name__ == "__main__":
    main()
