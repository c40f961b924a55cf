"""Denoiser MLP (F7), analytic blind denoiser (F9), Eq. 1 training (F8)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import diffusion as d
from jaxdiff import statediff as sd
from jaxdiff.envs.sensor_grid import sensor_2x2


def test_denoiser_shapes_vmap_and_parameter_count():
    model = sd.Denoiser(state_dim=40, width=32, depth=3)
    params = sd.init_params(jax.random.key(0), model, 65)
    n = sum(x.size for x in jax.tree.leaves(params))
    assert n == sd.num_params(65, 40, 32, 3)
    f = sd.denoise_fn(model, params)
    taus = jnp.ones((25, 65))
    y = jnp.zeros((40,))
    out = jax.jit(jax.vmap(f, in_axes=(0, None)))(taus, y)  # shared net, vmapped over agents
    chex.assert_shape(out, (25, 40))
    chex.assert_shape(model.apply(params, jnp.ones((7, 3, 65)), jnp.ones((7, 3, 40))), (7, 3, 40))
    for depth in (1, 2):
        m = sd.Denoiser(state_dim=4, width=8, depth=depth, activation="relu")
        p = sd.init_params(jax.random.key(1), m, 6)
        assert sum(x.size for x in jax.tree.leaves(p)) == sd.num_params(6, 4, 8, depth)
    with pytest.raises(ValueError, match="activation"):
        sd.init_params(jax.random.key(0), sd.Denoiser(state_dim=4, activation="swish"), 6)


def _agent3_posterior():
    env = sensor_2x2()
    return env, jnp.log(env.posterior(2, jnp.zeros(2)))  # {Area 1, Area 4}: 0.5 / 0.5


def test_analytic_denoiser_converges_fast_with_symmetric_basins():
    env, log_post = _agent3_posterior()
    f = sd.analytic_blind_denoiser(env.states())
    y0 = jax.random.normal(jax.random.key(0), (4000, 4))
    _, traj = jax.vmap(lambda y: d.fixed_point_flow(f, log_post, y, 10, return_trajectory=True))(y0)
    end = traj[:, -1]
    nearest = np.asarray(env.states())[np.argmin(
        np.linalg.norm(np.asarray(end)[:, None] - env.states()[None], axis=-1), axis=1)]
    assert np.max(np.linalg.norm(end - nearest, axis=-1)) < 1e-3  # converged within 10 steps
    frac_1 = np.mean(nearest[:, 0] == 1)
    assert abs(frac_1 - 0.5) < 0.03 and np.mean(nearest[:, 3] == 1) == pytest.approx(1 - frac_1)


def test_analytic_flow_goes_to_the_dominant_posterior_state():
    # Theorem 1: phi_inf(y) = argmax_s p(s | y, tau), with the blind likelihood of y.
    env, log_post = _agent3_posterior()
    states = env.states()
    f = sd.analytic_blind_denoiser(states)
    y0 = jax.random.normal(jax.random.key(1), (2000, 4))
    end = jax.vmap(lambda y: d.fixed_point_flow(f, log_post, y, 30))(y0)
    sigmas = np.geomspace(0.01, 2.0, 64)
    sq = ((np.asarray(y0)[:, None] - states[None]) ** 2).sum(-1)  # [N, S]
    log_lik = np.log(np.mean(np.exp(-sq[..., None] / (2 * sigmas**2)) / sigmas**4, axis=-1) + 1e-300)
    argmax = np.argmax(np.asarray(log_post)[None] + log_lik, axis=1)
    landed = np.argmin(((np.asarray(end)[:, None] - states[None]) ** 2).sum(-1), axis=1)
    assert np.mean(argmax == landed) >= 0.85


def test_train_step_is_pure_jittable_and_vmappable_over_noise_range():
    hp = sd.make_hparams(4, width=8, depth=1)
    params, opt_state = sd.init(jax.random.key(0), hp, 6)
    batch = {"tau": jnp.ones((8, 6)), "s": jnp.eye(4)[jnp.arange(8) % 4]}
    step = jax.jit(sd.train_step)
    p1, o1, m1 = step(params, opt_state, batch, jax.random.key(1), hp)
    p2, _, m2 = step(params, opt_state, batch, jax.random.key(1), hp)
    chex.assert_trees_all_equal(p1, p2)  # same inputs, same outputs
    assert set(m1) == {"loss", "grad_norm"} and np.isfinite(m1["loss"])
    # sigma range is a dynamic hyper-parameter: a sweep is one vmap.
    hps = hp.replace(sigma_min=jnp.array([0.01, 0.1]), sigma_max=jnp.array([2.0, 1.0]))
    vstep = jax.vmap(sd.train_step, in_axes=(None, None, None, None, 0))
    _, _, mv = jax.jit(vstep)(params, opt_state, batch, jax.random.key(1), hps)
    chex.assert_shape(mv["loss"], (2,))
    # Per-row weights: zero weight removes a row from the loss.
    w = {**batch, "weight": jnp.zeros(8)}
    assert float(sd.loss_fn(params, w, jax.random.key(2), hp)) == 0.0


def test_training_beats_the_unconditional_baseline_on_2x2():
    env = sensor_2x2()
    rows = env.rows(env.sample_dataset(jax.random.key(0), 4000), "raw")
    hp = sd.make_hparams(4, width=32, depth=2, lr=3e-3)
    params, metrics = sd.fit(jax.random.key(1), hp, rows, num_steps=500, batch_size=256, chunk=250)
    chex.assert_shape(metrics["loss"], (500,))
    # The unconditional mean predictor scores Tr Cov(s) = 4 * 0.25 * 0.75 = 0.75 at any sigma.
    final = float(np.mean(metrics["loss"][-100:]))
    assert final < 0.5 * 0.75, final
    # Noise-free denoising of a clean state is near-perfect once the history is used.
    f = sd.denoise_fn(hp.model, params)
    taus = env.encode(env.observe(jax.random.key(3), jnp.eye(4)[0]), "raw")
    out = jax.vmap(f, in_axes=(0, None))(taus, jnp.eye(4)[0])
    assert float(jnp.max(jnp.abs(out - jnp.eye(4)[0]))) < 0.3
