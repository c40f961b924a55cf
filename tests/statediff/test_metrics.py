"""PSNR (F25), Jacobian rank of J+ (F15), surrogate regression R(M) / R_eps (F19)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import statediff as sd


def test_psnr_known_values():
    s = jnp.zeros((5, 40))
    np.testing.assert_allclose(sd.psnr(s + 0.1, s), np.full(5, 20.0), atol=1e-4)
    assert float(sd.mean_psnr(s + 0.1, s)) == pytest.approx(20.0, abs=1e-4)
    assert float(sd.aggregate_psnr(s + 0.1, s)) == pytest.approx(20.0, abs=1e-4)
    # Non-constant errors: per-sample mean >= aggregate (Jensen), equal when constant.
    est = s.at[0].add(0.5)
    assert float(sd.mean_psnr(est, s)) > float(sd.aggregate_psnr(est, s))
    assert float(sd.psnr(s, s)[0]) == pytest.approx(100.0)  # MSE clipped at 1e-10
    # Weights (e.g. an alive mask) drop samples.
    w = jnp.array([0.0, 1, 1, 1, 1])
    assert float(sd.mean_psnr(est, s, w)) == pytest.approx(100.0)
    assert float(sd.psnr(s + 0.2, s, max_value=2.0)[0]) == pytest.approx(20.0, abs=1e-4)


def test_jacobian_rank_of_a_linear_denoiser():
    # f(tau, y) = A y + B tau: J+ = (I - A)^{-1} B exactly, with rank(B).
    k = jax.random.split(jax.random.key(0), 3)
    a = 0.3 * jax.random.normal(k[0], (6, 6)) / np.sqrt(6)
    b = jax.random.normal(k[1], (6, 2)) @ jax.random.normal(k[2], (2, 9))  # rank 2
    f = lambda tau, y: a @ y + b @ tau
    out = sd.jacobian_ranks(f, jnp.ones(9), jnp.zeros(6), rtols=(1e-3, 1e-1))
    np.testing.assert_array_equal(out["rank"], [2, 2])
    assert 1.0 <= float(out["effective_rank"]) <= 2.0
    # Jacobians w.r.t. y do not depend on tau here: every pool row is at distance 0.
    dist = sd.jacobian_distances(f, jnp.ones(9), jnp.zeros(6), jnp.ones((5, 9)) * 3.0)
    np.testing.assert_allclose(dist, 0.0, atol=1e-6)


def test_regression_residual_closed_form_matches_lstsq():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        taus = jnp.asarray(rng.normal(size=(200, 5)))
        states = jnp.asarray(taus @ rng.normal(size=(5, 3)) + 0.3 * rng.normal(size=(200, 3)))
        r17 = sd.regression_residual(taus, states)
        assert float(r17) == pytest.approx(float(sd.regression_residual_lstsq(taus, states)), abs=1e-5)
        assert 0.0 < float(r17) <= float(jnp.trace(jnp.cov(states.T, bias=True)))
        assert float(r17) == pytest.approx(3 * 0.09, rel=0.2)  # the noise variance per dim, x3
        # A 0/1 weight vector is the same as slicing the rows.
        w = jnp.zeros(200).at[:50].set(1.0)
        assert float(sd.regression_residual(taus, states, w)) == pytest.approx(
            float(sd.regression_residual_lstsq(taus[:50], states[:50])), abs=1e-5)
        # |M| <= dim tau + 1: a perfect affine fit, R = 0.
        assert abs(float(sd.regression_residual(taus[:6], states[:6]))) < 1e-8


def test_hand_made_residual_and_span_rank():
    # s = [tau, xi] with xi independent of tau (+-1 with equal mass): R = Var(xi) = 1.
    tau = jnp.array([[0.0], [0.0], [1.0], [1.0], [2.0], [2.0]])
    xi = jnp.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    states = jnp.concatenate([tau, xi[:, None]], axis=1)
    assert float(sd.regression_residual(tau, states)) == pytest.approx(1.0, abs=1e-5)
    # Duplicate histories (as in the H = 1 toys) explain nothing: R = Tr Sigma_s.
    same = jnp.zeros((6, 1))
    assert float(sd.regression_residual(same, states)) == pytest.approx(
        float(jnp.trace(jnp.cov(states.T, bias=True))), abs=1e-5)
    # Eq. 15 anchored at (tau=1, s=(1, 1)): dtau = 1 - tau', ds = s - s'; best W = [1, 0]^T
    # leaves the xi differences, mean ||.||^2 = (0 + 4 + 0 + 4 + 0 + 4) / 6 = 2.
    r15 = sd.local_regression_residual(jnp.array([1.0]), jnp.array([1.0, 1.0]), tau, states)
    assert float(r15) == pytest.approx(2.0, abs=1e-5)
    assert int(sd.span_rank(states)) == 2
    assert int(sd.span_rank(states, jnp.array([1.0, 0, 1, 0, 1, 0]))) == 2
    assert int(sd.span_rank(states, jnp.array([0.0, 0, 1, 0, 0, 0]))) == 1


def test_surrogate_bound_neighbourhoods_grow_with_eps():
    # f(tau, y) = tanh(W y + V tau): Jacobians differ with tau, so eps selects neighbourhoods.
    k = jax.random.split(jax.random.key(1), 4)
    w = 0.5 * jax.random.normal(k[0], (3, 3))
    v = jax.random.normal(k[1], (3, 4))
    f = lambda tau, y: jnp.tanh(w @ y + v @ tau)
    pool_t = jax.random.normal(k[2], (300, 4))
    pool_s = jax.vmap(lambda t: f(t, jnp.zeros(3)))(pool_t) + 0.1 * jax.random.normal(k[3], (300, 3))
    out = jax.jit(sd.surrogate_bound, static_argnums=0)(f, pool_t[0], pool_s[0], jnp.zeros(3), pool_t, pool_s,
                                     jnp.array([0.3, 1.0, 1e9]))
    sizes = np.asarray(out["size"])
    assert sizes[0] <= sizes[1] <= sizes[2] == 300
    np.testing.assert_allclose(out["R_eq17"][2], sd.regression_residual(pool_t, pool_s), rtol=1e-5)
    assert np.all(np.asarray(out["R_eq17"]) >= -1e-5)
    # r(M_eps) is the rank of the selected rows, recomputed with numpy on the same selections
    dist = np.asarray(out["distances"])
    for e, rank in zip([0.3, 1.0, 1e9], np.asarray(out["span_rank"])):
        rows = np.asarray(pool_s)[dist < e]
        assert rank == (np.linalg.matrix_rank(rows) if len(rows) else 0), (e, rank)


def test_span_rank_recovers_known_ranks():
    """States on a 2-d subspace of R^5 span rank 2 (also with float32 rounding-level noise),
    generic states rank 5, and weights restrict the span to the selected rows."""
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(5, 3)))               # orthonormal [5, 3]
    plane = rng.normal(size=(40, 2)) @ basis[:, :2].T               # [40, 5], rank 2
    assert int(sd.span_rank(jnp.asarray(plane, jnp.float32))) == 2
    noisy = plane + 1e-6 * rng.normal(size=plane.shape)
    assert int(sd.span_rank(jnp.asarray(noisy, jnp.float32))) == 2
    assert int(sd.span_rank(jnp.asarray(rng.normal(size=(40, 5)), jnp.float32))) == 5
    space = rng.normal(size=(40, 3)) @ basis.T                      # rank 3 ...
    w = np.zeros(40)
    w[[3, 17]] = 1.0                                                # ... but 2 rows selected
    assert int(sd.span_rank(jnp.asarray(space, jnp.float32), jnp.asarray(w))) == 2
    line = np.outer(rng.normal(size=40), basis[:, 0])              # multiples of one vector
    assert int(sd.span_rank(jnp.asarray(line, jnp.float32))) == 1
    assert int(sd.span_rank(jnp.asarray(space, jnp.float32), jnp.zeros(40))) == 0


def test_spearman():
    assert sd.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert sd.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert sd.spearman([1, 1, 2, 2], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([0.5, 0.5, 2.5, 2.5], [0, 1, 2, 3])[0, 1])
