"""Why JaxMARL's IPPO stays below the random policy on ant_4x2, measured.

    python experiments/baselines/ant_ctrl_cost.py [--episodes 16]

Brax's Ant charges `ctrl_cost = 0.5 * sum(action**2)` on the action it is GIVEN, while the
physics clips the action to [-1, 1]. JaxMARL's IPPO passes its unclipped Gaussian samples
(initial std 1) straight to the env, so it pays for action magnitude that has no effect; the
jaxdiff adapter clips to the action bounds first (`MABraxAdapter.global_action`). This script
rolls out four fixed policies on the raw Brax Ant (1000-step episodes, auto-termination when
unhealthy) and reports the episode return, length and the control-cost share:

    uniform[-1,1]          the "random policy" row of the baselines table
    N(0,1) unclipped       JaxMARL IPPO's initial policy as the env sees it
    N(0,1) clipped         the same policy through the jaxdiff adapter
    zeros                  standing still (what a deterministic policy near 0 earns)

Writes results/ant_ctrl_cost.json and prints a table.
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

HERE = os.path.dirname(os.path.abspath(__file__))

POLICIES = {
    "uniform[-1,1]": lambda k, d: jax.random.uniform(k, (d,), minval=-1.0, maxval=1.0),
    "N(0,1) unclipped (JaxMARL IPPO at init)": lambda k, d: jax.random.normal(k, (d,)),
    "N(0,1) clipped (jaxdiff adapter)": lambda k, d: jnp.clip(jax.random.normal(k, (d,)), -1, 1),
    "zeros": lambda k, d: jnp.zeros((d,)),
}


def episode_stats(brax_env, policy, key, max_steps: int):
    d = brax_env.action_size

    def body(c, k):
        state, alive, ret, ctrl, length = c
        a = policy(k, d)
        nxt = brax_env.step(state, a)
        ret = ret + alive * nxt.reward
        ctrl = ctrl + alive * 0.5 * jnp.sum(a * a)
        length = length + alive
        alive = alive * (1.0 - nxt.done)
        return (nxt, alive, ret, ctrl, length), None

    k0, key = jax.random.split(key)
    state = brax_env.reset(k0)
    init = (state, jnp.float32(1.0), jnp.float32(0.0), jnp.float32(0.0), jnp.float32(0.0))
    (_, _, ret, ctrl, length), _ = jax.lax.scan(body, init, jax.random.split(key, max_steps))
    return ret, ctrl, length


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "ant_ctrl_cost.json"))
    args = ap.parse_args()
    env = envs_lib.make("mabrax_ant_4x2")
    inner = env
    while not hasattr(inner, "brax_env"):
        inner = inner.env
    brax_env, T = inner.brax_env, env.spec.max_steps
    rows = []
    print(f"Brax Ant ({T}-step episodes), {args.episodes} episodes per policy")
    print("| policy | episode return | episode length | control cost per episode |")
    print("|---|---|---|---|")
    for name, pol in POLICIES.items():
        run = jax.jit(jax.vmap(lambda k: episode_stats(brax_env, pol, k, T)))
        ret, ctrl, length = run(jax.random.split(jax.random.PRNGKey(0), args.episodes))
        row = dict(policy=name, return_mean=float(ret.mean()), return_std=float(ret.std()),
                   length_mean=float(length.mean()), ctrl_cost_mean=float(ctrl.mean()))
        rows.append(row)
        print(f"| {name} | {row['return_mean']:.1f} ± {row['return_std']:.1f} | "
              f"{row['length_mean']:.0f} | {row['ctrl_cost_mean']:.1f} |", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(episodes=args.episodes, max_steps=T, rows=rows), f, indent=2)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
