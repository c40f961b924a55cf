"""Sensor-network generators of spec-state-diffusion §5.1/5.2 (features F1, F2)."""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.envs.sensor_grid import SensorGrid, lattice_coverage, sensor_2x2, sensor_5x5


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
