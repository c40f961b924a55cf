"""DecSPG on the DDPL toys (spec-ddpl §2.2–2.4, F20, F21): the exact grid update, the reverse-KL
Gaussian projection, the Q̂ estimator, Theorem 3.1's numerics against independent quadrature,
and the Monte-Carlo success frequency of idealised Gaussian DecSPG."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.envs.toys import ddpl_toy as toy
from jaxdiff.envs.toys import decspg as D

SMALL = dict(grid_points=3001, newton_iters=8)


# ----------------------------------------------------------------------------- F21 numerics
def test_eq10_constants_min_increment_and_max_bump():
    """The general formula reproduces the paper's printed Eq. 10 (constants 1350, 124, 500,
    62.5) and its two numbers: min f = 0.1283 ≥ 0.128, max of the bump term 3.585 ≤ 3.6."""
    v = np.geomspace(1e-6, 5.0, 2001)
    printed = 1350 * (124 - 500 * v) / (1 + 500 * v) ** 2.5 * np.exp(-62.5 / (1 + 500 * v))
    np.testing.assert_allclose(D.bump_term(v), printed, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(D.precision_increment(v), 0.02 * (10 - printed), rtol=1e-10)
    _, fmin = D.min_increment()
    _, bmax = D.max_bump_term()
    assert 0.128 <= fmin < 0.1284 and abs(fmin - 0.1283) < 1e-4
    assert 3.58 < bmax <= 3.6 and abs(bmax - 3.585) < 1e-3
    assert fmin <= D.precision_increment(v).min() + 1e-12


def _quad_success_prob(var):
    """p_k by brute-force trapezoid quadrature of N(a; 0, σ²) p_start(a) over the window."""
    a = np.linspace(-0.75, -0.25, 20001)
    f = (np.exp(-a * a / (2 * var)) / np.sqrt(2 * np.pi * var)
         * np.asarray(toy.p_start(jnp.asarray(a, jnp.float32)), np.float64))
    return np.trapezoid(f, a)


def test_success_prob_matches_quadrature_and_the_two_bounds():
    """Eq. 12 closed form == quadrature; the paper's worst-case path 10 + 0.128k gives a
    never-succeed bound ≥ 0.55 (success ≤ 0.45, our 0.4466); the exact stationary recursion
    (whose first precisions are the spec's 10.17, 11.79, 24.04) gives 0.411."""
    for var in (0.1, 0.05, 0.01, 1 / 192.9):
        np.testing.assert_allclose(D.success_prob(var), _quad_success_prob(var), rtol=2e-3)
    np.testing.assert_allclose(D.success_prob(0.1), 2.056e-4, rtol=1e-3)   # spec's p_0
    prec = D.exact_precisions(2000)
    np.testing.assert_allclose(prec[[1, 11, 101]], [10.17, 11.79, 24.04], atol=0.01)
    assert np.all(np.diff(prec) >= 0.128)          # Theorem 3.1's per-epoch gain
    exact = D.success_bound(prec)
    worst = D.success_bound(D.worst_case_precisions(200000))
    assert abs(exact["bound"] - 0.4114) < 1e-3 and exact["bound"] <= 0.45
    assert abs(worst["bound"] - 0.4466) < 1e-3 and worst["bound"] <= 0.45
    assert exact["exact"] <= exact["bound"] <= worst["bound"]


def test_gaussian_projection_follows_the_exact_recursion():
    """With Q̂ = r_start (Theorem 3.1's assumption) the JAX projection keeps μ = 0 and its
    precisions solve Eq. 9 exactly as the float64 fixed point does (independent solvers)."""
    cfg = D.DecSPGConfig(policy="gaussian", qhat="rstart", epochs=30, batch=1, **SMALL)
    st, m, _ = D.run(cfg, jax.random.key(0))
    assert float(jnp.abs(st.mu[0])) < 1e-6
    prec = D.exact_precisions(31)
    np.testing.assert_allclose(float(jnp.exp(-2 * st.log_sigma[0])), prec[-1], rtol=1e-4)
    # the grid-integrated per-sample success probability of π^k matches Eq. 12's closed form
    np.testing.assert_allclose(np.asarray(m["p_success"][:, 0]), D.success_prob(1 / prec[1:]),
                               rtol=1e-2)
    np.testing.assert_allclose(D.path_success(m["p_success"][:, 0]),
                               1 - np.prod((1 - D.success_prob(1 / prec[1:])) ** 32), rtol=1e-2)


def test_gaussian_projection_is_exact_for_a_gaussian_target():
    """A quadratic Q̂ = −ν(a − m)² makes the target Gaussian, so the reverse-KL projection must
    return it: precision 1/σ_k² + 2·step·ν, mean (μ_k/σ_k² + 2·step·ν m) / precision."""
    cfg = D.DecSPGConfig(policy="gaussian", **SMALL)
    grid = cfg.grid()
    m, nu = -0.3, 4.0
    # the learned term is Q̂ − r_start on the grid; make Q̂ the quadratic
    learned = -nu * (grid - m) ** 2 - toy.r_start(grid)
    mu_k, ls_k = jnp.float32(0.1), jnp.float32(0.5 * np.log(0.05))
    mu, ls = jax.jit(lambda: D.gaussian_projection(cfg, mu_k, ls_k, learned))()
    prec = 1 / 0.05 + 2 * cfg.step * nu
    np.testing.assert_allclose(float(jnp.exp(-2 * ls)), prec, rtol=2e-3)
    np.testing.assert_allclose(float(mu), (0.1 / 0.05 + 2 * cfg.step * nu * m) / prec, atol=1e-3)


def test_grid_update_is_the_exact_mirror_step_and_sampling_matches():
    """Before any success the grid policy after K epochs is π^0 exp(K·step·r_start) (the
    closed form of K exact updates); the inverse-CDF sampler draws from it."""
    cfg = D.DecSPGConfig(policy="grid", qhat="rstart", epochs=12, batch=2048, **SMALL)
    st, metrics, _ = D.run(cfg, jax.random.key(1))
    grid = np.asarray(cfg.grid(), np.float64)
    want = -grid ** 2 / (2 * 0.1) + 12 * cfg.step * np.asarray(toy.r_start(cfg.grid()), np.float64)
    want = np.exp(want - want.max())
    want /= want.sum()
    np.testing.assert_allclose(np.exp(np.asarray(st.logp[0], np.float64)), want, atol=2e-6)
    a = np.asarray(D._sample(cfg, st, jax.random.key(2)))[:, 0]
    mean, var = float(metrics["mean"][-1, 0]), float(metrics["var"][-1, 0])
    assert abs(a.mean() - mean) < 4 * np.sqrt(var / a.size)
    assert abs(a.var() / var - 1) < 0.1


def test_kernel_estimator_and_config_errors():
    """p̂ is zero before a success and equals Σ succ K / (Σ K + 1) after; bad configs are refused
    with the field named."""
    cfg = D.DecSPGConfig(policy="grid", batch=3, **SMALL)
    st = D.init(cfg)
    np.testing.assert_array_equal(D.q_hat(cfg, st, D.probs(cfg, st))[0], toy.r_start(cfg.grid()))
    a = jnp.array([-0.5, -0.5, 0.3])
    k = np.exp(-0.5 * ((np.asarray(cfg.grid())[None] - np.asarray(a)[:, None]) / 0.01) ** 2)
    st = st.replace(num=jnp.asarray(k[:1].sum(0))[None], den=jnp.asarray(k.sum(0))[None])
    i = int(np.argmin(np.abs(np.asarray(cfg.grid()) + 0.5)))
    np.testing.assert_allclose(float(D._p_hat(st)[0, i]), 1 / 3, rtol=1e-3)
    # off-grid Q̂ (for the diffusion class) interpolates the grid's Q̂ at the grid points
    at = cfg.grid()[jnp.array([i, i + 7, 100])][:, None]
    np.testing.assert_allclose(D.q_hat_at(cfg, st, at)[:, 0],
                               D.q_hat(cfg, st, D.probs(cfg, st))[0, jnp.array([i, i + 7, 100])],
                               rtol=1e-4, atol=1e-3)
    # record() keeps the first-success epoch and the kernel sums
    st2 = D.record(cfg, D.init(cfg), a[:, None], jnp.array([[True], [False], [False]]))
    assert bool(st2.found[0]) and int(st2.first[0]) == 0
    np.testing.assert_allclose(st2.num, st.num, rtol=1e-5, atol=1e-6)
    for bad, field in ((dict(policy="mixture"), "policy"), (dict(qhat="mc"), "qhat"),
                       (dict(batch=0), "batch"), (dict(snapshot_every=7), "snapshot_every"),
                       (dict(grid_low=-0.5), "grid")):
        with pytest.raises(ValueError, match=field):
            D.DecSPGConfig(**bad)


def test_idealised_gaussian_decspg_monte_carlo_frequency():
    """MC of Theorem 3.1's setting (Gaussian, Q̂ = r_start, B = 32) over seeds: the frequency
    of ever reaching s1 matches 1 − Π(1 − p_k)^32 along the exact recursion, which is ≤ 0.45.
    Reduced size (epochs beyond 300 add < 1% of the probability)."""
    seeds, epochs = 384, 300
    cfg = D.DecSPGConfig(policy="gaussian", qhat="rstart", batch=32, epochs=epochs, **SMALL)
    st, _, _ = D.run_seeds(cfg, jax.random.key(7), seeds)
    freq = float(np.mean(np.asarray(st.found[:, 0])))
    exact = D.success_bound(D.exact_precisions(epochs))["exact"]
    assert abs(freq - exact) < 4 * np.sqrt(exact * (1 - exact) / seeds), (freq, exact)
    assert exact <= 0.45


@pytest.mark.slow
def test_idealised_monte_carlo_full_size():
    """The same MC at 4096 seeds × 1000 epochs: frequency ≤ 0.45 directly."""
    cfg = D.DecSPGConfig(policy="gaussian", qhat="rstart", batch=32, epochs=1000, **SMALL)
    st, _, _ = D.run_seeds(cfg, jax.random.key(8), 4096)
    freq = float(np.mean(np.asarray(st.found[:, 0])))
    exact = D.success_bound(D.exact_precisions(1000))["exact"]
    print("idealised Gaussian DecSPG, 4096 seeds x 1000 epochs: frequency", freq, "exact", exact)
    assert abs(freq - exact) < 4 * np.sqrt(exact * (1 - exact) / 4096) and freq <= 0.45


@pytest.mark.slow
def test_f20_paper_protocol_single_and_two_agents():
    """Spec F20: B = 200, 250 epochs, 3 seeds, Q̂ of §2.4. All policies end at −β with J > 8
    and, with two agents, at ≈ 2× that return. The Gaussian's variance shrinks below its start
    0.1 and it does far worse than all policies (mean J < 1/4 of theirs, every seed below the
    worst all-policies seed). Not asserted: the spec's |μ| < 0.1, σ² < 0.05, J < 0.5 for every
    seed — with this Q̂ an early success pulls the Gaussian mean towards −β (seed means
    −0.45, −0.02, −0.18 at this key; the first reaches J = 2.7); see the report."""
    key = jax.random.key(11)
    grid1 = D.run_seeds(D.DecSPGConfig(policy="grid"), key, 3)[1]
    gauss1 = D.run_seeds(D.DecSPGConfig(policy="gaussian"), key, 3)[1]
    grid2 = D.run_seeds(D.DecSPGConfig(policy="grid", n_agents=2), key, 3)[1]
    mean_g, J_g = np.asarray(grid1["mean"][:, -1, 0]), np.asarray(grid1["J"][:, -1])
    gm, gv, gJ = (np.asarray(gauss1[k][:, -1]).reshape(3) for k in ("mean", "var", "J"))
    J2, mean2 = np.asarray(grid2["J"][:, -1]), np.asarray(grid2["mean"][:, -1])
    print("grid", mean_g, J_g, "gaussian", gm, gv, gJ, "grid n=2", mean2, J2)
    assert np.all((mean_g > -0.55) & (mean_g < -0.45)) and np.all(J_g > 8), (mean_g, J_g)
    assert np.all(gv < 0.1), gv
    assert gJ.mean() < 0.25 * J_g.mean() and gJ.max() < J_g.min(), (gJ, J_g)
    assert np.all(J2 > 16) and np.all((mean2 > -0.55) & (mean2 < -0.45)), (mean2, J2)
