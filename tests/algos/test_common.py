"""GAE against a hand-computed example; value normalisation; config validation."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.algos import base, mappo
from jaxdiff.algos import returns as common


def test_gae_matches_hand_computation():
    # Three steps, episode ends after step 1 (index 1): no bootstrap across it.
    r = jnp.array([1.0, 2.0, 3.0])
    v = jnp.array([0.5, 1.0, 1.5])
    d = jnp.array([0.0, 1.0, 0.0])
    last_v, g, lam = jnp.array(2.0), 0.9, 0.8
    adv, ret = common.gae(r, v, d, last_v, g, lam)
    d2 = 3.0 + g * 2.0 - 1.5                 # t=2 bootstraps from last_v
    d1 = 2.0 - 1.0                           # t=1 terminal
    d0 = 1.0 + g * 1.0 - 0.5                 # t=0 bootstraps from v[1]
    a2 = d2
    a1 = d1
    a0 = d0 + g * lam * a1
    np.testing.assert_allclose(adv, [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(ret, np.array([a0, a1, a2]) + np.array(v), rtol=1e-6)


def test_gae_lambda_one_is_discounted_return_minus_value():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
    adv, _ = common.gae(jnp.array(r), jnp.array(v), jnp.zeros(6), jnp.array(0.0), 0.95, 1.0)
    mc = np.array([sum(0.95 ** k * r[t + k] for k in range(6 - t)) for t in range(6)])
    np.testing.assert_allclose(adv, mc - v, rtol=1e-5, atol=1e-5)


def test_value_norm_tracks_mean_and_std():
    vn = common.ValueNorm.create()
    x = jnp.array(np.random.default_rng(1).normal(3.0, 2.0, size=4096), jnp.float32)
    for _ in range(3):
        vn = vn.update(x)
    mean, std = vn.stats()
    assert abs(float(mean) - float(x.mean())) < 1e-3
    assert abs(float(std) - float(x.std())) < 1e-2
    np.testing.assert_allclose(vn.denormalize(vn.normalize(x)), x, rtol=1e-5, atol=1e-5)


def test_config_validation_messages():
    with pytest.raises(base.ConfigError, match="out of range"):
        base.make_config(mappo.Config, {"lr": -1})
    with pytest.raises(base.ConfigError, match="Did you mean `algo.num_envs`"):
        base.make_config(mappo.Config, {"num_env": 4})
    with pytest.raises(base.ConfigError, match="must divide"):
        base.make_config(mappo.Config, {"num_envs": 3, "num_steps": 3, "num_minibatches": 2})
    with pytest.raises(base.ConfigError, match="choose one of"):
        base.make_config(mappo.Config, {"activation": "sigmoidal"})
    with pytest.raises(base.ConfigError, match="wrong type"):
        base.make_config(mappo.Config, {"num_envs": "many"})
    assert base.make_config(mappo.Config, {"lr": "1e-3"}).lr == pytest.approx(1e-3)


def test_unknown_algorithm_lists_valid_names():
    with pytest.raises(base.UnknownAlgorithmError, match="mappo"):
        base.get("mapo")
