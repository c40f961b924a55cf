"""Registry: names, error messages, option validation, Hydra configs, lazy imports."""

import pathlib
import subprocess
import sys

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


def test_required_names_registered():
    missing = [n for n in REQUIRED if n not in envs.names()]
    assert not missing, missing
    assert envs.names() == sorted(envs.names())


def test_unknown_name_lists_valid_names_and_suggests_closest():
    with pytest.raises(envs.UnknownEnvError) as exc:
        envs.make("mpe_simple_sprad")
    msg = str(exc.value)
    assert "'mpe_simple_spread'" in msg and "Did you mean" in msg
    assert "smax_3m" in msg  # lists the valid names
    assert isinstance(exc.value, ValueError)


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
