"""state_diffusion on the runner: a tiny dataset collected on MPE, trained for a few hundred
Adam steps; the loss falls, the PSNR metrics come out finite, bad configs are refused."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff  # noqa: F401
from jaxdiff import envs as envs_lib
from jaxdiff.algos.base import ConfigError
from jaxdiff.data import collect as col
from jaxdiff.run import runner


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sd") / "mpe")
    env = envs_lib.make("mpe_simple_spread")
    col.collect(env, col.random_policy(env), out, samples=512, test_samples=64, history=2,
                num_envs=16, chunk_steps=25, progress=False, env_name="mpe_simple_spread")
    return out


def _spec(path, **over):
    algo = dict(dataset=path, width=32, depth=2, batch_size=64, flow_steps=3, eval_samples=16,
                lr=3e-3, **over)
    return runner.RunSpec(algo="state_diffusion", env="mpe_simple_spread", env_kwargs={},
                          algo_overrides=algo, seeds=2, total_steps=64 * 300, chunks=3)


def test_trains_and_evaluates_on_runner(dataset, tmp_path):
    summary = runner.train(_spec(dataset), str(tmp_path / "run"), progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert {r["seed"] for r in rows} == {0, 1}
    for key in ("eval_psnr_composite", "eval_psnr_individual", "eval_train_psnr_composite"):
        assert all(np.isfinite(r[key]) for r in rows)
    first = np.mean([r["loss"] for r in rows if r["chunk"] == 0])
    last = np.mean([r["loss"] for r in rows if r["chunk"] == 2])
    assert last < first                       # Eq. 1 decreases
    assert "psnr_composite_mean" in summary["final"]
    assert summary["final"]["step"] == 64 * 300


def test_refuses_missing_dataset_and_wrong_env(dataset, tmp_path):
    with pytest.raises(ConfigError, match="algo.dataset"):
        runner.prepare(runner.RunSpec(algo="state_diffusion", env="mpe_simple_spread",
                                      env_kwargs={}, algo_overrides={}))
    from jaxdiff.data import DatasetNotFoundError
    with pytest.raises(DatasetNotFoundError):
        runner.train(_spec(str(tmp_path / "nope")), str(tmp_path / "r1"), progress=False)
    spec = _spec(dataset)
    spec = runner.RunSpec(**{**spec.identity(), "env": "mpe_simple_reference"})
    with pytest.raises(ConfigError, match="collected on env"):
        runner.train(spec, str(tmp_path / "r2"), progress=False)
    assert not os.path.exists(tmp_path / "r2" / "checkpoints" / "1")


def test_an_alias_dataset_matches_its_canonical_env():
    """A dataset collected under an alias (`sensor_2x2` makes `sensor_2x2_co`) trains on that
    env under either name, whether the dataset recorded the spec name or (older datasets) only
    the registry name; another env is still refused, naming both."""
    from jaxdiff.algos import state_diffusion as sd
    env = envs_lib.make("sensor_2x2")
    assert env.spec.name == "sensor_2x2_co"
    sd._check_env(dict(env="sensor_2x2", env_spec_name="sensor_2x2_co"), env)
    sd._check_env(dict(env="sensor_2x2", env_kwargs={}), env)            # no spec name stored
    sd._check_env(dict(env="sensor_2x2_co", env_kwargs={}), envs_lib.make("sensor_2x2_co"))
    with pytest.raises(ConfigError, match="sensor_2x2_nonco.*not `sensor_2x2_co`"):
        sd._check_env(dict(env="sensor_2x2_nonco", env_kwargs={}), env)


@pytest.mark.skipif(len(jax.devices()) < 2, reason="needs >= 2 devices (cores)")
def test_data_parallel_chunk_equals_single_device_chunk(dataset, monkeypatch):
    """Data parallelism (#16): one seed's batch rows split over two devices (the runner's
    "data" mesh axis, `Algorithm.env_split`) train the same parameters, with the same loss
    and gradient norm, as one device, up to float reduction order."""
    algorithm, env, config, _ = runner.prepare(_spec(dataset))
    monkeypatch.setenv("JAXDIFF_ENV_SPLIT", "1")
    sharding = runner.member_sharding(algorithm, env, config, 1)
    assert dict(sharding.mesh.shape)["data"] == 2
    step = algorithm.step(env, config, iterations=4)
    data = algorithm.data(config, env)
    hp = jax.tree.map(lambda x: jnp.asarray(x)[None], config)
    init = jax.jit(jax.vmap(lambda k, c: algorithm.init(k, env, c)))
    out = {}
    for name, sh in (("split", sharding), ("single", None)):
        chunk = runner.make_chunk(step, 4, sh)
        state = runner.place(init(jax.random.PRNGKey(0)[None], hp), sh)
        d = runner.replicate(data, sh)
        compiled, _ = runner.compile_chunk(chunk, state, d, sh)
        out[name] = jax.device_get(compiled(state, d))
    single = jax.tree.leaves(out["single"])
    assert len(single) == len(jax.tree.leaves(out["split"])) > 4
    for x, y in zip(jax.tree.leaves(out["split"]), single):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
