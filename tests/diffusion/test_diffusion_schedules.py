"""Schedules: shapes, known values, derived coefficients and forward-process moments."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import diffusion as d

DISCRETE = ["linear", "cosine", "vp"]


@pytest.mark.parametrize("name", DISCRETE)
@pytest.mark.parametrize("T", [20, 1000])
def test_discrete_schedule_shapes_and_monotonicity(name, T):
    s = d.make_schedule(name, T)
    for leaf in jax.tree.leaves(s):
        chex.assert_shape(leaf, (T,))
        assert np.all(np.isfinite(leaf)), name
    assert s.num_steps == T
    betas = np.asarray(s.betas)
    assert np.all(betas > 0) and np.all(betas < 1)
    abar = np.asarray(s.alphas_cumprod)
    assert np.all(np.diff(abar) < 0), "abar must decrease strictly"
    assert abar[-1] < 1e-2
    np.testing.assert_allclose(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1])
    assert float(s.alphas_cumprod_prev[0]) == 1.0
    np.testing.assert_allclose(
        s.sqrt_alphas_cumprod**2 + s.sqrt_one_minus_alphas_cumprod**2, 1.0, rtol=1e-5
    )
    np.testing.assert_allclose(s.posterior_variance[0], 0.0, atol=1e-12)
    assert np.all(s.posterior_log_variance_clipped >= np.log(1e-20) - 1e-3)


def test_known_terminal_abar_values():
    # spec-ddpl section 4.4 [VERIFIED] values at H = 20.
    assert float(d.linear_schedule(20, 0.001, 0.999).alphas_cumprod[-1]) < 1e-9
    np.testing.assert_allclose(d.cosine_schedule(20).alphas_cumprod[-1], 6.1e-6, rtol=0.05)
    np.testing.assert_allclose(d.vp_schedule(20, 0.1, 10.0).alphas_cumprod[-1], 6.4e-3, rtol=0.05)
    # VP: abar_T = exp(-(beta_min + beta_max)/2) exactly for any T.
    np.testing.assert_allclose(
        d.vp_schedule(100, 0.1, 10.0).alphas_cumprod[-1], np.exp(-5.05), rtol=1e-4
    )


@pytest.mark.parametrize("name", DISCRETE)
def test_posterior_matches_gaussian_bayes(name):
    s = d.make_schedule(name, 50)
    rng = np.random.default_rng(0)
    betas = np.asarray(s.betas, np.float64)
    abar = np.cumprod(1.0 - betas)
    for t in [1, 7, 25, 49]:
        x0, xt = rng.normal(size=3), rng.normal(size=3)
        # q(x_{t-1} | x_0) = N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1});
        # q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t). Multiply the two Gaussians.
        prec = 1.0 / (1.0 - abar[t - 1]) + (1.0 - betas[t]) / betas[t]
        var = 1.0 / prec
        mean = var * (
            np.sqrt(abar[t - 1]) * x0 / (1.0 - abar[t - 1])
            + np.sqrt(1.0 - betas[t]) * xt / betas[t]
        )
        tb = jnp.full((3,), t)
        got_mean, got_var, got_log_var = d.q_posterior(
            s, jnp.asarray(x0, jnp.float32), jnp.asarray(xt, jnp.float32), tb
        )
        np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got_var, var, rtol=1e-4)
        np.testing.assert_allclose(got_log_var, np.log(var), atol=1e-4)


@pytest.mark.parametrize("name", DISCRETE)
def test_forward_noising_moments(name):
    s = d.make_schedule(name, 100)
    n = 20000
    x0 = jnp.array([1.5, -0.7])
    key = jax.random.key(0)
    for t in [0, 10, 50, 99]:
        key, sub = jax.random.split(key)
        noise = jax.random.normal(sub, (n, 2))
        xt = d.q_sample(s, jnp.broadcast_to(x0, (n, 2)), jnp.full((n,), t), noise)
        abar = float(s.alphas_cumprod[t])
        sd = np.sqrt(1.0 - abar)
        np.testing.assert_allclose(xt.mean(0), np.sqrt(abar) * x0, atol=5 * sd / np.sqrt(n))
        np.testing.assert_allclose(xt.var(0), 1.0 - abar, rtol=0.05)


def test_x0_eps_conversions_invert_q_sample():
    s = d.cosine_schedule(30)
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    x0 = jax.random.normal(k1, (16, 3, 2))
    eps = jax.random.normal(k2, (16, 3, 2))
    t = jax.random.randint(k3, (16,), 0, 25)  # abar near 0 at the very end amplifies rounding

    @jax.jit
    def roundtrip(x0, eps, t):
        xt = d.q_sample(s, x0, t, eps)
        return d.predict_x0_from_eps(s, xt, t, eps), d.predict_eps_from_x0(s, xt, t, x0)

    x0_back, eps_back = roundtrip(x0, eps, t)
    np.testing.assert_allclose(x0_back, x0, atol=2e-4)
    np.testing.assert_allclose(eps_back, eps, atol=2e-3)


def test_ve_schedule_grid_and_noise():
    ve = d.ve_schedule(64, A=0.01, sigma_max=2.0)
    chex.assert_shape(ve.sigmas, (64,))
    np.testing.assert_allclose(ve.sigmas[0], 0.01, rtol=1e-6)
    np.testing.assert_allclose(ve.sigmas[-1], 2.0, rtol=1e-5)
    np.testing.assert_allclose(ve.t_max, np.log(200.0), rtol=1e-6)
    ratios = np.asarray(ve.sigmas[1:] / ve.sigmas[:-1])
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-4)  # geometric grid
    np.testing.assert_allclose(ve.sigma(ve.times), ve.sigmas, rtol=1e-5)
    np.testing.assert_allclose(ve.g_squared(ve.times), 2 * ve.sigmas**2, rtol=1e-5)
    sig = d.sample_ve_sigma(jax.random.key(0), ve, 50000)
    assert float(sig.min()) >= 0.01 * (1 - 1e-6) and float(sig.max()) <= 2.0 * (1 + 1e-6)
    log_u = (np.log(np.asarray(sig)) - np.log(0.01)) / np.log(200.0)  # should be U[0, 1]
    np.testing.assert_allclose(np.quantile(log_u, [0.1, 0.5, 0.9]), [0.1, 0.5, 0.9], atol=0.01)
    x0 = jnp.ones((5, 3))
    noise = jnp.full((5, 3), 2.0)
    sigma = jnp.arange(5.0)
    expected = np.broadcast_to(1.0 + 2.0 * np.asarray(sigma)[:, None], (5, 3))
    np.testing.assert_allclose(d.q_sample(ve, x0, sigma, noise), expected)


def test_schedules_are_pytrees_that_jit_and_vmap():
    s = d.linear_schedule(10)
    f = jax.jit(lambda sch, t: sch.sqrt_alphas_cumprod[t])
    np.testing.assert_allclose(f(s, 3), s.sqrt_alphas_cumprod[3])
    abar_T = jax.vmap(lambda bmax: d.vp_schedule(20, 0.1, bmax).alphas_cumprod[-1])(
        jnp.array([5.0, 10.0, 20.0])
    )
    np.testing.assert_allclose(abar_T, np.exp(-(0.1 + np.array([5.0, 10.0, 20.0])) / 2), rtol=1e-4)
    timesteps = d.sample_timesteps(jax.random.key(0), s, 1000)
    assert timesteps.dtype == jnp.int32
    assert int(timesteps.min()) == 0 and int(timesteps.max()) == 9
    np.testing.assert_allclose(d.snr(s), s.alphas_cumprod / (1 - s.alphas_cumprod))


def test_unknown_schedule_name_is_rejected():
    with pytest.raises(ValueError, match="unknown schedule"):
        d.make_schedule("sigmoid", 10)
