"""Compile time of a HAPPO training step against the number of agents.

The sequential update is one `lax.scan` over the agent permutation with dynamic indexing into
stacked parameters, so its traced program does not grow with the agent count. This measures
`jax.jit(step).lower(state).compile()` for HAPPO on `mpe_simple_spread` with n agents and n
landmarks (the env's own graph does grow with n: JaxMARL's per-agent dicts), on the n-agent
coordination toy (an env whose graph is independent of n), and, for contrast, the same step
with the agent loop unrolled (what a Python `for` over agents compiles to) and MAPPO's step on
the same MPE env (no agent loop at all: its growth is the env's).

    python -m jaxdiff.benchmarks.bench_sequential [--agents 2 8 17] [--out bench/results/...]

writes `{"compile_s": {"2": ..., "8": ..., "17": ...}, "hlo_lines": {...}, ...}`; tests never
assert wall-clock time.
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
from jaxdiff.run.logging import git_commit

# Small batch: compile time hardly depends on it, and the state must be built on the host.
BENCH_CONFIG = dict(num_envs=4, num_steps=8, hidden=64, update_epochs=5, num_minibatches=1)


def _env(kind: str, n: int):
    if kind == "mpe":
        return envs.make("mpe_simple_spread", num_agents=n, num_landmarks=n)
    import jaxdiff.envs.toys  # noqa: F401  (registers coordination_game)
    return envs.make("coordination_game", n_agents=n)


def compile_stats(n: int, kind: str = "mpe", unroll: bool = False, algo=happo):
    """(compile seconds, lines of the optimised HLO) of one training step with n agents.
    The line count is a load-independent measure of the compiled program's size (the lowered
    StableHLO would not do: it shares repeated function bodies that XLA then inlines)."""
    env = _env(kind, n)
    config = base.make_config(algo.Config, BENCH_CONFIG)
    state = jax.jit(lambda k: algo.init(k, env, config))(jax.random.PRNGKey(0))
    if algo is happo:
        step = sequential.make_step(env, config, sequential.surrogate_update, unroll=unroll)
    else:
        step = algo.step(env, config)
    lowered = jax.jit(step).lower(state)
    t0 = time.perf_counter()
    compiled = lowered.compile()
    return time.perf_counter() - t0, len(compiled.as_text().splitlines())


def compile_seconds(n: int, **kw) -> float:
    return compile_stats(n, **kw)[0]


VARIANTS = {  # result key suffix -> compile_stats keywords
    "": {},                                # HAPPO on mpe_simple_spread (n agents, n landmarks)
    "_toy": {"kind": "toy"},               # HAPPO on the n-agent coordination game
    "_unrolled": {"unroll": True},         # HAPPO on MPE, agent loop unrolled
    "_mappo": {"algo": mappo},             # MAPPO on MPE: no agent loop, the env's growth
}


def measure_compile(n_agents_list=(2, 8, 17), unrolled: bool = True, toy: bool = True,
                    reference: bool = True, repeats: int = 2) -> dict:
    """Compile seconds per agent count (best of `repeats` fresh compiles, since a shared
    machine's load only ever adds time) and optimised-HLO sizes: `compile_s` /
    `hlo_lines` for HAPPO on mpe_simple_spread and, optionally, the same with suffix `_toy`
    (coordination toy), `_unrolled` (MPE, agent loop unrolled) and `_mappo` (MAPPO on MPE)."""
    wanted = {"": True, "_toy": toy, "_unrolled": unrolled, "_mappo": reference}
    out = {}
    for suffix, kw in VARIANTS.items():
        if not wanted[suffix]:
            continue
        secs, lines = {}, {}
        for n in n_agents_list:
            runs = [compile_stats(n, **kw) for _ in range(repeats)]
            secs[str(n)], lines[str(n)] = min(r[0] for r in runs), runs[0][1]
        out["compile_s" + suffix], out["hlo_lines" + suffix] = secs, lines
    out.update(repeats=repeats, config=BENCH_CONFIG, backend=jax.default_backend(),
               jax=jax.__version__, machine=platform.machine(), cpu_count=os.cpu_count(),
               load_avg_1m=os.getloadavg()[0],
               measured=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               commit=git_commit(os.path.dirname(os.path.abspath(__file__))))
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
    rows = [k for k in res if k.startswith(("compile_s", "hlo_lines"))]
    print("| agents | " + " | ".join(rows) + " |")
    print("| --- |" + " --- |" * len(rows))
    for n in args.agents:
        print(f"| {n} | " + " | ".join(f"{res[r][str(n)]:.4g}" for r in rows) + " |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
