"""Compile time of a HAPPO training step against the number of agents.

The sequential update is one `lax.scan` over the agent permutation with dynamic indexing into
stacked parameters, so its traced program does not grow with the agent count. This measures
`jax.jit(step).lower(state).compile()` for HAPPO on `mpe_simple_spread` with n agents and n
landmarks (the env's own graph does grow with n: JaxMARL's per-agent dicts), on the n-agent
coordination toy (an env whose graph is independent of n), and, for contrast, the same step
with the agent loop unrolled (what a Python `for` over agents compiles to) and MAPPO's step on
the same MPE env (no agent loop at all: its growth is the env's).

    python -m jaxdiff.run.bench_sequential [--agents 2 8 17] [--out bench/results/...]

writes `{"compile_s": {"2": ..., "8": ..., "17": ...}, ...}`; tests never assert wall-clock time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax

from jaxdiff import envs
from jaxdiff.algos import base, happo, mappo, sequential

# Small batch: compile time hardly depends on it, and the state must be built on the host.
BENCH_CONFIG = dict(num_envs=4, num_steps=8, hidden=64, update_epochs=5, num_minibatches=1)


def _env(kind: str, n: int):
    if kind == "mpe":
        return envs.make("mpe_simple_spread", num_agents=n, num_landmarks=n)
    import jaxdiff.envs.toys  # noqa: F401  (registers coordination_game)
    return envs.make("coordination_game", n_agents=n)


def compile_seconds(n: int, kind: str = "mpe", unroll: bool = False, algo=happo) -> float:
    env = _env(kind, n)
    config = base.make_config(algo.Config, BENCH_CONFIG)
    state = jax.jit(lambda k: algo.init(k, env, config))(jax.random.PRNGKey(0))
    if algo is happo:
        step = sequential.make_step(env, config, happo.policy_update, unroll=unroll)
    else:
        step = algo.step(env, config)
    t0 = time.perf_counter()
    jax.jit(step).lower(state).compile()
    return time.perf_counter() - t0


def measure_compile(n_agents_list=(2, 8, 17), unrolled: bool = True, toy: bool = True,
                    reference: bool = True, repeats: int = 2) -> dict:
    """Compile seconds per agent count (best of `repeats` fresh compiles, since a shared
    machine's load only ever adds time): `compile_s` (HAPPO on mpe_simple_spread), and
    optionally `compile_s_toy` (coordination toy), `compile_s_unrolled` (MPE, agent loop
    unrolled) and `compile_s_mappo` (MAPPO on the same MPE env)."""
    def best(**kw):
        return {str(n): min(compile_seconds(n, **kw) for _ in range(repeats))
                for n in n_agents_list}

    out = {"compile_s": best()}
    if toy:
        out["compile_s_toy"] = best(kind="toy")
    if unrolled:
        out["compile_s_unrolled"] = best(unroll=True)
    if reference:
        out["compile_s_mappo"] = best(algo=mappo)
    out.update(repeats=repeats, config=BENCH_CONFIG, backend=jax.default_backend(), jax=jax.__version__,
               machine=platform.machine(), cpu_count=os.cpu_count())
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, nargs="+", default=[2, 8, 17])
    ap.add_argument("--out", default=os.path.join("bench", "results", "sequential_compile.json"))
    ap.add_argument("--repeats", type=int, default=2, help="fresh compiles per cell (best kept)")
    ap.add_argument("--quick", action="store_true", help="HAPPO on MPE only, one compile each")
    args = ap.parse_args(argv)
    res = measure_compile(tuple(args.agents), unrolled=not args.quick, toy=not args.quick,
                          reference=not args.quick, repeats=1 if args.quick else args.repeats)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    rows = [k for k in ("compile_s", "compile_s_toy", "compile_s_unrolled", "compile_s_mappo")
            if k in res]
    print("| agents | " + " | ".join(rows) + " |")
    print("| --- |" + " --- |" * len(rows))
    for n in args.agents:
        print(f"| {n} | " + " | ".join(f"{res[r][str(n)]:.1f}" for r in rows) + " |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
