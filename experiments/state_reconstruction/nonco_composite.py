"""Paper 000, Corollary 7.1 with a learned denoiser (issue 17, F23): does the non-CO 2x2
composite from all-00 histories split between the two jointly consistent states?

    python experiments/state_reconstruction/nonco_composite.py [--seeds 0,1,2]
        [--schedules 2500:0.003,8000:0.001] [--starts 4000] [--out DIR] [--name STEM]

For every seed and training schedule (Adam steps : lr) it trains the shared blind denoiser of
`sensor_2x2.py` on the non-CO variant (20k joint samples, raw encoding, W 256, depth 3, SiLU;
seed s uses the keys `sensor_2x2.py --seed s` uses, so seed 0 at 2500:0.003 is the committed
`--quick` model) and runs, from the same N(0, I) starts:

* the composite over agents 1..4 from all-00 histories for 3 and 10 cycles (L = 12, 40): the
  share of starts ending within 0.1 of Area 1 and of Area 2 (spec F23: each >= 0.3; the exact
  joint posterior is 0.5 / 0.5);
* the same with the analytic optimal blind denoiser (no approximation error), as reference;
* agent 4's individual flow (posterior 0.5 / 0.5 over Areas 1, 2): its basin split;
* the denoiser error against the analytic one: Sigma-dims MSE on y = s + sigma z, sigma in
  {0.1, 0.3, 1.0}, over the all-00 histories.

Writes results/<name>.json and .md (default nonco_composite) with the commit and command.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jaxdiff

jaxdiff.use_host_devices()  # one XLA host device per core, before JAX starts
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sensor_2x2 import HIT, N_AGENTS, STATES, log_posteriors  # noqa: E402
from sensor_common import HERE, markdown_table, provenance, train_model, write_json  # noqa: E402

from jaxdiff import statediff as sd  # noqa: E402
from jaxdiff.envs.sensor_grid import sensor_2x2  # noqa: E402

SPLIT_MIN = 0.3  # spec F23


def shares(end):
    """Share of end points within HIT of each one-hot state. end: [K, 4] -> [4]."""
    return [float(np.mean(np.linalg.norm(end - STATES[a], axis=-1) < HIT)) for a in range(4)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--schedules", default="2500:0.003,8000:0.001",
                    help="comma-separated Adam steps:lr")
    ap.add_argument("--starts", type=int, default=4000)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--name", default="nonco_composite")
    args = ap.parse_args()
    prov = provenance()
    t0 = time.time()
    seeds = [int(s) for s in args.seeds.split(",")]
    schedules = [(int(a), float(b)) for a, b in (x.split(":") for x in args.schedules.split(","))]
    env = sensor_2x2(False)
    zeros = jnp.zeros((N_AGENTS, 2))
    taus = env.encode(zeros, "raw")
    lp = log_posteriors(env, zeros)
    exact = sd.analytic_blind_denoiser(STATES)
    cycles = (3, 10)

    def flows(f, t):
        comp = {c: jax.vmap(lambda y, c=c: sd.composite_estimate(f, t, y, c * N_AGENTS))
                for c in cycles}
        a4 = lambda ys: sd.converge(f, t[3], ys)  # noqa: E731
        return comp, a4

    out = {**prov, "samples": args.samples, "width": args.width, "starts": args.starts,
           "cycles": list(cycles), "runs": []}
    y0_exact = jax.random.normal(jax.random.key(1234), (args.starts, 4))
    comp_e, a4_e = flows(exact, lp)
    out["exact_denoiser"] = {f"composite_{c}_cycles": shares(np.asarray(jax.jit(comp_e[c])(y0_exact)))
                             for c in cycles}
    out["exact_denoiser"]["agent4_individual"] = shares(np.asarray(jax.jit(a4_e)(y0_exact)))
    for seed in seeds:
        key = jax.random.key(seed)
        _, _, key = jax.random.split(key, 3)            # the CO variant's keys in sensor_2x2.py
        k_data, k_fit, key = jax.random.split(key, 3)
        rows = env.rows(env.sample_dataset(k_data, args.samples), "raw")
        y0 = jax.random.normal(jax.random.fold_in(key, 11), (args.starts, 4))
        for steps, lr in schedules:
            model, params, info = train_model(k_fit, rows, state_dim=4, width=args.width,
                                              steps=steps, lr=lr, label=f"non-CO seed {seed}")
            f = sd.denoise_fn(model, params)
            comp, a4 = flows(f, taus)
            run = {"seed": seed, "steps": steps, "lr": lr, "train": info}
            for c in cycles:
                run[f"composite_{c}_cycles"] = shares(np.asarray(jax.jit(comp[c])(y0)))
            run["agent4_individual"] = shares(np.asarray(jax.jit(a4)(y0)))
            k_err = jax.random.fold_in(key, 77)
            errs = {}
            for sigma in (0.1, 0.3, 1.0):
                s = STATES[jax.random.randint(k_err, (2000,), 0, 2)]   # Areas 1, 2 (consistent)
                y = s + sigma * jax.random.normal(jax.random.fold_in(k_err, int(sigma * 10)), s.shape)
                learned = jax.vmap(lambda yy: jax.vmap(lambda t: f(t, yy))(taus))(y)
                ref = jax.vmap(lambda yy: jax.vmap(lambda t: exact(t, yy))(lp))(y)
                errs[str(sigma)] = float(jnp.mean(jnp.sum((learned - ref) ** 2, -1)))
            run["mse_vs_exact_all00"] = errs
            c3 = run["composite_3_cycles"]
            run["splits"] = bool(min(c3[0], c3[1]) >= SPLIT_MIN)
            out["runs"].append(run)
            print(f"  [{time.time() - t0:.0f}s] seed {seed}, {steps} steps @ {lr}: composite "
                  f"{c3[0]:.3f} / {c3[1]:.3f} (3 cycles), agent 4 "
                  f"{run['agent4_individual'][0]:.3f} / {run['agent4_individual'][1]:.3f}", flush=True)
    out["wall_s"] = round(time.time() - t0, 1)
    by_sched = {}
    for r in out["runs"]:
        by_sched.setdefault((r["steps"], r["lr"]), []).append(r)
    out["summary"] = [{
        "steps": st, "lr": lr, "seeds": [r["seed"] for r in rs],
        "runs_that_split": sum(r["splits"] for r in rs),
        "min_share_3_cycles": [min(r["composite_3_cycles"][:2]) for r in rs],
        "final_loss": [r["train"]["loss_last_500"] for r in rs]} for (st, lr), rs in by_sched.items()]
    write_json(os.path.join(args.out, f"{args.name}.json"), out)

    ex = out["exact_denoiser"]
    rows = [["analytic f*", "-", "-",
             f"{ex['composite_3_cycles'][0]:.3f} / {ex['composite_3_cycles'][1]:.3f}",
             f"{ex['composite_10_cycles'][0]:.3f} / {ex['composite_10_cycles'][1]:.3f}",
             f"{ex['agent4_individual'][0]:.3f} / {ex['agent4_individual'][1]:.3f}", "0", "-"]]
    for r in out["runs"]:
        rows.append([f"seed {r['seed']}", f"{r['steps']} @ {r['lr']:g}",
                     f"{r['train']['loss_last_500']:.4f}",
                     f"{r['composite_3_cycles'][0]:.3f} / {r['composite_3_cycles'][1]:.3f}",
                     f"{r['composite_10_cycles'][0]:.3f} / {r['composite_10_cycles'][1]:.3f}",
                     f"{r['agent4_individual'][0]:.3f} / {r['agent4_individual'][1]:.3f}",
                     " / ".join(f"{v:.4f}" for v in r["mse_vs_exact_all00"].values()),
                     "yes" if r["splits"] else "no"])
    table = markdown_table(
        ["denoiser", "Adam steps @ lr", "loss (last 500)", "composite Area 1 / 2, 3 cycles",
         "10 cycles", "agent 4 alone, Area 1 / 2", "MSE vs f*, sigma 0.1 / 0.3 / 1",
         f"split (each >= {SPLIT_MIN})"], rows)
    summary = [f"* {s['steps']} steps @ lr {s['lr']:g}: {s['runs_that_split']} of "
               f"{len(s['seeds'])} seeds split (smaller share per seed "
               + ", ".join(f"{x:.3f}" for x in s["min_share_3_cycles"]) + ")."
               for s in out["summary"]]
    md = ["# Non-CO 2x2 composite from all-00 histories, learned denoisers (F23, Cor. 7.1)", "",
          f"Generated by `{prov['command']}` at commit {prov['commit']}; {out['wall_s']} s on "
          f"{os.cpu_count()} CPU cores. {args.samples} joint samples per seed, raw encoding, W "
          f"{args.width}, depth 3, batch 512; {args.starts} N(0, I) starts; a start 'reaches' a "
          f"state within {HIT} (L2). Exact joint posterior: 0.5 / 0.5 over Areas 1 and 2.", "",
          *summary, "", table, ""]
    with open(os.path.join(args.out, f"{args.name}.md"), "w") as fh:
        fh.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
