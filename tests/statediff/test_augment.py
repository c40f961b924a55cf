"""Inferred-state observations (paper 000 Appendix C, F28): the wrapper's online history and
estimates equal the offline encoding of the same trajectory; `env.inferred_state=<run>` loads
a state_diffusion run and MAPPO trains on the augmented observations; bad runs are refused."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff  # noqa: F401
from jaxdiff import envs as envs_lib
from jaxdiff.data import collect as col
from jaxdiff.data import history as hist
from jaxdiff.run import runner
from jaxdiff.statediff import individual_estimates
from jaxdiff.statediff.augment import InferredStateObs


def _toy_denoiser(tau_dim, state_dim, key):
    w = 0.1 * jax.random.normal(key, (state_dim, tau_dim))
    return lambda tau, y: 0.5 * jnp.tanh(y) + w @ tau


def test_online_estimates_equal_the_offline_encoding_across_resets():
    base = envs_lib.make("mpe_simple_spread")
    spec = base.spec
    hspec = hist.HistorySpec(n_agents=spec.n_agents, obs_dim=spec.obs_dim,
                             n_actions=spec.act_dim, history=3)
    s_dim, L = 6, 4
    f = _toy_denoiser(hspec.dim, s_dim, jax.random.PRNGKey(1))
    env = InferredStateObs(base.env, f, hspec, s_dim, num_steps=L, sigma_init=0.0)
    assert env.spec.obs_dim == spec.obs_dim + s_dim
    T = 30                                   # MPE episodes are 25 steps: one auto-reset inside
    actions = jax.random.randint(jax.random.PRNGKey(2), (T, spec.n_agents), 0, spec.act_dim)

    def body(c, xs):
        st = c
        k, a = xs
        obs, st, _, done, _ = env.step(k, st, a)
        return st, (obs, done[0])

    obs0, st0 = env.reset(jax.random.PRNGKey(3))
    _, (obs, done) = jax.lax.scan(body, st0, (jax.random.split(jax.random.PRNGKey(4), T), actions))
    obs_all = jnp.concatenate([obs0[None], obs])                     # [T+1, n, obs+s]
    raw, est = obs_all[..., :spec.obs_dim], obs_all[..., spec.obs_dim:]
    first = jnp.concatenate([jnp.array([True]), done])               # obs[t] starts an episode
    assert bool(done.any())
    act_taken = jnp.concatenate([actions, actions[:1]])              # action after each obs
    taus = hist.windows(hspec, raw, act_taken, first, jnp.arange(T + 1))
    want = jax.vmap(lambda t: individual_estimates(f, t, jnp.zeros(s_dim), L))(taus)
    np.testing.assert_allclose(est, want, rtol=1e-5, atol=1e-6)


def test_mismatched_denoiser_is_refused():
    base = envs_lib.make("mpe_simple_spread")
    hspec = hist.HistorySpec(n_agents=3, obs_dim=base.spec.obs_dim + 1, n_actions=5)
    with pytest.raises(ValueError, match="does not match env"):
        InferredStateObs(base.env, lambda t, y: y, hspec, 4)


def test_option_errors_are_clear(tmp_path):
    assert {"inferred_state", "inferred_state_member"} <= set(envs_lib.wrapper_options())
    assert "inferred_state" not in envs_lib.options("mpe_simple_spread")   # the env's own only
    with pytest.raises(FileNotFoundError, match="no config.json"):
        envs_lib.make("mpe_simple_spread", inferred_state=str(tmp_path))
    with pytest.raises(ValueError, match="Did you mean 'inferred_state'"):
        envs_lib.make("mpe_simple_spread", inferred_stat="x")


@pytest.fixture(scope="module")
def denoiser_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug")
    data = str(root / "data")
    env = envs_lib.make("mpe_simple_spread")
    col.collect(env, col.random_policy(env), data, samples=256, test_samples=32, history=2,
                num_envs=16, chunk_steps=25, progress=False, env_name="mpe_simple_spread")
    spec = runner.RunSpec(algo="state_diffusion", env="mpe_simple_spread", env_kwargs={},
                          algo_overrides=dict(dataset=data, width=16, depth=2, batch_size=32,
                                              flow_steps=2, eval_samples=8),
                          seeds=1, total_steps=32 * 20, chunks=1)
    run_dir = str(root / "sd")
    runner.train(spec, run_dir, progress=False)
    return run_dir


def test_mappo_trains_on_inferred_state_observations(denoiser_run, tmp_path):
    from jaxdiff.algos import state_diffusion
    state_diffusion._load.cache_clear()      # as in a fresh process: restore reads the dataset
    env = envs_lib.make("mpe_simple_spread", inferred_state=denoiser_run)
    plain = envs_lib.make("mpe_simple_spread")
    assert env.spec.obs_dim == plain.spec.obs_dim + plain.spec.state_dim
    spec = runner.RunSpec(algo="mappo", env="mpe_simple_spread",
                          env_kwargs=dict(inferred_state=denoiser_run),
                          algo_overrides=dict(num_envs=4, num_steps=16, hidden=16),
                          seeds=1, total_steps=4 * 16 * 2, chunks=1, eval_episodes=2)
    summary = runner.train(spec, str(tmp_path / "mappo"), progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "mappo" / "metrics.jsonl")]
    assert rows and all(np.isfinite(v) for r in rows for v in r.values()
                        if isinstance(v, float))
    assert np.isfinite(summary["final"]["return_mean"])
    # a run of another algorithm is refused with a clear message
    with pytest.raises(ValueError, match="must be a `state_diffusion` run"):
        envs_lib.make("mpe_simple_spread", inferred_state=str(tmp_path / "mappo"))
    with pytest.raises(ValueError, match="ensemble member"):
        envs_lib.make("mpe_simple_spread", inferred_state=denoiser_run, inferred_state_member=3)
    with pytest.raises(ValueError, match="trained on `mpe_simple_spread` data"):
        envs_lib.make("mpe_simple_reference", inferred_state=denoiser_run)
