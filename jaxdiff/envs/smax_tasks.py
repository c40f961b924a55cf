"""SMACv2-style SMAX race scenarios (`smax_<race>_5v5`, `smax_<race>_10v10`, `smax_<race>_10v11`
for race in protoss, terran, zerg), the SMAC maps HAQO's Table 4 needs that SMAX lacks
(`smax_8m_vs_9m`), and the [0, 1] global-state normaliser used as the diffusion target (state
reconstruction).

    env = jaxdiff.envs.make("smax_zerg_5v5", sight_range=5)
    obs, state = env.reset(key)                                 # obs: [5, 127]
    s = normalised_state(env, state)                             # s: [100], every entry in [0, 1]

Scenario (built on JaxMARL 0.2.0's SMAX machinery, through our `SMAXAdapter`):

* 5 learning allies vs 5 heuristic enemies (`HeuristicEnemySMAX`), 32x32 map, 100-step episodes,
  unit_list observations (127 per agent), 10 discrete actions (4 moves, stop, 5 attacks).
* Start positions: JaxMARL's SMACv2 surround-or-reflect distribution
  (`SurroundAndReflectPositionDistribution`, via `Scenario(smacv2_position_generation=True)`).
* Unit types: `RaceUnitTypeDistribution` draws each ally's type i.i.d. from the race's weights and
  mirrors them onto the enemies, like SMACv2's `WeightedTeamsDistribution` for equal team sizes.
  SMACv2 weights its races 0.45 / 0.45 / 0.1 (Terran marine/marauder/medivac, Protoss
  stalker/zealot/colossus, Zerg zergling/hydralisk/baneling). SMAX has no medivac, colossus or
  baneling, so the third type is dropped and the two others are renormalised to 0.5 / 0.5
  (`RACE_UNIT_WEIGHTS`). SMAX type ids: 0 marine, 1 marauder, 2 stalker, 3 zealot, 4 zergling,
  5 hydralisk.
* Sight range: `sight_range` (default 9, SMACv2's value; the paper also uses 5) replaces SMAX's
  per-type sight ranges for every unit type. In SMAX the sight range decides which units an agent
  sees and scales the relative positions it observes; attack availability depends on the attack
  range only. The heuristic enemies observe through the same function, so they see with the same
  range (SMACv2's built-in AI is not limited by sight; SMAX's heuristic always is).

Team sizes (paper 003, Table 4: zerg_10_vs_10, zerg_10_vs_11; we build all three races):

* 10 vs 10 is the 5 vs 5 scenario with 10 units a side.
* 10 vs 11 follows SMACv2's `WeightedTeamsDistribution` and `ReflectPositionDistribution` for more
  enemies than allies: the first 10 enemies mirror the allies' types, the extra enemy's type is a
  fresh draw from the race weights (SMACv2 draws it as a one-unit team that may not consist of an
  exception type such as the baneling; SMAX has none, so the plain draw is the same rule). Its
  start is JaxMARL's rendering of SMACv2's: in the reflect half of the mixture the 10 mirrored
  enemies face the allies and the extra one starts uniformly anywhere on the enemies' half of the
  map; in the surround half it is one more unit of the outside groups (or of the centre group,
  when the enemies are the team in the centre).

SMAC maps (HeuristicEnemySMAX with SMAX's fixed SMAC-style starts, registered with JaxMARL's
`register_scenario` on first `make`):

* `smax_8m_vs_9m`: 8 marines vs 9 marines (SMAC's map of that name; SMAX's built-in marine maps are
  3m, 5m_vs_6m, 10m_vs_11m and 27m_vs_30m).
* Not built: MMM2 (SMAX has no medivac, whose healing is the map's point) and corridor (6 zealots vs
  24 zerglings needs the corridor's terrain, which SMAX's open map lacks). Both would only be weak
  approximations (spec-haqo §6.3), so HAQO's Table 4 rows for them stay unreproduced.

`spec.state_dim` stays JaxMARL's world state (120, the centralised critic's input, as on every
SMAX map). The reconstruction target is `normalised_state` (|s| = 10 per unit = 100), built from
the raw SMAX state, never from the world state (which holds raw positions, negative cooldowns and
team/type integers). Per unit, allies first then enemies, if the unit is alive:

| feature                | formula                                        | bound  |
|------------------------|------------------------------------------------|--------|
| health                 | health / max_health[type]                      | [0, 1] |
| x, y                   | clip(position / (map_width, map_height), 0, 1) | [0, 1] |
| weapon cooldown        | clip(cooldown / weapon_cooldown[type], 0, 1)   | [0, 1] |
| unit type              | one-hot over SMAX's 6 types                    | {0, 1} |

and 10 zeros if the unit is dead. Positions are clipped because SMACv2's surround starts can place
a unit slightly outside the map before the first step (walls then kill it); cooldowns are clipped
because SMAX lets them run negative while a unit is ready to fire. `normalise_smax_state` works for
every SMAX map (`n_units * 10` features), not only the race scenarios.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.envs.jaxmarl import (
    ACTION_TYPES,
    SMAXAdapter,
    _smax_factory,
    check_choice,
    check_positive_int,
    import_jaxmarl,
)
from jaxdiff.envs.registry import register

RACES = ("protoss", "terran", "zerg")
N_UNIT_TYPES = 6  # SMAX: marine, marauder, stalker, zealot, zergling, hydralisk
RACE_UNIT_TYPES = {"terran": (0, 1), "protoss": (2, 3), "zerg": (4, 5)}
# SMACv2's 0.45 / 0.45 (/ 0.1 for the type SMAX lacks), renormalised over the two SMAX has.
RACE_UNIT_WEIGHTS = {
    race: tuple(0.5 if t in types else 0.0 for t in range(N_UNIT_TYPES))
    for race, types in RACE_UNIT_TYPES.items()
}
UNIT_FEATURES = 4 + N_UNIT_TYPES  # health, x, y, cooldown, type one-hot
DEFAULT_SIGHT_RANGE = 9.0


def _check_sight_range(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not (
            np.isfinite(value) and value > 0):
        raise ValueError(f"invalid env option sight_range={value!r}; allowed: a positive number "
                         f"(map units; SMACv2 uses 9, the paper also 5)")
    return float(value)


class RaceUnitTypeDistribution:
    """Ally unit types drawn i.i.d. from `weights` (over SMAX's 6 types); enemies mirror the allies
    (extra enemies, when there are more enemies than allies, are drawn from the same weights).

    Same interface as JaxMARL's `smax.distributions.Distribution`: `generate(key) -> uint8[n_units]`.
    """

    def __init__(self, n_allies: int, n_enemies: int, weights):
        w = np.asarray(weights, np.float64)
        if w.shape != (N_UNIT_TYPES,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"unit type weights must be {N_UNIT_TYPES} non-negative numbers with a "
                             f"positive sum, got {weights!r}")
        self.n_allies, self.n_enemies = n_allies, n_enemies
        self.weights = tuple(float(x) for x in w / w.sum())

    def generate(self, key) -> jax.Array:
        k_ally, k_extra = jax.random.split(key)
        logits = jnp.log(jnp.asarray(self.weights))  # log 0 = -inf: never drawn
        allies = jax.random.categorical(k_ally, logits, shape=(self.n_allies,))
        mirrored = allies[: self.n_enemies]
        extra = jax.random.categorical(k_extra, logits,
                                       shape=(max(self.n_enemies - self.n_allies, 0),))
        return jnp.concatenate([allies, mirrored, extra]).astype(jnp.uint8)


def normalise_smax_state(smax_env, s) -> jax.Array:
    """[0, 1] state of a raw SMAX `State` `s` (see the module docstring): f32[n_units * 10].

    `smax_env` is the JaxMARL `SMAX` (or a `HeuristicEnemySMAX`, which forwards its attributes)."""
    types = s.unit_types.astype(jnp.int32)
    size = jnp.asarray([smax_env.map_width, smax_env.map_height], jnp.float32)
    max_health = jnp.asarray(smax_env.unit_type_health, jnp.float32)[types]
    cooldown = jnp.asarray(smax_env.unit_type_weapon_cooldowns, jnp.float32)[types]
    feats = jnp.concatenate([
        jnp.clip(s.unit_health / max_health, 0.0, 1.0)[:, None],
        jnp.clip(s.unit_positions / size, 0.0, 1.0),
        jnp.clip(s.unit_weapon_cooldowns / cooldown, 0.0, 1.0)[:, None],
        jax.nn.one_hot(types, N_UNIT_TYPES, dtype=jnp.float32),
    ], axis=-1)                                                  # [n_units, 10]
    feats = jnp.where(s.unit_alive[:, None], feats, 0.0)
    return feats.reshape(-1).astype(jnp.float32)


def _raw_smax_state(state):
    """Peel jaxdiff wrapper states (`EpisodeStatsState.env_state`) and the heuristic-enemy state
    (`.state`) down to the SMAX `State`."""
    while not hasattr(state, "unit_alive"):
        state = state.env_state if hasattr(state, "env_state") else state.state
    return state


def _smax_adapter(env) -> SMAXAdapter:
    inner = env.unwrapped
    if not isinstance(inner, SMAXAdapter):
        raise ValueError(f"env `{env.spec.name}` is not a SMAX env; the SMAX state normaliser "
                         f"needs one (smax_<map>, smax_<race>_5v5)")
    return inner


def normalised_state(env, state) -> jax.Array:
    """[0, 1] global state of any jaxdiff SMAX env (wrapped or not): f32[n_units * 10]."""
    return normalise_smax_state(_smax_adapter(env).jaxmarl_env, _raw_smax_state(state))


def normalised_state_dim(env) -> int:
    jm = _smax_adapter(env).jaxmarl_env
    return UNIT_FEATURES * (jm.num_allies + jm.num_enemies)


def allies_alive(env, state) -> jax.Array:
    """bool[n_agents]: which learning agents (allies) are alive."""
    n = _smax_adapter(env).spec.n_agents
    return _raw_smax_state(state).unit_alive[:n]


class SMAXRaceAdapter(SMAXAdapter):
    """A SMAX race scenario; adds `normalised_state` and `alive` to the SMAX adapter."""

    race: str
    sight_range: float

    def normalised_state(self, state) -> jax.Array:  # -> f32[100] in [0, 1]
        return normalise_smax_state(self.jaxmarl_env, _raw_smax_state(state))

    @property
    def normalised_state_dim(self) -> int:
        return normalised_state_dim(self)

    def alive(self, state) -> jax.Array:  # -> bool[n_agents]
        return allies_alive(self, state)


def make_smax_race(race: str, *, n_units: int = 5, n_enemies: int | None = None,
                   sight_range: float = DEFAULT_SIGHT_RANGE,
                   action_type: str = "discrete", max_steps: int = 100,
                   enemy_shoots: bool = True, attack_mode: str = "closest",
                   observation_type: str = "unit_list", see_enemy_actions: bool = True,
                   walls_cause_death: bool = True, won_battle_bonus: float = 1.0,
                   world_steps_per_env_step: int = 8) -> SMAXRaceAdapter:
    """Build the `race` scenario with `n_units` allies vs `n_enemies` (default `n_units`)
    heuristic enemies."""
    check_choice("race", race, RACES)
    check_positive_int("n_units", n_units)
    n_enemies = n_units if n_enemies is None else n_enemies
    check_positive_int("n_enemies", n_enemies)
    sight_range = _check_sight_range(sight_range)
    check_choice("action_type", action_type, ACTION_TYPES)
    check_positive_int("max_steps", max_steps)
    check_choice("attack_mode", attack_mode, ("closest", "random"))
    check_choice("observation_type", observation_type, ("unit_list", "conic"))
    check_positive_int("world_steps_per_env_step", world_steps_per_env_step)
    import_jaxmarl()
    from jaxmarl.environments.smax import (
        HeuristicEnemySMAX,
        Scenario,
        register_scenario,
    )
    from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO

    map_name = f"{race}_{n_units}v{n_enemies}"
    scenario = Scenario(jnp.zeros((n_units + n_enemies,), jnp.uint8), n_units, n_enemies, True,
                        True)
    if map_name not in MAP_NAME_TO_SCENARIO:
        # Lets JaxMARL tools (map_name_to_scenario, visualisers) find the map by name; the unit
        # type draw itself is the generator installed below, which a Scenario cannot carry.
        register_scenario(map_name, scenario)
    env = HeuristicEnemySMAX(
        scenario=scenario, action_type=action_type, max_steps=max_steps - 1,
        enemy_shoots=enemy_shoots, attack_mode=attack_mode, observation_type=observation_type,
        see_enemy_actions=see_enemy_actions, walls_cause_death=walls_cause_death,
        won_battle_bonus=won_battle_bonus, world_steps_per_env_step=world_steps_per_env_step,
        unit_type_sight_ranges=jnp.full((N_UNIT_TYPES,), sight_range, jnp.float32),
    )
    # SMAX.reset calls `self.unit_type_generator.generate(key)` when smacv2 unit generation is on.
    env._env.unit_type_generator = RaceUnitTypeDistribution(n_units, n_enemies,
                                                            RACE_UNIT_WEIGHTS[race])
    adapter = SMAXRaceAdapter(
        env, name=f"smax_{map_name}", discrete=action_type == "discrete", max_steps=max_steps,
        state_dim=int(env.state_size), shared_reward=True, has_win=True,
    )
    adapter.race, adapter.sight_range = race, sight_range
    return adapter


def _race_factory(race: str, n_units: int = 5, n_enemies: int = 5):
    def factory(*, sight_range=DEFAULT_SIGHT_RANGE, action_type="discrete", max_steps=100,
                enemy_shoots=True, attack_mode="closest", observation_type="unit_list",
                see_enemy_actions=True, walls_cause_death=True, won_battle_bonus=1.0,
                world_steps_per_env_step=8):
        return make_smax_race(race, n_units=n_units, n_enemies=n_enemies,
                              sight_range=sight_range, action_type=action_type,
                              max_steps=max_steps, enemy_shoots=enemy_shoots,
                              attack_mode=attack_mode, observation_type=observation_type,
                              see_enemy_actions=see_enemy_actions,
                              walls_cause_death=walls_cause_death,
                              won_battle_bonus=won_battle_bonus,
                              world_steps_per_env_step=world_steps_per_env_step)

    factory.__name__ = f"smax_{race}_{n_units}v{n_enemies}"
    factory.__doc__ = (f"SMACv2-style {race} {n_units}v{n_enemies} on SMAX (see "
                       f"jaxdiff.envs.smax_tasks); `sight_range` overrides every unit type's "
                       f"sight range.")
    return factory


# Team sizes: SMACv2's 5 vs 5 and the 10 vs 10 / 10 vs 11 of HAQO's Table 4.
RACE_TEAM_SIZES = ((5, 5), (10, 10), (10, 11))
for _race in RACES:
    for _n, _m in RACE_TEAM_SIZES:
        register(f"smax_{_race}_{_n}v{_m}", _race_factory(_race, _n, _m))


# SMAC maps SMAX lacks: name -> (SMAX unit type of every unit, n_allies, n_enemies).
SMAC_EXTRA_MAPS = {"8m_vs_9m": (0, 8, 9)}  # type 0 = marine


def _register_smac_scenario(map_name: str) -> None:
    """Make `map_name` known to JaxMARL's `map_name_to_scenario` (once)."""
    import_jaxmarl()
    from jaxmarl.environments.smax import Scenario, register_scenario
    from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO

    if map_name not in MAP_NAME_TO_SCENARIO:
        unit_type, n_allies, n_enemies = SMAC_EXTRA_MAPS[map_name]
        register_scenario(map_name, Scenario(
            jnp.full((n_allies + n_enemies,), unit_type, jnp.uint8), n_allies, n_enemies,
            False, False))


def _smac_map_factory(map_name: str):
    """`jaxdiff.envs.jaxmarl`'s SMAX factory for `map_name` (same options, same adapter), which
    first registers the map's scenario with JaxMARL."""
    build = _smax_factory(map_name)

    @functools.wraps(build)  # keeps its signature: `make` validates the options against it
    def factory(**options):
        _register_smac_scenario(map_name)
        return build(**options)

    return factory


for _map in SMAC_EXTRA_MAPS:
    register(f"smax_{_map}", _smac_map_factory(_map))
