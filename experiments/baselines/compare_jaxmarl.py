"""Side-by-side training throughput: JaxMARL's own baseline scripts vs jaxdiff, one process.

JaxMARL's baseline scripts are not a package; pass a checkout (`--jaxmarl DIR`, the folder that
holds `baselines/`). Nothing of it is copied here: the script is imported from that folder, its
`wandb` import is satisfied by a no-op module (its logging callback still runs, as it does for
JaxMARL's users), and its `make_train` is timed with the same config as ours.

    python experiments/baselines/compare_jaxmarl.py --jaxmarl /path/to/JaxMARL [--updates 30]

Prints a table and writes results/compare_jaxmarl.json. The headline ratio is at equal placement:
both programs on one device (`speedup_equal_placement`) and, with several seeds, both with the
seeds split over every device (`speedup_equal_placement_mesh`). What jaxdiff's runner adds by
splitting a lone seed's envs over idle devices, which JaxMARL's scripts cannot do, is a separate,
labelled column. The script checks that both programs do the same env steps per update.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import types

import jaxdiff

jaxdiff.use_host_devices()  # one XLA host device per core, before JAX starts
import jax
import jax.numpy as jnp

from jaxdiff import envs as envs_lib
from jaxdiff.algos import base as algos
from jaxdiff import parallel
from jaxdiff.run import runner
from jaxdiff.run.logging import git_commit

HERE = os.path.dirname(os.path.abspath(__file__))

CASES = {
    # name: (JaxMARL script, its config yaml, jaxdiff algo, env, overrides mirroring the yaml)
    "ippo_ff_mpe": ("baselines/IPPO/ippo_ff_mpe.py", "baselines/IPPO/config/ippo_ff_mpe.yaml",
                    "ippo", "mpe_simple_spread",
                    dict(num_envs=16, num_steps=128, update_epochs=4, num_minibatches=4,
                         lr=2.5e-4, ent_coef=0.01, clip_eps=0.2, vf_coef=0.5, max_grad_norm=0.5,
                         activation="tanh", agent_id=False)),
    "mappo_rnn_smax_3m": ("baselines/MAPPO/mappo_rnn_smax.py",
                          "baselines/MAPPO/config/mappo_homogenous_rnn_smax.yaml",
                          "mappo", "smax_3m",
                          dict(num_envs=128, num_steps=128, update_epochs=4, num_minibatches=4,
                               hidden=128, recurrent=True, activation="relu", lr=0.002,
                               ent_coef=0.0, clip_eps=0.2, vf_coef=0.5, max_grad_norm=0.25)),
    "ippo_ff_mabrax_ant_4x2": ("baselines/IPPO/ippo_ff_mabrax.py",
                               "baselines/IPPO/config/ippo_ff_mabrax.yaml",
                               "ippo", "mabrax_ant_4x2",
                               dict(num_envs=64, num_steps=300, update_epochs=4, num_minibatches=4,
                                    lr=1e-3, ent_coef=2e-6, vf_coef=4.5, max_grad_norm=0.5,
                                    activation="tanh", agent_id=False)),
}


def _load_jaxmarl(path: str, script: str):
    sys.modules.setdefault("wandb", types.SimpleNamespace(log=lambda *a, **k: None,
                                                          init=lambda *a, **k: None))
    # JaxMARL's networks use flax's orthogonal initialiser; under vmap over seeds its batched
    # LAPACK QR calls deadlock XLA:CPU's intra-op pool on a 2-core machine (observed: the
    # 16-seed IPPO program never finishes). jaxdiff's initialiser returns the same matrices for
    # the same key without LAPACK, so it is swapped in before the script binds the name.
    import flax.linen.initializers as flax_init
    from jaxdiff.nets.init import orthogonal
    flax_init.orthogonal = orthogonal
    spec = importlib.util.spec_from_file_location("jaxmarl_baseline", os.path.join(path, script))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _jaxmarl_env(name: str, cfg: dict, mod):
    """The env stack the JaxMARL script `mod` trains on, built as the script builds it."""
    import jaxmarl
    if name == "mappo_rnn_smax_3m":
        from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario
        from jaxmarl.wrappers.baselines import SMAXLogWrapper
        env = HeuristicEnemySMAX(scenario=map_name_to_scenario(cfg["MAP_NAME"]),
                                 **cfg["ENV_KWARGS"])
        return SMAXLogWrapper(mod.SMAXWorldStateWrapper(env, cfg["OBS_WITH_AGENT_ID"]))
    if name == "ippo_ff_mpe":
        from jaxmarl.wrappers.baselines import MPELogWrapper
        return MPELogWrapper(jaxmarl.make(cfg["ENV_NAME"], **cfg["ENV_KWARGS"]))
    from jaxmarl.wrappers.baselines import LogWrapper
    return LogWrapper(jaxmarl.make(cfg["ENV_NAME"], **cfg["ENV_KWARGS"]), replace_info=True)


def env_only_program(reset, step, sample, num_envs: int, num_steps: int):
    """keys [S] -> sums: S seeds x `num_envs` envs x `num_steps` steps of reset/step alone,
    actions drawn uniformly from each agent's action space (no action masks, no network). The
    rewards and observations (and what else `step`'s caller returns) are summed so that XLA
    keeps every output a training program would consume."""
    def one(key):
        k_reset, key = jax.random.split(key)
        _, st = jax.vmap(reset)(jax.random.split(k_reset, num_envs))

        def body(carry, _):
            st, key = carry
            key, k_a, k_s = jax.random.split(key, 3)
            actions = jax.vmap(sample)(jax.random.split(k_a, num_envs))
            st, used = step(jax.random.split(k_s, num_envs), st, actions)
            return (st, key), sum(jnp.sum(x) for x in jax.tree.leaves(used))
        return jax.lax.scan(body, (st, key), None, num_steps)[1].sum()
    return jax.vmap(one)


def env_only_times(name, cfg, mod, env, config, keys) -> tuple[float, float]:
    """Seconds of one update's env work (reset + step for num_envs x num_steps), JaxMARL's env
    stack and jaxdiff's, both on one device."""
    E, T = cfg["NUM_ENVS"], cfg["NUM_STEPS"]
    jm = _jaxmarl_env(name, cfg, mod)

    def jm_sample(key):
        ks = jax.random.split(key, jm.num_agents)
        return {a: jm.action_space(a).sample(k) for a, k in zip(jm.agents, ks)}

    def jm_step(ks, st, actions):
        obs, st, reward, done, _ = jax.vmap(jm.step)(ks, st, actions)
        return st, (obs, reward, done)

    spec = env.spec

    def jd_sample(key):
        if spec.discrete:
            return jax.random.randint(key, (spec.n_agents,), 0, spec.act_dim)
        return jax.random.uniform(key, (spec.n_agents, spec.act_dim), minval=spec.action_low,
                                  maxval=spec.action_high)

    def jd_step(ks, st, actions):
        obs, st, reward, done, _ = jax.vmap(env.step)(ks, st, actions)
        used = (obs, reward, done)
        if getattr(config, "centralised_critic", False):   # the rollout's critic input
            used = used + (jax.vmap(env.global_state)(st),)
        return st, used

    jm_c = _compile(env_only_program(jm.reset, jm_step, jm_sample, E, T), keys)[0]
    jd_c = _compile(env_only_program(env.reset, jd_step, jd_sample, E, T), keys)[0]
    jm_s, jd_s = _best_of([(jm_c, keys), (jd_c, keys)])
    return jm_s, jd_s


def _compile(fn, arg):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(arg).compile()
    return compiled, time.perf_counter() - t0


def _best_of(programs, repeats: int | None = None) -> list[float]:
    """Best wall time of each (compiled, arg) after one untimed call, the programs' timed calls
    interleaved (A B A B ...) so that a drift in the machine's speed (a shared VM) reaches every
    program alike."""
    for compiled, arg in programs:
        jax.block_until_ready(compiled(arg))
    best = [float("inf")] * len(programs)
    for _ in range(repeats or REPEATS[0]):
        for i, (compiled, arg) in enumerate(programs):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(arg))
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


REPEATS = [2]   # timed calls per program (best kept); --repeats
OUTSIDE_MIN = 0.05   # below this share of an update outside the env, the difference is noise


def _outside_ratio(jm_upd, jm_env, jd_upd, jd_env):
    """JaxMARL's time outside the env over jaxdiff's, or None where either program spends less
    than OUTSIDE_MIN of its update outside the env (the env step alone sets the time; the
    difference of two timings is then noise)."""
    jm_out, jd_out = jm_upd - jm_env, jd_upd - jd_env
    if jm_out < OUTSIDE_MIN * jm_upd or jd_out < OUTSIDE_MIN * jd_upd:
        return None
    return jm_out / jd_out


def run_case(name: str, jaxmarl_dir: str, updates: int, seeds: int) -> dict:
    import yaml
    script, cfg_path, algo, env_name, over = CASES[name]
    with open(os.path.join(jaxmarl_dir, cfg_path)) as f:
        jm_cfg = yaml.safe_load(f)
    # JaxMARL loads its yaml with OmegaConf, which reads "2e-6" as a float; PyYAML keeps a str.
    for k, v in jm_cfg.items():
        if isinstance(v, str):
            try:
                jm_cfg[k] = float(v)
            except ValueError:
                pass
    if name.startswith("mappo_rnn_smax"):
        jm_cfg["MAP_NAME"] = "3m"
    per_update = jm_cfg["NUM_ENVS"] * jm_cfg["NUM_STEPS"]
    jm_cfg["TOTAL_TIMESTEPS"] = per_update * updates
    jm_cfg["NUM_SEEDS"] = seeds
    mod = _load_jaxmarl(jaxmarl_dir, script)
    import inspect
    if "rng_init" in inspect.signature(mod.make_train).parameters:
        # the MABrax script initialises the network outside `train` (shared by its seeds)
        train = mod.make_train(dict(jm_cfg), jax.random.PRNGKey(1))
    else:
        train = mod.make_train(dict(jm_cfg))
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    algorithm = algos.get(algo)
    env = envs_lib.make(env_name)
    config = algos.make_config(algorithm.Config, over)
    ours_per_update = algorithm.env_steps_per_iter(config, env)
    if ours_per_update != per_update:
        raise AssertionError(f"{name}: JaxMARL's update consumes {per_update} env steps, "
                             f"jaxdiff's {ours_per_update}; the comparison needs equal work.")
    hp = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * seeds), config)
    step = algorithm.step(env, config, iterations=updates)

    def jaxdiff_compiled(sharding):
        chunk = runner.make_chunk(lambda s, _: step(s), updates, sharding)

        def ours(k):
            state = jax.vmap(lambda kk, c: algorithm.init(kk, env, c))(k, hp)
            return chunk(state, None)[1]

        arg = runner.place(keys, sharding)
        with parallel.env_parallel(None if sharding is None else sharding.mesh):
            return _compile(ours, arg) + (arg,)

    # Equal placement, the headline: both programs on one device; and, where the seeds can be
    # split, both with the seeds over every device (what JaxMARL gets from the same mesh).
    # Compiled first, then timed in alternation.
    jm_c, jm_compile = _compile(jax.vmap(train), keys)
    jd_c, jd_compile, jd_arg = jaxdiff_compiled(None)
    jm_wall, jd_wall = _best_of([(jm_c, keys), (jd_c, jd_arg)])
    mesh = runner.ensemble_sharding(seeds)            # seeds over devices, no env split
    if mesh is not None:
        mesh_keys = runner.place(keys, mesh)
        jm_mc = _compile(jax.vmap(train), mesh_keys)[0]
        jd_mc, _, jd_marg = jaxdiff_compiled(mesh)
        jm_mesh_wall, jd_mesh_wall = _best_of([(jm_mc, mesh_keys), (jd_mc, jd_marg)])
    # What jaxdiff's runner does by default (`runner.member_sharding`): a lone seed's envs split
    # over idle devices where the env asks for it. JaxMARL's scripts cannot do this; labelled
    # separately.
    ours_sharding = runner.member_sharding(algorithm, env, config, seeds)
    split = ours_sharding is not None and dict(ours_sharding.mesh.shape).get("data", 1) > 1
    if split:
        jd_sc, _, jd_sarg = jaxdiff_compiled(ours_sharding)
        jd_runner_wall = _best_of([(jd_sc, jd_sarg)])[0]
    else:
        jd_runner_wall = None
    # The env's share: the same env work with no network, on each framework's env stack.
    jm_env, jd_env = env_only_times(name, jm_cfg, mod, env, config, keys)
    jm_upd, jd_upd = jm_wall / updates, jd_wall / updates
    steps = per_update * updates * seeds
    row = dict(case=name, seeds=seeds, updates=updates, env_steps=steps,
               env_steps_per_update=per_update, devices_available=len(jax.devices()),
               jaxmarl_compile_s=jm_compile, jaxdiff_compile_s=jd_compile,
               jaxmarl_env_steps_per_s=steps / jm_wall, jaxdiff_env_steps_per_s=steps / jd_wall,
               speedup_equal_placement=jm_wall / jd_wall, placement="1 device each",
               jaxmarl_s_per_update=jm_upd, jaxdiff_s_per_update=jd_upd,
               jaxmarl_env_only_s_per_update=jm_env, jaxdiff_env_only_s_per_update=jd_env,
               jaxmarl_env_share=jm_env / jm_upd, jaxdiff_env_share=jd_env / jd_upd,
               speedup_env_only=jm_env / jd_env,
               speedup_outside_env=_outside_ratio(jm_upd, jm_env, jd_upd, jd_env))
    if mesh is not None:
        row.update(mesh_devices=mesh.mesh.size,
                   jaxmarl_mesh_env_steps_per_s=steps / jm_mesh_wall,
                   jaxdiff_mesh_env_steps_per_s=steps / jd_mesh_wall,
                   speedup_equal_placement_mesh=jm_mesh_wall / jd_mesh_wall)
    if jd_runner_wall is not None:
        row.update(jaxdiff_env_split_devices=ours_sharding.mesh.size,
                   jaxdiff_env_split_env_steps_per_s=steps / jd_runner_wall,
                   speedup_with_env_split_vs_jaxmarl_1_device=jm_wall / jd_runner_wall)
    return row


JAXMARL_NOTE = ("FLAIROx/JaxMARL baselines/ scripts (checkout given by --jaxmarl) against the "
                "jaxmarl package of requirements.lock")
NOTE = ("Headline: speedup_equal_placement (both programs on one device) and "
        "speedup_equal_placement_mesh (both with the seeds over the 2-device mesh). "
        "jaxdiff_env_split_* is what jaxdiff's runner adds by splitting a lone seed's envs over "
        "the idle device, which JaxMARL's scripts cannot do: a separate number. *_env_only_s_per_"
        "update is one update's env work alone (reset + step of num_envs x num_steps with random "
        "actions, no network, no action masks) on each framework's env stack; env_share is its "
        "fraction of the update; speedup_outside_env compares what is left (update time minus "
        "env-only time): a difference of two timings, noisier than the headline, and null where "
        "either program spends under 5% of its update outside the env. Measured one "
        "case after another on an otherwise idle machine.")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jaxmarl", required=True, help="JaxMARL checkout (holds baselines/)")
    ap.add_argument("--cases", default="ippo_ff_mpe", help=f"comma list of {list(CASES)}")
    ap.add_argument("--updates", type=int, default=30)
    ap.add_argument("--seeds", default="1,16")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls per program, best kept")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.jaxmarl, "baselines")):
        sys.exit(f"--jaxmarl {args.jaxmarl}: no baselines/ folder there; pass a JaxMARL checkout.")
    REPEATS[0] = max(1, args.repeats)
    rows = []
    print("| case | seeds | JaxMARL env-steps/s (1 dev) | jaxdiff (1 dev) | ratio, equal placement "
          "| JaxMARL / jaxdiff, seeds over the mesh | ratio, mesh | jaxdiff + env split "
          "(separate) | env share JaxMARL / jaxdiff | ratio, env alone | ratio, outside the env "
          "| compile JaxMARL / jaxdiff s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        for s in (int(x) for x in args.seeds.split(",")):
            r = run_case(name, args.jaxmarl, args.updates, s)
            rows.append(r)
            mesh = (f"{r['jaxmarl_mesh_env_steps_per_s']:,.0f} / "
                    f"{r['jaxdiff_mesh_env_steps_per_s']:,.0f} | "
                    f"{r['speedup_equal_placement_mesh']:.2f}"
                    if "speedup_equal_placement_mesh" in r else "- | -")
            split = (f"{r['jaxdiff_env_split_env_steps_per_s']:,.0f} "
                     f"({r['speedup_with_env_split_vs_jaxmarl_1_device']:.2f}x JaxMARL)"
                     if "jaxdiff_env_split_env_steps_per_s" in r else "-")
            print(f"| {name} | {s} | {r['jaxmarl_env_steps_per_s']:,.0f} | "
                  f"{r['jaxdiff_env_steps_per_s']:,.0f} | {r['speedup_equal_placement']:.2f} | "
                  f"{mesh} | {split} | "
                  f"{r['jaxmarl_env_share']:.0%} / {r['jaxdiff_env_share']:.0%} | "
                  f"{r['speedup_env_only']:.2f} | "
                  f"{'n/a (env sets the time)' if r['speedup_outside_env'] is None else format(r['speedup_outside_env'], '.2f')} | "
                  f"{r['jaxmarl_compile_s']:.1f} / {r['jaxdiff_compile_s']:.1f} |", flush=True)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "compare_jaxmarl.json")
    checkout = f"<JaxMARL {git_commit(args.jaxmarl)} checkout>"
    command = "experiments/baselines/compare_jaxmarl.py " + " ".join(
        checkout if a == args.jaxmarl else a for a in sys.argv[1:])
    stamp = dict(commit=git_commit(HERE), command=command,
                 measured=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    rows = [dict(r, **stamp) for r in rows]
    # Rows of other (case, seeds) pairs measured earlier are kept, each with its own stamp.
    kept, commands = [], []
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        new_keys = {(r["case"], r["seeds"]) for r in rows}
        kept = [r for r in old.get("rows", []) if (r["case"], r["seeds"]) not in new_keys]
        commands = [c for c in old.get("commands", []) if any(r.get("command") == c
                                                               for r in kept)]
    with open(path, "w") as f:
        json.dump(dict(machine=f"{os.cpu_count()} cores, {jax.devices()[0].device_kind}",
                       jax=jax.__version__, jaxmarl=JAXMARL_NOTE, note=NOTE,
                       commands=commands + [command], rows=kept + rows), f, indent=1)
    print(f"wrote {path}")

if __name__ == "__main__":
    main()
