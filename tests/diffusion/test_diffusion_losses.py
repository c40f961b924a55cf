"""Denoising losses: analytic minima, weights, masks, time weights, jit/vmap/grad."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import diffusion as d

MU, SD = 0.3, 0.5
SCHED = d.cosine_schedule(50)


def gaussian_eps(schedule, mu=MU, sd=SD):
    def eps_fn(x, t):
        a = d.gather(schedule.alphas_cumprod, t, x)
        return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * mu) / (a * sd**2 + 1 - a)

    return eps_fn


def gaussian_x0(schedule, mu=MU, sd=SD):
    def x0_fn(x, t):
        a = d.gather(schedule.alphas_cumprod, t, x)
        return mu + jnp.sqrt(a) * sd**2 * (x - jnp.sqrt(a) * mu) / (a * sd**2 + 1 - a)

    return x0_fn


def data(key, n, dim=1):
    return MU + SD * jax.random.normal(key, (n, dim))


def test_per_sample_errors_reductions_and_mask():
    pred = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    target = jnp.zeros((2, 3))
    np.testing.assert_allclose(d.per_sample_sq_error(pred, target), [14.0, 0.0])
    np.testing.assert_allclose(d.per_sample_sq_error(pred, target, feature_reduce="mean"), [14 / 3, 0.0])
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(d.per_sample_sq_error(pred, target, mask), [5.0, 0.0])
    np.testing.assert_allclose(d.per_sample_sq_error(pred, target, mask, "mean"), [2.5, 0.0])
    np.testing.assert_allclose(d.weighted_sq_error_loss(pred, target, jnp.array([0.5, 3.0])), 3.5)
    with pytest.raises(ValueError):
        d.per_sample_sq_error(pred, target, feature_reduce="max")


def test_weighted_mean_blocks_gradient_into_weights():
    v, w = jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 0.0, 2.0])
    np.testing.assert_allclose(d.weighted_mean(v), 2.0)
    np.testing.assert_allclose(d.weighted_mean(v, jnp.ones(3)), 2.0)
    np.testing.assert_allclose(d.weighted_mean(v, w), 7.0 / 3)
    np.testing.assert_allclose(jax.grad(d.weighted_mean, argnums=1)(v, w), 0.0)
    np.testing.assert_allclose(jax.grad(d.weighted_mean)(v, w), w / 3)


def test_exact_eps_attains_the_analytic_minimum():
    # E||eps - eps*(x_t)||^2 = Var[eps | x_t] = abar sd^2 / (abar sd^2 + 1 - abar), averaged over t.
    k_data, k_loss = jax.random.split(jax.random.key(0))
    x0 = data(k_data, 100000)
    abar = np.asarray(SCHED.alphas_cumprod, np.float64)
    expected = np.mean(abar * SD**2 / (abar * SD**2 + 1 - abar))
    loss = jax.jit(lambda k: d.denoising_loss_eps(gaussian_eps(SCHED), SCHED, k, x0))(k_loss)
    np.testing.assert_allclose(loss, expected, rtol=0.03)
    worse = d.denoising_loss_eps(lambda x, t: gaussian_eps(SCHED)(x, t) + 0.1, SCHED, k_loss, x0)
    # A constant bias adds 0.1^2, up to the sampling noise of the cross term (~4e-4).
    np.testing.assert_allclose(worse - loss, 0.01, atol=2e-3)


def test_exact_x0_attains_the_analytic_minimum_discrete_and_ve():
    k_data, k_loss = jax.random.split(jax.random.key(1))
    x0 = data(k_data, 100000)
    abar = np.asarray(SCHED.alphas_cumprod, np.float64)
    expected = np.mean(SD**2 * (1 - abar) / (abar * SD**2 + 1 - abar))
    loss = jax.jit(lambda k: d.denoising_loss_x0(gaussian_x0(SCHED), SCHED, k, x0))(k_loss)
    np.testing.assert_allclose(loss, expected, rtol=0.03)

    # VE (the paper's Eq. 1): y = x0 + sigma z with log-uniform sigma; Var[x0|y] = sd^2 s^2/(sd^2+s^2).
    ve = d.ve_schedule(10, A=0.01, sigma_max=2.0)
    blind_optimal = lambda y, sigma: MU + SD**2 / (SD**2 + sigma[:, None] ** 2) * (y - MU)
    log_sigma = np.linspace(np.log(0.01), np.log(2.0), 20001)
    sig2 = np.exp(2 * log_sigma)
    expected = np.mean(SD**2 * sig2 / (SD**2 + sig2))
    loss = jax.jit(lambda k: d.denoising_loss_x0(blind_optimal, ve, k, x0))(k_loss)
    np.testing.assert_allclose(loss, expected, rtol=0.03)
    with pytest.raises(ValueError):
        d.denoising_loss_x0(blind_optimal, ve, k_loss, x0, time_weights=jnp.ones(10))


def test_eps_and_x0_errors_agree_under_snr_time_weights():
    # ||eps - eps_hat||^2 = abar/(1 - abar) ||x0 - x0_hat||^2 when x0_hat is derived from eps_hat.
    key = jax.random.key(2)
    x0 = jax.random.normal(key, (64, 3))
    t = jax.random.randint(key, (64,), 0, 50)
    eps_fn = lambda x, t: 0.7 * x - 0.1
    x0_fn = lambda x, t: d.predict_x0_from_eps(SCHED, x, t, eps_fn(x, t))
    e_eps = d.denoising_errors_eps(eps_fn, SCHED, key, x0, t=t)
    e_x0 = d.denoising_errors_x0(x0_fn, SCHED, key, x0, t=t, time_weights=d.snr(SCHED))
    np.testing.assert_allclose(e_eps, e_x0, rtol=2e-3, atol=1e-4)


def test_importance_weights_recover_the_target_distribution_loss():
    # DDPL's ISSM: samples from a uniform proposal, weighted by p/q, give the loss under p.
    key_p, key_q, key_loss = jax.random.split(jax.random.key(3), 3)
    n = 200000
    eps_fn = gaussian_eps(SCHED, mu=0.0, sd=1.0)  # a frozen model that is not optimal for p
    target_loss = d.denoising_loss_eps(eps_fn, SCHED, key_loss, data(key_p, n))
    x_q = jax.random.uniform(key_q, (n, 1), minval=-2.0, maxval=2.5)
    density_p = jnp.exp(-0.5 * ((x_q[:, 0] - MU) / SD) ** 2) / (SD * np.sqrt(2 * np.pi))
    weights = density_p / (1.0 / 4.5)
    weighted = d.denoising_loss_eps(eps_fn, SCHED, key_loss, x_q, weights=weights)
    np.testing.assert_allclose(weighted, target_loss, rtol=0.03)
    # Self-normalised variant: divide the weights by their mean.
    normalised = d.denoising_loss_eps(eps_fn, SCHED, key_loss, x_q, weights=weights / weights.mean())
    np.testing.assert_allclose(normalised, target_loss, rtol=0.03)


def test_losses_jit_vmap_and_grad():
    def eps_model(theta):
        return lambda x, t: theta[0] * x + theta[1] * d.gather(SCHED.sqrt_alphas_cumprod, t, x)

    x0 = data(jax.random.key(4), 256, dim=2)
    w = jnp.linspace(0.0, 2.0, 256)
    mask = jnp.ones((256, 2)).at[:, 1].set(0.0)

    def loss(theta, key):
        return d.denoising_loss_eps(eps_model(theta), SCHED, key, x0, weights=w, mask=mask)

    theta = jnp.array([0.5, -0.2])
    key = jax.random.key(5)
    keys = jax.random.split(key, 3)
    h = 1e-3
    shifts = h * jnp.concatenate([jnp.eye(2), -jnp.eye(2)])

    @jax.jit
    def run(theta, keys):
        batched = jax.vmap(loss, in_axes=(None, 0))(theta, keys)
        looped = jnp.stack([loss(theta, keys[i]) for i in range(3)])
        shifted = jax.vmap(loss, in_axes=(0, None))(theta + shifts, keys[0])
        return batched, looped, jax.grad(loss)(theta, keys[0]), shifted

    batched, looped, grad, shifted = run(theta, keys)
    np.testing.assert_allclose(batched, looped, rtol=1e-5)
    fd = (shifted[:2] - shifted[2:]) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-2, atol=1e-3)
    assert np.all(np.abs(grad) > 1e-3)
