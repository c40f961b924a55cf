"""`jaxdiff eval run_dir=D`: reload the last checkpoint, evaluate every member, optionally save
a GIF/MP4 of one episode (MPE and SMAX, through JaxMARL's visualisers)."""
from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np

from jaxdiff.run import runner


def main(run_dir: str, episodes: int = 100, video: str | None = None, seed: int = 1) -> dict:
    spec, algorithm, env, config, state, members = runner.restore_state(run_dir)
    evaluate = jax.jit(jax.vmap(runner.make_evaluate(algorithm, env, config, episodes),
                                in_axes=(0, None)))
    out = jax.device_get(evaluate(state, jax.random.PRNGKey(seed)))
    rows = []
    for m, (g, s) in enumerate(members):
        rows.append(dict(grid=g, seed=s, **{k: float(v[m]) for k, v in out.items()}))
    keys = [k for k in rows[0] if k not in ("grid", "seed")]
    print(f"{spec.algo} on {spec.env}: {episodes} episodes per seed")
    print("| grid | seed | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for r in rows:
        print(f"| {r['grid']} | {r['seed']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    print("mean over members: " + ", ".join(f"{k}={v:.3f}" for k, v in mean.items()))
    result = dict(episodes=episodes, members=rows, mean=mean)
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    if video:
        save_video(algorithm, env, config, jax.tree.map(lambda x: x[0], state), video, seed)
        print(f"episode video: {os.path.abspath(video)}")
    return result


def _episode(algorithm, env, config, state, key):
    """Roll one deterministic episode on the host; returns raw JaxMARL states and actions."""
    k_reset, key = jax.random.split(key)
    obs, es = jax.jit(env.reset)(k_reset)
    carry = algorithm.init_carry(config, env)
    act = jax.jit(lambda o, h, m, k: algorithm.act(config, env, state, o, h, m, k,
                                                                deterministic=True))
    step = jax.jit(env.step)
    mask_fn = jax.jit(env.action_mask)
    seq = []
    for _ in range(env.spec.max_steps):
        key, k_act, k_env = jax.random.split(key, 3)
        actions, carry = act(obs, carry, mask_fn(es), k_act)
        seq.append((k_env, es.env_state, actions))
        obs, es, _, done, _ = step(k_env, es, actions)
        if bool(done[0]):
            break
    return seq


def save_video(algorithm, env, config, state, path: str, seed: int = 1) -> None:
    raw = getattr(env, "jaxmarl_env", None)
    family = env.spec.name.split("_", 1)[0]
    if raw is None or family not in ("mpe", "smax"):
        raise ValueError(f"Episode videos are available for MPE and SMAX envs, not "
                         f"`{env.spec.name}`.")
    if not path.endswith((".gif", ".mp4")):
        raise ValueError(f"video path `{path}` must end in .gif or .mp4.")
    import matplotlib
    matplotlib.use("Agg")
    seq = _episode(algorithm, env, config, state, jax.random.PRNGKey(seed))
    if family == "mpe":
        from jaxmarl.environments.mpe import MPEVisualizer
        viz = MPEVisualizer(raw, [s for _, s, _ in seq])
    else:
        from jaxmarl.viz.visualizer import SMAXVisualizer
        agents = list(raw.agents)
        seq = [(k, s, {a: act[i] for i, a in enumerate(agents)}) for k, s, act in seq]
        viz = SMAXVisualizer(raw, seq)
    viz.animate(save_fname=path, view=False)


if __name__ == "__main__":
    main(sys.argv[1])
