"""DDPL's bench rows (`jaxdiff bench only=ddpl`): XLA's FLOP count read right (against the
closed-form count of a matmul), and, at tiny sizes, the JSON it writes: every key, positive and
finite numbers, the ratio the rows imply, and inference FLOPs that count all H denoising steps
(at least H matmul passes per agent action: the unrolled program, not one loop body). No timing
assertions."""
import json
import math

import jax
import jax.numpy as jnp
import pytest

from jaxdiff import envs
from jaxdiff.benchmarks import bench_ddpl


def test_flops_reads_the_cost_analysis_of_a_matmul_and_median_is_positive():
    m, k, n = 8, 16, 4
    f = jax.jit(lambda x, y: x @ y)
    x, y = jnp.ones((m, k)), jnp.ones((k, n))
    assert bench_ddpl.flops(f.lower(x, y).compile()) == pytest.approx(2 * m * k * n, rel=0.01)
    assert bench_ddpl.median_ms(f, x, y, repeats=3) > 0


@pytest.mark.slow
def test_tiny_bench_writes_every_key_with_positive_finite_numbers(tmp_path):
    sizes = dict(num_envs=4, batch_size=8, hidden=16, layers=1, buffer_size=64)
    steps = 3
    out = tmp_path / "ddpl.json"
    bench_ddpl.main(out=str(out), min_time=0.01, sizes=sizes, steps=steps, seeds=(1, 2),
                    repeats=2, reference=True)
    res = json.loads(out.read_text())
    for key in ("machine", "cpu_model", "jax", "settings", "paper", "throughput",
                "inference_ratio_vs_gaussian", "fused_speedup"):
        assert key in res
    rows = {(r["algo"], "variant" in r): r for r in res["rows"]}
    assert set(rows) == {("ddpl", False), ("ddpl_gaussian", False), ("ddpl", True)}
    timed = ("inference_ms", "train_step_ms")
    counted = ("inference_flops", "flops_per_agent_action", "train_step_flops",
               "inference_gflops_per_s", "train_gflops_per_s")
    for (_, variant), r in rows.items():
        for key in timed + (() if variant else counted):
            assert math.isfinite(r[key]) and r[key] > 0, (r["algo"], key, r[key])
    ddpl, gauss = rows[("ddpl", False)], rows[("ddpl_gaussian", False)]
    assert res["train_step_ratio_vs_gaussian"] == pytest.approx(
        ddpl["train_step_ms"] / gauss["train_step_ms"])
    # every denoising step counted: the matmuls of H passes per agent action (a_t and output
    # layers; layers=1 has no hidden ones) plus the hoisted conditioning term, once
    spec = envs.make(bench_ddpl.ENV, **bench_ddpl.ENV_KWARGS).spec
    A, h, C = res["act_dim"], sizes["hidden"], spec.n_agents * spec.obs_dim
    assert ddpl["flops_per_agent_action"] >= steps * 2 * (A * h + h * A) + 2 * C * h
    assert ddpl["train_step_flops"] > gauss["train_step_flops"]
    assert {(r["algo"], r["seeds"]) for r in res["throughput"]} == {
        (a, s) for a in ("ddpl", "ddpl_gaussian") for s in (1, 2)}
    for r in res["throughput"]:
        assert math.isfinite(r["env_steps_per_s"]) and r["env_steps_per_s"] > 0
