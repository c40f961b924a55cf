"""MABrax: a Brax robot whose actuators are partitioned among agents (MA-MuJoCo style).

`mabrax_partition(robot, partition, obs="global")` builds an env where agent `i` controls the
actuators `partition[i]` (indices into the robot's actuator vector, Brax order). Actuators in
no part get action 0. The team receives the robot's reward (`shared_reward`); continuous
actions only, each agent's actions in [-1, 1] (Brax's convention; the simulator also clips to
the actuator's `ctrl_range`, e.g. +-0.4 for the humanoids).

Observations (choice of `obs`):
  "global"  (default) every agent sees the full robot observation. Agents see identical
            vectors; an algorithm that shares parameters across agents should add an agent id.
  "local"   derived from the kinematic tree, for any partition: the root body's state (the
            obs entries of the un-actuated joints: height/orientation and root velocities)
            followed by the position and velocity of the joints this agent drives. Padded to
            the largest agent; per-body features of the humanoids (inertia, com velocity,
            actuator forces) are global-only.
  "jaxmarl" JaxMARL's MA-MuJoCo mappings (observation distance 1: own and neighbouring
            joints); for ant_4x2, hopper_3x1, walker2d_2x3. Refused for the two other JaxMARL
            partitions, whose mappings index past the Brax observation (JAX clamps the
            gather, so JaxMARL silently repeats the last entry): halfcheetah_6x1 reads
            index 17 of a 17-dim obs, humanoid_9|8 indexes a 376-dim (MuJoCo Gym) obs where
            Brax's humanoid has 244.
`global_state` is always the full robot observation.

Episodes end at `max_steps` steps (Brax's `episode_length`) (truncation) or when the robot becomes unhealthy
(termination: `info["terminated"]`). Auto-reset matches JaxMARL's MABrax (same key split, a
fresh `reset(key_reset)`), so obs/rewards equal JaxMARL's for the same keys and actions.
Brax's own AutoResetWrapper is not used (it would reset to the first state, not a fresh one).

Registered partitions (actuator indices, Brax order):
  ant_4x2 [[0,1],[2,3],[4,5],[6,7]] (JaxMARL), ant_2x4 [[2,3,4,5],[6,7,0,1]], ant_8x1;
  (Brax actuator order hip_4, ankle_4, hip_1, ankle_1, hip_2, ankle_2, hip_3, ankle_3, as
  MuJoCo Ant-v2: ant_2x4 is MA-MuJoCo's legs 1+2 / legs 3+4, the split paper 002 trains on;
  ant_4x2 is MA-MuJoCo's one leg per agent up to agent order)
  halfcheetah_6x1 (JaxMARL), halfcheetah_2x3 [[0,1,2],[3,4,5]] (back leg, front leg);
  hopper_3x1 (JaxMARL); walker2d_2x3 [[0,1,2],[3,4,5]] (JaxMARL: right leg, left leg),
  walker2d_6x1; humanoid_9|8 (JaxMARL; alias humanoid_9_8), humanoid_17x1,
  humanoidstandup_17x1.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.envs.base import Env, EnvSpec
from jaxdiff.envs.jaxmarl import check_choice, check_positive_int, import_jaxmarl

# Brax robots and how many leading qpos entries their observation drops (global x[, y]).
ROBOTS = {"ant": 2, "halfcheetah": 1, "hopper": 1, "walker2d": 1, "humanoid": 2,
          "humanoidstandup": 2}
OBS_MODES = ("global", "local", "jaxmarl")

JAXMARL_PARTITIONS = {
    "ant_4x2": [[0, 1], [2, 3], [4, 5], [6, 7]],
    "halfcheetah_6x1": [[0], [1], [2], [3], [4], [5]],
    "hopper_3x1": [[0], [1], [2]],
    "humanoid_9|8": [[0, 1, 2, 11, 12, 13, 14, 15, 16], [3, 4, 5, 6, 7, 8, 9, 10]],
    "walker2d_2x3": [[0, 1, 2], [3, 4, 5]],
}
PARTITIONS = {
    **JAXMARL_PARTITIONS,
    "ant_2x4": [[2, 3, 4, 5], [6, 7, 0, 1]],  # MA-MuJoCo: (hip1..ankle2), (hip3..ankle4)
    "ant_8x1": [[i] for i in range(8)],
    "halfcheetah_2x3": [[0, 1, 2], [3, 4, 5]],
    "walker2d_6x1": [[i] for i in range(6)],
    "humanoid_17x1": [[i] for i in range(17)],
    "humanoidstandup_17x1": [[i] for i in range(17)],
}


@contextlib.contextmanager
def _quiet_brax():
    """Brax prints warp-import noise and deprecation warnings; MuJoCo's default warning
    handler writes MUJOCO_LOG.TXT into the working directory (deprecated MJCF attributes)."""
    import mujoco

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda msg: None)
    try:
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        mujoco.set_mju_user_warning(previous)


def _create_brax_env(robot: str, episode_length: int, backend: str):
    with _quiet_brax():
        from brax import envs as brax_envs

        # EpisodeWrapper only: time limit + truncation flag; we auto-reset ourselves.
        return brax_envs.create(robot, episode_length=episode_length, action_repeat=1,
                                auto_reset=False, backend=backend)


class MABraxAdapter(Env):
    def __init__(self, robot: str, partition, *, obs: str = "global", name: str | None = None,
                 episode_length: int = 1000, backend: str = "positional",
                 jaxmarl_name: str | None = None):
        env = _create_brax_env(robot, episode_length, backend)
        self.brax_env = env
        self.robot = robot
        n_act = int(env.action_size)
        partition = _check_partition(robot, partition, n_act)
        n = len(partition)
        act_sizes = tuple(len(p) for p in partition)
        act_dim = max(act_sizes)
        # global action k = actions[owner[k], slot[k]] (one static gather); unowned -> 0
        owner, slot, owned = np.zeros(n_act, np.int32), np.zeros(n_act, np.int32), np.zeros(n_act)
        for i, part in enumerate(partition):
            for j, k in enumerate(part):
                owner[k], slot[k], owned[k] = i, j, 1.0
        self._owner, self._slot, self._owned = owner, slot, owned.astype(np.float32)
        self.partition = tuple(tuple(p) for p in partition)

        obs_size = int(env.observation_size)
        if obs == "global":
            obs_index = None
            obs_sizes = (obs_size,) * n
        else:
            if obs == "local":
                rows = _local_obs_indices(env.sys, ROBOTS[robot], partition)
            else:
                rows = _jaxmarl_obs_indices(jaxmarl_name, obs_size)
            obs_sizes = tuple(len(r) for r in rows)
            d = max(obs_sizes)
            obs_index = np.zeros((n, d), np.int32)
            obs_mask = np.zeros((n, d), np.float32)
            for i, r in enumerate(rows):
                obs_index[i, : len(r)], obs_mask[i, : len(r)] = r, 1.0
            self._obs_mask = obs_mask
        self._obs_index = obs_index
        self.obs_mode = obs
        self.spec = EnvSpec(
            name=name or f"mabrax_{robot}", n_agents=n, obs_dim=max(obs_sizes),
            obs_sizes=obs_sizes, discrete=False, act_dim=act_dim, act_sizes=act_sizes,
            action_low=-1.0, action_high=1.0, state_dim=obs_size, max_steps=episode_length,
            shared_reward=True, has_win=False, split_envs=True,
        )

    def _agent_obs(self, robot_obs):  # f32[obs_size] -> f32[n_agents, obs_dim]
        if self._obs_index is None:
            return jnp.broadcast_to(robot_obs, (self.spec.n_agents, robot_obs.shape[-1]))
        return robot_obs[self._obs_index] * self._obs_mask

    def global_action(self, actions):  # f32[n_agents, act_dim] -> f32[action_size]
        actions = jnp.clip(actions, -1.0, 1.0)
        return actions[self._owner, self._slot] * self._owned

    def reset(self, key):
        state = self.brax_env.reset(key)
        return self._agent_obs(state.obs), state

    reports_final = True

    def step(self, key, state, actions):
        return self._step(key, state, actions, final=False)

    def step_final(self, key, state, actions):
        return self._step(key, state, actions, final=True)

    def _step(self, key, state, actions, *, final: bool):
        key, key_reset = jax.random.split(key)  # same split as jaxmarl's MultiAgentEnv.step
        next_state = self.brax_env.step(state, self.global_action(actions))
        reset_state = self.brax_env.reset(key_reset)
        ended = next_state.done > 0
        info = {"won": jnp.zeros((), jnp.float32),
                "terminated": ended & (next_state.info["truncation"] == 0)}
        if final:
            info["final_obs"] = self._agent_obs(next_state.obs)
            info["final_state"] = self.global_state(next_state)
        state = jax.tree.map(lambda r, s: jax.lax.select(ended, r, s), reset_state, next_state)
        reward = jnp.broadcast_to(next_state.reward.astype(jnp.float32), (self.spec.n_agents,))
        done = jnp.broadcast_to(ended, (self.spec.n_agents,))
        return self._agent_obs(state.obs), state, reward, done, info

    def global_state(self, state):  # -> f32[state_dim]
        return state.obs.astype(jnp.float32)

    def action_mask(self, state):  # continuous: everything allowed
        return jnp.ones((self.spec.n_agents, self.spec.act_dim), jnp.bool_)


def _check_partition(robot, partition, n_act):
    try:
        parts = [[int(k) for k in part] for part in partition]
    except TypeError:
        raise ValueError(
            f"invalid env option partition={partition!r}; allowed: a list of lists of actuator "
            f"indices in [0, {n_act}) for {robot!r}") from None
    flat = [k for p in parts for k in p]
    if not parts or any(not p for p in parts) or len(set(flat)) != len(flat) or any(
            k < 0 or k >= n_act for k in flat):
        raise ValueError(
            f"invalid env option partition={partition!r}; allowed: non-empty lists of distinct "
            f"actuator indices in [0, {n_act}) for {robot!r}")
    return parts


def _local_obs_indices(sys, n_dropped_q: int, partition):
    """Obs entries for root state + each agent's own joints. Layout: qpos[n_dropped_q:], qvel."""
    q_size, qd_size = sys.q_size(), sys.qd_size()
    n_q_obs = q_size - n_dropped_q
    act_q = np.asarray(sys.actuator.q_id).tolist()
    act_qd = np.asarray(sys.actuator.qd_id).tolist()
    root_q = [q - n_dropped_q for q in range(n_dropped_q, q_size) if q not in act_q]
    root_qd = [n_q_obs + v for v in range(qd_size) if v not in act_qd]
    rows = []
    for part in partition:
        own_q = [act_q[k] - n_dropped_q for k in part]
        own_qd = [n_q_obs + act_qd[k] for k in part]
        rows.append(root_q + root_qd + own_q + own_qd)
    return rows


def _jaxmarl_obs_indices(jaxmarl_name, obs_size):
    if jaxmarl_name not in JAXMARL_PARTITIONS:
        raise ValueError(
            f"invalid env option obs='jaxmarl' for this partition; allowed only for "
            f"{', '.join('mabrax_' + k for k in JAXMARL_PARTITIONS)}")
    import_jaxmarl()
    with _quiet_brax():
        from jaxmarl.environments.mabrax.mappings import _agent_observation_mapping
    rows = [np.asarray(v).tolist() for v in _agent_observation_mapping[jaxmarl_name].values()]
    # Stale JaxMARL mappings (humanoid: a 376-dim MuJoCo Gym obs vs Brax's 244; halfcheetah:
    # index 17 of 17) would be read by clamped gathers, silently repeating the last entry.
    if max(max(r) for r in rows) >= obs_size:
        raise ValueError(
            f"invalid env option obs='jaxmarl' for mabrax_{jaxmarl_name}: JaxMARL's mapping "
            f"indexes entries up to {max(max(r) for r in rows)} but the Brax observation has "
            f"{obs_size}; allowed: 'global', 'local'")
    return rows


def mabrax_partition(robot: str, partition, obs: str = "global", *, max_steps: int = 1000,
                     backend: str = "positional", name: str | None = None):
    """An MABrax env (wrapped in `EpisodeStats`, like `make`) for any actuator partition.

    robot: one of ROBOTS; partition: list (agents) of lists of actuator indices;
    obs: "global" | "local"; max_steps: episode length (Brax `episode_length`)."""
    from jaxdiff.envs.wrappers import EpisodeStats

    return EpisodeStats(_build(robot, partition, obs=obs, max_steps=max_steps,
                               backend=backend, name=name))


def _build(robot, partition, *, obs, max_steps, backend, name=None, jaxmarl_name=None):
    check_choice("robot", robot, tuple(ROBOTS))
    check_choice("obs", obs, OBS_MODES)
    check_positive_int("max_steps", max_steps)
    check_choice("backend", backend, ("positional", "generalized", "spring", "mjx"))
    if obs == "jaxmarl" and jaxmarl_name is None:
        raise ValueError(
            "invalid env option obs='jaxmarl' for a custom partition; allowed: 'global', 'local'")
    return MABraxAdapter(robot, partition, obs=obs, name=name, episode_length=max_steps,
                         backend=backend, jaxmarl_name=jaxmarl_name)


def _factory(key: str):
    robot = key.split("_")[0]
    name = f"mabrax_{key}"

    def factory(*, action_type="continuous", obs="global", max_steps=1000,
                backend="positional"):
        if action_type != "continuous":
            raise ValueError(
                f"invalid env option action_type={action_type!r} for {name!r}; allowed values: "
                f"'continuous' (MABrax robots have continuous actuators only)")
        return _build(robot, PARTITIONS[key], obs=obs, max_steps=max_steps,
                      backend=backend, name=name,
                      jaxmarl_name=key if key in JAXMARL_PARTITIONS else None)

    factory.__name__ = name.replace("|", "_")
    factory.__doc__ = (f"Multi-agent Brax {robot}, partition {key}: the robot's joints split over "
                       f"agents (continuous actions).")
    return factory
