"""Paper 002 (DDPL), spec-ddpl F22: the policy class inside Algorithm 2 on the toy M_sa --
DDPL (diffusion + ISSM) vs DDPL-Gaussian with the reverse-KL projection, both with their own
learned critics Q(s, a) (no oracle), everything else shared.

    python experiments/ddpl/toy_alg2_policy_class.py [--iters 2000] [--seeds 0 1]

The claim to check (spec §7 F22): the DDPL action mean at the start state moves toward −β = −0.5
(the action that opens the delayed reward) while the Gaussian stays near 0 (the quadratic well of
r_start). Unlike `toy_gaussian_limit.py` (Algorithm 1 with a known Q̂, only the class differs),
this runs the registered algorithms end to end: replay, warm-up, twin critics, the same
next-action samples for the Q target and the policy step.

Settings [CHOICE, calibrated on a 2-core CPU, ~2-3 min per run]: 20 envs, batch 128, warm-up
1000 uniform-random transitions, 2x128 mish nets, γ = 0.1 (the toy's), constant lr 1e-3,
reward_scale 0.01 (the goal reward c1 = 2e4 otherwise dominates the critic's regression), DDPL
with H = 10, VP schedule and the β ("ho") reverse variance (the sampler that reproduces
N(0, 0.1) from the exact score, see toy_gaussian_limit.py; Table 3's linear + posterior
collapses the policy to std ~0.02 within a few hundred updates). The Gaussian starts at
N(0, 1) (`ddpl_gaussian`'s init: mean head ~0, log-std ~0), wider than the paper's N(0, 0.1).

Reports per seed and snapshot (every iters/4): the action mean / std / fraction below −0.3 of
2000 samples at s0, and the final learned Q(s0, a) on a grid next to the exact
0.01 * (r_start(a) + γ c1 p_start(a)). Writes results/toy_alg2_policy_class.{json,md}.
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
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import envs as envs_lib
from jaxdiff.algos import base
from jaxdiff.algos import ddpl
from jaxdiff.envs.toys import ddpl_toy as toy

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
COMMON = dict(num_envs=20, batch_size=128, warmup_steps=1000, buffer_size=20_000, hidden=128,
              layers=2, gamma=0.1, lr=1e-3, lr_end=1e-3, lr_schedule="constant",
              reward_scale=0.01)
VARIANTS = {"ddpl": ("ddpl", "diffusion", dict(steps=10, schedule="vp", sampler="ho")),
            "ddpl_gaussian_rkl": ("ddpl_gaussian", "gaussian",
                                  dict(gauss_projection="reverse_kl"))}
GRID = np.linspace(-1.0, 1.0, 9)


def run(variant: str, seed: int, iters: int, snapshots: int = 4, samples: int = 2000) -> dict:
    name, kind, extra = VARIANTS[variant]
    env = envs_lib.make("ddpl_toy_sa")
    alg = base.get(name)
    cfg = base.make_config(alg.Config, dict(COMMON, **extra))
    per = iters // snapshots
    step = alg.step(env, cfg, iterations=per * snapshots)
    p = ddpl._parts(env, cfg, kind)
    s0 = jnp.zeros((1, env.spec.obs_dim)).at[0, 0].set(1.0)          # one-hot start state

    def actions(state, key):
        cond = ddpl.policy_cond(cfg, jnp.broadcast_to(s0, (samples, 1, env.spec.obs_dim)))
        return ddpl.sample_policy(p, state.actor, cond, key)[..., 0, 0]

    @jax.jit
    def go(key):
        state = alg.init(key, env, cfg)
        snaps = []
        for i in range(snapshots):
            state, _ = jax.lax.scan(lambda s, _: (step(s)[0], None), state, None, per)
            snaps.append(actions(state, jax.random.fold_in(key, i)))
        q = ddpl.q_values(p, state.critic, s0[0], jnp.asarray(GRID)[:, None, None]).min(0)
        return jnp.stack(snaps), q[:, 0]

    t = time.time()
    a, q = jax.device_get(go(jax.random.PRNGKey(seed)))
    return dict(variant=variant, seed=seed, wall_s=time.time() - t,
                steps=[(i + 1) * per * cfg.num_envs for i in range(snapshots)],
                mean=a.mean(1).tolist(), std=a.std(1).tolist(),
                frac_below_m03=(a < -0.3).mean(1).tolist(), q_grid=np.asarray(q).tolist())


def exact_q() -> list:
    a = jnp.asarray(GRID)
    return (COMMON["reward_scale"] * (toy.r_start(a) + toy.PARAMS.gamma * toy.PARAMS.c1
                                      * toy.p_start(a))).tolist()


def _commit() -> str:
    from jaxdiff.run.logging import git_commit
    return git_commit(HERE)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=2000, help="epochs (x 20 env steps)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args(argv)
    runs = [run(v, s, args.iters) for s in args.seeds for v in VARIANTS]
    doc = dict(commit=_commit(), command="python " + " ".join(
        shlex.quote(x) for x in [os.path.relpath(__file__, os.getcwd())]
        + (argv if argv is not None else sys.argv[1:])), settings=COMMON,
        variants={k: v[2] for k, v in VARIANTS.items()}, iters=args.iters,
        env_steps=args.iters * COMMON["num_envs"], q_grid_a=GRID.tolist(), q_exact=exact_q(),
        runs=runs)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "toy_alg2_policy_class.json"), "w") as fh:
        json.dump(doc, fh, indent=2)
    f = lambda xs: " ".join(f"{x:+.2f}" for x in xs)
    lines = ["# F22: Algorithm 2 on M_sa, diffusion vs Gaussian (reverse KL), learned critics", "",
             f"Commit {doc['commit']}; command `{doc['command']}`; {doc['env_steps']:,} env "
             f"steps per run ({args.iters} epochs, ~{args.iters - 50} updates).", "",
             "| variant | seed | env steps at snapshots | action mean at s0 | std | "
             "fraction < −0.3 | wall s |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['variant']} | {r['seed']} | {', '.join(f'{s:,}' for s in r['steps'])}"
                     f" | {f(r['mean'])} | {f(r['std'])} | {f(r['frac_below_m03'])} | "
                     f"{r['wall_s']:.0f} |")
    lines += ["", f"Final learned Q(s0, a) at a = {f(GRID)} (exact x0.01: "
              f"{f(doc['q_exact'])}):", ""]
    lines += [f"- {r['variant']} seed {r['seed']}: {f(r['q_grid'])}" for r in runs]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(RESULTS, "toy_alg2_policy_class.md"), "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
