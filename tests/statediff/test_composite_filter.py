"""F22: the composite algorithm's Step 2 accepts a trained model's samples and rejects a broken
(random-weight) model's, on the 2x2 CO sensor network. Trains a small denoiser (W 64, 1500
Adam steps, about 10 s on a 2-core CPU)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import statediff as sd
from jaxdiff.envs.sensor_grid import sensor_2x2

N_TARGETS, K = 16, 16  # test samples x starts per sample


@pytest.fixture(scope="module")
def setup():
    env = sensor_2x2()
    rows = env.rows(env.sample_dataset(jax.random.key(0), 4000), "raw")
    hp = sd.make_hparams(4, width=64, lr=3e-3)
    params, metrics = sd.fit(jax.random.key(1), hp, rows, num_steps=1500, batch_size=256)
    held = env.rows(env.sample_dataset(jax.random.key(2), 64), "raw")  # held-out pairs for D-hat
    test = env.sample_dataset(jax.random.key(3), N_TARGETS)
    taus = jax.vmap(lambda o: env.encode(o, "raw"))(test["obs"])  # [B, 4, 6]
    starts = jax.random.normal(jax.random.key(4), (N_TARGETS, K, 4))

    @jax.jit
    def run(p, taus):
        f = sd.denoise_fn(hp.model, p)
        bound = sd.deviation_bound(f, held["tau"], held["s"], train_taus=rows["tau"],
                                   train_states=rows["s"])
        alg = lambda d: jax.vmap(lambda t, s: sd.composite_algorithm(f, t, s, num_steps=8, d_hat=d))
        return bound, alg(bound)(taus, starts), alg(bound.d_hat)(taus, starts)

    return {"hp": hp, "params": params, "loss": metrics["loss"], "run": run, "taus": taus,
            "s": test["s"]}


def test_trained_model_is_certified_and_accepts_most_samples(setup):
    assert float(np.mean(setup["loss"][-200:])) < 0.12
    bound, res, _ = setup["run"](setup["params"], setup["taus"])
    assert bool(bound.bounded) and bool(np.all(res.certified))
    assert float(bound.d_hat) < 0.3 and float(bound.mean_sq_deviation) < 0.1 * float(bound.r_bound)
    assert float(np.mean(res.accepted)) >= 0.8
    err = np.linalg.norm(np.asarray(res.estimate) - np.asarray(setup["s"]), axis=-1)
    assert np.all(err < 0.2)  # the filtered composite estimate is the true state


def test_random_weight_models_are_rejected(setup):
    for seed in range(3):
        params = sd.init_params(jax.random.key(100 + seed), setup["hp"].model, 6)
        bound, res, per_sample_only = setup["run"](params, setup["taus"])
        # A random net contracts every history to nearly one point, far from every state:
        # its deviations exceed the Theorem 6 bound, so Step 2 certifies nothing ...
        assert not bool(bound.bounded)
        assert float(bound.mean_sq_deviation) > float(bound.r_bound) + 0.1
        assert float(np.mean(res.accepted)) <= 0.1
        # ... whereas the per-sample checks alone (its own D-hat as a number) pass it: its
        # flows are stable and agree with each other, which is why the Theorem 6 check exists.
        assert float(np.mean(per_sample_only.accepted)) > 0.5, seed


def test_per_sample_checks_reject_inconsistent_histories(setup):
    # Agents 3 and 4 condition on another sample's observations: unless that sample has the
    # same target (about 1 in 4), no state is consistent with all four histories, the agents'
    # attractors disagree, and re-denoising the composite end point moves it by ~1 > 2 D-hat.
    taus = setup["taus"]
    mixed = taus.at[:, 2:].set(jnp.roll(taus, 1, axis=0)[:, 2:])
    same = np.all(np.asarray(setup["s"]) == np.roll(np.asarray(setup["s"]), 1, axis=0), axis=-1)
    assert not same.all()
    bound, res, _ = setup["run"](setup["params"], mixed)
    acc = np.asarray(res.accepted).mean(axis=1)  # per test sample
    assert bool(bound.bounded)
    assert acc[~same].mean() <= 0.2
    if same.any():
        assert acc[same].mean() >= 0.8
