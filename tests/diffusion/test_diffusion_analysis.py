"""Jacobians, spectra, numerical rank, J+ and fixed-point search on maps with known answers."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import diffusion as d


def mlp_denoiser(params, tau, y):
    """A small smooth f(tau, y) = W2 tanh(W_tau tau + W_y y + b) (Corollary 5.1's form)."""
    h = jnp.tanh(params["wt"] @ tau + params["wy"] @ y + params["b"])
    return params["w2"] @ h


def random_params(key, s=3, tau_dim=5, width=16):
    k = jax.random.split(key, 4)
    return {
        "wt": jax.random.normal(k[0], (width, tau_dim)) / np.sqrt(tau_dim),
        "wy": jax.random.normal(k[1], (width, s)) / np.sqrt(s),
        "b": 0.1 * jax.random.normal(k[2], (width,)),
        "w2": 0.5 * jax.random.normal(k[3], (s, width)) / np.sqrt(width),
    }


def central_difference(fn, x, h=1e-2):
    """[out, in] Jacobian estimate; traceable so callers can put it in the same jit."""
    shifts = h * jnp.eye(x.shape[0], dtype=x.dtype)
    return (jax.vmap(fn)(x + shifts) - jax.vmap(fn)(x - shifts)).T / (2 * h)


@pytest.mark.parametrize("tau_dim", [2, 5])  # both the jacfwd and the jacrev branch of d f/d tau
def test_jacobians_match_finite_differences(tau_dim):
    params = random_params(jax.random.key(tau_dim), s=3, tau_dim=tau_dim)

    def f(tau, y):
        return mlp_denoiser(params, tau, y)

    @jax.jit
    def jacobians(tau, y):
        return (
            d.jacobian_y(f, tau, y),
            d.jacobian_tau(f, tau, y),
            central_difference(lambda v: f(tau, v), y),
            central_difference(lambda v: f(v, y), tau),
        )

    j_y, j_tau, fd_y, fd_tau = jacobians(jnp.linspace(-0.5, 0.5, tau_dim), jnp.array([0.3, -0.2, 0.1]))
    chex.assert_shape(j_y, (3, 3))
    chex.assert_shape(j_tau, (3, tau_dim))
    np.testing.assert_allclose(j_y, fd_y, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(j_tau, fd_tau, rtol=2e-3, atol=2e-4)


def test_jacobian_plus_of_linear_map_and_its_rank():
    rng = np.random.default_rng(0)
    s, tau_dim = 4, 6
    A = 0.3 * rng.normal(size=(s, s)) / np.sqrt(s)
    B = rng.normal(size=(s, 2)) @ rng.normal(size=(2, tau_dim))  # rank 2
    f = lambda tau, y: jnp.asarray(A, jnp.float32) @ y + jnp.asarray(B, jnp.float32) @ tau
    tau = jnp.asarray(rng.normal(size=tau_dim), jnp.float32)
    y_star = np.linalg.solve(np.eye(s) - A, B @ np.asarray(tau))
    j_plus = d.jacobian_plus(f, tau, jnp.asarray(y_star, jnp.float32))
    np.testing.assert_allclose(j_plus, np.linalg.solve(np.eye(s) - A, B), rtol=1e-4, atol=1e-5)
    assert int(d.numerical_rank(j_plus)) == 2 <= min(s, tau_dim)


def test_jacobian_plus_predicts_fixed_point_shift():
    # Theorem 5: y*(tau + dtau) - y*(tau) = J+ dtau + O(|dtau|^2).
    params = random_params(jax.random.key(7))
    f = lambda tau, y: mlp_denoiser(params, tau, y)
    tau = jnp.array([0.2, -0.1, 0.4, 0.0, -0.3])
    solve = jax.jit(lambda t: d.iterate_map(lambda y: f(t, y), jnp.zeros((1, 3)), 500, 1e-9)[0][0])
    y_star = solve(tau)
    j_plus = d.jacobian_plus(f, tau, y_star)
    direction = jnp.array([1.0, 0.5, -0.5, 0.2, 0.3])
    errors = []
    for scale in (0.2, 0.05):
        dtau = scale * direction / jnp.linalg.norm(direction)
        true_shift = solve(tau + dtau) - y_star
        errors.append(float(jnp.linalg.norm(j_plus @ dtau - true_shift) / jnp.linalg.norm(true_shift)))
    assert errors[1] < 0.05 and errors[1] < errors[0]


def test_spectral_radius_and_numerical_rank():
    rotation = 0.9 * jnp.array([[np.cos(1.0), -np.sin(1.0)], [np.sin(1.0), np.cos(1.0)]])
    batch = jnp.stack([jnp.diag(jnp.array([0.5, -2.0, 1.0])), jnp.eye(3) * 0.1])
    rng = np.random.default_rng(1)
    u, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    v, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    sv = np.array([10.0, 1.0, 3e-2, 3e-5, 0.0, 0.0])
    m = jnp.asarray(u[:, :6] @ np.diag(sv) @ v.T, jnp.float32)

    @jax.jit
    def analyse(rotation, batch, m):
        return {
            "rho_rotation": d.spectral_radius(rotation),  # complex pair 0.9 e^{+-i}
            "rho_batch": d.spectral_radius(batch),
            "sv": d.singular_values(m),
            "rank": d.numerical_rank(m),  # rtol 1e-3: 3e-2 > 1e-2 > 3e-5
            "ranks": d.numerical_rank(m, rtol=(1e-3, 1e-2, 1e-1)),
            "ranks_batch": d.numerical_rank(jnp.stack([m, 2 * m]), rtol=(1e-3, 0.5)),
            "rank_atol": d.numerical_rank(m, rtol=0.0, atol=0.5),
            "rank_zero": d.numerical_rank(jnp.zeros((3, 3))),
            "erank_eye": d.effective_rank(jnp.eye(5)),
            "erank_one": d.effective_rank(jnp.outer(jnp.ones(4), jnp.arange(3.0))),
        }

    out = analyse(rotation, batch, m)
    np.testing.assert_allclose(out["rho_rotation"], 0.9, rtol=1e-5)
    np.testing.assert_allclose(out["rho_batch"], [2.0, 0.1], rtol=1e-5)
    np.testing.assert_allclose(out["sv"][:3], sv[:3], rtol=1e-4)
    assert int(out["rank"]) == 3
    np.testing.assert_array_equal(out["ranks"], [3, 2, 1])
    np.testing.assert_array_equal(out["ranks_batch"], [[3, 1], [3, 1]])
    assert int(out["rank_atol"]) == 2 and int(out["rank_zero"]) == 0
    np.testing.assert_allclose(out["erank_eye"], 5.0, rtol=1e-5)
    np.testing.assert_allclose(out["erank_one"], 1.0, rtol=1e-4)


def normal_cdf(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def tanh_attractor(k=2.0):
    lo, hi = 0.5, 1.0  # bisection for y = tanh(k y) on (0, 1]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.tanh(k * mid) > mid else (lo, mid)
    return 0.5 * (lo + hi)


def test_find_fixed_points_1d_attractors_basins_and_stability():
    # g(y) = tanh(2y): attractors +-y* (g' = 2(1 - y*^2) < 1), repeller 0 (g' = 2).
    # Basins are the half-lines, so from N(0.3, 1) starts the masses are Phi(0.3), Phi(-0.3).
    g = lambda y: jnp.tanh(2.0 * y)
    y_star = tanh_attractor()
    starts = 0.3 + jax.random.normal(jax.random.key(0), (4000, 1))
    fp = jax.jit(lambda s: d.find_fixed_points(g, s, max_points=8))(starts)
    assert int(fp.num_found) == 2
    np.testing.assert_allclose(fp.points[:2, 0], [y_star, -y_star], atol=1e-4)
    np.testing.assert_allclose(fp.basin_fraction[:2], [normal_cdf(0.3), normal_cdf(-0.3)], atol=0.03)
    np.testing.assert_allclose(fp.spectral_radius[:2], 2 * (1 - y_star**2), rtol=1e-3)
    assert bool(fp.stable[:2].all()) and not bool(fp.valid[2:].any())
    assert bool(fp.converged.all())
    assert set(np.unique(fp.assignment)) == {0, 1}
    rows = d.summarize_fixed_points(fp)
    assert len(rows) == 2 and rows[0]["basin_fraction"] > rows[1]["basin_fraction"]

    # Newton near 0 finds the repeller; the stability filter must reject it.
    newton = jax.jit(lambda s: d.find_fixed_points(g, s, method="newton", max_points=4))
    fp = newton(jnp.array([[0.1], [-0.05], [0.2]]))
    assert int(fp.num_found) == 1
    np.testing.assert_allclose(fp.points[0], [0.0], atol=1e-6)
    np.testing.assert_allclose(fp.spectral_radius[0], 2.0, rtol=1e-5)
    assert not bool(fp.stable[0])
    assert len(d.summarize_fixed_points(fp)) == 0 and len(d.summarize_fixed_points(fp, False)) == 1
    stable = jax.jit(jax.vmap(lambda y: d.is_stable(g, y)))(jnp.array([[0.0], [y_star]]))
    np.testing.assert_array_equal(stable, [False, True])


def test_find_fixed_points_2d_tanh_network():
    # g(y) = tanh(W y + b) with W = 2I, b = 0: four attractors (+-y*, +-y*), quadrant basins.
    W, b = 2.0 * jnp.eye(2), jnp.zeros(2)
    g = lambda y: jnp.tanh(W @ y + b)
    y_star = tanh_attractor()
    starts = jax.random.normal(jax.random.key(1), (2000, 2))
    fp = jax.jit(lambda s: d.find_fixed_points(g, s, max_points=16, newton_steps=2))(starts)
    assert int(fp.num_found) == 4 and int(fp.stable.sum()) == 4
    found = np.sort(np.asarray(fp.points[:4]), axis=0)
    np.testing.assert_allclose(np.abs(found), y_star, atol=1e-5)
    np.testing.assert_allclose(fp.basin_fraction[:4], 0.25, atol=0.04)
    np.testing.assert_allclose(fp.basin_fraction.sum(), 1.0, atol=1e-6)
    # Each start is assigned to the attractor of its quadrant.
    expected = y_star * np.sign(np.asarray(starts))
    np.testing.assert_allclose(np.asarray(fp.points)[np.asarray(fp.assignment)], expected, atol=1e-4)


def test_deduplicate_capacity_and_invalid_points():
    points = jnp.array([[0.0], [0.01], [1.0], [2.0], [5.0]])
    valid = jnp.array([True, True, True, False, True])
    centres, counts, n, assignment = d.deduplicate(points, valid, merge_radius=0.05, capacity=2)
    assert int(n) == 2
    np.testing.assert_array_equal(counts, [2, 1])
    np.testing.assert_array_equal(assignment, [0, 0, 1, -1, -1])  # no room left for 5.0
    np.testing.assert_allclose(centres[:, 0], [0.0, 1.0])


def test_shared_fixed_points_intersection():
    pts = jnp.array([
        [[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]],
        [[1.02, 0.0], [-1.0, 0.0], [0.0, 0.0]],
    ])
    valid = jnp.array([[True, True, False], [True, True, False]])
    np.testing.assert_array_equal(d.shared_fixed_points(pts, valid, tol=0.1), [True, False, False])
