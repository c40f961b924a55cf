"""Sensor-network generators of spec-state-diffusion §5.1/5.2 (features F1, F2), and the
registered reset/step envs built on them (sensor_2x2_co, sensor_2x2_nonco, sensor_5x5)."""
import itertools
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from jaxdiff import envs
from jaxdiff.envs.sensor_grid import (
    SensorGrid,
    lattice_coverage,
    sensor_2x2,
    sensor_5x5,
)


def brute_force_posterior(env: SensorGrid, agent: int, obs_i) -> np.ndarray:
    """p(s | o_i) by enumerating every (state, detection pattern) with its probability."""
    states = env.states()
    cov = env.coverage[agent]
    post = np.zeros(len(states))
    for k, s in enumerate(states):
        for detect in itertools.product([0, 1], repeat=env.n_slots):
            prob = 1.0 / len(states)
            o = np.zeros(env.n_slots)
            for slot, area in enumerate(cov):
                p = env.p_detect[area] if area >= 0 else 0.0
                prob *= p if detect[slot] else 1.0 - p
                o[slot] = s[area] * detect[slot] if area >= 0 else 0.0
            if prob > 0 and np.array_equal(o, obs_i):
                post[k] += prob
    return post / post.sum()


def test_2x2_geometry_matches_the_paper():
    env = sensor_2x2()
    assert (env.n_agents, env.n_areas, env.state_dim, env.tau_dim("raw")) == (4, 4, 4, 6)
    np.testing.assert_array_equal(env.coverage_matrix.sum(0), [2, 2, 2, 2])
    s = jnp.array([1.0, 0, 0, 0])  # target in Area 1
    obs = env.observe(jax.random.key(0), s)
    np.testing.assert_array_equal(obs, [[1, 0], [1, 0], [0, 0], [0, 0]])
    # Agent 3 cannot tell Area 1 from Area 4, Agent 4 Area 1 from Area 2.
    np.testing.assert_allclose(env.posterior(2, obs[2]), [0.5, 0, 0, 0.5], atol=1e-6)
    np.testing.assert_allclose(env.posterior(3, obs[3]), [0.5, 0.5, 0, 0], atol=1e-6)
    np.testing.assert_allclose(env.posterior(0, obs[0]), [1, 0, 0, 0], atol=1e-6)
    assert env.collectively_observable


def test_2x2_co_joint_history_identifies_every_state():
    env = sensor_2x2()
    for s in env.states():
        obs = env.observe(jax.random.key(1), jnp.asarray(s))
        np.testing.assert_allclose(env.joint_posterior(obs), s, atol=1e-6)


def test_2x2_nonco_posteriors_reproduce_the_033_label():
    env = sensor_2x2(collectively_observable=False)
    assert not env.collectively_observable
    z = jnp.zeros(2)
    np.testing.assert_allclose(env.posterior(0, z), [1 / 6, 1 / 6, 1 / 3, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(env.posterior(1, z), [0.2, 0.4, 0.4, 0.0], atol=1e-6)
    np.testing.assert_allclose(env.posterior(2, z), [0.4, 0.2, 0.0, 0.4], atol=1e-6)
    np.testing.assert_allclose(env.posterior(3, z), [0.5, 0.5, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(env.joint_posterior(jnp.zeros((4, 2))), [0.5, 0.5, 0, 0], atol=1e-6)


@pytest.mark.parametrize("co", [True, False])
def test_2x2_posterior_matches_brute_force_for_every_observation(co):
    env = sensor_2x2(co)
    for agent in range(4):
        for o in itertools.product([0.0, 1.0], repeat=2):
            if sum(o) == 2:  # one target cannot light both of an agent's areas
                continue
            post = np.asarray(env.posterior(agent, jnp.array(o)))
            np.testing.assert_allclose(post.sum(), 1.0, atol=1e-6)
            np.testing.assert_allclose(post, brute_force_posterior(env, agent, np.array(o)), atol=1e-6)


def test_noisy_lattice_posterior_matches_brute_force():
    # 3x3 edge lattice, 2 targets, area-dependent detection: 12 areas, 66 states, 4 slots.
    coverage, n_areas = lattice_coverage(3, 3)
    p = np.linspace(0.4, 1.0, n_areas).astype(np.float32)
    env = SensorGrid("noisy_3x3", coverage, n_areas=n_areas, n_targets=2, p_detect=p)
    assert n_areas == 12 and env.states().shape == (66, 12)
    rng = np.random.default_rng(0)
    for agent in (0, 4, 7):  # corner, centre, edge sensor
        for _ in range(3):
            s = env.states()[rng.integers(66)]
            obs = np.asarray(env.observe(jax.random.key(rng.integers(1 << 30)), jnp.asarray(s)))[agent]
            post = np.asarray(env.posterior(agent, jnp.asarray(obs)))
            np.testing.assert_allclose(post.sum(), 1.0, atol=1e-5)
            np.testing.assert_allclose(post, brute_force_posterior(env, agent, obs), atol=1e-5)


def test_sampler_frequencies_match_the_exact_posterior():
    env = sensor_2x2(collectively_observable=False)
    data = jax.jit(lambda k: env.sample_dataset(k, 40000))(jax.random.key(2))
    s, obs = np.asarray(data["s"]), np.asarray(data["obs"])
    pick = np.all(obs[:, 0] == 0, axis=-1)  # agent 1 sees 00
    freq = s[pick].mean(0)
    np.testing.assert_allclose(freq, [1 / 6, 1 / 6, 1 / 3, 1 / 3], atol=0.015)


def test_5x5_lattice_is_co_with_two_covering_sensors_per_area():
    env = sensor_5x5()
    assert (env.n_agents, env.n_areas, env.n_slots) == (25, 40, 4)
    assert env.states().shape == (780, 40)
    np.testing.assert_array_equal(env.coverage_matrix.sum(0), np.full(40, 2))
    slots = (env.coverage >= 0).sum(1).reshape(5, 5)
    assert slots[1:4, 1:4].min() == 4 and slots[0, 0] == 2 and slots[0, 2] == 3
    data = jax.jit(lambda k: env.sample_dataset(k, 1000))(jax.random.key(3))
    chex.assert_shape(data["s"], (1000, 40))
    chex.assert_shape(data["obs"], (1000, 25, 4))
    np.testing.assert_array_equal(np.asarray(data["s"]).sum(1), 2.0)
    joint = jax.jit(jax.vmap(env.joint_posterior))(data["obs"])
    states = env.states()
    np.testing.assert_allclose(np.asarray(joint) @ states, data["s"], atol=1e-5)  # CO
    s = np.asarray(data["s"])
    assert abs(np.trace(np.cov(s.T, bias=True)) - 1.90) < 0.05


def test_5x5_encodings():
    env = sensor_5x5()
    assert env.tau_dim("raw") == 29 and env.tau_dim("area") == 65
    s = jnp.zeros(40).at[jnp.array([0, 25])].set(1.0)  # h-edge (0,0)-(0,1), v-edge (1,0)-(2,0)
    obs = env.observe(jax.random.key(0), s)
    raw, area = env.encode(obs, "raw"), env.encode(obs, "area")
    chex.assert_shape(raw, (25, 29))
    chex.assert_shape(area, (25, 65))
    np.testing.assert_array_equal(raw[:, :25], np.eye(25))
    np.testing.assert_array_equal(raw[0, 25:], [0, 0, 0, 1])  # sensor (0,0): right edge lit
    view = np.asarray(area[:, 25:])
    np.testing.assert_array_equal((view != 0), env.coverage_matrix)  # 0 where not scanned
    np.testing.assert_array_equal(np.flatnonzero(view == 1), [0 * 40 + 0, 1 * 40 + 0, 5 * 40 + 25, 10 * 40 + 25])
    rows = env.rows({"s": s[None], "obs": obs[None]}, "area")
    chex.assert_shape(rows["tau"], (25, 65))
    np.testing.assert_array_equal(rows["agent"], np.arange(25))
    with pytest.raises(ValueError, match="encoding"):
        env.encode(obs, "pixels")


# ------------------------------------------------------------------ registered reset/step envs
ENV_SHAPES = {  # name: (n_agents, obs_dim, state_dim, n_targets)
    "sensor_2x2_co": (4, 2, 4, 1),
    "sensor_2x2_nonco": (4, 2, 4, 1),
    "sensor_5x5": (25, 4, 40, 2),
}
INFO_KEYS = {"returned_episode", "episode_return", "episode_length", "won", "terminated"}


def noop(env):
    return jnp.zeros((env.spec.n_agents,), jnp.int32)


@pytest.mark.parametrize("name", sorted(ENV_SHAPES))
def test_sensor_env_spec_and_shapes(name):
    n, obs_dim, state_dim, _ = ENV_SHAPES[name]
    env = envs.make(name)
    spec = env.spec
    assert (spec.name, spec.n_agents, spec.obs_dim, spec.state_dim) == (name, n, obs_dim, state_dim)
    assert spec.discrete and spec.act_dim == 1 and spec.act_sizes == (1,) * n
    assert spec.obs_sizes == (obs_dim,) * n and not spec.heterogeneous
    assert spec.max_steps == 5 and spec.shared_reward and not spec.has_win
    obs, state = env.reset(jax.random.key(0))
    chex.assert_shape(obs, (n, obs_dim))
    chex.assert_type(obs, jnp.float32)
    chex.assert_shape(env.global_state(state), (state_dim,))
    mask = env.action_mask(state)
    chex.assert_shape(mask, (n, 1))
    assert mask.dtype == jnp.bool_ and bool(mask.all())
    obs, state, reward, done, info = env.step(jax.random.key(1), state, noop(env))
    chex.assert_shape(obs, (n, obs_dim))
    chex.assert_shape(reward, (n,))
    chex.assert_shape(done, (n,))
    assert done.dtype == jnp.bool_ and set(info) == INFO_KEYS
    assert all(jnp.shape(v) == () for v in info.values())
    np.testing.assert_array_equal(reward, np.zeros(n))


@pytest.mark.parametrize("name", sorted(ENV_SHAPES))
@pytest.mark.parametrize("encoding", ["reading", "raw", "area"])
def test_sensor_env_reset_is_the_generators_sample(name, encoding):
    env = envs.make(name, obs_encoding=encoding)
    grid = env.grid
    assert env.spec.obs_dim == (grid.n_slots if encoding == "reading" else grid.tau_dim(encoding))
    for k in range(5):
        key = jax.random.key(10 + k)
        obs, state = env.reset(key)
        s, readings = grid.sample(key)
        np.testing.assert_array_equal(env.global_state(state), s)
        expected = readings if encoding == "reading" else grid.encode(readings, encoding)
        np.testing.assert_array_equal(obs, expected)


def rollout(env, key, steps):
    """Jitted rollout: per step (obs, global state, done, info, the step key)."""

    def body(carry, k):
        obs, state = carry
        obs2, state2, _, done, info = env.step(k, state, noop(env))
        return (obs2, state2), (obs, env.global_state(state), obs2, env.global_state(state2), done, info, k)

    k0, k1 = jax.random.split(key)
    init = env.reset(k0)
    return jax.jit(lambda ks: jax.lax.scan(body, init, ks)[1])(jax.random.split(k1, steps))


@pytest.mark.parametrize("name", sorted(ENV_SHAPES))
def test_sensor_env_targets_fixed_per_episode_and_auto_reset(name):
    env = envs.make(name, max_steps=3)
    grid = env.grid
    _, s, obs2, s2, done, info, keys = rollout(env, jax.random.key(3), 12)
    done = np.asarray(done)
    ended = done[:, 0]
    assert (done == done[:, :1]).all()  # episode-level
    np.testing.assert_array_equal(np.flatnonzero(ended), [2, 5, 8, 11])  # every 3 steps
    ended_info = np.asarray(info["returned_episode"])
    np.testing.assert_array_equal(ended_info, ended)
    np.testing.assert_array_equal(np.asarray(info["episode_length"])[ended], 3)
    np.testing.assert_array_equal(np.asarray(info["episode_return"]), 0.0)
    assert not np.asarray(info["terminated"]).any() and not np.asarray(info["won"]).any()
    for t in range(12):
        key_obs, key_reset = jax.random.split(keys[t])
        if ended[t]:  # auto-reset: the new episode is reset(key_reset)
            r_obs, r_state = env.reset(key_reset)
            np.testing.assert_array_equal(obs2[t], r_obs)
            np.testing.assert_array_equal(s2[t], env.global_state(r_state))
        else:  # same targets, fresh looks at them
            np.testing.assert_array_equal(s2[t], s[t])
            np.testing.assert_array_equal(obs2[t], grid.observe(key_obs, s[t]))


@pytest.mark.parametrize("name", sorted(ENV_SHAPES))
def test_sensor_env_observations_are_consistent_with_the_state(name):
    # Independent of key plumbing: each reading is possible given the global state (exact
    # likelihoods of the generator), and in the CO networks the joint posterior is the state.
    env = envs.make(name, max_steps=2)
    grid = env.grid
    obs, s, *_ = rollout(env, jax.random.key(4), 64)
    states = grid.states()
    n_targets = ENV_SHAPES[name][3]
    np.testing.assert_array_equal(np.asarray(s).sum(-1), n_targets)
    lik = jax.jit(lambda o, st: jax.vmap(lambda i, oi: grid.log_likelihood(i, oi, st[None]))(
        jnp.arange(grid.n_agents), o))
    for t in range(0, 64, 4):
        ll = lik(obs[t], s[t])
        assert np.isfinite(np.asarray(ll)).all()
        if grid.collectively_observable:
            np.testing.assert_allclose(np.asarray(grid.joint_posterior(obs[t])) @ states, s[t], atol=1e-5)


def test_sensor_env_state_frequencies_and_nonco_failures():
    env = envs.make("sensor_2x2_nonco", max_steps=1)
    obs, states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(5), 4000))
    s = np.asarray(jax.vmap(env.global_state)(states))
    np.testing.assert_allclose(s.mean(0), 0.25, atol=0.03)  # one target, uniform over 4 areas
    # Target in Area 1: Agents 1 and 2 cover it and each misses it half the time.
    in_1 = s[:, 0] == 1
    seen = np.asarray(obs)[in_1][:, :2, 0]  # bit 0 of A1 and A2 is Area 1
    np.testing.assert_allclose(seen.mean(0), 0.5, atol=0.06)


@pytest.mark.parametrize("name", sorted(ENV_SHAPES))
def test_sensor_env_jit_matches_no_jit(name):
    env = envs.make(name)
    key = jax.random.key(6)
    obs, state = env.reset(key)
    obs_j, state_j = jax.jit(env.reset)(key)
    chex.assert_trees_all_equal((obs, state), (obs_j, state_j))
    for k in range(6):  # through an auto-reset (max_steps 5)
        step_key = jax.random.fold_in(key, k)
        out = env.step(step_key, state, noop(env))
        out_j = jax.jit(env.step)(step_key, state, noop(env))
        chex.assert_trees_all_equal(out, out_j)
        state = out[1]


def test_sensor_env_options_and_registry_messages():
    assert {"sensor_2x2_co", "sensor_2x2_nonco", "sensor_5x5"} <= set(envs.names())
    with pytest.raises(envs.UnknownEnvError) as exc:
        envs.make("nonexistent")
    assert "sensor_2x2_co" in str(exc.value) and "sensor_5x5" in str(exc.value)
    for name, kw, key in (("sensor_2x2_co", {"max_steps": 0}, "max_steps=0"),
                          ("sensor_5x5", {"obs_encoding": "pixels"}, "obs_encoding='pixels'"),
                          ("sensor_2x2_nonco", {"miss_prob": 1.5}, "miss_prob=1.5"),
                          ("sensor_5x5", {"n_targets": 0}, "n_targets=0")):
        with pytest.raises(ValueError) as exc:
            envs.make(name, **kw)
        assert key in str(exc.value) and "allowed" in str(exc.value)
    # Options reach the generator: 3 targets on a 4x4 lattice, non-CO miss probability.
    env = envs.make("sensor_5x5", n_targets=3, size=4)
    assert (env.spec.n_agents, env.spec.state_dim) == (16, 24)
    assert float(env.global_state(env.reset(jax.random.key(0))[1]).sum()) == 3.0
    assert float(envs.make("sensor_2x2_nonco", miss_prob=0.2).grid.p_detect[0]) == pytest.approx(0.8)
    # Hydra configs carry the factories' real defaults.
    root = pathlib.Path(__file__).resolve().parents[2]
    for name in ENV_SHAPES:
        cfg = yaml.safe_load((root / "configs" / "env" / f"{name}.yaml").read_text())
        assert cfg.pop("name") == name
        assert cfg == envs.options(name)
