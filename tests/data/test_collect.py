"""Collector + dataset: a tiny random-policy collect round-trips through disk (flashbax Vault),
shapes and metadata, state in [0, 1], obs/state/action alignment, τ rebuilt from the stored
trajectories equals the online encoder, clear errors for missing/incomplete/corrupt datasets.

A toy "walk" env (pure JAX, compiles in a second) stands in for SMAX here; the SMAX normaliser is
tested in tests/envs/test_smax_tasks.py and a SMAX collect through the CLI is marked slow."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY

import jaxdiff.data as data
from jaxdiff import cli, envs
from jaxdiff.data import collect as col
from jaxdiff.data import history as hist
from jaxdiff.envs.base import Env, EnvSpec
from jaxdiff.envs.wrappers import EpisodeStats

N, P, LIMIT = 2, 4, 5  # agents, positions 0..P, episode time limit


class Walk(Env):
    """Each agent walks on {0..P}: action 0 stays, 1 steps up, 2 steps down (clipped). The
    episode ends after LIMIT steps or when every agent is at P. obs_i = [p_i/P, t/LIMIT, 1];
    normalised state = [p_1/P, ..., p_n/P, t/LIMIT]."""

    def __init__(self):
        self.spec = EnvSpec(name="test_walk", n_agents=N, obs_dim=3, obs_sizes=(3,) * N,
                            discrete=True, act_dim=3, act_sizes=(3,) * N, action_low=0.0,
                            action_high=0.0, state_dim=N + 1, max_steps=LIMIT,
                            shared_reward=True, has_win=False)

    def _obs(self, s):
        p, t = s
        return jnp.stack([p / P, jnp.full((N,), t / LIMIT), jnp.ones((N,))], -1).astype(jnp.float32)

    def reset(self, key):
        s = (jax.random.randint(key, (N,), 0, P), jnp.zeros((), jnp.int32))
        return self._obs(s), s

    def step(self, key, s, actions):
        p, t = s
        p = jnp.clip(p + jnp.array([0, 1, -1])[actions], 0, P)
        t = t + 1
        ended = (t >= LIMIT) | jnp.all(p == P)
        s_new = jax.tree.map(lambda a, b: jnp.where(ended, a, b), self.reset(key)[1], (p, t))
        info = {"won": jnp.zeros(()), "terminated": jnp.all(p == P)}
        reward = jnp.full((N,), jnp.mean(p) / P)
        return self._obs(s_new), s_new, reward, jnp.full((N,), ended), info

    def global_state(self, s):
        return self.normalised_state(s)

    def normalised_state(self, s):
        p, t = s
        return jnp.concatenate([p / P, jnp.array([t / LIMIT])]).astype(jnp.float32)

    def action_mask(self, s):
        return jnp.ones((N, 3), bool)


envs.register("test_walk", lambda: Walk(), overwrite=True)
H, SAMPLES, TEST, E = 3, 100, 30, 8


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ds") / "walk")
    env = EpisodeStats(Walk())
    ds = col.collect(env, col.random_policy(env), out, samples=SAMPLES, test_samples=TEST,
                     history=H, num_envs=E, burn_in=LIMIT, seed=3, chunk_steps=4,
                     progress=False, env_name="test_walk")
    return out, ds


def test_round_trip_shapes_and_meta(collected):
    out, ds = collected
    again = data.load_dataset(out)          # reopened from disk
    m = again.meta
    assert m["complete"] and m["env"] == "test_walk" and m["history"] == H
    assert m["policy"] == "random" and m["seed"] == 3 and m["state_normalised"]
    assert m["tau_dim"] == N + H * (3 + 3)
    for name, n in (("train", SAMPLES), ("test", TEST)):
        a, b = ds[name], again[name]
        for f in ("obs", "action", "first", "state", "alive"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        steps = -(-n // E)
        assert a.obs.shape == (E, H + steps, N, 3) and a.action.shape == (E, H + steps, N)
        assert a.first.shape == (E, H + steps) and a.state.shape == (E, H + steps, N + 1)
        assert a.num_samples == n
        tau, s, alive = a.tau(), a.states(), a.alive_mask()
        assert tau.shape == (n, N, m["tau_dim"]) and s.shape == (n, N + 1)
        assert alive.shape == (n, N) and alive.all()
        assert s.min() >= 0.0 and s.max() <= 1.0
    # Fresh rollout seeds for the test split.
    assert not np.array_equal(ds.train.obs[:, :10], ds.test.obs[:, :10])
    # The vaults are plain flashbax vaults.
    from flashbax.vault import Vault
    exp = Vault("train", rel_dir=out, vault_uid="vault").read().experience
    np.testing.assert_array_equal(np.asarray(exp["state"]), ds.train.state)


def test_obs_state_action_alignment(collected):
    """o^t is computed from s^t, and s^{t+1} follows from (s^t, a^t) unless an episode starts."""
    tr = collected[1].train
    p, t = tr.state[..., :N] * P, tr.state[..., N] * LIMIT
    np.testing.assert_allclose(tr.obs[..., 0], tr.state[..., :N], atol=1e-6)
    np.testing.assert_allclose(tr.obs[..., 1], np.repeat(tr.state[..., N:], N, -1), atol=1e-6)
    nxt = np.clip(p[:, :-1] + np.array([0, 1, -1])[tr.action[:, :-1]], 0, P)
    cont = ~tr.first[:, 1:]
    np.testing.assert_allclose(p[:, 1:][cont], nxt[cont], atol=1e-5)
    np.testing.assert_allclose(t[:, 1:][cont], (t[:, :-1] + 1)[cont], atol=1e-5)
    assert np.all(t[tr.first] == 0)             # episodes start at t = 0 ...
    assert np.all(t[~tr.first] > 0)             # ... and only there
    # The burn-in spreads the envs over their episodes (not all at t = 0 when samples start).
    assert len(np.unique(t[:, tr.context])) > 1


def test_tau_matches_online_encoder(collected):
    tr = collected[1].train
    spec = collected[1].history_spec
    online = jax.vmap(lambda o, a, f: hist.encode_sequence(spec, o, a, f))(
        tr.obs, tr.action, tr.first)                                  # [E, S, N, dim]
    e, t = tr.index()
    np.testing.assert_array_equal(tr.tau(), np.asarray(online)[e, t])
    # A shorter window from the same data is the prefix of the longer one.
    tau1 = tr.tau(history=1)
    np.testing.assert_array_equal(tau1, tr.tau()[..., : N + 6])
    with pytest.raises(data.DatasetError, match="history"):
        tr.tau(history=H + 1)
    rows = tr.agent_rows()
    assert rows["tau"].shape == (SAMPLES * N, spec.dim) and rows["state"].shape == (SAMPLES * N, N + 1)
    np.testing.assert_array_equal(rows["tau"][1], tr.tau()[0, 1])
    np.testing.assert_array_equal(rows["agent"][:4], [0, 1, 0, 1])


def test_missing_dataset_errors(tmp_path, collected):
    with pytest.raises(data.DatasetNotFoundError, match="jaxdiff collect"):
        data.load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DatasetNotFoundError, match="not a jaxdiff dataset"):
        data.load_dataset(tmp_path / "empty")
    bad = tmp_path / "bad"
    shutil.copytree(collected[0], bad)
    meta = json.loads((bad / "dataset.json").read_text())
    (bad / "dataset.json").write_text(json.dumps(dict(meta, complete=False)))
    with pytest.raises(data.DatasetError, match="incomplete"):
        data.load_dataset(bad)
    (bad / "dataset.json").write_text("{not json")
    with pytest.raises(data.DatasetError, match="overwrite=true"):
        data.load_dataset(bad)
    (bad / "dataset.json").write_text(json.dumps(meta))
    shutil.rmtree(bad / "test")
    with pytest.raises(data.DatasetError, match="`test` split"):
        data.load_dataset(bad)


def test_existing_dataset_is_not_overwritten(collected):
    env = EpisodeStats(Walk())
    with pytest.raises(data.DatasetError, match="overwrite=true"):
        col.collect(env, col.random_policy(env), collected[0], samples=8, test_samples=8,
                    num_envs=8, progress=False)


def test_cli_usage_errors(capsys, tmp_path):
    assert cli.main(["collect"]) == 2
    assert "run_dir" in capsys.readouterr().err
    assert cli.main(["collect", "env=test_walk", "samples=abc"]) == 2
    assert "whole number" in capsys.readouterr().err
    assert cli.main(["collect", "env=test_walk", "sampels=10"]) == 2
    assert "Did you mean `samples`" in capsys.readouterr().err
    assert cli.main(["collect", f"run_dir={tmp_path}"]) == 2
    assert "not a jaxdiff run directory" in capsys.readouterr().err
    assert col.parse_count("samples", "100K") == 100_000
    assert col.parse_count("samples", "1e5") == 100_000
    assert col.parse_count("samples", "0.5M") == 500_000


@pytest.mark.slow
def test_collect_from_trained_run(tmp_path, capsys):
    """`jaxdiff train` then `jaxdiff collect run_dir=...` (MAPPO, tiny budget)."""
    from jaxdiff.run import runner
    spec = runner.RunSpec(algo="mappo", env="test_walk", env_kwargs={},
                          algo_overrides=dict(TINY, recurrent=False), seeds=1,
                          total_steps=64, chunks=1, eval_episodes=2)
    runner.train(spec, str(tmp_path / "run"), progress=False)
    out = tmp_path / "ds"
    rc = cli.main(["collect", f"run_dir={tmp_path / 'run'}", "samples=40", "test_samples=16",
                   "num_envs=8", "history=2", "chunk_steps=4", f"out={out}", "progress=false"])
    assert rc == 0, capsys.readouterr().err
    ds = data.load_dataset(out)
    assert ds.meta["policy"] == "run" and ds.meta["policy_algo"] == "mappo"
    assert ds.meta["policy_run_dir"] == str(tmp_path / "run")
    assert ds.train.tau().shape == (40, N, N + 2 * 6)


@pytest.mark.slow
def test_cli_collect_random_smax(tmp_path):
    out = tmp_path / "zerg"
    assert cli.main(["collect", "env=smax_zerg_5v5", "env.sight_range=5", "samples=64",
                     "test_samples=16", "num_envs=8", "history=2", "burn_in=4",
                     "chunk_steps=4", f"out={out}", "progress=false"]) == 0
    ds = data.load_dataset(out)
    assert ds.meta["env_kwargs"]["sight_range"] == 5
    s = ds.train.states()
    assert s.shape == (64, 100) and s.min() >= 0 and s.max() <= 1
    assert ds.train.tau().shape == (64, 5, 5 + 2 * 137)
    # s^t is the state o^t came from: each ally's own-feature block of its observation
    # (health, x/32, y/32, cooldown, type one-hot) equals its unit block of the state.
    own = ds.train.observations()[..., -10:].copy()
    own[..., 1:3] = np.clip(own[..., 1:3], 0, 1)
    np.testing.assert_allclose(own, s.reshape(64, 10, 10)[:, :5], atol=1e-6)
    np.testing.assert_array_equal(ds.train.alive_mask(), own[..., 4:].sum(-1) > 0)
