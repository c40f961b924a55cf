"""Multi-agent environments with stacked arrays (see `jaxdiff.envs.base` for the contract).

    env = jaxdiff.envs.make("mpe_simple_spread", action_type="continuous")
    obs, state = env.reset(key)                      # obs: [n_agents, obs_dim]
    obs, state, reward, done, info = env.step(key, state, actions)

jaxmarl and brax are imported on the first `make` of an env that needs them.
"""

from jaxdiff.envs import jaxmarl as _jaxmarl
from jaxdiff.envs import mabrax as _mabrax
from jaxdiff.envs.base import Env, EnvSpec
from jaxdiff.envs.registry import (
    UnknownEnvError,
    make,
    make_from_config,
    names,
    options,
    register,
    register_wrapper,
    wrapper_options,
)
from jaxdiff.envs.mabrax import mabrax_partition
from jaxdiff.envs.wrappers import EpisodeStats, EpisodeStatsState

register("mpe_simple_spread", _jaxmarl.mpe_simple_spread)
register("mpe_simple_reference", _jaxmarl.mpe_simple_reference)
register("mpe_simple_speaker_listener", _jaxmarl.mpe_simple_speaker_listener)
register("mpe_simple_tag", _jaxmarl.mpe_simple_tag)
for _map in _jaxmarl.SMAX_MAPS:
    register(f"smax_{_map}", _jaxmarl._smax_factory(_map))
for _key in _mabrax.PARTITIONS:
    register(f"mabrax_{_key}", _mabrax._factory(_key))
register("mabrax_humanoid_9_8", _mabrax._factory("humanoid_9|8"))  # Hydra-friendly alias

__all__ = [
    "Env",
    "EnvSpec",
    "EpisodeStats",
    "EpisodeStatsState",
    "UnknownEnvError",
    "mabrax_partition",
    "make",
    "make_from_config",
    "names",
    "options",
    "register",
    "register_wrapper",
    "wrapper_options",
]
from jaxdiff.envs import toys  # noqa: E402,F401  (registers coordination_game)
from jaxdiff.envs import smax_tasks  # noqa: E402,F401  (registers smax_<race>_5v5)
from jaxdiff.envs import sensor_grid  # noqa: E402,F401  (registers sensor_2x2_co, _nonco, sensor_5x5)
