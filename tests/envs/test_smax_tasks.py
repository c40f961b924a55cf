"""SMACv2-style SMAX race scenarios: registry, unit sets per race, sight-range override,
reset/step, and the [0, 1] state normaliser (spec F3, F4).

Compiles are the cost on CPU, so one jitted rollout (reset + a few random steps, vmapped) of
zerg at sight 9 is shared by the tests; the other checks use small functions."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff.envs as envs
from jaxdiff.envs import smax_tasks

K, STEPS = 64, 6  # parallel episodes, steps of the shared rollout


@functools.cache
def make(race="zerg", sight_range=9.0):
    return envs.make(f"smax_{race}_5v5", sight_range=sight_range)


@functools.cache
def rollout():
    """Zerg, sight 9: K resets then STEPS random (masked) steps; returns numpy arrays."""
    env = make()

    def one(key):
        k0, key = jax.random.split(key)
        obs, state = env.reset(k0)

        def body(c, k):
            obs, state = c
            ka, ks = jax.random.split(k)
            mask = env.action_mask(state)
            act = jax.random.categorical(ka, jnp.where(mask, 0.0, -jnp.inf)).astype(jnp.int32)
            s = smax_tasks.normalised_state(env, state)
            obs2, state2, rew, done, _ = env.step(ks, state, act)
            return (obs2, state2), (obs, s, state.env_state.state.unit_alive, rew, done)

        _, out = jax.lax.scan(body, (obs, state), jax.random.split(key, STEPS))
        return state, out

    state0, (obs, s, alive, rew, done) = jax.jit(jax.vmap(one))(
        jax.random.split(jax.random.PRNGKey(0), K))
    return jax.device_get((state0, obs, s, alive, rew, done))


def test_registered_with_specs_and_yaml():
    from jaxdiff.config import CONFIG_DIR

    for race in smax_tasks.RACES:
        name = f"smax_{race}_5v5"
        assert name in envs.names()
        assert "sight_range" in envs.options(name)
        assert (CONFIG_DIR / "env" / f"{name}.yaml").exists()
        spec = make(race).spec
        assert (spec.n_agents, spec.obs_dim, spec.act_dim) == (5, 127, 10)
        assert spec.discrete and spec.has_win and spec.max_steps == 100
        assert spec.state_dim == 120  # JaxMARL world state: the critic input, as on every map
        assert smax_tasks.normalised_state_dim(make(race)) == 100
        jm = make(race).unwrapped.jaxmarl_env
        assert jm.smacv2_position_generation and jm.smacv2_unit_type_generation


def test_bad_sight_range_is_a_clear_error():
    with pytest.raises(ValueError, match="sight_range"):
        envs.make("smax_zerg_5v5", sight_range=-1)


@pytest.mark.parametrize("race", smax_tasks.RACES)
def test_unit_types_in_race_pair_and_mirrored(race):
    gen = make(race).unwrapped.jaxmarl_env._env.unit_type_generator
    types = np.asarray(jax.jit(jax.vmap(gen.generate))(jax.random.split(jax.random.PRNGKey(1), 1000)))
    assert types.shape == (1000, 10)
    assert set(np.unique(types)) == set(smax_tasks.RACE_UNIT_TYPES[race])
    np.testing.assert_array_equal(types[:, :5], types[:, 5:])  # enemies mirror the allies
    frac = np.mean(types[:, :5] == smax_tasks.RACE_UNIT_TYPES[race][0])
    assert 0.45 < frac < 0.55  # 0.45 / 0.45 renormalised to 0.5 / 0.5


def test_reset_uses_race_generator_and_step_runs():
    state0, obs, _, _, rew, done = rollout()
    types = state0.env_state.state.unit_types
    assert set(np.unique(types)) <= set(smax_tasks.RACE_UNIT_TYPES["zerg"])
    assert obs.shape == (K, STEPS, 5, 127) and rew.shape == (K, STEPS, 5)
    assert np.isfinite(obs).all() and np.isfinite(rew).all()
    assert done.dtype == bool


def test_normalised_state_in_unit_interval_dead_units_zero():
    _, _, s, alive, _, _ = rollout()
    assert s.shape == (K, STEPS, 100)
    assert s.min() >= 0.0 and s.max() <= 1.0
    units = s.reshape(K, STEPS, 10, 10)
    assert np.all(units[~alive] == 0)
    live = units[alive]
    np.testing.assert_array_equal(live[:, 4:].sum(-1), 1.0)   # one-hot type
    assert np.all(live[:, 4:8] == 0)                           # zerg: only types 4, 5
    assert live[:, 0].min() > 0                                 # alive -> positive health


def test_normaliser_bounds_on_extreme_raw_state():
    """Out-of-map positions and negative cooldowns (both happen in SMAX) are clipped."""
    env = make()
    state0 = rollout()[0]
    raw = jax.tree.map(lambda x: jnp.asarray(x[0]), state0.env_state.state)
    raw = raw.replace(unit_positions=raw.unit_positions.at[0].set(jnp.array([-1.0, 40.0])),
                      unit_weapon_cooldowns=raw.unit_weapon_cooldowns.at[1].set(-3.0)
                      .at[2].set(50.0))
    s = np.asarray(smax_tasks.normalise_smax_state(env.unwrapped.jaxmarl_env, raw)).reshape(10, 10)
    np.testing.assert_array_equal(s[0, 1:3], [0.0, 1.0])
    assert s[1, 3] == 0.0 and s[2, 3] == 1.0


def test_sight_range_override_takes_effect():
    """The same states observed at sight 5 show fewer units, scaled by 1/5 instead of 1/9."""
    assert np.all(np.asarray(make(sight_range=5.0).unwrapped.jaxmarl_env.unit_type_sight_ranges) == 5)
    assert np.all(np.asarray(make().unwrapped.jaxmarl_env.unit_type_sight_ranges) == 9)
    state0 = rollout()[0]

    def visible(env):
        get = jax.jit(jax.vmap(lambda st: env.unwrapped._stack_obs(
            env.unwrapped.jaxmarl_env.get_obs(st))))
        obs = np.asarray(get(state0.env_state))                  # [K, 5, 127]
        other = obs[..., :-10].reshape(K, 5, 9, 13)              # the 9 other units
        return other, (other[..., 0] > 0).sum(-1)

    other9, vis9 = visible(make())
    other5, vis5 = visible(make(sight_range=5.0))
    assert vis5.mean() < vis9.mean()
    assert np.all(vis5 <= vis9)
    both = (other5[..., 0] > 0) & (other9[..., 0] > 0)
    np.testing.assert_allclose(other5[..., 1:3][both] * 5, other9[..., 1:3][both] * 9, atol=1e-5)
