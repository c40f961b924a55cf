"""`jaxdiff bench` / `make bench`: training env-steps/s and compile time, printed as a table and
written to bench/results/<name>.json.

Each case times `jit(scan(vmap(step), K))` exactly as the runner runs it: compile once (timed
through `lower().compile()`), one warm-up call, then repeated calls for at least `min_time`
seconds. env-steps/s counts vectorised transitions over all vmapped seeds ("combined").
"""
from __future__ import annotations

import json
import os
import platform
import time

import jax
import jax.numpy as jnp

from jaxdiff import envs as envs_lib
from jaxdiff.algos import base as algos
from jaxdiff.run import runner
from jaxdiff.run.logging import git_commit

# (algo, env, algo overrides, env kwargs). Presets = JaxMARL's baseline configs for the on-policy
# rows and HARL's configs for the heterogeneous-agent rows.
_CONT = {"action_type": "continuous"}
CASES = [
    ("ippo", "mpe_simple_spread", {}, {}),
    ("mappo", "mpe_simple_spread", {}, {}),
    ("mappo", "smax_3m", "preset", {}),
    ("ippo", "smax_3m", "preset", {}),
    ("ippo", "mabrax_ant_4x2", "preset", {}),
    ("mappo", "mabrax_ant_4x2", "preset", {}),
    ("happo", "mpe_simple_spread", "preset", _CONT),
    ("hasac", "mpe_simple_spread", "preset", _CONT),
]
SEEDS = (1, 4, 16)
# Peer comparisons are not typed in here: experiments/baselines/compare_jaxmarl.py times
# JaxMARL's own scripts beside jaxdiff in one process, at equal placement.


def _overrides(algo: str, env: str, over) -> dict:
    if over != "preset":
        return dict(over)
    from jaxdiff.config import compose
    return compose([f"algo={algo}", f"env={env}"])["algo"]


def measure(algo: str, env_name: str, overrides: dict, seeds: int, *, min_time: float = 5.0,
            iters_per_call: int = 1, env_kwargs: dict | None = None, shard: bool = True) -> dict:
    algorithm = algos.get(algo)
    env = envs_lib.make(env_name, **(env_kwargs or {}))
    config = algos.make_config(algorithm.Config, overrides)
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    hp = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * seeds), config)
    # The runner's placement: members split over the devices (one per core on CPU), and a
    # member's envs over the devices left over.
    sharding = runner.member_sharding(algorithm, env, config, seeds) if shard else None
    state = runner.place(jax.jit(jax.vmap(lambda k, c: algorithm.init(k, env, c)))(keys, hp),
                         sharding)
    # a long run's schedule (what a 10M-step run anneals over)
    iterations = max(1, 10**7 // algorithm.env_steps_per_iter(config, env))
    step = algorithm.step(env, config, iterations=iterations)
    chunk = runner.make_chunk(lambda s, _: step(s), iters_per_call, sharding)
    compiled, compile_s = runner.compile_chunk(chunk, state, None, sharding)
    state, m = compiled(state, None)
    jax.block_until_ready(m)
    per_call = algorithm.env_steps_per_iter(config, env) * iters_per_call * seeds
    calls, t0 = 0, time.perf_counter()
    while True:
        state, m = compiled(state, None)
        jax.block_until_ready(m)
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time and calls >= 2:
            break
    return dict(algo=algo, env=env_name, seeds=seeds, compile_s=round(compile_s, 2),
                devices=1 if sharding is None else sharding.mesh.size,
                env_steps_per_s=per_call * calls / elapsed,
                env_steps_per_s_per_seed=per_call * calls / elapsed / seeds,
                wall_per_call_s=elapsed / calls)


def _machine() -> str:
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, {jax.devices()[0].device_kind}"


def _row_key(r: dict) -> tuple:
    return (r["algo"], r["env"], r["seeds"], json.dumps(r.get("env_kwargs") or {}, sort_keys=True))


def _merge(path: str, rows: list[dict]) -> list[dict]:
    """The rows of an earlier table at `path` that this run did not re-measure (a filtered
    `jaxdiff bench only=...` updates its rows and keeps the others), then the new rows."""
    try:
        with open(path) as f:
            old = json.load(f).get("rows", [])
    except (OSError, ValueError):
        old = []
    new_keys = {_row_key(r) for r in rows}
    kept = [r for r in old if isinstance(r, dict) and "algo" in r and _row_key(r) not in new_keys]
    return kept + rows


def main(quick: str = "false", only: str = "", seeds: str = "", min_time: str = "5",
         out: str = "bench/results", compile_agents: str = "2,8,17") -> list[dict]:
    quick_b = str(quick).lower() in ("true", "1", "yes")
    seed_list = tuple(int(s) for s in seeds.split(",")) if seeds else ((1, 4) if quick_b else SEEDS)
    rows = []
    commit = git_commit(os.path.dirname(os.path.abspath(__file__)))
    os.makedirs(out, exist_ok=True)
    print(f"machine: {_machine()}, jax {jax.__version__}")
    print("| algo | env | seeds | devices | compile s | env-steps/s (all seeds) | per seed "
          "| x vs 1 seed |")
    print("|---|---|---|---|---|---|---|---|")
    for algo, env, over, env_kw in CASES:
        if only and only not in f"{algo}_{env}":
            continue
        if algo not in algos.names():
            print(f"| {algo} | {env} | – | – | – | (algorithm not registered) | | |")
            continue
        base_rate = None
        for s in seed_list:
            r = measure(algo, env, _overrides(algo, env, over), s, min_time=float(min_time),
                        env_kwargs=env_kw)
            r["env_kwargs"] = env_kw
            r["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            r["commit"] = commit
            base_rate = base_rate or r["env_steps_per_s"]
            r["speedup_vs_1_seed"] = r["env_steps_per_s"] / base_rate
            rows.append(r)
            print(f"| {algo} | {env}{'' if not env_kw else ' ' + str(env_kw)} | {s} | "
                  f"{r['devices']} | {r['compile_s']:.1f} | {r['env_steps_per_s']:,.0f} | "
                  f"{r['env_steps_per_s_per_seed']:,.0f} | {r['speedup_vs_1_seed']:.2f} |",
                  flush=True)
    if rows:   # a filter that matched no throughput case leaves the last table in place
        path = os.path.join(out, "training_throughput.json")
        result = dict(machine=_machine(), jax=jax.__version__,
                      command="jaxdiff bench" + (f" only={only}" if only else ""),
                      note="each row: its commit and time (`measured`); the table's other rows "
                           "are kept from earlier invocations; compare rows measured together",
                      rows=_merge(path, rows))
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
        print(f"written: {path}\nSide by side with JaxMARL's scripts at equal placement: "
              f"python experiments/baselines/compare_jaxmarl.py --jaxmarl <checkout>")
    if not only or only in "statediff":
        from jaxdiff.benchmarks import bench_statediff
        sd_rows = bench_statediff.main(widths=(256,) if quick_b else (256, 1024, 4096),
                                       min_time=float(min_time) / 2)
        with open(os.path.join(out, "statediff_throughput.json"), "w") as f:
            json.dump(dict(machine=_machine(), jax=jax.__version__, commit=commit,
                           measured=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           rows=sd_rows), f, indent=2)
    if not only or only in "ddpl":
        from jaxdiff.benchmarks import bench_ddpl
        bench_ddpl.main(quick=quick_b, out=os.path.join(out, "ddpl.json"),
                        min_time=float(min_time) / 2)
    if compile_agents and (not only or only in "happo_compile"):
        from jaxdiff.benchmarks import bench_sequential
        agents = [str(int(a)) for a in str(compile_agents).split(",")]
        print("\nHAPPO compile time vs number of agents (sequential update = one lax.scan):")
        bench_sequential.main(["--agents", *agents,
                               "--out", os.path.join(out, "sequential_compile.json")]
                              + (["--quick"] if quick_b else []))
    return rows
