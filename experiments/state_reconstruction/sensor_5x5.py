"""Paper 000, Figures 2-4 at CPU scale: the 5x5 sensor network with two targets.

    python experiments/state_reconstruction/sensor_5x5.py [--quick | --scale quick|medium|full]
        [--out DIR] [--name STEM] [--encoding area|raw] [--set KEY=VALUE ...]

25 sensors on the nodes of a 5x5 lattice, 40 edge areas, two targets (780 states), H = 1
(geometry in `jaxdiff.envs.sensor_grid`). The shared blind denoiser (depth 3, SiLU) is trained
with Eq. 1 on per-agent rows of N joint samples and evaluated on fresh test samples:

* PSNR (MAX = 1, per-sample mean) of individual diffusion (every agent from the same
  y0 ~ N(0, I)) and composite diffusion (agents 0..24 in turn, and a random order), with the
  same number of steps L for both (L = 2n = 50 is the headline; L = 25, 100 logged);
* partial composites (Fig. 4b / Finding 6): the sensors covering both target areas, those of
  one target only, and 4 sensors that cover neither, against the full composite;
* the composite algorithm's Step-2 checks (acceptance rate, filtered vs unfiltered PSNR, and a
  random-weight model that should be rejected), with D-hat and the Theorem 6 check from
  `statediff.deviation_bound`;
* Theorem 5 (F16): the relative error of the Eq. 13 prediction J+ dtau against the true
  fixed-point shift at ||dtau|| = 0.5 / 0.05 / 0.005, next to the spec's measured values, and the
  Corollary 5.1 form against Eq. 13 on the learned net;
* deviations D = s - phi_inf(tau_i)(s) against rank(J+) (Fig. 2g / Fig. 3), with the surrogate
  bound R_eps (Eq. 15 / Eq. 17) on Jacobian-distance neighbourhoods of a training pool, at
  distance quantiles and at the paper's eps = 0.588, 0.626;
* deviation and rank vs network width (Fig. 3 left); at medium and full scale also vs the number
  of targets and of training samples (Fig. 3 middle, right).

Scale [CHOICE]. --quick: N = 20k joint samples (500k rows), W = 256 trained 4000 Adam steps at
lr 3e-3 (batch 512); widths 64/128/256 for the sweep; 500 test samples; about 5 minutes on a
loaded 2-core CPU. Full (default): the spec's toy schedule, 10000 steps at lr 1e-3, widths
64-1024, targets 1-3, N in {1k, 5k, 20k, 100k}, 2000 test samples; about 1.5-2 hours on the
same CPU (W = 1024 dominates). --scale medium: the quick training schedule and widths with the
Fig. 3 sweeps (targets 1/2/3, N in {1k, 5k, 20k, 100k}), 300 deviation anchors and 50 R_eps
anchors on the 1500-row pool; it writes results/sensor_5x5_medium.* so the quick results stay.
The raw 29-dim encoding (--encoding raw) is the paper-faithful
input; the spec measured that it does not learn the conditioning at W 256 / 8k steps, so the
default is the area-indexed encoding.
Any setting can be overridden, e.g. `--set steps=20000 --set widths=256,512` (see settings()).
Writes results/<name>.json, .md and <name>_fig2.png, _fig3.png, _fig4.png, _psnr.png, where
<name> is sensor_5x5 (quick, full) or sensor_5x5_medium (medium) unless --name is given.

`--thm5` trains only the main model (W = `width`) and runs only the Theorem 5 section; it writes
results/<name>_thm5.json and .md (27 s measured at --quick on the 2-core CPU, 20 s of it
training). With --quick (no --thm5) the whole script measured 84 s on a lightly loaded CPU.
"""
from __future__ import annotations

import argparse
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

from jaxdiff import diffusion as d
from jaxdiff import statediff as sd  # noqa: E402
from jaxdiff.envs.sensor_grid import sensor_5x5  # noqa: E402

N_AGENTS = 25
THM5_SCALES = (0.5, 0.05, 0.005)  # ||dtau||
THM5_SPEC = {0.5: 0.156, 0.05: 0.017, 0.005: 0.0023}  # spec F16 [MEASURED] at 0.52 / 0.052 / 0.0052
R_ROWS = 50000  # training rows (subsample) for R(M) in the Theorem 6 check
EPS_QUANTILES = (0.01, 0.05, 0.2, 0.5)
EPS_PAPER = (0.588, 0.626)


def settings(scale: str) -> dict:
    if scale == "quick":
        return dict(samples=20000, width=256, steps=4000, lr=3e-3, widths=(64, 128, 256),
                    targets=(), sample_sweep=(), n_test=500, n_dev=200, n_bound=10, pool=1500,
                    n_alg=24, k_alg=8, steps_list=(25, 50, 100), n_thm5=32)
    if scale == "medium":  # the quick training schedule with the Fig. 3 sweeps and 50 R_eps anchors
        return dict(samples=20000, width=256, steps=4000, lr=3e-3, widths=(64, 128, 256),
                    targets=(1, 3), sample_sweep=(1000, 5000, 100000), n_test=500, n_dev=300,
                    n_bound=50, pool=1500, n_alg=24, k_alg=8, steps_list=(25, 50, 100), n_thm5=32)
    return dict(samples=20000, width=256, steps=10000, lr=1e-3, widths=(64, 128, 256, 512, 1024),
                targets=(1, 3), sample_sweep=(1000, 5000, 100000), n_test=2000, n_dev=1000,
                n_bound=100, pool=5000, n_alg=200, k_alg=16, steps_list=(25, 50, 100), n_thm5=200)


# ------------------------------------------------------------------------------- jitted pieces


def make_tools(model):
    f_of = lambda p: sd.denoise_fn(model, p)

    @jax.jit(static_argnums=(0,))
    def individual(L, p, taus, y0):  # taus [B, n, d], y0 [B, s] -> [B, n, s]
        return jax.vmap(lambda t, y: sd.individual_estimates(f_of(p), t, y, L))(taus, y0)

    @jax.jit(static_argnums=(0,))
    def composite(L, p, taus, y0, order, active):  # -> [B, s]
        return jax.vmap(lambda t, y, a: sd.composite_estimate(f_of(p), t, y, L, order=order, active=a))(
            taus, y0, active)

    @jax.jit(static_argnums=(0,))
    def composite_traj(L, p, taus, y0, order, active):  # one sample, many starts -> [K, L+1, s]
        return jax.vmap(lambda y: sd.composite_estimate(
            f_of(p), taus, y, L, order=order, active=active, return_trajectory=True)[1])(y0)

    @jax.jit
    def deviations(p, taus, states):  # [A, d], [A, s] -> D [A, s], y* [A, s], ranks
        def one(t, s):
            dev, y_star = sd.deviation(f_of(p), t, s)
            r = sd.jacobian_ranks(f_of(p), t, y_star)
            return dev, y_star, r["rank"], r["effective_rank"]
        return jax.lax.map(lambda ts: one(*ts), (taus, states), batch_size=50)

    @jax.jit
    def jac_dist(p, taus, y_star, pool_taus):  # anchors [A] -> [A, P]
        return jax.lax.map(lambda ty: sd.jacobian_distances(f_of(p), ty[0], ty[1], pool_taus),
                           (taus, y_star))

    @jax.jit
    def bounds(p, taus, states, y_star, pool_taus, pool_states, eps):
        return jax.lax.map(lambda a: sd.surrogate_bound(f_of(p), a[0], a[1], a[2], pool_taus,
                                                       pool_states, eps), (taus, states, y_star))

    @jax.jit(static_argnums=(0,))
    def algorithm(L, p, taus, starts, d_hat):  # taus [B, n, d], starts [B, K, s]
        return jax.vmap(lambda t, s: sd.composite_algorithm(f_of(p), t, s, num_steps=L, d_hat=d_hat))(
            taus, starts)

    @jax.jit
    def dev_bound(p, taus, states, train_taus, train_states):
        return sd.deviation_bound(f_of(p), taus, states, train_taus=train_taus,
                                  train_states=train_states)

    @jax.jit
    def thm5(p, taus, states, dirs, scales):  # anchors [A], unit dirs [A, d], scales [S]
        f = f_of(p)
        w_tau, w_y = sd.first_layer_blocks(p, taus.shape[-1])

        def one(tau, s, u):
            base = d.fixed_point_shift(f, tau, s, jnp.zeros_like(tau), flow_steps=200)
            j_y = d.jacobian_y(f, tau, base.y_star)
            shifts = jax.vmap(lambda c: d.fixed_point_shift(f, tau, base.y_star, c * u))(scales)
            cor = d.corollary51_shift(j_y, w_tau, w_y, u)
            eq13 = shifts.predicted[0] / scales[0]
            cor_err = jnp.linalg.norm(cor - eq13) / jnp.linalg.norm(eq13)
            asym = jnp.linalg.norm(j_y - j_y.T) / jnp.linalg.norm(j_y)
            return base.residual, base.spectral_radius, shifts.rel_error, shifts.residual, cor_err, asym

        return jax.vmap(one)(taus, states, dirs)

    @jax.jit
    def attractor_ends(p, tau, starts):
        return sd.converge(f_of(p), tau, starts)

    @jax.jit
    def field(p, tau, ys):
        return jax.vmap(lambda y: f_of(p)(tau, y))(ys)

    return dict(individual=individual, composite=composite, composite_traj=composite_traj,
                deviations=deviations, jac_dist=jac_dist, bounds=bounds, algorithm=algorithm,
                dev_bound=dev_bound, thm5=thm5, attractor_ends=attractor_ends, field=field)


def exact_recovery(est, s):
    return float(np.mean(np.all(np.abs(np.asarray(est) - np.asarray(s)) < 0.5, axis=-1)))


def target_areas(s):
    return np.sort(np.flatnonzero(np.asarray(s) > 0.5))


# ------------------------------------------------------------------------------- analyses


def psnr_block(tools, params, test, taus, y0, steps_list, key):
    out = {"L": list(steps_list), "individual": [], "composite": [], "composite_random_order": [],
           "individual_agg": [], "composite_agg": [], "composite_exact_recovery": []}
    s = test["s"]
    ones = jnp.ones((s.shape[0], N_AGENTS), bool)
    order = jnp.arange(N_AGENTS)
    rnd = jax.random.permutation(key, N_AGENTS)
    for L in steps_list:
        ind = tools["individual"](L, params, taus, y0)
        comp = tools["composite"](L, params, taus, y0, order, ones)
        comp_r = tools["composite"](L, params, taus, y0, rnd, ones)
        out["individual"].append(float(sd.mean_psnr(ind, s[:, None])))
        out["individual_agg"].append(float(sd.aggregate_psnr(ind, s[:, None])))
        out["composite"].append(float(sd.mean_psnr(comp, s)))
        out["composite_agg"].append(float(sd.aggregate_psnr(comp, s)))
        out["composite_random_order"].append(float(sd.mean_psnr(comp_r, s)))
        out["composite_exact_recovery"].append(exact_recovery(comp, s))
    return out


def deviation_block(tools, params, taus, states):
    dev, y_star, rank, eff = tools["deviations"](params, taus, states)
    norm = np.linalg.norm(np.asarray(dev), axis=-1)
    rank = np.asarray(rank)
    return {
        "deviation_norm": norm, "rank_rtol": np.asarray(sd.metrics.RTOLS), "rank": rank,
        "effective_rank": np.asarray(eff), "mean_deviation": float(norm.mean()),
        "median_deviation": float(np.median(norm)),
        "mean_rank": rank.mean(0).round(3),
        "spearman_rank_vs_deviation": [sd.spearman(rank[:, j], norm) for j in range(rank.shape[1])],
    }, np.asarray(y_star)


def bound_block(tools, params, taus, states, y_star, pool_taus, pool_states, dev_norm):
    dist = np.asarray(tools["jac_dist"](params, taus, y_star, pool_taus))  # [A, P]
    eps = [float(np.quantile(dist, q)) for q in EPS_QUANTILES] + list(EPS_PAPER)
    out = tools["bounds"](params, taus, states, y_star, pool_taus, pool_states, jnp.asarray(eps))
    r17, r15 = np.asarray(out["R_eq17"]), np.asarray(out["R_eq15"])  # [A, E]
    size, span = np.asarray(out["size"]), np.asarray(out["span_rank"])
    labels = [f"q{int(q * 100)}" for q in EPS_QUANTILES] + [f"paper_{e}" for e in EPS_PAPER]
    rows = {}
    for j, lab in enumerate(labels):
        ok = size[:, j] > 0
        rows[lab] = {
            "eps": eps[j], "mean_size": float(size[:, j].mean()),
            "R_eq17_mean": float(r17[ok, j].mean()) if ok.any() else None,
            "R_eq15_mean": float(r15[ok, j].mean()) if ok.any() else None,
            "span_rank_mean": float(span[ok, j].mean()) if ok.any() else None,
            "frac_D_le_R17": float(np.mean(dev_norm[ok] <= r17[ok, j])) if ok.any() else None,
            "frac_D_le_R15": float(np.mean(dev_norm[ok] <= r15[ok, j])) if ok.any() else None,
        }
    return {
        "per_eps": rows, "distance_quantiles": dict(zip(["q1", "q5", "q20", "q50"], eps[:4])),
        "R_pool": float(sd.regression_residual(pool_taus, pool_states)),
        "trace_cov_s_pool": float(jnp.trace(jnp.cov(pool_states.T, bias=True))),
        "max_deviation_anchors": float(dev_norm.max()),
        "deviation_sq_mean": float(np.mean(dev_norm**2)),
    }


def theorem5_block(tools, params, taus, states, key):
    """F16: Eq. 13's J+ dtau against the re-converged fixed point, per anchor (tau_i, s).

    y* = phi_inf(tau_i)(s) (the Definition 4 fixed point, Newton-polished); dtau = c u with one
    random unit direction u per anchor (over all tau dims) and c in THM5_SCALES. Anchors whose
    y* is not a stable fixed point (residual >= 1e-4 or spectral radius >= 1) are left out, as
    Theorem 5 is about stable points."""
    dirs = jax.random.normal(key, taus.shape)
    dirs = dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    res0, rho, rel, res1, cor_err, asym = jax.device_get(
        tools["thm5"](params, taus, states, dirs, jnp.asarray(THM5_SCALES)))
    keep = (res0 < 1e-4) & (rho < 1.0)
    rel, res1 = rel[keep], res1[keep]
    out = {"num_anchors": len(keep), "num_stable": int(keep.sum()),
           "max_residual": float(res1.max()) if keep.any() else None, "per_scale": {}}
    for j, c in enumerate(THM5_SCALES):
        r = rel[:, j]
        out["per_scale"][str(c)] = {
            "median_rel_error": float(np.median(r)) if keep.any() else None,
            "mean_rel_error": float(r.mean()) if keep.any() else None,
            "p90_rel_error": float(np.quantile(r, 0.9)) if keep.any() else None,
            "spec_measured": THM5_SPEC[c]}
    med = [out["per_scale"][str(c)]["median_rel_error"] for c in THM5_SCALES]
    out["decay_ratios_median"] = [med[i] / med[i + 1] for i in range(len(med) - 1)] if keep.any() else None
    out["corollary51_vs_eq13_rel_median"] = float(np.median(cor_err[keep])) if keep.any() else None
    out["jacobian_asymmetry_median"] = float(np.median(asym[keep])) if keep.any() else None
    return out


def theorem5_rows(t5):
    rows = []
    for c in THM5_SCALES:
        v = t5["per_scale"][str(c)]
        rows.append([f"Thm 5 rel. error ||J+ dtau - dy*|| / ||dy*||, ||dtau|| = {c}",
                     f"{v['median_rel_error']:.4f} (mean {v['mean_rel_error']:.4f})",
                     "O(eps^2) error (Eq. 13)", f"{v['spec_measured']}"])
    label = f"Cor. 5.1 vs Eq. 13 (learned net; J_f asymmetry {t5['jacobian_asymmetry_median']:.2f})"
    rows.append([label, f"{t5['corollary51_vs_eq13_rel_median']:.3f}", "holds for symmetric J_f",
                 "analysis aid only"])
    return rows


def subsets_for(env, s, rng):
    """Active-agent masks: covering both target areas, one target's sensors, 4 blind sensors."""
    cov = env.coverage_matrix  # [n, areas]
    areas = target_areas(s)
    both = cov[:, areas].any(1)
    one = cov[:, areas[:1]].any(1)
    blind_pool = np.flatnonzero(~both)
    blind = np.zeros(N_AGENTS, bool)
    blind[rng.choice(blind_pool, 4, replace=False)] = True
    return {"covering_targets": both, "one_target": one, "blind_4": blind,
            "full": np.ones(N_AGENTS, bool)}


# ------------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke scale (a few CPU minutes); = --scale quick")
    ap.add_argument("--scale", default=None, choices=("quick", "medium", "full"),
                    help="quick (smoke), medium (quick training with the Fig. 3 target/data sweeps and "
                         "50 R_eps anchors), full (default)")
    ap.add_argument("--name", default=None,
                    help="output file stem (default sensor_5x5, sensor_5x5_medium at --scale medium)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoding", default="area", choices=("area", "raw"))
    ap.add_argument("--thm5", action="store_true",
                    help="train the main model only and run only the Theorem 5 (F16) check")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, e.g. --set steps=20000 --set widths=256,512 "
                         f"(keys: {', '.join(settings('quick'))})")
    args = ap.parse_args()
    if args.quick and args.scale not in (None, "quick"):
        ap.error("--quick contradicts --scale " + args.scale)
    scale = "quick" if args.quick else (args.scale or "full")
    stem = args.name or ("sensor_5x5_medium" if scale == "medium" else "sensor_5x5")
    cfg = settings(scale)
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in cfg:
            ap.error(f"unknown setting {name!r}; allowed: {', '.join(cfg)}")
        kind = type(cfg[name])
        if kind is tuple:
            cfg[name] = tuple(int(v) for v in value.split(",") if v)
        else:
            cfg[name] = kind(value)
    t0 = time.time()
    enc = args.encoding
    env = sensor_5x5()
    key = jax.random.key(args.seed)
    rng = np.random.default_rng(args.seed)
    print(f"sensor 5x5 ({scale}): {cfg['samples']} joint samples, "
          f"encoding {enc}, W={cfg['width']}, {cfg['steps']} steps at lr {cfg['lr']}, backend "
          f"{jax.default_backend()}", flush=True)

    k_data, k_test, key = jax.random.split(key, 3)
    data = env.sample_dataset(k_data, max(cfg["samples"], *cfg["sample_sweep"], 0))
    subset = lambda n: {k: v[:n] for k, v in data.items()}
    rows = env.rows(subset(cfg["samples"]), enc)
    test = env.sample_dataset(k_test, cfg["n_test"])
    test_taus = jax.vmap(lambda o: env.encode(o, enc))(test["obs"])  # [B, n, d]
    y0 = jax.random.normal(jax.random.fold_in(key, 1), (cfg["n_test"], env.state_dim))
    # Deviation anchors: one random agent per test sample.
    dev_idx = np.arange(cfg["n_dev"])
    dev_agent = rng.integers(0, N_AGENTS, cfg["n_dev"])
    dev_taus = test_taus[dev_idx, dev_agent]
    dev_states = test["s"][dev_idx]

    results = {"scale": scale, "seed": args.seed, "encoding": enc,
               "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}}
    n5 = min(cfg["n_thm5"], cfg["n_dev"])
    thm5_key = jax.random.fold_in(key, 8)

    if args.thm5:
        model, params, info = train_model(jax.random.fold_in(key, cfg["width"]), rows, state_dim=40,
                                          width=cfg["width"], steps=cfg["steps"], lr=cfg["lr"],
                                          label=f"{enc}")
        t5 = theorem5_block(make_tools(model), params, dev_taus[:n5], dev_states[:n5], thm5_key)
        results.update(train=info, theorem5=t5, wall_s=round(time.time() - t0, 1))
        write_json(os.path.join(args.out, f"{stem}_thm5.json"), results)
        table = markdown_table(["quantity", "ours", "paper", "spec measured"], theorem5_rows(t5))
        header = (f"# Sensor 5x5, Theorem 5 fixed-point shift (F16)\n\nScale: {results['scale']}; "
                  f"{cfg['samples']} joint samples, {enc} encoding, W={cfg['width']}, {cfg['steps']} "
                  f"Adam steps at lr {cfg['lr']}; {t5['num_stable']} of {t5['num_anchors']} anchors "
                  f"(tau_i, s) have a stable y* = phi_inf(tau_i)(s); one random unit dtau direction "
                  f"per anchor; median (mean) over anchors; CPU, {results['wall_s']} s.\n\n")
        with open(os.path.join(args.out, f"{stem}_thm5.md"), "w") as fh:
            fh.write(header + table + "\n")
        print(header + table)
        return

    # ---------------------------------------------------------------- width sweep (Fig. 3 left)
    models, sweep = {}, {}
    for width in sorted(set(cfg["widths"]) | {cfg["width"]}):
        model, params, info = train_model(jax.random.fold_in(key, width), rows, state_dim=40,
                                          width=width, steps=cfg["steps"], lr=cfg["lr"],
                                          label=f"{enc}")
        tools = make_tools(model)
        dev, y_star = deviation_block(tools, params, dev_taus, dev_states)
        L = 2 * N_AGENTS
        ind = tools["individual"](L, params, test_taus, y0)
        comp = tools["composite"](L, params, test_taus, y0, jnp.arange(N_AGENTS),
                                  jnp.ones((cfg["n_test"], N_AGENTS), bool))
        sweep[width] = {"train": info, **dev,
                        "individual_psnr_db": float(sd.mean_psnr(ind, test["s"][:, None])),
                        "composite_psnr_db": float(sd.mean_psnr(comp, test["s"]))}
        models[width] = (model, params, tools, y_star)
        print(f"  [{time.time() - t0:.0f}s] W={width}: mean ||D|| {dev['mean_deviation']:.3f}, mean rank(J+) "
              f"{dev['mean_rank'].tolist()} (rtol {list(sd.metrics.RTOLS)}), Spearman "
              f"{dev['spearman_rank_vs_deviation'][0]:.2f}; PSNR ind {sweep[width]['individual_psnr_db']:.2f} "
              f"/ comp {sweep[width]['composite_psnr_db']:.2f} dB", flush=True)
    results["width_sweep"] = sweep

    model, params, tools, y_star = models[cfg["width"]]
    main_dev = sweep[cfg["width"]]

    # ---------------------------------------------------------------- PSNR (Fig. 4 / Table-1 style)
    psnr = psnr_block(tools, params, test, test_taus, y0, cfg["steps_list"], jax.random.fold_in(key, 2))
    j50 = psnr["L"].index(2 * N_AGENTS)
    results["psnr"] = psnr
    results["individual_psnr_db"] = psnr["individual"][j50]
    results["composite_psnr_db"] = psnr["composite"][j50]
    results["composite_minus_individual_db"] = psnr["composite"][j50] - psnr["individual"][j50]
    results["num_steps_L"] = 2 * N_AGENTS
    print(f"  [{time.time() - t0:.0f}s] PSNR (L=50): individual {results['individual_psnr_db']:.2f} dB, composite "
          f"{results['composite_psnr_db']:.2f} dB (random order "
          f"{psnr['composite_random_order'][j50]:.2f}); exact two-target recovery "
          f"{psnr['composite_exact_recovery'][j50]:.2f}", flush=True)

    # ---------------------------------------------------------------- partial composites
    n_part = min(300, cfg["n_test"])
    masks = [subsets_for(env, test["s"][b], rng) for b in range(n_part)]
    partial = {}
    for name in ("full", "covering_targets", "one_target", "blind_4"):
        active = jnp.asarray(np.stack([m[name] for m in masks]))
        est = tools["composite"](2 * N_AGENTS, params, test_taus[:n_part], y0[:n_part],
                                 jnp.arange(N_AGENTS), active)
        partial[name] = {"psnr_db": float(sd.mean_psnr(est, test["s"][:n_part])),
                         "exact_recovery": exact_recovery(est, test["s"][:n_part]),
                         "mean_agents": float(active.sum(1).mean())}
    results["partial_composite"] = partial
    print(f"  [{time.time() - t0:.0f}s] partial composites: " + ", ".join(
        f"{k} {v['psnr_db']:.1f} dB / exact {v['exact_recovery']:.2f}" for k, v in partial.items()), flush=True)

    # ---------------------------------------------------------------- surrogate bound (Fig. 2g)
    pool_idx = rng.choice(rows["tau"].shape[0], cfg["pool"], replace=False)
    pool_taus, pool_states = rows["tau"][pool_idx], rows["s"][pool_idx]
    nb = cfg["n_bound"]
    bound = bound_block(tools, params, dev_taus[:nb], dev_states[:nb], jnp.asarray(y_star[:nb]),
                        pool_taus, pool_states, main_dev["deviation_norm"][:nb])
    results["surrogate_bound"] = bound
    print(f"  [{time.time() - t0:.0f}s] R(M) over the pool {bound['R_pool']:.3f} (Tr Sigma_s {bound['trace_cov_s_pool']:.3f}); "
          + ", ".join(f"{k}: eps {v['eps']:.3f} |M| {v['mean_size']:.0f} R17 "
                      f"{(v['R_eq17_mean'] if v['R_eq17_mean'] is not None else float('nan')):.3f}"
                      for k, v in bound["per_eps"].items()), flush=True)

    # ---------------------------------------------------------------- composite algorithm (Step 2)
    # D-hat = the model's own 95th-percentile deviation on held-out anchors, with the Theorem 6
    # check mean ||D||^2 <= R(M) over (a subsample of) the training rows (statediff.deviation_bound).
    d95 = float(np.percentile(main_dev["deviation_norm"], 95))
    r_idx = rng.choice(rows["tau"].shape[0], min(R_ROWS, rows["tau"].shape[0]), replace=False)
    r_taus, r_states = rows["tau"][r_idx], rows["s"][r_idx]
    dbound = tools["dev_bound"](params, dev_taus, dev_states, r_taus, r_states)
    na, ka = cfg["n_alg"], cfg["k_alg"]
    starts = jax.random.normal(jax.random.fold_in(key, 3), (na, ka, env.state_dim))
    res = tools["algorithm"](2 * N_AGENTS, params, test_taus[:na], starts, dbound)
    unfiltered = res.samples[:, 0]
    broken_params = sd.init_params(jax.random.fold_in(key, 4), model, test_taus.shape[-1])
    dbound_b = tools["dev_bound"](broken_params, dev_taus, dev_states, r_taus, r_states)
    res_b = tools["algorithm"](2 * N_AGENTS, broken_params, test_taus[:na], starts, dbound_b)
    # Inconsistent histories: agents 13..24 condition on another sample's observations.
    mixed = test_taus[:na].at[:, 13:].set(jnp.roll(test_taus[:na], 1, axis=0)[:, 13:])
    res_m = tools["algorithm"](2 * N_AGENTS, params, mixed, starts, dbound)
    acc = np.asarray(res.accepted)
    acc_samples = np.asarray(res.samples)[acc]
    acc_truth = np.repeat(np.asarray(test["s"][:na])[:, None], ka, 1)[acc]
    per_sample = lambda r, dh: float(np.mean(np.asarray(r.stable) & (np.asarray(r.max_shift) < 2 * dh)))
    results["composite_algorithm"] = {
        "d_hat": float(dbound.d_hat), "d_hat_p95_deviation": d95,
        "theorem6": {"trained": {"mean_sq_deviation": float(dbound.mean_sq_deviation),
                                 "R_M": float(dbound.r_bound), "bounded": bool(dbound.bounded)},
                     "random_weights": {"mean_sq_deviation": float(dbound_b.mean_sq_deviation),
                                        "R_M": float(dbound_b.r_bound), "bounded": bool(dbound_b.bounded),
                                        "d_hat": float(dbound_b.d_hat)},
                     "R_M_rows": len(r_idx)},
        "acceptance_rate": float(acc.mean()),
        "stable_rate": float(np.asarray(res.stable).mean()),
        "psnr_filtered_estimate_db": float(sd.mean_psnr(res.estimate, test["s"][:na])),
        "psnr_accepted_samples_db": float(sd.mean_psnr(acc_samples, acc_truth)) if acc.any() else None,
        "psnr_all_samples_db": float(sd.mean_psnr(res.samples, test["s"][:na, None])),
        "psnr_unfiltered_k1_db": float(sd.mean_psnr(unfiltered, test["s"][:na])),
        "random_weights_acceptance_rate": float(res_b.acceptance_rate.mean()),
        "random_weights_per_sample_checks_only": per_sample(res_b, float(dbound_b.d_hat)),
        "random_weights_max_shift_median": float(np.median(np.asarray(res_b.max_shift))),
        "mismatched_histories_acceptance_rate": float(res_m.acceptance_rate.mean()),
        "max_shift_median": float(np.median(np.asarray(res.max_shift))),
        # Per-sample conditions (1) and (2) alone with other deviation bounds, from the same runs.
        "acceptance_by_d_hat": {
            f"{name}={dh:.3f}": {label: per_sample(r, dh)
                                 for label, r in (("trained", res), ("random_weights", res_b),
                                                  ("mismatched_histories", res_m))}
            for name, dh in (("median_D", float(np.median(main_dev["deviation_norm"]))),
                             ("p95_D", d95), ("R_pool", bound["R_pool"]))},
        "num_states": na, "samples_per_state": ka,
    }
    print(f"  [{time.time() - t0:.0f}s] composite algorithm: acceptance {acc.mean():.2f} (random weights "
          f"{float(res_b.acceptance_rate.mean()):.2f}, mismatched histories "
          f"{float(res_m.acceptance_rate.mean()):.2f}); Theorem 6 mean ||D||^2 vs R(M): trained "
          f"{float(dbound.mean_sq_deviation):.3f} / random {float(dbound_b.mean_sq_deviation):.3f} vs "
          f"{float(dbound.r_bound):.3f}; PSNR accepted "
          f"{results['composite_algorithm']['psnr_accepted_samples_db']} vs all "
          f"{results['composite_algorithm']['psnr_all_samples_db']:.2f} dB", flush=True)

    # ---------------------------------------------------------------- Theorem 5 (F16)
    t5 = theorem5_block(tools, params, dev_taus[:n5], dev_states[:n5], thm5_key)
    results["theorem5"] = t5
    print(f"  [{time.time() - t0:.0f}s] Theorem 5: median rel. error " + " / ".join(
        f"{t5['per_scale'][str(c)]['median_rel_error']:.4f}" for c in THM5_SCALES)
        + f" at ||dtau|| = {' / '.join(map(str, THM5_SCALES))} (spec measured "
        + " / ".join(str(THM5_SPEC[c]) for c in THM5_SCALES) + ")", flush=True)

    # ---------------------------------------------------------------- fixed points of one sample (Fig. 2 d-f)
    b = 0
    s0 = np.asarray(test["s"][b])
    areas = target_areas(s0)
    cov = env.coverage_matrix
    fp_starts = jax.random.normal(jax.random.fold_in(key, 5), (256, env.state_dim))
    ends = np.stack([np.asarray(tools["attractor_ends"](params, test_taus[b, i], fp_starts))
                     for i in range(N_AGENTS)])  # [n, K, s]
    counts = []
    for i in range(N_AGENTS):
        centres = []
        for e in ends[i]:
            if not any(np.linalg.norm(e - c) < 0.05 for c in centres):
                centres.append(e)
        counts.append(len(centres))
    dev0 = tools["deviations"](params, test_taus[b], jnp.repeat(test["s"][b:b + 1], N_AGENTS, 0))[0]
    # Intersection: points of agent 0 close to some point of every agent (tol 0.01 and 0.1).
    inter = {}
    for tol in (0.01, 0.1):
        uniq = ends[0][np.unique(np.round(ends[0], 2), axis=0, return_index=True)[1]]
        keep = [u for u in uniq if all(np.min(np.linalg.norm(ends[j] - u, axis=-1)) < tol
                                       for j in range(N_AGENTS))]
        inter[str(tol)] = len(keep)
    results["fixed_points_sample0"] = {
        "target_areas": areas + 1, "flow_end_points_per_agent": counts,
        "num_starts": int(fp_starts.shape[0]),
        "deviation_norm_per_agent": np.linalg.norm(np.asarray(dev0), axis=-1).round(4),
        "shared_fixed_points_count": inter,
    }

    # ---------------------------------------------------------------- Fig. 3 middle / right (full)
    extra = {}
    for k_t in cfg["targets"]:
        env_k = sensor_5x5(n_targets=k_t)
        d_k = env_k.sample_dataset(jax.random.fold_in(key, 100 + k_t), cfg["samples"])
        r_k = env_k.rows(d_k, enc)
        m_k, p_k, info_k = train_model(jax.random.fold_in(key, 200 + k_t), r_k, state_dim=40,
                                       width=cfg["width"], steps=cfg["steps"], lr=cfg["lr"],
                                       label=f"{k_t} targets")
        t_k = env_k.sample_dataset(jax.random.fold_in(key, 300 + k_t), cfg["n_dev"])
        tau_k = jax.vmap(lambda o: env_k.encode(o, enc))(t_k["obs"])[dev_idx, dev_agent]
        dv, _ = deviation_block(make_tools(m_k), p_k, tau_k, t_k["s"])
        extra[f"targets_{k_t}"] = {"train": info_k, **dv}
    for n_s in cfg["sample_sweep"]:
        r_n = env.rows(subset(n_s), enc)
        m_n, p_n, info_n = train_model(jax.random.fold_in(key, 400 + n_s), r_n, state_dim=40,
                                       width=cfg["width"], steps=cfg["steps"], lr=cfg["lr"],
                                       label=f"N={n_s}")
        dv, _ = deviation_block(make_tools(m_n), p_n, dev_taus, dev_states)
        extra[f"samples_{n_s}"] = {"train": info_n, **dv}
    if extra:
        extra["targets_2"] = main_dev
        extra[f"samples_{cfg['samples']}"] = main_dev
    results["fig3_sweeps"] = extra

    # ---------------------------------------------------------------- figures
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.out, exist_ok=True)
    a1, a2 = areas[0], areas[1]

    # Fig. 2: flows of an agent that sees a target and of one that sees none, all agents'
    # attractors (projected), and deviation vs rank with R_eps lines.
    seer = int(np.flatnonzero(cov[:, a1])[0])
    blind = int(np.flatnonzero(~cov[:, areas].any(1))[0])
    fig, ax = plt.subplots(1, 4, figsize=(19, 4.8))
    g = np.linspace(-0.25, 1.25, 11)
    gy1, gy2 = np.meshgrid(g, g)
    for panel, agent in ((0, seer), (1, blind)):
        ys = np.zeros((gy1.size, 40), np.float32)
        ys[:, a1], ys[:, a2] = gy1.ravel(), gy2.ravel()
        out = np.asarray(tools["field"](params, test_taus[b, agent], jnp.asarray(ys)))
        ax[panel].quiver(ys[:, a1], ys[:, a2], out[:, a1] - ys[:, a1], out[:, a2] - ys[:, a2],
                         angles="xy", scale_units="xy", scale=1.0, width=0.003, color="0.35", alpha=0.6)
        pe = ends[agent]
        ax[panel].plot(pe[:, a1], pe[:, a2], "o", mfc="tab:red", mec="k", ms=6, alpha=0.4)
        ax[panel].plot([1], [1], "*", ms=14, mfc="gold", mec="k")
        ax[panel].set_title(f"(a/d) Agent {agent + 1} ({'covers target area' if panel == 0 else 'covers neither'})\n"
                            f"{counts[agent]} distinct flow end points from {fp_starts.shape[0]} starts (red, projected)\n"
                            f"arrows f(tau,y)-y, other dims 0", fontsize=8)
        ax[panel].set_xlabel(f"y[Area {a1 + 1}]")
        ax[panel].set_ylabel(f"y[Area {a2 + 1}]")
    colors = plt.cm.viridis(np.linspace(0, 1, N_AGENTS))
    for i in range(N_AGENTS):
        ax[2].plot(ends[i][:, a1], ends[i][:, a2], "o", color=colors[i], ms=4, alpha=0.5)
    ax[2].plot([1], [1], "*", ms=14, mfc="gold", mec="k")
    ax[2].set_title(f"(e/f) attractors of all 25 agents (projected)\nshared within 0.01: "
                    f"{inter['0.01']}, within 0.1: {inter['0.1']}", fontsize=8)
    ax[2].set_xlabel(f"y[Area {a1 + 1}]")
    ax[2].set_ylabel(f"y[Area {a2 + 1}]")
    rk = main_dev["rank"][:, 1] + rng.uniform(-0.2, 0.2, len(main_dev["rank"]))
    ax[3].scatter(rk, main_dev["deviation_norm"], s=10, alpha=0.6)
    for lab, style in (("q5", "--"), ("q20", ":"), ("paper_0.626", "-.")):
        v = bound["per_eps"][lab]
        if v["R_eq17_mean"] is not None:
            ax[3].axhline(v["R_eq17_mean"], ls=style, color="k",
                          label=f"R_eps (Eq. 17), eps={v['eps']:.3f} ({lab})")
    ax[3].set_xlabel("rank J+(y*|tau) (rtol 1e-2; jittered)")
    ax[3].set_ylabel("||D||_2")
    ax[3].set_title(f"(g) deviation vs Jacobian rank, W={cfg['width']}; Spearman "
                    f"{main_dev['spearman_rank_vs_deviation'][1]:.2f}", fontsize=8)
    ax[3].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{stem}_fig2.png"), dpi=70)

    # Fig. 3: deviation and rank vs width (and targets / samples in full mode).
    groups = [("width", [(f"W={w}", sweep[w]) for w in sorted(sweep)])]
    if extra:
        groups.append(("targets", [(f"k={k}", extra[f"targets_{k}"]) for k in sorted({2, *cfg["targets"]})]))
        groups.append(("samples", [(f"N={n}", extra[f"samples_{n}"])
                                   for n in sorted({cfg["samples"], *cfg["sample_sweep"]})]))
    fig, ax = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False)
    for col, (name, items) in enumerate(groups):
        for x, (lab, blk) in enumerate(items):
            dn = np.asarray(blk["deviation_norm"])
            ax[0, col].scatter(x + rng.uniform(-0.15, 0.15, len(dn)), dn, s=6, alpha=0.4)
            ax[0, col].text(x, 0.02, f"rank {np.asarray(blk['mean_rank'])[1]:.1f}", ha="center",
                            fontsize=7, transform=ax[0, col].get_xaxis_transform())
        ax[0, col].set_xticks(range(len(items)))
        ax[0, col].set_xticklabels([lab for lab, _ in items])
        ax[0, col].set_yscale("log")
        ax[0, col].set_ylabel("||D||_2 per fixed point")
        ax[0, col].set_title(f"Fig. 3 ({name}): deviation; label = mean rank J+ (rtol 1e-2)", fontsize=8)
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{stem}_fig3.png"), dpi=70)

    # Fig. 4: composite flows (two orders) and partial composites, first 6 iterations + final.
    starts64 = jax.random.normal(jax.random.fold_in(key, 6), (64, env.state_dim))
    m0 = subsets_for(env, s0, rng)
    perm = jax.random.permutation(jax.random.fold_in(key, 7), N_AGENTS)
    panels = [("(a.1) all agents, order 1", jnp.arange(N_AGENTS), m0["full"]),
              ("(a.2) all agents, order 2", perm, m0["full"]),
              ("(b.1) partial: sensors of both target areas", jnp.arange(N_AGENTS), m0["covering_targets"]),
              ("(b.2) partial: 4 sensors covering neither", jnp.arange(N_AGENTS), m0["blind_4"])]
    fig, ax = plt.subplots(1, 4, figsize=(18, 4.6))
    for col, (title, order, active) in enumerate(panels):
        traj = np.asarray(tools["composite_traj"](2 * N_AGENTS, params, test_taus[b], starts64, order,
                                                  jnp.asarray(active)))
        for k in range(traj.shape[0]):
            ax[col].plot(traj[k, :7, a1], traj[k, :7, a2], "-", color="0.6", lw=0.6)
        ax[col].plot(traj[:, 0, a1], traj[:, 0, a2], "o", mfc="none", mec="tab:blue", ms=4)
        ax[col].plot(traj[:, 6, a1], traj[:, 6, a2], "o", color="tab:blue", ms=4)
        ax[col].plot(traj[:, -1, a1], traj[:, -1, a2], "s", color="tab:red", ms=5, alpha=0.5)
        ax[col].plot([1], [1], "*", ms=14, mfc="gold", mec="k")
        ok = np.mean(np.all(np.abs(traj[:, -1] - s0) < 0.5, -1))
        ax[col].set_title(f"{title}\nopen: start, filled: iteration 6, red: L=50; exact {ok:.2f}", fontsize=8)
        ax[col].set_xlabel(f"y[Area {a1 + 1}]")
        ax[col].set_ylabel(f"y[Area {a2 + 1}]")
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{stem}_fig4.png"), dpi=70)

    # PSNR vs L and partial composites.
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(psnr["L"], psnr["individual"], "o-", label="individual")
    ax[0].plot(psnr["L"], psnr["composite"], "o-", label="composite (order 1..25)")
    ax[0].plot(psnr["L"], psnr["composite_random_order"], "o--", label="composite (random order)")
    ax[0].set_xlabel("denoising steps L")
    ax[0].set_ylabel("PSNR (dB)")
    ax[0].legend()
    ax[0].set_title("composite vs individual diffusion (5x5, test set)", fontsize=9)
    names = list(partial)
    ax[1].bar(range(len(names)), [partial[n]["psnr_db"] for n in names])
    ax[1].set_xticks(range(len(names)))
    ax[1].set_xticklabels([f"{n}\n({partial[n]['mean_agents']:.1f} agents)" for n in names], fontsize=7)
    ax[1].axhline(results["individual_psnr_db"], ls="--", color="k", label="individual")
    ax[1].set_ylabel("PSNR (dB), L = 50")
    ax[1].legend()
    ax[1].set_title("partial composites (Finding 6)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{stem}_psnr.png"), dpi=70)

    results["wall_s"] = round(time.time() - t0, 1)
    write_json(os.path.join(args.out, f"{stem}.json"), results)

    # ---------------------------------------------------------------- table next to the paper
    bq = bound["per_eps"]
    sweep_rows = []
    for label, keys, expect in (
            ("targets", [f"targets_{k}" for k in sorted({2, *cfg["targets"]})],
             "3 targets raise mean ||D|| (Fig. 3 middle)"),
            ("N", [f"samples_{n}" for n in sorted({cfg["samples"], *cfg["sample_sweep"]})],
             "10x less data raises mean ||D|| (Fig. 3 right)")):
        if not extra:
            break
        tag = "/".join(k.split("_")[1] for k in keys)
        sweep_rows += [
            [f"mean ||D|| by {label} {tag}", " / ".join(f"{extra[k]['mean_deviation']:.3f}" for k in keys),
             expect, "not measured"],
            [f"mean rank J+ by {label} {tag}, rtol 1e-3 / 1e-2",
             " / ".join(f"{extra[k]['mean_rank'][0]:.1f}" for k in keys) + " ; "
             + " / ".join(f"{extra[k]['mean_rank'][1]:.1f}" for k in keys), "-", "-"],
            [f"Spearman(rank J+ rtol 1e-2, ||D||) by {label} {tag}",
             " / ".join(f"{extra[k]['spearman_rank_vs_deviation'][1]:.2f}" for k in keys),
             "negative (Fig. 2g)", "-"],
        ]
    th6 = results["composite_algorithm"]["theorem6"]
    rows_t = [
        ["composite PSNR, L=50 (dB)", f"{results['composite_psnr_db']:.2f}",
         "no 5x5 number; SMACv2 Table 1: composite > individual in 28/28 cells (+1.1..+3.1 dB test)",
         "spec prototype 29.3 (W 256, 8k steps)"],
        ["individual PSNR, L=50 (dB)", f"{results['individual_psnr_db']:.2f}", "-", "13.5"],
        ["composite - individual (dB)", f"{results['composite_minus_individual_db']:+.2f}",
         "> 0", ">= +10 (F20 target)"],
        ["composite, random order (dB)", f"{psnr['composite_random_order'][j50]:.2f}",
         "converges regardless of order (Fig. 4a)", "26.4"],
        ["exact two-target recovery (composite)", f"{psnr['composite_exact_recovery'][j50]:.2f}", "-", "0.87"],
        ["partial composite, 4 blind sensors (dB / exact)",
         f"{partial['blind_4']['psnr_db']:.2f} / {partial['blind_4']['exact_recovery']:.2f}",
         "may converge to wrong states (Fig. 4b)", "-"],
        ["partial composite, target sensors (dB / exact)",
         f"{partial['covering_targets']['psnr_db']:.2f} / {partial['covering_targets']['exact_recovery']:.2f}",
         "consistent with participants", "-"],
        ["Spearman(rank J+, ||D||) at rtol 1e-3/1e-2/1e-1, W " + str(min(sweep)),
         " / ".join(f"{v:.2f}" for v in sweep[min(sweep)]["spearman_rank_vs_deviation"]),
         "negative (Fig. 2g)", "-0.49 / - / -0.36 (W 64, raw)"],
        [f"same, W {cfg['width']}",
         " / ".join(f"{v:.2f}" for v in main_dev["spearman_rank_vs_deviation"]),
         "negative (Fig. 2g)", "-"],
        ["mean ||D|| by width " + "/".join(str(w) for w in sorted(sweep)),
         " / ".join(f"{sweep[w]['mean_deviation']:.3f}" for w in sorted(sweep)),
         "falls with width (Fig. 3)", "2.56 / - / 0.21 / 0.098 (W 64/128/256/512)"],
        ["mean rank J+ by width, rtol 1e-3 (|s| = 40 caps it)",
         " / ".join(f"{sweep[w]['mean_rank'][0]:.1f}" for w in sorted(sweep)),
         "rises with width (Fig. 3)", "27.3 / - / 28.8 / 29.0 (raw)"],
        ["mean rank J+ by width, rtol 1e-2",
         " / ".join(f"{sweep[w]['mean_rank'][1]:.1f}" for w in sorted(sweep)),
         "rises with width (Fig. 3)", "13.4 / - / 11.9 / 18.5 (raw)"],
        ["R_eps at eps=0.626 / 0.588 (Eq. 17)",
         " / ".join("n/a" if bq[k]['R_eq17_mean'] is None else f"{bq[k]['R_eq17_mean']:.3f}"
                    for k in ("paper_0.626", "paper_0.588")),
         "1.6474 / tight bound", "R ~ Tr Sigma_s ~ 1.89"],
        ["R(M) over the training pool", f"{bound['R_pool']:.3f}", "-", "1.894"],
        [f"frac ||D|| <= R_eps (Eq. 17), largest quantile eps (q50), {cfg['n_bound']} anchors",
         f"{bq['q50']['frac_D_le_R17']:.2f}", "bound holds", ">= 0.95"],
        [f"same at eps = 0.588 / 0.626 (Eq. 17); Eq. 15 at q50, {cfg['n_bound']} anchors",
         " / ".join("n/a" if bq[k]['frac_D_le_R17'] is None else f"{bq[k]['frac_D_le_R17']:.2f}"
                    for k in ("paper_0.588", "paper_0.626"))
         + f"; {bq['q50']['frac_D_le_R15']:.2f}", "bound holds", ">= 0.95"],
        *sweep_rows,
        ["Theorem 6 check, mean ||D||^2 vs R(M): trained / random weights",
         (f"{th6['trained']['mean_sq_deviation']:.3f} / "
          f"{th6['random_weights']['mean_sq_deviation']:.3f} vs {th6['trained']['R_M']:.3f}"),
         "D_theta <= R(M) (Eq. 17)", "trained below, random above"],
        ["Step-2 acceptance: trained / random weights / mismatched histories",
         f"{results['composite_algorithm']['acceptance_rate']:.2f} / "
         f"{results['composite_algorithm']['random_weights_acceptance_rate']:.2f} / "
         f"{results['composite_algorithm']['mismatched_histories_acceptance_rate']:.2f}", "-",
         "- / most rejected / -"],
        ["random weights, per-sample checks (1)+(2) only, its own D-hat",
         f"{results['composite_algorithm']['random_weights_per_sample_checks_only']:.2f}", "-",
         "why the Theorem 6 check is needed"],
        ["per-sample checks only, d_hat = median ||D||: trained / random / mismatched",
         " / ".join(f"{v:.2f}" for v in next(iter(results["composite_algorithm"]["acceptance_by_d_hat"].values())).values()),
         "-", "-"],
        ["PSNR: accepted samples / all samples (Step 2)",
         f"{results['composite_algorithm']['psnr_accepted_samples_db'] or float('nan'):.2f} / "
         f"{results['composite_algorithm']['psnr_all_samples_db']:.2f}", "-", "accepted >= all"],
        *theorem5_rows(t5),
    ]
    table = markdown_table(["quantity", "ours", "paper", "spec calibration"], rows_t)
    header = (f"# Sensor 5x5, two targets (paper 000, Figs. 2-4)\n\nScale: {results['scale']}; "
              f"{cfg['samples']} joint samples ({cfg['samples'] * N_AGENTS} agent rows), {enc} "
              f"encoding, W={cfg['width']} depth 3 SiLU, {cfg['steps']} Adam steps at lr "
              f"{cfg['lr']}, batch 512; widths {list(sorted(sweep))}; {cfg['n_test']} test samples, "
              f"{cfg['n_dev']} deviation anchors, {cfg['n_bound']} R_eps anchors on a "
              f"{cfg['pool']}-row pool; CPU, {results['wall_s']} s. The paper reports no 5x5 PSNR "
              f"and trains at an unknown scale (Appendix B is missing).\n\n")
    with open(os.path.join(args.out, f"{stem}.md"), "w") as fh:
        fh.write(header + table + "\n")
    print(header + table)


if __name__ == "__main__":
    main()
