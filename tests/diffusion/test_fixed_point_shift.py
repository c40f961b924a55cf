"""Theorem 5 / Eq. 13 fixed-point shift predictor and the Corollary 5.1 form (F16)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import diffusion as d


def test_prediction_is_exact_for_an_affine_map():
    # f(tau, y) = A y + B tau with spectral radius(A) < 1: y*(tau) = (I - A)^{-1} B tau exactly,
    # so Eq. 13 has no error term.
    rng = np.random.default_rng(0)
    s, tau_dim = 5, 7
    a = rng.normal(size=(s, s))
    a = 0.7 * a / np.max(np.abs(np.linalg.eigvals(a)))
    b = rng.normal(size=(s, tau_dim))
    f = lambda tau, y: jnp.asarray(a, jnp.float32) @ y + jnp.asarray(b, jnp.float32) @ tau
    tau = rng.normal(size=tau_dim)
    y_star = np.linalg.solve(np.eye(s) - a, b @ tau)
    check = jax.jit(lambda dt: d.fixed_point_shift(f, jnp.asarray(tau, jnp.float32),
                                                   jnp.asarray(y_star, jnp.float32), dt))
    for scale in (1.0, 1e-1, 1e-2):
        dtau = scale * rng.normal(size=tau_dim) / np.sqrt(tau_dim)
        out = check(jnp.asarray(dtau, jnp.float32))
        exact = np.linalg.solve(np.eye(s) - a, b @ dtau)
        # float32 cancellation: |y*| ~ 1, |shift| ~ scale, so ~eps/scale = 1.2e-5 at 1e-2 (a
        # first-order error would be ~scale); the bound leaves room for the codegen's rounding
        assert float(out.rel_error) < 5e-5, (scale, float(out.rel_error))
        np.testing.assert_allclose(out.true, exact, rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(out.predicted, exact, rtol=1e-4, atol=1e-5 * scale)
        assert float(out.residual) < 1e-5 and float(out.spectral_radius) < 0.71


def tanh_contraction(key, s=4, tau_dim=6, width=32, lipschitz=0.8):
    """f(tau, y) = W2 tanh(W_tau tau + W_y y + b), scaled so ||df/dy||_2 <= lipschitz < 1."""
    k = jax.random.split(key, 4)
    wt = jax.random.normal(k[0], (width, tau_dim)) / np.sqrt(tau_dim)
    wy = jax.random.normal(k[1], (width, s)) / np.sqrt(s)
    b = 0.3 * jax.random.normal(k[2], (width,))
    w2 = jax.random.normal(k[3], (s, width))
    w2 = lipschitz * w2 / (jnp.linalg.norm(w2, 2) * jnp.linalg.norm(wy, 2))
    return lambda tau, y: w2 @ jnp.tanh(wt @ tau + wy @ y + b)


@pytest.mark.parametrize("seed", [0, 1])
def test_relative_error_shrinks_linearly_for_a_smooth_contraction(seed):
    f = tanh_contraction(jax.random.key(seed))
    tau = jax.random.normal(jax.random.key(10 + seed), (6,))
    y_start = jnp.zeros(4)  # the flow of a contraction reaches its unique fixed point
    dirs = jax.random.normal(jax.random.key(20 + seed), (8, 6))
    dirs = dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    check = jax.jit(jax.vmap(lambda dt: d.fixed_point_shift(f, tau, y_start, dt)))
    errors = {}
    for scale in (1e-1, 1e-2):
        out = check(scale * dirs)
        assert float(jnp.max(out.residual)) < 1e-5
        assert float(jnp.max(out.spectral_radius)) < 0.81
        errors[scale] = np.asarray(out.rel_error)
    # O(||dtau||^2) error on an O(||dtau||) shift: 10x smaller dtau, ~10x smaller relative error.
    ratio = errors[1e-1] / errors[1e-2]
    assert np.median(ratio) >= 5.0 and np.min(ratio) >= 3.0, ratio
    assert np.max(errors[1e-2]) < 0.02 and np.max(errors[1e-1]) > 1e-4  # really nonlinear


def symmetric_first_layer_net(key, s, tau_dim, width, tau_in_range=False):
    """f(tau, y) = c W_y^T tanh(W_tau tau + W_y y + b): J_f = c W_y^T diag(tanh') W_y is
    symmetric with eigenvalues in [0, 1/2] (Corollary 5.1's assumptions)."""
    k = jax.random.split(key, 4)
    wy = jax.random.normal(k[0], (width, s)) / np.sqrt(s)
    if tau_in_range:  # range(W_tau) inside range(W_y), so W_y W_y^+ W_tau = W_tau
        wt = wy @ jax.random.normal(k[1], (s, tau_dim)) / np.sqrt(tau_dim)
    else:
        wt = jax.random.normal(k[1], (width, tau_dim)) / np.sqrt(tau_dim)
    b = 0.3 * jax.random.normal(k[2], (width,))
    c = 0.5 / jnp.linalg.norm(wy, 2) ** 2
    return (lambda tau, y: c * wy.T @ jnp.tanh(wt @ tau + wy @ y + b)), wt, wy


@pytest.mark.parametrize("width,tau_in_range", [(4, False), (16, True)])
def test_corollary_51_matches_eq13_when_its_assumptions_hold(width, tau_in_range):
    s, tau_dim = 4, 6
    f, wt, wy = symmetric_first_layer_net(jax.random.key(width), s, tau_dim, width, tau_in_range)
    tau = jax.random.normal(jax.random.key(1), (tau_dim,))
    y_star = d.iterate_map(lambda y: f(tau, y), jnp.zeros((1, s)), 300, 1e-9)[0][0]
    j_y = d.jacobian_y(f, tau, y_star)
    np.testing.assert_allclose(j_y, j_y.T, atol=1e-6)
    lam = np.linalg.eigvalsh(np.asarray(j_y))
    assert lam.min() >= -1e-6 and lam.max() < 0.51  # symmetric, non-negative, stable
    dtau = jax.random.normal(jax.random.key(2), (tau_dim,))
    eq13 = d.jacobian_plus(f, tau, y_star) @ dtau
    cor = d.corollary51_shift(j_y, wt, wy, dtau)
    np.testing.assert_allclose(cor, eq13, rtol=1e-4, atol=1e-5)
    # ... and both predict the true shift for a small dtau.
    out = d.fixed_point_shift(f, tau, y_star, 1e-2 * dtau)
    assert float(jnp.linalg.norm(1e-2 * cor - out.true) / jnp.linalg.norm(out.true)) < 0.02


def test_corollary_51_is_only_approximate_for_a_wide_generic_first_layer():
    # W > |s| with range(W_tau) not inside range(W_y): W_y W_y^+ W_tau != W_tau, and the
    # pinv form misses the part of the history input that W_y cannot produce.
    s, tau_dim = 4, 6
    f, wt, wy = symmetric_first_layer_net(jax.random.key(3), s, tau_dim, 16, tau_in_range=False)
    tau = jax.random.normal(jax.random.key(1), (tau_dim,))
    y_star = d.iterate_map(lambda y: f(tau, y), jnp.zeros((1, s)), 300, 1e-9)[0][0]
    dtau = jax.random.normal(jax.random.key(2), (tau_dim,))
    eq13 = d.jacobian_plus(f, tau, y_star) @ dtau
    cor = d.corollary51_shift(d.jacobian_y(f, tau, y_star), wt, wy, dtau)
    assert float(jnp.linalg.norm(cor - eq13) / jnp.linalg.norm(eq13)) > 0.05
