"""Paper 000, Figure 1: the 2x2 sensor network, collectively observable (CO) and not (non-CO).

    python experiments/state_reconstruction/sensor_2x2.py [--quick] [--out DIR] [--seed S]

Trains the shared blind denoiser f_theta(tau_i, y) (W 256, depth 3, SiLU; raw encoding
tau_i = [onehot_4(i), o_i]) on 20k joint samples of each variant, then measures, for the
learned model and for the analytic optimal blind denoiser (no approximation error):

* the stable fixed points of every agent's flow (2048 N(0, I) starts; tol 1e-4, merge 0.05,
  spectral radius < 1) with their basin fractions next to the exact posterior p(s | tau_i)
  (CO: target in Area 1, the paper's answer is 1, 1, 2, 2 attractors; non-CO: all agents
  see 00), and the fixed points shared by all agents (Theorems 3, 4);
* composite diffusion over all 24 agent orders x 4 target positions from N(0, I) starts,
  L = 2n = 8 iterations: the fraction that ends within 0.1 of the true state (paper: all),
  next to individual diffusion; partial composites {A3} and {A3, A4}; the non-CO composite
  from all-00 histories; the composite algorithm (Step 1 + Step 2) with D-hat from
  `statediff.deviation_bound` (95th percentile of ||D|| on held-out pairs, Theorem 6 check
  mean ||D||^2 <= R(M) over the training rows): certified flag and acceptance rate, next to
  a random-weight model of the same architecture (must not be certified);
* how close the learned denoiser is to the analytic one (F8) and the deviations D (Def. 4).

Figure 1 (results/sensor_2x2.png): quiver plots of f(tau_i, y) - y over (y_1, y_2) with
y_3 = y_4 = 0, attractors marked, CO row and non-CO row.

Scale: --quick trains 2500 Adam steps at lr 3e-3 per variant and uses 1024 fixed-point starts
(2-3.5 minutes on a loaded 2-core CPU); the default trains 8000 steps at lr 1e-3 (the spec's
toy setting) with 2048 starts (about 5-6 minutes on the same CPU).
Writes results/sensor_2x2.json, results/sensor_2x2.md and results/sensor_2x2.png.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import jaxdiff

jaxdiff.use_host_devices()  # one XLA host device per core, before JAX starts
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sensor_common import HERE, markdown_table, save_figure, train_model, write_json  # noqa: E402

from jaxdiff import diffusion as d  # noqa: E402
from jaxdiff import statediff as sd  # noqa: E402
from jaxdiff.envs.sensor_grid import sensor_2x2  # noqa: E402

N_AGENTS = 4
STATES = np.eye(4, dtype=np.float32)
HIT = 0.1  # "reaches the state": within 0.1 (L2)
MIN_BASIN = 0.01  # attractors catching < 1% of the starts are reported but not counted


def settings(quick: bool) -> dict:
    if quick:
        return dict(steps=2500, lr=3e-3, starts=1024, comp_starts=250, nonco_starts=1000,
                    held_out=500, alg_starts=64)
    return dict(steps=8000, lr=1e-3, starts=2048, comp_starts=1000, nonco_starts=4000,
                held_out=2000, alg_starts=256)


def log_posteriors(env, obs):
    return jax.vmap(lambda i, o: jax.nn.log_softmax(env.log_likelihood(i, o)))(
        jnp.arange(N_AGENTS), obs
    )


def fixed_point_report(find, params, taus, posts, key):
    """Per agent: stable attractors, nearest states, basin mass per state vs the posterior."""
    agents, sets, valid = [], [], []
    for i in range(N_AGENTS):
        fp = find(params, taus[i], jax.random.fold_in(key, i))
        stable = np.asarray(fp.stable)
        pts, frac = np.asarray(fp.points)[stable], np.asarray(fp.basin_fraction)[stable]
        rho = np.asarray(fp.spectral_radius)[stable]
        near = np.argmin(np.linalg.norm(pts[:, None] - STATES[None], axis=-1), axis=1)
        dist = np.linalg.norm(pts - STATES[near], axis=-1)
        mass = np.zeros(4)
        for k, (s_idx, dd) in enumerate(zip(near, dist)):
            if dd < HIT:
                mass[s_idx] += frac[k]
        counted = frac >= MIN_BASIN
        agents.append({
            "num_attractors": int(counted.sum()),
            "num_attractors_all": int(len(pts)),
            "attractors": pts.round(4), "basin_fraction": frac.round(4),
            "spectral_radius": rho.round(4), "nearest_state": near + 1,
            "distance_to_state": dist.round(4),
            "basin_mass_per_state": mass.round(4), "posterior": np.asarray(posts[i]).round(4),
            "converged_fraction": float(np.mean(np.asarray(fp.converged))),
        })
        sets.append(fp.points)
        valid.append(fp.stable & (fp.basin_fraction >= MIN_BASIN))
    shared = d.shared_fixed_points(jnp.stack(sets), jnp.stack(valid), tol=HIT)
    shared_pts = np.asarray(sets[0])[np.asarray(shared)]
    return agents, [[round(float(v), 3) for v in p] for p in shared_pts]


def first_settled(traj, target):
    """Iteration after which a trajectory stays within HIT of target ([..., L+1, s] -> [...])."""
    ok = np.linalg.norm(traj - target, axis=-1) < HIT  # [..., L+1]
    # last index where it is NOT within, +1 (0 if always within; L+1 if it ends outside).
    outside = ~ok
    last_out = np.where(outside.any(-1), ok.shape[-1] - 1 - np.argmax(outside[..., ::-1], -1), -1)
    return last_out + 1


def composite_report(comp, indiv, params, env, key, n_starts):
    """All 24 orders x 4 targets, L = 8: composite vs individual success."""
    orders = jnp.array(list(itertools.permutations(range(N_AGENTS))), jnp.int32)
    y0 = jax.random.normal(key, (n_starts, 4))
    comp_hits, settle, ind_hits = [], [], []
    for target in range(4):
        obs = env.observe(jax.random.key(target), jnp.asarray(STATES[target]))
        taus = params["encode"](obs)
        traj = np.asarray(comp(params["net"], taus, y0, orders))  # [24, K, 9, 4]
        comp_hits.append(np.linalg.norm(traj[:, :, -1] - STATES[target], axis=-1) < HIT)
        settle.append(first_settled(traj, STATES[target]))
        ind = np.asarray(indiv(params["net"], taus, y0))  # [K, 4 agents, 4]
        ind_hits.append(np.linalg.norm(ind - STATES[target], axis=-1) < HIT)
    comp_hits, settle, ind_hits = np.stack(comp_hits), np.stack(settle), np.stack(ind_hits)
    ok = comp_hits.all(axis=(1, 2))
    return {
        "composite_success_rate": float(comp_hits.mean()),
        "composite_success_per_target": comp_hits.mean(axis=(1, 2)).round(4),
        "composite_worst_order_success": float(comp_hits.mean(axis=2).min()),
        "composite_iterations_to_settle_max": int(settle[comp_hits].max()) if comp_hits.any() else None,
        "composite_iterations_to_settle_mean": float(settle[comp_hits].mean()) if comp_hits.any() else None,
        "all_targets_all_orders_succeed": bool(ok.all()),
        "individual_success_rate_per_agent_target1": ind_hits[0].mean(0).round(4),
        "individual_success_rate": float(ind_hits.mean()),
        "num_starts_per_order_and_target": n_starts, "num_steps": 2 * N_AGENTS,
    }


def quiver_panel(ax, f_eval, tau, attractors, frac, truth, title):
    g = np.linspace(-0.5, 1.5, 11)
    yy1, yy2 = np.meshgrid(g, g)
    ys = np.stack([yy1.ravel(), yy2.ravel(), 0 * yy1.ravel(), 0 * yy1.ravel()], -1)
    out = np.asarray(f_eval(tau, jnp.asarray(ys, jnp.float32)))
    ax.quiver(ys[:, 0], ys[:, 1], out[:, 0] - ys[:, 0], out[:, 1] - ys[:, 1], angles="xy",
              scale_units="xy", scale=1.0, width=0.003, color="0.35", alpha=0.55)
    for p, w in zip(attractors, frac):
        ax.plot(p[0], p[1], "o", ms=6 + 14 * w, mfc="tab:red", mec="k", alpha=0.85)
        ax.annotate(f"{w:.2f}", (p[0], p[1]), textcoords="offset points", xytext=(6, -12), fontsize=7)
    for t in truth:
        ax.plot(t[0], t[1], "*", ms=13, mfc="gold", mec="k")
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylim(-0.6, 1.6)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("y1 (Area 1)", fontsize=7)
    ax.set_ylabel("y2 (Area 2)", fontsize=7)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke scale (a few CPU minutes)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=20000, help="joint training samples")
    ap.add_argument("--width", type=int, default=256)
    args = ap.parse_args()
    cfg = settings(args.quick)
    t0 = time.time()
    key = jax.random.key(args.seed)
    print(f"sensor 2x2 ({'quick' if args.quick else 'full'}): {args.samples} joint samples, "
          f"W={args.width}, {cfg['steps']} steps, backend {jax.default_backend()}", flush=True)

    results = {"scale": "quick" if args.quick else "full", "seed": args.seed,
               "samples": args.samples, **cfg}
    models, train_rows = {}, {}
    for variant, co in (("co", True), ("nonco", False)):
        env = sensor_2x2(co)
        k_data, k_fit, key = jax.random.split(key, 3)
        rows = env.rows(env.sample_dataset(k_data, args.samples), "raw")
        model, params, info = train_model(k_fit, rows, state_dim=4, width=args.width,
                                          steps=cfg["steps"], lr=cfg["lr"], label=variant)
        models[variant] = (env, model, params, info)
        train_rows[variant] = rows

    model = models["co"][1]
    f_of = lambda p: sd.denoise_fn(model, p)
    exact = sd.analytic_blind_denoiser(STATES)
    find = jax.jit(lambda p, tau, k: sd.attractors(f_of(p), tau, k, num_starts=cfg["starts"], state_dim=4))
    find_exact = jax.jit(lambda _, tau, k: sd.attractors(exact, tau, k, num_starts=cfg["starts"], state_dim=4))
    f_batch = jax.jit(lambda p, tau, ys: jax.vmap(lambda y: f_of(p)(tau, y))(ys))

    def comp_fn(f):
        def run(p, taus, y0, orders):
            one = lambda o, y: sd.composite_estimate(f(p), taus, y, 2 * N_AGENTS, order=o,
                                                     return_trajectory=True)[1]
            return jax.vmap(lambda o: jax.vmap(lambda y: one(o, y))(y0))(orders)
        return jax.jit(run)

    def indiv_fn(f):
        return jax.jit(lambda p, taus, y0: jax.vmap(
            lambda y: sd.individual_estimates(f(p), taus, y, 2 * N_AGENTS))(y0))

    figure_rows = []
    for variant in ("co", "nonco"):
        env, _, params, info = models[variant]
        if variant == "co":
            obs = env.observe(jax.random.key(0), jnp.asarray(STATES[0]))  # target in Area 1
        else:
            obs = jnp.zeros((N_AGENTS, 2))  # every agent sees 00
        taus = env.encode(obs, "raw")
        posts = jax.vmap(env.posterior)(jnp.arange(N_AGENTS), obs)
        lp = log_posteriors(env, obs)
        k_fp, key = jax.random.split(key)
        learned, shared = fixed_point_report(find, params, taus, posts, k_fp)
        analytic, shared_exact = fixed_point_report(find_exact, None, lp, posts, k_fp)
        block = {
            "train": info,
            "history": np.asarray(obs),
            "attractors_per_agent": [a["num_attractors"] for a in learned],
            "attractors_per_agent_exact_denoiser": [a["num_attractors"] for a in analytic],
            "shared_fixed_points": shared, "shared_fixed_points_exact_denoiser": shared_exact,
            "agents": learned, "agents_exact_denoiser": analytic,
            "joint_posterior": np.asarray(env.joint_posterior(obs)).round(4),
        }
        # F8: learned vs analytic blind denoiser on y = s + sigma z.
        data = env.sample_dataset(jax.random.fold_in(key, 7), 1000)
        gap = {}
        for sigma in (0.1, 0.3, 1.0):
            y = data["s"] + sigma * jax.random.normal(jax.random.fold_in(key, int(sigma * 10)), data["s"].shape)
            errs = []
            for i in range(N_AGENTS):
                tau_i = jax.vmap(lambda o: env.encode_agent(i, o[i], "raw"))(data["obs"])
                lp_i = jax.vmap(lambda o: jax.nn.log_softmax(env.log_likelihood(i, o[i])))(data["obs"])
                learned_out = jax.vmap(f_of(params))(tau_i, y)
                exact_out = jax.vmap(exact)(lp_i, y)
                errs.append(float(jnp.mean(jnp.sum((learned_out - exact_out) ** 2, -1))))
            gap[str(sigma)] = np.round(errs, 5)
        block["mse_learned_vs_exact_denoiser"] = gap
        # Deviation D = s - phi_inf(tau_i)(s) for every target and agent.
        devs = []
        for target in range(4):
            o = env.observe(jax.random.key(target), jnp.asarray(STATES[target]))
            tt = env.encode(o, "raw")
            dv = jax.vmap(lambda t: sd.deviation(f_of(params), t, jnp.asarray(STATES[target]))[0])(tt)
            devs.append(np.linalg.norm(np.asarray(dv), axis=-1))
        block["deviation_norm"] = np.round(devs, 4)  # [target, agent]
        results[variant] = block
        figure_rows.append((variant, env, params, taus, learned, posts))
        print(f"  {variant}: attractors per agent {block['attractors_per_agent']} "
              f"(exact denoiser {block['attractors_per_agent_exact_denoiser']}), shared "
              f"{shared}", flush=True)

    # Composite diffusion, CO.
    env_co, _, p_co, _ = models["co"]
    enc = lambda obs: env_co.encode(obs, "raw")
    k_c, key = jax.random.split(key)
    comp = composite_report(comp_fn(f_of), indiv_fn(f_of), {"net": p_co, "encode": enc}, env_co,
                            k_c, cfg["comp_starts"])
    comp_exact = composite_report(
        comp_fn(lambda _: exact), indiv_fn(lambda _: exact),
        {"net": None, "encode": lambda obs: log_posteriors(env_co, obs)}, env_co, k_c, cfg["comp_starts"])
    results["co"]["composite"] = comp
    results["co"]["composite_exact_denoiser"] = comp_exact

    # Partial composites on the Fig. 1 history (target in Area 1).
    taus_co = enc(env_co.observe(jax.random.key(0), jnp.asarray(STATES[0])))
    y0 = jax.random.normal(jax.random.fold_in(key, 11), (cfg["nonco_starts"], 4))
    partial = {}
    for name, order in (("A3", [2]), ("A3+A4", [2, 3]), ("A1", [0]), ("all", [0, 1, 2, 3])):
        run = jax.jit(lambda p, o: jax.vmap(lambda y: sd.composite_estimate(
            f_of(p), taus_co, y, 2 * N_AGENTS, order=o))(y0))
        end = np.asarray(run(p_co, jnp.array(order)))
        partial[name] = {f"area{a + 1}": float(np.mean(np.linalg.norm(end - STATES[a], axis=-1) < HIT))
                         for a in range(4)}
    results["co"]["partial_composite"] = partial

    # Composite algorithm (Step 1 + Step 2). D-hat comes from statediff.deviation_bound: the
    # 95th percentile of the model's ||D|| on held-out (tau_i, s) pairs (fresh samples, never
    # trained on), with the Theorem 6 check mean ||D||^2 <= R(M) over the training rows; a model
    # that fails it is not certified and the algorithm accepts nothing. A random-weight model of
    # the same architecture is run through the same checks as the negative control.
    held = env_co.rows(env_co.sample_dataset(jax.random.fold_in(key, 30), cfg["held_out"]), "raw")
    bound_jit = jax.jit(lambda p, t, s, tt, ts: sd.deviation_bound(f_of(p), t, s, train_taus=tt,
                                                                    train_states=ts))
    bound_fn = lambda p: bound_jit(p, held["tau"], held["s"], train_rows["co"]["tau"],
                                   train_rows["co"]["s"])
    alg = jax.jit(lambda p, taus, s, b: sd.composite_algorithm(f_of(p), taus, s, num_steps=2 * N_AGENTS,
                                                               d_hat=b))
    random_params = sd.init_params(jax.random.fold_in(key, 31), model, held["tau"].shape[-1])

    def run_algorithm(p):
        b = bound_fn(p)
        acc, checks_only, stable, est_err = [], [], [], []
        for target in range(4):
            taus = enc(env_co.observe(jax.random.key(target), jnp.asarray(STATES[target])))
            r = alg(p, taus, jax.random.normal(jax.random.fold_in(key, 20 + target), (cfg["alg_starts"], 4)), b)
            acc.append(float(r.acceptance_rate))
            # Conditions (1) and (2) alone, without the Theorem 6 certificate.
            checks_only.append(float(jnp.mean(r.stable & (r.max_shift < 2.0 * r.d_hat))))
            stable.append(float(jnp.mean(r.stable)))
            est_err.append(float(jnp.linalg.norm(r.estimate - STATES[target])))
        return {
            "d_hat": float(b.d_hat), "d_hat_quantile": 0.95,
            "mean_sq_deviation": float(b.mean_sq_deviation), "R_M": float(b.r_bound),
            "certified": bool(b.bounded),
            "acceptance_rate": float(np.mean(acc)), "acceptance_rate_per_target": np.round(acc, 4),
            "per_sample_checks_only_rate": float(np.mean(checks_only)),
            "stable_rate": float(np.mean(stable)),
            "estimate_error_per_target": np.round(est_err, 4),
            "held_out_deviation_norm_median": float(np.median(np.asarray(b.deviation_norms))),
        }

    algo = run_algorithm(p_co)
    algo["random_weights"] = run_algorithm(random_params)
    algo.update({"held_out_rows": int(held["tau"].shape[0]),
                 "R_M_rows": int(train_rows["co"]["tau"].shape[0]),
                 "starts_per_target": cfg["alg_starts"], "num_steps": 2 * N_AGENTS})
    results["co"]["composite_algorithm"] = algo
    print(f"  composite algorithm: D-hat {algo['d_hat']:.4f}, mean ||D||^2 {algo['mean_sq_deviation']:.4f} "
          f"vs R(M) {algo['R_M']:.4f} -> certified {algo['certified']}, acceptance "
          f"{algo['acceptance_rate']:.3f}; random weights: certified {algo['random_weights']['certified']}, "
          f"acceptance {algo['random_weights']['acceptance_rate']:.3f} (checks alone "
          f"{algo['random_weights']['per_sample_checks_only_rate']:.3f})", flush=True)

    # Non-CO composite from all-00 histories (Cor. 7.1).
    env_n, _, p_n, _ = models["nonco"]
    taus_n = env_n.encode(jnp.zeros((N_AGENTS, 2)), "raw")
    lp_n = log_posteriors(env_n, jnp.zeros((N_AGENTS, 2)))
    nonco = {}
    for label, f, p, taus in (("learned", f_of, p_n, taus_n), ("exact_denoiser", lambda _: exact, None, lp_n)):
        run = jax.jit(lambda p: jax.vmap(lambda y: sd.composite_estimate(f(p), taus, y, 3 * N_AGENTS))(y0))
        end = np.asarray(run(p))
        nonco[label] = {f"area{a + 1}": float(np.mean(np.linalg.norm(end - STATES[a], axis=-1) < HIT))
                        for a in range(4)}
    results["nonco"]["composite_all00"] = nonco

    # Headline numbers.
    results["attractors_per_agent"] = results["co"]["attractors_per_agent"]
    results["attractors_per_agent_paper"] = [1, 1, 2, 2]
    results["composite_success_rate"] = comp["composite_success_rate"]
    results["individual_success_rate"] = comp["individual_success_rate"]
    results["composite_algorithm_certified"] = algo["certified"]
    results["composite_algorithm_acceptance_rate"] = algo["acceptance_rate"]
    results["basin_fractions_vs_posterior"] = {
        v: [{"agent": i + 1, "basin_mass_per_state": a["basin_mass_per_state"], "posterior": a["posterior"]}
            for i, a in enumerate(results[v]["agents"])] for v in ("co", "nonco")}

    # Figure 1.
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(15, 7.6))
    for row, (variant, env, params, taus, agents, posts) in enumerate(figure_rows):
        truth = STATES[:1] if variant == "co" else STATES[:2]
        for i in range(N_AGENTS):
            a = agents[i]
            keep = a["basin_fraction"] >= MIN_BASIN
            p = "(" + ", ".join(f"{v:.2f}" for v in np.asarray(posts[i])) + ")"
            title = (f"{'CO' if variant == 'co' else 'non-CO'}  Agent {i + 1}  o={np.asarray(taus[i, 4:]).astype(int).tolist()}\n"
                     f"{int(keep.sum())} attractor(s); p(s|tau)={p}")
            quiver_panel(axes[row, i], lambda t, ys: f_batch(params, t, ys), taus[i],
                         a["attractors"][keep], a["basin_fraction"][keep], truth, title)
    fig.suptitle("Fig. 1 (2x2 sensor network): arrows f(tau_i, y) - y in (y1, y2), y3 = y4 = 0; "
                 "red: stable attractors (projected; label = basin fraction), star: jointly "
                 "consistent state(s)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, "sensor_2x2.png"), dpi=80)

    results["wall_s"] = round(time.time() - t0, 1)
    write_json(os.path.join(args.out, "sensor_2x2.json"), results)

    # Table next to the paper.
    rows = [
        ["attractors per agent (CO, target in Area 1)", results["attractors_per_agent"],
         results["co"]["attractors_per_agent_exact_denoiser"], "[1, 1, 2, 2]"],
        ["shared fixed points (CO)", results["co"]["shared_fixed_points"],
         results["co"]["shared_fixed_points_exact_denoiser"], "[(1,0,0,0)]"],
        ["shared fixed points (non-CO, all 00)", results["nonco"]["shared_fixed_points"],
         results["nonco"]["shared_fixed_points_exact_denoiser"], "[(1,0,0,0), (0,1,0,0)]"],
        ["Agent 3 basins (Area 1 / Area 4)",
         f"{results['co']['agents'][2]['basin_mass_per_state'][0]:.2f} / {results['co']['agents'][2]['basin_mass_per_state'][3]:.2f}",
         f"{results['co']['agents_exact_denoiser'][2]['basin_mass_per_state'][0]:.2f} / {results['co']['agents_exact_denoiser'][2]['basin_mass_per_state'][3]:.2f}",
         "equal probability"],
        ["non-CO Agent 1 p(s=0001|00): basin mass of Area 4",
         f"{results['nonco']['agents'][0]['basin_mass_per_state'][3]:.2f}",
         f"{results['nonco']['agents_exact_denoiser'][0]['basin_mass_per_state'][3]:.2f}", "0.33 (posterior)"],
        ["composite success (24 orders x 4 targets, L=8)", f"{comp['composite_success_rate']:.4f}",
         f"{comp_exact['composite_success_rate']:.4f}", "all"],
        ["individual success (same starts, L=8)", f"{comp['individual_success_rate']:.4f}",
         f"{comp_exact['individual_success_rate']:.4f}", "A3, A4 split"],
        ["composite algorithm: D-hat = p95 of held-out ||D||", f"{algo['d_hat']:.4f}", "-",
         "2 D_theta threshold"],
        ["Theorem 6 check, mean ||D||^2 <= R(M): trained / random weights",
         f"{algo['mean_sq_deviation']:.4f} ({'certified' if algo['certified'] else 'not certified'}) / "
         f"{algo['random_weights']['mean_sq_deviation']:.4f} "
         f"({'certified' if algo['random_weights']['certified'] else 'not certified'}); "
         f"R(M) {algo['R_M']:.4f}", "-", "D_theta <= R(M) (Eq. 17)"],
        ["Step-2 acceptance (trained / random weights; random with checks (1)+(2) alone)",
         f"{algo['acceptance_rate']:.3f} / {algo['random_weights']['acceptance_rate']:.3f}; "
         f"{algo['random_weights']['per_sample_checks_only_rate']:.3f}", "-", "-"],
        ["composite algorithm estimate error, max over 4 targets",
         f"{max(algo['estimate_error_per_target']):.4f}", "-", "<= max_i D_theta (Thm 7)"],
        ["non-CO composite, all 00: Area 1 / Area 2",
         f"{nonco['learned']['area1']:.2f} / {nonco['learned']['area2']:.2f}",
         f"{nonco['exact_denoiser']['area1']:.2f} / {nonco['exact_denoiser']['area2']:.2f}",
         "both reached"],
    ]
    table = markdown_table(["quantity", "learned (ours)", "exact denoiser (ours)", "paper"], rows)
    header = (f"# Sensor 2x2 (paper 000, Fig. 1)\n\nScale: {results['scale']}, {args.samples} joint "
              f"samples per variant, W={args.width}, depth 3, {cfg['steps']} Adam steps at lr "
              f"{cfg['lr']}, {cfg['starts']} fixed-point starts, {cfg['comp_starts']} composite "
              f"starts per order and target; CPU, {results['wall_s']} s.\n\n")
    with open(os.path.join(args.out, "sensor_2x2.md"), "w") as fh:
        fh.write(header + table + "\n")
    print(header + table)


if __name__ == "__main__":
    main()
