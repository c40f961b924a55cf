"""Learning checks on the 2x2 sensor network (slow: trains the shared denoiser, ~1-2 min).

F8: the learned denoiser matches the analytic blind denoiser; F11: attractors per agent are
1, 1, 2, 2 at the consistent states with basins near 0.5; F20: composite diffusion reaches the
true state from every start for every agent order; F17: deviations D < 0.1; F12: the Newton
saddle between Agent 3's attractors fails the stability filter.
"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import diffusion as d
from jaxdiff import statediff as sd
from jaxdiff.envs.sensor_grid import sensor_2x2

pytestmark = pytest.mark.slow
TRUE = np.eye(4, dtype=np.float32)


@pytest.fixture(scope="module")
def trained():
    env = sensor_2x2()
    rows = env.rows(env.sample_dataset(jax.random.key(0), 20000), "raw")
    hp = sd.make_hparams(4, width=256, lr=3e-3)
    params, metrics = sd.fit(jax.random.key(1), hp, rows, num_steps=3000, batch_size=512, chunk=1000)
    return env, sd.denoise_fn(hp.model, params), metrics


def test_learned_denoiser_matches_the_analytic_one(trained):
    env, f, metrics = trained
    assert float(np.mean(metrics["loss"][-300:])) < 0.08
    exact = sd.analytic_blind_denoiser(env.states())
    data = env.sample_dataset(jax.random.key(2), 1000)
    for sigma in (0.1, 0.3, 1.0):
        y = data["s"] + sigma * jax.random.normal(jax.random.key(3), data["s"].shape)
        for i in range(4):
            tau = jax.vmap(lambda o: env.encode_agent(i, o[i], "raw"))(data["obs"])
            lp = jax.vmap(lambda o: jax.nn.log_softmax(env.log_likelihood(i, o[i])))(data["obs"])
            gap = jnp.mean(jnp.sum((jax.vmap(f)(tau, y) - jax.vmap(exact)(lp, y)) ** 2, -1))
            assert float(gap) < 0.02, (sigma, i, float(gap))


def test_learned_attractors_and_composite(trained):
    env, f, _ = trained
    taus = env.encode(env.observe(jax.random.key(0), jnp.asarray(TRUE[0])), "raw")
    counts = []
    for i in range(4):
        fp = sd.attractors(f, taus[i], jax.random.key(i), num_starts=1024, state_dim=4)
        keep = np.asarray(fp.stable) & (np.asarray(fp.basin_fraction) >= 0.01)
        pts, frac = np.asarray(fp.points)[keep], np.asarray(fp.basin_fraction)[keep]
        counts.append(len(pts))
        assert np.min(np.linalg.norm(pts - TRUE[0], axis=-1)) < 0.1  # spec: 0.05 after 6k steps
        assert np.all(np.asarray(fp.spectral_radius)[keep] < 1.0)
        if len(pts) == 2:
            assert np.all((frac > 0.35) & (frac < 0.65))
    assert counts == [1, 1, 2, 2]
    y0 = jax.random.normal(jax.random.key(5), (300, 4))
    orders = jnp.array(list(itertools.permutations(range(4))))
    end = jax.jit(jax.vmap(lambda o: jax.vmap(lambda y: sd.composite_estimate(f, taus, y, 8, order=o))(y0)))(orders)
    assert float(np.mean(np.linalg.norm(np.asarray(end) - TRUE[0], axis=-1) < 0.1)) > 0.99


def test_learned_deviations_are_small_and_newton_finds_the_saddle(trained):
    """F17: ||D|| = ||s - phi_inf(tau_i)(s)|| < 0.1 for every target and agent of the CO model
    (the exact denoiser has D = 0). F12: Newton from the midpoint of Agent 3's two attractors
    (Areas 1 and 4, target in Area 1) converges to a fixed point that the spectral-radius
    filter rejects (a saddle between the basins), while the attractors themselves pass it."""
    env, f, _ = trained
    for target in range(4):
        taus = env.encode(env.observe(jax.random.key(target), jnp.asarray(TRUE[target])), "raw")
        dev, y_star = jax.vmap(lambda t: sd.deviation(f, t, jnp.asarray(TRUE[target])))(taus)
        norms = np.linalg.norm(np.asarray(dev), axis=-1)
        assert np.all(norms < 0.1), (target, norms)
        rho = jax.vmap(lambda t, y: d.spectral_radius(d.jacobian_y(f, t, y)))(taus, y_star)
        assert np.all(np.asarray(rho) < 1.0)
    tau3 = env.encode(env.observe(jax.random.key(0), jnp.asarray(TRUE[0])), "raw")[2]
    fp = d.find_fixed_points(lambda y: f(tau3, y), jnp.array([[0.5, 0.0, 0.0, 0.5]]), method="newton")
    assert bool(fp.valid[0]) and float(fp.residual[0]) < 1e-4
    point = np.asarray(fp.points[0])
    assert np.linalg.norm(point - TRUE[0]) > 0.3 and np.linalg.norm(point - TRUE[3]) > 0.3
    assert float(fp.spectral_radius[0]) > 1.0 and not bool(fp.stable[0])
