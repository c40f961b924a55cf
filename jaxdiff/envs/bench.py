"""Env throughput: random policy, `n_envs` vmapped envs inside one jitted `lax.scan`.

    python -m jaxdiff.envs.bench mpe_simple_spread smax_3m --n-envs 1024 --n-steps 128

prints env-steps/s for the jaxdiff env and for the raw JaxMARL dict env it wraps (the same
loop; `jaxmarl+log` adds JaxMARL's baseline `LogWrapper`, as its baselines run it). Used by
`jaxdiff bench`; tests never assert wall-clock time.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from jaxdiff.envs.registry import make


def _time(run, carry, repeats: int) -> tuple[float, float, float]:
    """(best wall s, best process-CPU s, compile s). CPU time is steadier on a busy machine."""
    t0 = time.perf_counter()
    carry, _ = jax.block_until_ready(run(carry))  # compile + first run
    compile_s = time.perf_counter() - t0
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        carry, _ = jax.block_until_ready(run(carry))
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best, best_cpu, compile_s


def bench_jaxdiff(name: str, n_envs: int = 1024, n_steps: int = 128, repeats: int = 3,
                  masked: bool = False, seed: int = 0, **kw) -> dict:
    """Random actions (uniform over `act_dim`, or over available actions if `masked`)."""
    env = make(name, **kw)
    spec = env.spec

    def policy(key, state):
        if not spec.discrete:
            return jax.random.uniform(key, (spec.n_agents, spec.act_dim),
                                      minval=spec.action_low, maxval=spec.action_high)
        if masked:
            logits = jnp.where(env.action_mask(state), 0.0, -jnp.inf)
            return jax.random.categorical(key, logits).astype(jnp.int32)
        return jax.random.randint(key, (spec.n_agents,), 0, spec.act_dim)

    def env_step(carry, _):
        key, states = carry
        key, k_act, k_step = jax.random.split(key, 3)
        actions = jax.vmap(policy)(jax.random.split(k_act, n_envs), states)
        obs, states, reward, done, info = jax.vmap(env.step)(
            jax.random.split(k_step, n_envs), states, actions)
        # consume obs and rewards so that XLA cannot drop them (a learner would use them)
        return (key, states), (obs.mean(), reward.mean(), info["episode_return"].mean())

    @jax.jit
    def run(carry):
        carry, out = jax.lax.scan(env_step, carry, None, n_steps)
        return carry, jax.tree.map(jnp.mean, out)

    key = jax.random.PRNGKey(seed)
    _, states = jax.jit(jax.vmap(env.reset))(jax.random.split(key, n_envs))
    best, best_cpu, compile_s = _time(run, (key, states), repeats)
    return {"impl": "jaxdiff" + ("+mask" if masked else ""), "env": name,
            "env_steps_per_s": n_envs * n_steps / best,
            "env_steps_per_cpu_s": n_envs * n_steps / best_cpu, "compile_s": compile_s}


def bench_jaxmarl(name: str, n_envs: int = 1024, n_steps: int = 128, repeats: int = 3,
                  log_wrapper: bool = False, seed: int = 0, **kw) -> dict:
    """The same loop on the raw JaxMARL dict env that `name` wraps (action_space.sample)."""
    jm = make(name, **kw).unwrapped.jaxmarl_env
    if log_wrapper:
        from jaxdiff.envs.jaxmarl import import_jaxmarl
        import_jaxmarl()
        from jaxmarl.wrappers.baselines import LogWrapper

        jm = LogWrapper(jm)
    agents = list(jm.agents)

    def policy(key):
        keys = jax.random.split(key, len(agents))
        return {a: jm.action_space(a).sample(keys[i]) for i, a in enumerate(agents)}

    def env_step(carry, _):
        key, states = carry
        key, k_act, k_step = jax.random.split(key, 3)
        actions = jax.vmap(policy)(jax.random.split(k_act, n_envs))
        obs, states, reward, done, info = jax.vmap(jm.step)(
            jax.random.split(k_step, n_envs), states, actions)
        return (key, states), (jnp.mean(jnp.stack([obs[a].mean() for a in agents])),
                               jnp.mean(jnp.stack([reward[a] for a in agents])))

    @jax.jit
    def run(carry):
        carry, out = jax.lax.scan(env_step, carry, None, n_steps)
        return carry, jax.tree.map(jnp.mean, out)

    key = jax.random.PRNGKey(seed)
    _, states = jax.jit(jax.vmap(jm.reset))(jax.random.split(key, n_envs))
    best, best_cpu, compile_s = _time(run, (key, states), repeats)
    return {"impl": "jaxmarl" + ("+log" if log_wrapper else ""), "env": name,
            "env_steps_per_s": n_envs * n_steps / best,
            "env_steps_per_cpu_s": n_envs * n_steps / best_cpu, "compile_s": compile_s}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="+")
    p.add_argument("--n-envs", type=int, default=1024)
    p.add_argument("--n-steps", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    rows = []
    print(f"{'env':28s} {'impl':14s} {'env-steps/s':>12s} {'per CPU-s':>12s} {'compile s':>10s}  "
          f"(n_envs={args.n_envs}, n_steps={args.n_steps}, {jax.devices()[0].platform})")
    for name in args.names:
        common = dict(n_envs=args.n_envs, n_steps=args.n_steps, repeats=args.repeats)
        runs = [lambda: bench_jaxmarl(name, **common),
                lambda: bench_jaxmarl(name, log_wrapper=True, **common),
                lambda: bench_jaxdiff(name, **common)]
        if make(name).spec.discrete:
            runs.append(lambda: bench_jaxdiff(name, masked=True, **common))
        for run in runs:
            r = run()
            rows.append(r)
            print(f"{r['env']:28s} {r['impl']:14s} {r['env_steps_per_s']:12.4g} "
                  f"{r['env_steps_per_cpu_s']:12.4g} {r['compile_s']:10.1f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
