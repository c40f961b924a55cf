"""Throughput of the state-reconstruction denoiser (paper 000): Adam steps/s of Eq. 1 training
and the latency of composite inference per state, with the MLP's FLOP count.

Shapes are SMAX race-scenario sized: 5 agents, tau_dim 690 (H = 5 windows of obs + previous
action + agent id), |s| = 100. Training: one Adam step on `batch` (tau_i, s) rows. Inference:
the composite flow (L denoiser calls, cycling over the 5 agents' histories) for 1024 states at
once, vmapped. FLOPs count the matmuls only (2 per multiply-add; training = 3 x forward), so
achieved GFLOP/s can be read against the machine's peak.
"""
from __future__ import annotations

import time

import jax

from jaxdiff import optim
from jaxdiff.statediff.denoiser import Denoiser, init_params
from jaxdiff.statediff.infer import composite_estimate
from jaxdiff.statediff.train import TrainHParams, loss_fn

N_AGENTS, TAU_DIM, STATE_DIM = 5, 690, 100


def mlp_flops(width: int, depth: int, tau_dim: int = TAU_DIM, state_dim: int = STATE_DIM) -> int:
    """Forward FLOPs of one denoiser call on one row."""
    macs = (tau_dim + state_dim) * width + (depth - 1) * width * width + width * state_dim
    return 2 * macs


def _time(fn, *args, min_time: float):
    out = fn(*args)
    jax.block_until_ready(out)
    calls, t0 = 0, time.perf_counter()
    while True:
        out = fn(*args)
        jax.block_until_ready(out)
        calls += 1
        if time.perf_counter() - t0 >= min_time and calls >= 3:
            return (time.perf_counter() - t0) / calls


def measure(width: int, depth: int = 3, batch: int = 1024, flow_steps: int = 10,
            states: int = 1024, min_time: float = 3.0) -> dict:
    model = Denoiser(state_dim=STATE_DIM, width=width, depth=depth)
    key = jax.random.PRNGKey(0)
    params = init_params(key, model, TAU_DIM)
    adam = optim.adam()
    opt = adam.init(params)
    hp = TrainHParams(model=model, optimizer=None)
    rows = dict(tau=jax.random.normal(key, (batch, TAU_DIM)),
                s=jax.random.uniform(key, (batch, STATE_DIM)))

    @jax.jit
    def train_step(params, opt, key):
        grads = jax.grad(loss_fn)(params, rows, key, hp)
        params, opt, _ = optim.apply(adam, params, opt, grads, 3e-4, 1.0)
        return params, opt

    taus = jax.random.normal(key, (states, N_AGENTS, TAU_DIM))
    y0 = jax.random.normal(key, (states, STATE_DIM))
    f = lambda tau, y: model.apply(params, tau, y)

    @jax.jit
    def infer(taus, y0):
        return jax.vmap(lambda t, y: composite_estimate(f, t, y, flow_steps))(taus, y0)

    t_train = _time(train_step, params, opt, key, min_time=min_time)
    t_infer = _time(infer, taus, y0, min_time=min_time)
    fwd = mlp_flops(width, depth)
    return dict(width=width, depth=depth, batch=batch, flow_steps=flow_steps, states=states,
                params=sum(x.size for x in jax.tree.leaves(params)),
                train_steps_per_s=1.0 / t_train,
                train_gflops_per_s=3 * fwd * batch / t_train / 1e9,
                composite_latency_us_per_state=t_infer / states * 1e6,
                infer_gflops_per_s=fwd * flow_steps * states / t_infer / 1e9)


def main(widths=(256, 1024), min_time: float = 3.0) -> list[dict]:
    print("\nState denoiser (paper 000; 5 agents, tau 690, |s| 100, depth 3):")
    print("| width | params | train steps/s (batch 1024) | train GFLOP/s | composite latency "
          "per state (L=10, 1024 states) | inference GFLOP/s |")
    print("|---|---|---|---|---|---|")
    rows = []
    for w in widths:
        r = measure(int(w), min_time=min_time)
        rows.append(r)
        print(f"| {w} | {r['params']:,} | {r['train_steps_per_s']:.1f} | "
              f"{r['train_gflops_per_s']:.1f} | {r['composite_latency_us_per_state']:.1f} us | "
              f"{r['infer_gflops_per_s']:.1f} |", flush=True)
    return rows
