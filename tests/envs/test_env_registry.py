"""Registry: every cheap registered env honours its spec on a real rollout, error messages
(close matches, options), option validation, Hydra configs, lazy imports."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import jaxdiff.envs as envs
from jaxdiff.envs.base import EnvSpec

ROOT = pathlib.Path(__file__).resolve().parents[2]

REQUIRED = [
    "mpe_simple_spread", "mpe_simple_reference", "mpe_simple_speaker_listener", "mpe_simple_tag",
    "smax_3m", "smax_2s3z", "smax_3s5z", "smax_5m_vs_6m", "smax_10m_vs_11m", "smax_3s_vs_5z",
    "smax_6h_vs_8z", "smax_3s5z_vs_3s6z", "smax_27m_vs_30m", "smax_smacv2_5_units",
    "smax_smacv2_10_units",
    "mabrax_ant_4x2", "mabrax_halfcheetah_6x1", "mabrax_hopper_3x1", "mabrax_walker2d_2x3",
    "mabrax_humanoid_9|8", "mabrax_humanoid_9_8", "mabrax_ant_2x4", "mabrax_ant_8x1",
    "mabrax_halfcheetah_2x3", "mabrax_walker2d_6x1", "mabrax_humanoid_17x1",
    "mabrax_humanoidstandup_17x1",
]


# Families whose every name is cheap to build and step on 2 CPU cores; SMAX and MABrax (seconds
# to tens of seconds per map) are represented by one name each, MABrax only under `-m slow`.
CHEAP_PREFIXES = ("mpe_", "sensor_", "coordination_game", "ddpl_toy_", "haqo_")
HEAVY = [pytest.param("smax_3m", {}, id="smax_3m"),
         pytest.param("mabrax_hopper_3x1", {}, id="mabrax_hopper_3x1", marks=pytest.mark.slow)]


def test_required_names_registered():
    missing = [n for n in REQUIRED if n not in envs.names()]
    assert not missing, missing


def _cases():
    cheap = [n for n in envs.names() if n.startswith(CHEAP_PREFIXES)]
    return ([pytest.param(n, {}, id=n) for n in cheap]
            + [pytest.param("mpe_simple_spread", {"action_type": "continuous"},
                            id="mpe_simple_spread-continuous")] + HEAVY)


def _random_actions(key, spec, mask):
    if spec.discrete:   # uniform over the available actions
        return jax.random.categorical(key, jnp.where(mask, 0.0, -jnp.inf)).astype(jnp.int32)
    low = jnp.broadcast_to(jnp.asarray(spec.action_low, jnp.float32), (spec.act_dim,))
    high = jnp.broadcast_to(jnp.asarray(spec.action_high, jnp.float32), (spec.act_dim,))
    return jax.random.uniform(key, (spec.n_agents, spec.act_dim), minval=low, maxval=high)


@pytest.mark.parametrize("name,kw", _cases())
def test_spec_matches_a_rollout(name, kw):
    """`make(name)` gives an env whose reset/step/global_state/action_mask have the shapes and
    dtypes its spec announces, whose padding is zero and masks cover exactly the true action
    counts, and whose first episode ends by `max_steps` with the EpisodeStats return equal to
    the summed (team) rewards of the steps."""
    env = envs.make(name, **kw)
    spec = env.spec
    n, T = spec.n_agents, spec.max_steps

    @jax.jit
    def rollout(key):
        k0, key = jax.random.split(key)
        obs0, state = env.reset(k0)
        first = (env.action_mask(state), env.global_state(state))

        def body(state, k):
            k_a, k_s = jax.random.split(k)
            mask = env.action_mask(state)
            actions = _random_actions(k_a, spec, mask)
            obs, state, reward, done, info = env.step(k_s, state, actions)
            return state, (obs, reward, done, info, mask, actions)

        _, out = jax.lax.scan(body, state, jax.random.split(key, T))
        return obs0, first, out

    obs0, (mask0, gstate0), (obs, reward, done, info, masks, actions) = jax.device_get(
        rollout(jax.random.key(0)))
    assert obs0.shape == (n, spec.obs_dim) and obs0.dtype == np.float32
    assert obs.shape == (T, n, spec.obs_dim) and np.isfinite(obs).all() and np.isfinite(obs0).all()
    assert gstate0.shape == (spec.state_dim,) and np.isfinite(gstate0).all()
    assert mask0.shape == (n, spec.act_dim) and mask0.dtype == np.bool_
    assert reward.shape == (T, n) and reward.dtype == np.float32 and np.isfinite(reward).all()
    assert done.shape == (T, n) and done.dtype == np.bool_
    assert len(spec.obs_sizes) == n and len(spec.act_sizes) == n
    for i in range(n):   # heterogeneous agents: zero padding beyond each agent's true sizes
        assert not obs0[i, spec.obs_sizes[i]:].any() and not obs[:, i, spec.obs_sizes[i]:].any()
        if spec.discrete:
            assert not masks[:, i, spec.act_sizes[i]:].any()
            assert masks[:, i, :spec.act_sizes[i]].any(-1).all()   # something is available
    if spec.discrete:     # the random policy only ever took available actions
        taken = np.take_along_axis(masks, actions[..., None].astype(int), -1)[..., 0]
        assert taken.all()
    # episode-level done, shared team rewards
    np.testing.assert_array_equal(done, np.broadcast_to(done[:, :1], done.shape))
    if spec.shared_reward:
        np.testing.assert_allclose(reward, np.broadcast_to(reward[:, :1], reward.shape))
    for k in ("won", "terminated", "returned_episode", "episode_return", "episode_length"):
        assert info[k].shape == (T,), k
    # the first episode ends within max_steps; early ends are terminations
    assert done[:, 0].any(), f"{name}: no episode end within max_steps={T}"
    t_end = int(np.argmax(done[:, 0]))
    assert info["returned_episode"][t_end] and not info["returned_episode"][:t_end].any()
    assert info["episode_length"][t_end] == t_end + 1
    if t_end + 1 < T:
        assert info["terminated"][t_end]
    team = reward.mean(1) if spec.shared_reward else reward.sum(1)
    np.testing.assert_allclose(info["episode_return"][t_end], team[:t_end + 1].sum(),
                               rtol=1e-5, atol=1e-5)
    if not spec.has_win:
        assert not info["won"].any()


@pytest.mark.parametrize("typo,meant", [
    ("mpe_simple_sprad", "mpe_simple_spread"), ("smax_3n", "smax_3m"),
    ("mabrax_ant_4x3", "mabrax_ant_4x2"), ("sensor_5x4", "sensor_5x5"),
    ("coordination", "coordination_game"), ("MPE_SIMPLE_TAG", None),
])
def test_unknown_name_suggests_the_close_match_and_lists_valid_names(typo, meant):
    with pytest.raises(envs.UnknownEnvError) as exc:
        envs.make(typo)
    msg = str(exc.value)
    if meant is None:
        assert "Did you mean" not in msg
    else:
        assert f"Did you mean {meant!r}?" in msg
    listed = msg.split("Valid names: ", 1)[1].split(", ")
    assert set(listed) == set(envs.names())


def test_unknown_option_names_key_value_and_allowed():
    with pytest.raises(ValueError) as exc:
        envs.make("mpe_simple_spread", actoin_type="discrete")
    msg = str(exc.value)
    assert "actoin_type" in msg and "'discrete'" in msg
    assert "action_type" in msg and "max_steps" in msg


@pytest.mark.parametrize("name", ["mpe_simple_spread", "smax_3m"])
def test_bad_action_type(name):
    with pytest.raises(ValueError) as exc:
        envs.make(name, action_type="box")
    msg = str(exc.value)
    assert "action_type" in msg and "'box'" in msg and "'discrete'" in msg and "'continuous'" in msg


def test_bad_max_steps():
    with pytest.raises(ValueError, match="max_steps=0"):
        envs.make("mpe_simple_spread", max_steps=0)


def test_mabrax_rejects_discrete():
    with pytest.raises(ValueError) as exc:
        envs.make("mabrax_ant_4x2", action_type="discrete")
    assert "action_type" in str(exc.value) and "'continuous'" in str(exc.value)


def test_register_custom_env_and_overwrite_guard():
    class Toy(envs.Env):
        def __init__(self, size=2):
            self.spec = EnvSpec(
                name="toy", n_agents=1, obs_dim=size, obs_sizes=(size,), discrete=True,
                act_dim=2, act_sizes=(2,), action_low=0.0, action_high=0.0, state_dim=size,
                max_steps=3, shared_reward=True, has_win=False,
            )

    def factory(*, size=2):
        return Toy(size)

    envs.register("toy_for_test", factory)
    try:
        env = envs.make("toy_for_test", size=4)
        assert env.spec.obs_dim == 4 and env.unwrapped.spec.name == "toy"
        with pytest.raises(ValueError, match="already registered"):
            envs.register("toy_for_test", lambda: None)
        with pytest.raises(ValueError, match="sizee"):
            envs.make("toy_for_test", sizee=3)
    finally:
        envs.registry._REGISTRY.pop("toy_for_test")


def test_spec_is_hashable_static_pytree():
    import jax

    spec = EnvSpec(name="x", n_agents=2, obs_dim=3, obs_sizes=(3, 2), discrete=True, act_dim=4,
                   act_sizes=(4, 4), action_low=0.0, action_high=0.0, state_dim=6, max_steps=5,
                   shared_reward=False, has_win=False)
    assert hash(spec) == hash(spec.replace())
    assert jax.tree.leaves(spec) == []
    assert spec.heterogeneous


def test_hydra_configs_match_registry():
    files = sorted((ROOT / "configs" / "env").glob("*.yaml"))
    seen = set()
    for f in files:
        cfg = yaml.safe_load(f.read_text())
        name = cfg.pop("name")
        assert name in envs.names(), f
        opts = envs.options(name)
        for k, v in cfg.items():
            assert k in opts, (f, k)
            assert opts[k] == v, (f, k, v, opts[k])  # configs carry the real defaults
        seen.add(name.replace("|", "_"))
    missing = {n.replace("|", "_") for n in REQUIRED} - seen
    assert not missing, missing


def test_import_is_lazy():
    code = "import sys, jaxdiff.envs; print('jaxmarl' in sys.modules, 'brax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.stdout.split() == ["False", "False"]
