"""DDPL acceptance checks F5, F8, F15-F18 (spec-ddpl §7; §4.4, §4.5, §4.9).

Independent references: the env's own JaxMARL step fed the clipped probabilities (F15), the
spec's verified random-policy returns with a tolerance from the standard errors (F16, F17,
F18), MA-MuJoCo's partitions written with joint names and resolved through the MuJoCo model
(F18), and the known mixture / bandit optimum for the diffusion actor trained by plain DSM
(F5) and by iterated ISSM (F8). Learning checks and long rollouts are behind `-m slow`.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import envs, losses
from jaxdiff.diffusion import denoising_loss_eps
from jaxdiff.envs.jaxmarl import SMAX_PROB_EPS
from jaxdiff.nets.diffusion_actor import DiffusionActor, from_box, to_box


def _random_returns(env, n_episodes: int, key):
    """Team return of the first episode of each of `n_episodes` envs under a uniform policy on
    the action box (jit-compiled: one scan of spec.max_steps vmapped steps). Every episode ends
    within max_steps, so every env reports one. -> (returns [E], all_ended)."""
    spec = env.spec

    @jax.jit
    def run(key):
        k_reset, k_steps = jax.random.split(key)
        _, state = jax.vmap(env.reset)(jax.random.split(k_reset, n_episodes))

        def body(carry, k):
            state, ended, ret = carry
            k_a, k_s = jax.random.split(k)
            a = jax.random.uniform(k_a, (n_episodes, spec.n_agents, spec.act_dim),
                                   minval=spec.action_low, maxval=spec.action_high)
            _, state, _, _, info = jax.vmap(env.step)(jax.random.split(k_s, n_episodes), state,
                                                      a)
            first = info["returned_episode"] & ~ended
            ret = jnp.where(first, info["episode_return"], ret)
            return (state, ended | info["returned_episode"], ret), None

        init = (state, jnp.zeros(n_episodes, bool), jnp.zeros(n_episodes))
        (_, ended, ret), _ = jax.lax.scan(body, init, jax.random.split(k_steps, spec.max_steps))
        return ret, jnp.all(ended)

    ret, all_ended = run(key)
    return np.asarray(ret, np.float64), bool(all_ended)


def _check_mean(returns, ref_mean, ref_se, label):
    """|mean - ref| within 4 combined standard errors (ours from the sample, the reference's
    from its own episode count)."""
    se = returns.std(ddof=1) / np.sqrt(returns.size)
    tol = 4.0 * np.hypot(se, ref_se)
    print(f"{label}: {returns.mean():.4f} ± {returns.std(ddof=1):.4f} (se {se:.4f}, "
          f"{returns.size} eps) vs {ref_mean} (tol {tol:.4f})")
    assert abs(returns.mean() - ref_mean) <= tol, (label, returns.mean(), ref_mean, tol)


# ------------------------------------------------------------------------------------- F15
def test_smax_probability_dims_are_clipped_away_from_0_and_1_f15():
    """p = 0 / 1 in the two Bernoulli dims step like JaxMARL fed 1e-6 / 1 - 1e-6 (same keys),
    and the logits JaxMARL forms from what the adapter passes are finite."""
    env = envs.make("smax_3s_vs_5z", action_type="continuous")
    adapter, spec = env.unwrapped, env.spec
    jm = adapter.jaxmarl_env
    assert (spec.act_dim, spec.action_low, spec.action_high) == (4, 0.0, 1.0)
    names = list(jm.continuous_action_dims)
    probs = [names.index("shoot_last_enemy"), names.index("do_shoot")]
    moves = [names.index("coordinate_1"), names.index("coordinate_2")]

    def actions(p):                      # prob dims at p, radius 0.7, angle 0.3 of a turn
        a = jnp.zeros((spec.n_agents, 4)).at[:, probs].set(p)
        return a.at[:, moves].set(jnp.array([0.7, 0.3]))

    def one(key, p, q):                  # the adapter fed p, JaxMARL fed q, the same keys
        _, state = adapter.reset(key)
        passed = jnp.stack(list(adapter._action_dict(actions(p)).values()))
        logits = jnp.stack([jnp.log(passed[:, probs]), jnp.log(1 - passed[:, probs])])
        obs, st, rew, _, _ = adapter.step(key, state, actions(p))
        k_step, _ = jax.random.split(key)              # the adapter's split of the step key
        ref_obs, ref_st, ref_rew, _, _ = jm.step_env(
            k_step, state, dict(zip(adapter.agents, actions(q))))
        return dict(logits=logits, st=st.state.unit_positions, rew=rew, obs=obs,
                    health=st.state.unit_health, ref_st=ref_st.state.unit_positions,
                    ref_obs=adapter._stack_obs(ref_obs), ref_health=ref_st.state.unit_health,
                    ref_rew=adapter._stack_scalar(ref_rew, jnp.float32))

    # one compiled step for both ends: p = 0 -> q = 1e-6, p = 1 -> q = 1 - 1e-6
    run = jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))
    out = run(jax.random.key(3), jnp.array([0.0, 1.0]),
              jnp.array([SMAX_PROB_EPS, 1.0 - SMAX_PROB_EPS], jnp.float32))
    out = [{k: np.asarray(v[i]) for k, v in out.items()} for i in range(2)]
    for o in out:
        assert np.all(np.isfinite(o["logits"]))
        np.testing.assert_allclose(o["st"], o["ref_st"], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(o["health"], o["ref_health"], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(o["obs"], o["ref_obs"], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(o["rew"], o["ref_rew"], rtol=1e-6, atol=1e-6)
    # the comparison has power: move (p = 1 of index 0 "move") and shoot give different steps
    assert not np.allclose(out[0]["st"], out[1]["st"])


def test_env_box_round_trip_for_the_ddpl_task_boxes_f15():
    """[-1, 1] <-> env box for MPE [0, 1], SMAX [0, 1] and MABrax [-1, 1] (their specs)."""
    specs = {name: envs.make(name, **kw).spec for name, kw in (
        ("mpe_simple_reference", dict(action_type="continuous")),
        ("smax_3s_vs_5z", dict(action_type="continuous")),
        ("mabrax_ant_4x2", {}))}
    boxes = {name: (s.action_low, s.action_high) for name, s in specs.items()}
    assert boxes == {"mpe_simple_reference": (0.0, 1.0), "smax_3s_vs_5z": (0.0, 1.0),
                     "mabrax_ant_4x2": (-1.0, 1.0)}
    a = np.random.default_rng(0).uniform(-1, 1, (256, 4)).astype(np.float32)
    a[0], a[1] = -1.0, 1.0
    for name, (low, high) in boxes.items():
        x = np.asarray(to_box(a, low, high))
        assert np.all((x >= low) & (x <= high)), name
        np.testing.assert_allclose(x[0], low, atol=1e-7)
        np.testing.assert_allclose(x[1], high, atol=1e-7)
        np.testing.assert_allclose((x - low) / (high - low), (a + 1) / 2, atol=1e-6)
        np.testing.assert_allclose(from_box(x, low, high), a, atol=1e-6)


# ------------------------------------------------------------------------------------- F16
def test_mpe_simple_reference_random_return_and_global_state_f16():
    """Uniform policy on Box(0, 1, (15,)), 64 episodes of 25 steps: team return (sum of both
    agents' rewards) ≈ −53.97 ± 20.79 (spec §4.9, 64 episodes); global state = concat obs."""
    env = envs.make("mpe_simple_reference", action_type="continuous")
    spec = env.spec
    assert (spec.n_agents, spec.obs_dim, spec.act_dim, spec.state_dim, spec.max_steps) == (
        2, 21, 15, 42, 25)
    assert not spec.shared_reward          # team return = sum over the agents
    returns, all_ended = _random_returns(env, 64, jax.random.key(0))
    assert all_ended
    _check_mean(returns, -53.97, 20.79 / 8.0, "F16 mpe_simple_reference")

    obs, state = env.reset(jax.random.key(1))
    obs, state, *_ = env.step(jax.random.key(2), state, jnp.full((2, 15), 0.5))
    np.testing.assert_array_equal(env.global_state(state), np.asarray(obs).reshape(-1))


# ------------------------------------------------------------------------------------- F17
@pytest.mark.slow
@pytest.mark.parametrize("map_name, ref", [("3s_vs_5z", 0.227), ("6h_vs_8z", 0.281)])
def test_smax_continuous_random_return_f17(map_name, ref):
    """Uniform policy on Box(0, 1, (4,)) per ally, 256 episodes: per-agent (= team) return near
    the spec's verified random return; never above the maximum 2 (1 for all enemy health, 1 for
    the win)."""
    env = envs.make(f"smax_{map_name}", action_type="continuous")
    returns, all_ended = _random_returns(env, 256, jax.random.key(0))
    assert all_ended and np.all((returns >= 0) & (returns <= 2.0))
    # The spec does not give its episode count; taken as 64, the count of its MPE figure.
    # Measured: 3s_vs_5z 0.2248 (se 0.0032), 6h_vs_8z 0.2646 (se 0.0034; 0.2659 with 512
    # episodes of key 1): the 6h_vs_8z gap (0.016) is ~2 combined se but ~6 of ours, i.e. the
    # reference is lower-precision or from a slightly different setting (not the time cap:
    # its episodes end by termination after ~30 steps).
    _check_mean(returns, ref, returns.std(ddof=1) / 8.0, f"F17 {map_name}")


# ------------------------------------------------------------------------------------- F18
# MA-MuJoCo's partitions by joint name (agent order as MA-MuJoCo's); HumanoidStandup 17x1 is
# one actuator per agent in the model's order.
MAMUJOCO_ANT = {
    "ant_2x4": [["hip_1", "ankle_1", "hip_2", "ankle_2"], ["hip_3", "ankle_3", "hip_4", "ankle_4"]],
    "ant_4x2": [["hip_1", "ankle_1"], ["hip_2", "ankle_2"], ["hip_3", "ankle_3"],
                ["hip_4", "ankle_4"]],
    "ant_8x1": [[j] for leg in (1, 2, 3, 4) for j in (f"hip_{leg}", f"ankle_{leg}")],
}


def _actuator_joints(adapter):
    import mujoco

    m = adapter.brax_env.sys.mj_model
    return [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, m.actuator_trnid[k, 0])
            for k in range(m.nu)]


@pytest.mark.parametrize("key", ["ant_2x4", "ant_4x2", "ant_8x1",
                                 # a Brax humanoid compile (~25 s): the 17x1 partition rule is
                                 # also checked for humanoid_17x1 (test_haqo_features.py, slow)
                                 pytest.param("humanoidstandup_17x1", marks=pytest.mark.slow)])
def test_mabrax_partition_is_a_permutation_of_the_actuators_f18(key):
    env = envs.make(f"mabrax_{key}")
    adapter, spec = env.unwrapped, env.spec
    joints = _actuator_joints(adapter)
    n_act = len(joints)
    # every agent slot lands on a distinct actuator and every actuator has one owner: code each
    # valid slot (i, j) by a distinct value and read the global action back
    codes = np.zeros((spec.n_agents, spec.act_dim), np.float32)
    valid = [(i, j) for i in range(spec.n_agents) for j in range(spec.act_sizes[i])]
    for c, (i, j) in enumerate(valid):
        codes[i, j] = (c + 1) / 64.0
    got = np.asarray(jax.jit(adapter.global_action)(codes))
    assert got.shape == (n_act,) and len(valid) == n_act
    assert sorted(np.round(got * 64).astype(int).tolist()) == list(range(1, n_act + 1))
    owner = {k: valid[int(round(v * 64)) - 1][0] for k, v in enumerate(got)}
    groups = {frozenset(joints[k] for k in range(n_act) if owner[k] == i)
              for i in range(spec.n_agents)}
    if key.startswith("ant"):
        want = {frozenset(p) for p in MAMUJOCO_ANT[key]}
    else:
        assert n_act == 17
        want = {frozenset([j]) for j in joints}
        assert [owner[k] for k in range(n_act)] == list(range(17))   # agent i <-> actuator i
    assert groups == want, (key, groups)
    assert spec.state_dim == (27 if key.startswith("ant") else 244)
    assert spec.obs_sizes == (spec.state_dim,) * spec.n_agents     # full state for every agent


@pytest.mark.slow
@pytest.mark.parametrize("key, ref_mean, ref_sd", [
    ("ant_2x4", -222.0, 155.0), ("ant_4x2", -232.0, 169.0), ("ant_8x1", -148.0, 133.0),
    ("humanoidstandup_17x1", 6709.0, 176.0)])
def test_mabrax_random_returns_f18(key, ref_mean, ref_sd):
    """Uniform policy on [-1, 1] per agent, 1000-step cap: team return near the spec's random
    values (its sd, and 64 episodes assumed for its standard error, as for F16/F17). The
    rollout is one jit-compiled scan. Measured (16 episodes, key 0): ant_2x4 -207 ± 163,
    humanoidstandup_17x1 6708 ± 217."""
    env = envs.make(f"mabrax_{key}")
    returns, all_ended = _random_returns(env, 16, jax.random.key(0))
    assert all_ended
    _check_mean(returns, ref_mean, ref_sd / 8.0, f"F18 {key}")


# -------------------------------------------------------------------------------------- F5
@pytest.mark.slow
def test_plain_dsm_learns_the_mixture_mode_masses_f5():
    """DiffusionActor (Table 3: H = 20, linear 0.001 -> 0.999, posterior step) trained by plain
    DSM on 0.3 N(-0.5, 0.05^2) + 0.7 N(0.5, 0.05^2), cond a constant, 3000 Adam steps of 1024:
    sampled mass on each side within ±0.05 of 0.3 / 0.7, and the samples sit on the modes.

    Sampled from an EMA (0.995) of the parameters as in F6b. The sampler itself is biased at
    H = 20 (spec §4.4: the exact score gives mass(<0) = 0.273 on this schedule)."""
    import optax

    B = 1024
    actor = DiffusionActor(1, steps=20)
    sched = actor.diffusion_schedule()
    cond = jnp.zeros((B, 1, 1))
    opt = optax.adam(3e-4)

    def mixture(key):
        k_m, k_n = jax.random.split(key)
        centre = jnp.where(jax.random.uniform(k_m, (B,)) < 0.3, -0.5, 0.5)
        return (centre + 0.05 * jax.random.normal(k_n, (B,)))[:, None, None]

    def step(carry, key):
        p, st, ema = carry
        k_d, k_l = jax.random.split(key)
        g = jax.grad(lambda r: denoising_loss_eps(
            lambda a_t, t: actor.eps(r, a_t, t[:, None], cond), sched, k_l, mixture(k_d)))(p)
        upd, st = opt.update(g, st, p)
        p = optax.apply_updates(p, upd)
        return (p, st, jax.tree.map(lambda e, x: 0.995 * e + 0.005 * x, ema, p)), None

    @jax.jit
    def train(p, key):
        (_, _, ema), _ = jax.lax.scan(step, (p, opt.init(p), p), jax.random.split(key, 3000))
        return actor.sample(ema, jnp.zeros((20_000, 1, 1)), jax.random.key(2))[:, 0, 0]

    draws = np.asarray(train(actor.init(jax.random.key(0), 1, 1), jax.random.key(1)))
    left, right = np.mean(draws < 0), np.mean(draws > 0)
    on_modes = np.mean(np.abs(np.abs(draws) - 0.5) <= 0.25)
    print(f"F5: mass(<0)={left:.3f} mass(>0)={right:.3f} on modes={on_modes:.3f}")
    assert abs(left - 0.3) <= 0.05 and abs(right - 0.7) <= 0.05, (left, right)
    assert on_modes >= 0.85, on_modes


# -------------------------------------------------------------------------------------- F8
def _asymmetric_bandit_q(a):
    """spec §4.5: a narrow better bump at -0.6 and a broad worse one at 0."""
    return jnp.exp(-(a + 0.6) ** 2 / (2 * 0.05**2)) + 0.6 * jnp.exp(-a**2 / (2 * 0.3**2))


@pytest.mark.slow
def test_iterated_issm_with_the_current_policy_finds_the_narrow_better_mode_f8():
    """DecSPG step with a diffusion policy: each iteration draws 256 actions from the CURRENT
    policy (p~ = pi_k), weights them exp(10 (Q - max Q)) (paper_stable, inverse temperature 10),
    and takes one Adam step (1e-4) on ISSM. After 1000 iterations the mass within ±0.15 of -0.6
    exceeds 0.6 (spec: 0.81). Two equal modes are NOT checked to persist (spec F8: the H = 20
    posterior sampler is under-dispersed, so self-training collapses them)."""
    import optax

    N = 256
    actor = DiffusionActor(1, steps=20)
    sched = actor.diffusion_schedule()
    cond = jnp.zeros((N, 1, 1))
    opt = optax.adam(1e-4)

    def iteration(carry, key):
        p, st = carry
        k_s, k_l = jax.random.split(key)
        a = actor.sample(p, cond, k_s)
        w, _ = losses.importance_weights(_asymmetric_bandit_q(a[:, 0, 0]), mode="paper_stable",
                                         temperature=10.0)
        w = w / jnp.mean(w)                               # a constant factor: same minimiser
        g = jax.grad(lambda r: losses.issm(lambda a_t, t: actor.eps(r, a_t, t, cond), sched,
                                           k_l, a, w[:, None]))(p)
        upd, st = opt.update(g, st, p)
        near = jnp.mean(jnp.abs(a[:, 0, 0] + 0.6) <= 0.15)
        return (optax.apply_updates(p, upd), st), near

    @jax.jit
    def run(p, key):
        (p, _), near = jax.lax.scan(iteration, (p, opt.init(p)), jax.random.split(key, 1000))
        return near, actor.sample(p, jnp.zeros((20_000, 1, 1)), jax.random.key(5))[:, 0, 0]

    near, draws = run(actor.init(jax.random.key(0), 1, 1), jax.random.key(100))
    near, draws = np.asarray(near), np.asarray(draws)
    final = np.mean(np.abs(draws + 0.6) <= 0.15)
    print(f"F8: mass near -0.6 at iterations 0/100/500: {near[0]:.3f}/{near[100]:.3f}/"
          f"{near[500]:.3f}; after 1000: {final:.3f}")
    assert near[0] < 0.3                   # it starts spread out, not already at the mode
    assert final > 0.6, final
