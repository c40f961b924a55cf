"""DDPL's speed rows (paper 002 Table 2 on our side, spec-ddpl F25): inference latency, training
step time and FLOPs of DDPL and DDPL-Gaussian at the same network sizes, and env-steps/s of the
vmapped seed ensemble, written to bench/results/ddpl.json.

    jaxdiff bench only=ddpl            # or: python -m jaxdiff.benchmarks.bench_ddpl [--quick]

- inference: one jitted action selection for all agents of `num_envs` envs (the algorithm's
  `act`, vmapped over the envs), H = `steps` denoising steps for DDPL;
- training step: one epoch of Algorithm 2 (`num_envs` env steps + one update on a batch of
  `batch_size`), jitted, on a state whose buffer can already be sampled (after warm-up);
- FLOPs: XLA's cost analysis of the same compiled programs, built with the reverse process
  fully unrolled (`sampler_unroll = steps`): the analysis counts a loop body once, whatever its
  trip count; GFLOP/s = FLOPs / median time, to read against the machine's peak;
- env-steps/s: `bench.measure`, the runner's `jit(scan(vmap(step)))` over 1 and 16 seeds.

Times are medians over `repeats` calls after two warm-up calls, each ended by
`block_until_ready`. DDPL is also timed with `sampler_fused=false` (the generic reverse process),
so the fused loop's gain is measured in the same run. The paper's numbers (RTX 5090 + IsaacLab
Bi-ShadowHandOver, columns swapped as printed: spec §8.17) are printed beside ours for scale
only: different machine, env and agent count.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import jax

from jaxdiff import envs as envs_lib
from jaxdiff.algos import base as algos
from jaxdiff.benchmarks import bench

ENV, ENV_KWARGS = "mpe_simple_reference", {"action_type": "continuous"}
ALGOS = ("ddpl", "ddpl_gaussian")
# Table 3 sizes; the buffer only needs to be sampleable (its size does not change the work of
# a step: adds are in-place slices, a batch is a gather of batch_size rows).
SIZES = dict(num_envs=20, batch_size=256, hidden=256, layers=3, buffer_size=20_000)
STEPS = 20
PAPER = dict(machine="AMD EPYC 9275F + RTX 5090, IsaacLab Bi-ShadowHandOver (paper 002 "
                     "Table 2, columns swapped as printed: spec-ddpl 8.17)",
             ddpl=dict(inference_ms=0.820, train_step_ms=3.684),
             ddpl_gaussian=dict(inference_ms=0.374, train_step_ms=2.599),
             train_step_ratio_vs_gaussian=round(3.684 / 2.599, 3))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_ms(fn, *args, repeats: int) -> float:
    """Median wall time of `fn(*args)` in ms after two warm-up calls."""
    for _ in range(2):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def flops(compiled) -> float:
    """XLA's FLOP count of a compiled program (cost_analysis is a dict, or a list of one per
    device on older jax)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def _overrides(algo: str, sizes: dict, steps: int, extra: dict | None = None) -> dict:
    over = dict(sizes, warmup_steps=0)
    if algo == "ddpl":
        over["steps"] = steps
    return dict(over, **(extra or {}))


def _programs(algorithm, env, config):
    """(select, train_step): the jitted action selection for all envs and Algorithm 2's epoch."""
    def select(state, obs, key):
        keys = jax.random.split(key, obs.shape[0])
        return jax.vmap(lambda o, k: algorithm.act(config, env, state, o, None, None, k,
                                                   deterministic=False)[0])(obs, keys)

    return jax.jit(select), jax.jit(algorithm.step(env, config, iterations=10**6))


def _warm_state(state, config, train_step):
    """`state` run until its buffer can be sampled: the epochs after this one all learn."""
    learning = 0.0
    for _ in range(math.ceil(config.batch_size / config.num_envs) + 2):
        state, metrics = train_step(state)
        learning = float(metrics["learning"])
    if learning != 1.0:
        raise RuntimeError("bench_ddpl: the warm-up epochs did not make the buffer sampleable.")
    return state


def measure_algo(algo: str, env, sizes: dict, steps: int, repeats: int,
                 extra: dict | None = None) -> dict:
    """Inference and training-step medians and FLOPs of `algo` (`extra`: further overrides)."""
    algorithm = algos.get(algo)
    over = _overrides(algo, sizes, steps, extra)
    config = algos.make_config(algorithm.Config, over)
    select, train_step = _programs(algorithm, env, config)
    state = jax.jit(lambda k: algorithm.init(k, env, config))(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    t0 = time.perf_counter()
    select_c = select.lower(state, state.obs, key).compile()
    train_c = train_step.lower(state).compile()
    compile_s = time.perf_counter() - t0
    state = _warm_state(state, config, train_c)
    inf_ms = median_ms(select_c, state, state.obs, key, repeats=repeats)
    # the train step fed its own output: every call is a real epoch on a changing state
    box = [state]

    def epoch():
        box[0], m = train_c(box[0])
        return m
    train_ms = median_ms(epoch, repeats=repeats)
    row = dict(algo=algo, inference_ms=inf_ms, train_step_ms=train_ms,
               compile_s=round(compile_s, 2))
    if extra:       # a variant of the same work: timed only
        return dict(row, variant=", ".join(f"{k}={v}" for k, v in extra.items()))
    # FLOPs from the same programs with the reverse process unrolled (cost analysis counts a
    # loop body once); the Gaussian has no loop.
    if algo == "ddpl":
        config_u = algos.make_config(algorithm.Config, dict(over, sampler_unroll=steps))
        select_u, train_u = _programs(algorithm, env, config_u)
        inf_flops = flops(select_u.lower(state, state.obs, key).compile())
        train_flops = flops(train_u.lower(state).compile())
    else:
        inf_flops, train_flops = flops(select_c), flops(train_c)
    n_actions = config.num_envs * env.spec.n_agents
    return dict(row, inference_flops=inf_flops, flops_per_agent_action=inf_flops / n_actions,
                train_step_flops=train_flops, inference_gflops_per_s=inf_flops / inf_ms / 1e6,
                train_gflops_per_s=train_flops / train_ms / 1e6)


def run(sizes: dict | None = None, steps: int = STEPS, seeds=(1, 16), repeats: int = 20,
        min_time: float = 3.0, reference: bool = True) -> dict:
    """Every row of ddpl.json (see the module docstring); prints the table as it goes."""
    sizes = dict(SIZES, **(sizes or {}))
    env = envs_lib.make(ENV, **ENV_KWARGS)
    rows = {a: measure_algo(a, env, sizes, steps, repeats) for a in ALGOS}
    ref = measure_algo("ddpl", env, sizes, steps, repeats, {"sampler_fused": False}) \
        if reference else None
    ratio = rows["ddpl"]["train_step_ms"] / rows["ddpl_gaussian"]["train_step_ms"]
    throughput = []
    for algo in ALGOS:
        for s in seeds:
            r = bench.measure(algo, ENV, _overrides(algo, sizes, steps), s, min_time=min_time,
                              env_kwargs=ENV_KWARGS)
            throughput.append(dict(r, env_kwargs=ENV_KWARGS))
    result = dict(
        machine=bench._machine(), cpu_model=cpu_model(), jax=jax.__version__,
        backend=jax.default_backend(), measured=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        commit=bench.git_commit(os.path.dirname(os.path.abspath(__file__))),
        env=ENV, env_kwargs=ENV_KWARGS, n_agents=env.spec.n_agents, act_dim=env.spec.act_dim,
        settings=dict(sizes, steps=steps, activation="mish", repeats=repeats),
        rows=list(rows.values()) + ([ref] if ref else []),
        train_step_ratio_vs_gaussian=ratio,
        inference_ratio_vs_gaussian=rows["ddpl"]["inference_ms"]
        / rows["ddpl_gaussian"]["inference_ms"],
        throughput=throughput, paper=PAPER)
    if ref:
        result["fused_speedup"] = dict(
            inference=ref["inference_ms"] / rows["ddpl"]["inference_ms"],
            train_step=ref["train_step_ms"] / rows["ddpl"]["train_step_ms"])
    _print(result)
    return result


def _print(res: dict) -> None:
    s = res["settings"]
    print(f"\nDDPL speed ({res['env']} continuous, {res['n_agents']} agents, {s['num_envs']} envs, "
          f"H={s['steps']}, batch {s['batch_size']}, {s['layers']}x{s['hidden']} {s['activation']})"
          f"\nours: {res['machine']} ({res['cpu_model']}), jax {res['jax']}; paper: "
          f"{res['paper']['machine']}")
    print("| algo | inference ms (ours) | paper | train step ms (ours) | paper | "
          "FLOPs/agent-action | inference GFLOP/s | train step GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        p = res["paper"].get(r["algo"], {}) if "variant" not in r else {}
        name = r["algo"] + (f" ({r['variant']})" if "variant" in r else "")
        rates = (f"{r['flops_per_agent_action']:.3g} | {r['inference_gflops_per_s']:.2f} | "
                 f"{r['train_gflops_per_s']:.2f}") if "train_step_flops" in r else "– | – | –"
        print(f"| {name} | {r['inference_ms']:.3f} | {p.get('inference_ms', '–')} | "
              f"{r['train_step_ms']:.3f} | {p.get('train_step_ms', '–')} | {rates} |")
    print(f"train step ratio DDPL / DDPL-Gaussian: {res['train_step_ratio_vs_gaussian']:.2f}x "
          f"(paper {res['paper']['train_step_ratio_vs_gaussian']}x)")
    if "fused_speedup" in res:
        f = res["fused_speedup"]
        print(f"fused reverse process vs generic: inference {f['inference']:.2f}x, "
              f"train step {f['train_step']:.2f}x")
    print("| algo | seeds | env-steps/s (all seeds) | per seed |\n|---|---|---|---|")
    for r in res["throughput"]:
        print(f"| {r['algo']} | {r['seeds']} | {r['env_steps_per_s']:,.0f} | "
              f"{r['env_steps_per_s_per_seed']:,.0f} |", flush=True)


def main(quick: bool = False, out: str = os.path.join("bench", "results", "ddpl.json"),
         min_time: float = 3.0, **kw) -> dict:
    """The full rows (quick: 1 and 4 seeds, fewer repeats, no generic-sampler row), written to
    `out`."""
    if quick:
        kw = dict(dict(seeds=(1, 4), repeats=5, reference=False), **kw)
    res = run(min_time=min_time, **kw)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"written: {out}")
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 and 4 seeds, 5 repeats")
    ap.add_argument("--out", default=os.path.join("bench", "results", "ddpl.json"))
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds per env-steps/s row")
    args = ap.parse_args()
    main(quick=args.quick, out=args.out, min_time=args.min_time)
