"""Paper 000, Appendix C (optional; spec F28): MAPPO whose actors also receive the state ŝ_i
that each agent infers from its own history with the trained denoiser, against plain MAPPO,
win rate on SMACv2-style zerg 5v5.

    python experiments/state_reconstruction/appendix_c.py [--quick] [--steps N] [--seeds S]

Pipeline (every stage reuses a finished run dir left by an earlier invocation):

1. plain MAPPO (configs/algo/mappo.yaml's smax preset: JaxMARL's MAPPO-RNN) on smax_zerg_5v5,
   `--seeds` seeds x `--steps` env steps -- the baseline, and the data-collection policy;
2. `jaxdiff collect` from its seed 0: (history, global state) pairs, H = 5;
3. `algo=state_diffusion` on that dataset (one seed);
4. MAPPO with `env.inferred_state=<that run>`: obs_i ⊕ ŝ_i for every actor
   (`jaxdiff.statediff.augment`), same seeds, steps and hyper-parameters as 1.

The paper's appendix is missing from the text and reports no number: the comparison is ours.
Its denoiser is trained on data of the final baseline policy, so the augmented run starts
with estimates fitted to states a trained team visits [CHOICE: the simplest protocol that
needs one baseline run; the paper does not say].

Writes results/appendix_c.{json,md} and appendix_c.png (win rate curves, mean ± std over
seeds); run dirs and the dataset go to results/runs/appendix_c/ (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jaxdiff

jaxdiff.use_host_devices()  # one XLA host device per core, before JAX starts

# isort: split
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sensor_common import HERE, markdown_table, save_figure, write_json  # noqa: E402

ENV = "smax_zerg_5v5"
SCALES = {  # [CHOICE] CPU-sized; the denoiser is small so that the augmented rollouts stay cheap
    "quick": dict(steps=40_000, seeds=2, chunks=2, eval_episodes=8, samples=2_000,
                  test_samples=256, sd_width=64, sd_steps=200, flow_steps=3,
                  mappo={"algo.num_envs": 32, "algo.num_steps": 64}),
    "cpu": dict(steps=1_000_000, seeds=2, chunks=10, eval_episodes=32, samples=20_000,
                test_samples=2_048, sd_width=128, sd_steps=3_000, flow_steps=5, mappo={}),
}


def log(msg: str) -> None:
    print(f"[appendix_c] {msg}", flush=True)


def _finished(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, "summary.json")
    if os.path.exists(path):
        with open(path) as f:
            summary = json.load(f)
        if summary.get("complete", True):
            return summary
    return None


def train(argv: list[str], run_dir: str, label: str) -> tuple[dict, float]:
    from jaxdiff.config import compose, run_spec
    from jaxdiff.run import runner

    done = _finished(run_dir)
    wall_path = os.path.join(run_dir, "appendix_c_wall.json")
    if done is not None:
        log(f"{label}: reusing {run_dir}")
        wall = float("nan")
        if os.path.exists(wall_path):
            with open(wall_path) as f:
                wall = json.load(f)["wall_s"]
        return done, wall
    spec = run_spec(compose(argv + ["progress=false"]))
    log(f"{label}: {spec.algo}, {spec.seeds} seed(s) x {spec.total_steps:,} steps -> {run_dir}")
    t = time.time()
    summary = runner.train(spec, run_dir, progress=True)
    wall = time.time() - t
    with open(wall_path, "w") as f:
        json.dump(dict(wall_s=wall), f)
    return summary, wall


def curves(run_dir: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps [C], values [seeds, C]) of an evaluation metric from metrics.jsonl."""
    from jaxdiff.run.logging import read_jsonl
    rows = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    chunks = sorted({r["chunk"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    vals = np.full((len(seeds), len(chunks)), np.nan)
    steps = np.zeros(len(chunks))
    for r in rows:
        if key in r:
            vals[seeds.index(r["seed"]), chunks.index(r["chunk"])] = r[key]
            steps[chunks.index(r["chunk"])] = r["step"]
    return steps, vals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="pipeline smoke scale (minutes)")
    ap.add_argument("--steps", type=int, default=None, help="env steps per seed of each MAPPO run")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    scale = "quick" if args.quick else "cpu"
    cfg = dict(SCALES[scale])
    cfg["steps"] = args.steps or cfg["steps"]
    cfg["seeds"] = args.seeds or cfg["seeds"]
    root = os.path.join(args.out, "runs", "appendix_c", f"{scale}_{cfg['steps']}_{cfg['seeds']}s")
    os.makedirs(root, exist_ok=True)
    common = [f"env={ENV}", f"seeds={cfg['seeds']}", f"total_steps={cfg['steps']}",
              f"chunks={cfg['chunks']}", f"eval_episodes={cfg['eval_episodes']}"]
    common += [f"{k}={v}" for k, v in cfg["mappo"].items()]
    walls = {}

    # 1. plain MAPPO
    base_dir = os.path.join(root, "mappo")
    base, walls["mappo"] = train(["algo=mappo"] + common, base_dir, "baseline")

    # 2. data from its seed 0
    from jaxdiff.data import collect as col
    from jaxdiff.run.policy import run_policy
    from jaxdiff.data import dataset as ds_lib
    data_dir = os.path.join(root, "data")
    try:
        ds_lib.load_meta(data_dir)
        log(f"dataset: reusing {data_dir}")
    except ds_lib.DatasetError:
        policy, env, spec = run_policy(base_dir)
        log(f"dataset: {cfg['samples']:,} joint samples, H=5 -> {data_dir}")
        t = time.time()
        col.collect(env, policy, data_dir, samples=cfg["samples"],
                    test_samples=cfg["test_samples"], history=5, num_envs=64, overwrite=True,
                    progress=False, env_name=spec.env, env_kwargs=dict(spec.env_kwargs))
        walls["collect"] = time.time() - t

    # 3. the denoiser
    sd_dir = os.path.join(root, "state_diffusion")
    batch = 256
    sd, walls["state_diffusion"] = train(
        ["algo=state_diffusion", f"env={ENV}", f"algo.dataset={data_dir}", "seeds=1",
         f"algo.width={cfg['sd_width']}", f"algo.batch_size={batch}", "algo.lr=1e-3",
         f"algo.flow_steps={cfg['flow_steps']}", "algo.eval_samples=512",
         f"total_steps={cfg['sd_steps'] * batch}", "chunks=2"], sd_dir, "denoiser")

    # 4. MAPPO on obs ⊕ ŝ_i
    aug_dir = os.path.join(root, "mappo_inferred_state")
    aug, walls["mappo_inferred_state"] = train(
        ["algo=mappo", f"env.inferred_state={sd_dir}"] + common, aug_dir, "MAPPO + ŝ_i")

    res = dict(scale=scale, env=ENV, config=cfg, wall_s={k: round(v, 1) for k, v in walls.items()},
               denoiser=dict(psnr_composite=float(np.nanmean(curves(sd_dir, "eval_psnr_composite")[1][:, -1])),
                             psnr_individual=float(np.nanmean(curves(sd_dir, "eval_psnr_individual")[1][:, -1]))),
               runs=dict(mappo=base_dir, mappo_inferred_state=aug_dir, state_diffusion=sd_dir))
    rows = []
    for name, summ, run_dir in (("MAPPO", base, base_dir), ("MAPPO + ŝ_i", aug, aug_dir)):
        fin, best = summ["final"], summ.get("best", {})
        res[name] = dict(final_win_mean=fin.get("win_rate_mean"), final_win_std=fin.get("win_rate_std"),
                         final_return_mean=fin.get("return_mean"),
                         final_return_std=fin.get("return_std"),
                         best_win_mean=best.get("win_rate_mean"),
                         env_steps_per_s=summ.get("env_steps_per_s"))
        r = res[name]
        rows.append([name, f"{cfg['steps']:,}", str(cfg["seeds"]),
                     f"{r['final_win_mean']:.3f} ± {r['final_win_std']:.3f}",
                     f"{r['final_return_mean']:.3f} ± {r['final_return_std']:.3f}",
                     "–" if r["best_win_mean"] is None else f"{r['best_win_mean']:.3f}",
                     "reports an improvement, no number (Appx. C missing from the text)"])
    res["total_wall_s"] = round(float(np.nansum(list(walls.values()))), 1)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "appendix_c.json"), res)

    header = (f"# Paper 000, Appendix C: MAPPO with inferred states on {ENV}\n\n"
              f"Scale: {scale}; {cfg['seeds']} seeds x {cfg['steps']:,} env steps per MAPPO run "
              f"(JaxMARL's MAPPO-RNN hyper-parameters{', ' + str(cfg['mappo']) if cfg['mappo'] else ''}); "
              f"denoiser W {cfg['sd_width']}, {cfg['sd_steps']} Adam steps x {batch} on "
              f"{cfg['samples']:,} joint samples (H 5) from the baseline's seed 0, L = "
              f"{cfg['flow_steps']} flow steps; its test PSNR composite "
              f"{res['denoiser']['psnr_composite']:.2f} / individual "
              f"{res['denoiser']['psnr_individual']:.2f} dB. Final evaluation: {cfg['eval_episodes']} "
              f"greedy episodes per seed, mean ± std over seeds; 'at best eval' = the win rate of "
              f"each seed's best evaluation by return. CPU (2 cores), stages "
              f"{', '.join(f'{k} {v:.0f} s' for k, v in walls.items())}.\n\n")
    table = markdown_table(["run", "env steps/seed", "seeds", "final win rate", "final return",
                            "win rate at best eval", "paper"], rows)
    with open(os.path.join(args.out, "appendix_c.md"), "w") as f:
        f.write(header + table + "\n")
    print(header + table)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, run_dir in (("MAPPO", base_dir), ("MAPPO + ŝ_i", aug_dir)):
        for a, key, title in ((ax[0], "eval_win_rate", "eval win rate"),
                              (ax[1], "eval_return", "eval return")):
            steps, vals = curves(run_dir, key)
            m, s = np.nanmean(vals, 0), np.nanstd(vals, 0)
            a.plot(steps, m, label=name)
            a.fill_between(steps, m - s, m + s, alpha=0.2)
            a.set_title(title)
            a.set_xlabel("env steps per seed")
    ax[0].legend()
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, "appendix_c.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
