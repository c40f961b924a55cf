"""HAQO's toy environments (spec-haqo §6.4, F26): hand-computed rewards and resource levels,
the coverage metrics on synthetic logs, the fixed landmarks, and the env contract (auto-reset at
H, step_final, jit == eager, vmap == loop) on the occupation game."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff.envs as envs
from jaxdiff.envs.toys import haqo_toys as hq

C = np.array([[0.5, 0.5], [0.5, -0.5], [-0.5, 0.5], [-0.5, -0.5]], np.float32)  # bandit targets
T0 = np.array([0.6, 0.6], np.float32)  # occupation target 0


# ----------------------------------------------------------------------------------------
# MultiModalBandit
# ----------------------------------------------------------------------------------------

def _bandit_rewards(n, actions):
    """Step the registered env (jitted, vmapped over a batch of joint actions)."""
    env = envs.make("haqo_bandit", n_agents=n)
    _, state = env.reset(jax.random.key(0))

    @jax.jit
    @jax.vmap
    def one(a):
        obs, _, r, done, info = env.step(jax.random.key(1), state, a)
        return obs, r, done, info["terminated"], info["returned_episode"]

    return jax.device_get(one(jnp.asarray(actions, jnp.float32)))


def test_bandit_reward_is_one_at_every_target_and_vanishes_far_away():
    far = np.zeros(2, np.float32)  # ‖0 − c_k‖² = 0.5 for every k: exp(−25)
    # one agent: each target, the origin, a point between two targets
    obs, r, done, term, ended = _bandit_rewards(1, [[c] for c in C] + [[far], [[0.5, 0.0]]])
    np.testing.assert_allclose(r[:4, 0], 1.0, rtol=1e-6)
    assert r[4, 0] < 1e-10
    np.testing.assert_allclose(r[5, 0], math.exp(-0.25 / 0.02), rtol=1e-5)
    assert done.all() and term.all() and ended.all() and obs.shape == (6, 1, 1)
    # two agents: team reward (1/n) Σ_i, given to both
    joint = [[C[0], C[3]], [C[1], C[1]], [C[2], far], [far, far]]
    _, r2, _, _, _ = _bandit_rewards(2, joint)
    np.testing.assert_allclose(r2[:, 0], [1.0, 1.0, 0.5, 0.0], atol=1e-9)
    np.testing.assert_array_equal(r2[:, 0], r2[:, 1])


def test_bandit_reward_matches_brute_force_and_actions_are_clipped():
    a = np.asarray(jax.random.uniform(jax.random.key(3), (64, 2, 2), minval=-1, maxval=1))
    brute = np.array([np.mean([max(math.exp(-np.sum((ai - c) ** 2) / 0.02) for c in C)
                               for ai in joint]) for joint in a])
    np.testing.assert_allclose(np.asarray(hq.bandit_reward(a)), brute, rtol=1e-4, atol=1e-12)
    # out-of-box actions act as their clipped values
    _, r, _, _, _ = _bandit_rewards(1, [[[3.0, 0.5]], [[1.0, 0.5]]])
    np.testing.assert_array_equal(r[0], r[1])


def test_bandit_metrics_on_synthetic_samples():
    rng = np.random.default_rng(0)
    a = np.concatenate([
        np.repeat(C[:1], 100, 0),                       # 100 exactly on c_0
        C[1] + [0.1, 0.0] + np.zeros((50, 2)),          # 50 at distance 0.1 from c_1
        C[2] + [0.25, 0.0] + np.zeros((30, 2)),         # 30 at distance 0.25 from c_2: misses
        np.zeros((20, 2)),                              # 20 at the origin
    ]).astype(np.float32)
    m = jax.device_get(jax.jit(hq.bandit_metrics)(a))
    np.testing.assert_allclose(m["mode_shares"], [0.5, 0.25, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(m["hit_rate"], 0.75, atol=1e-7)
    assert int(m["n_modes"]) == 2
    np.testing.assert_allclose(m["dispersion"], np.trace(np.cov(a.T, bias=True)), rtol=1e-5)
    per_sample = [max(math.exp(-np.sum((x - c) ** 2) / 0.02) for c in C) for x in a]
    np.testing.assert_allclose(m["mean_reward"], np.mean(per_sample), rtol=1e-5)
    # uniform on the box: Tr Cov = 2/3, each mode holds π 0.2² / 4 of the samples
    u = rng.uniform(-1, 1, (200_000, 2)).astype(np.float32)
    mu = jax.device_get(hq.bandit_metrics(u))
    np.testing.assert_allclose(mu["dispersion"], 2 / 3, atol=5e-3)
    np.testing.assert_allclose(mu["mode_shares"], math.pi * 0.04 / 4, atol=2e-3)
    assert int(mu["n_modes"]) == 0


# ----------------------------------------------------------------------------------------
# OccupationGame
# ----------------------------------------------------------------------------------------

def _occupation_run(p0, f0, actions):
    """Scripted run from a hand-made state: actions [T, 2, 2] -> rewards [T], f [T] (after each
    step), positions [T] (after each step), obs [T], global states [T]."""
    env = envs.make("haqo_occupation")
    _, state = env.reset(jax.random.key(0))
    inner = state.env_state.replace(p=jnp.asarray(p0, jnp.float32),
                                    f=jnp.asarray(f0, jnp.float32))
    state = state.replace(env_state=inner)

    def body(state, a):
        obs, state, r, done, _ = env.step(jax.random.key(1), state, a)
        s = state.env_state
        return state, (r, s.f, s.p, obs, env.global_state(state), done)

    _, out = jax.jit(lambda s, a: jax.lax.scan(body, s, a))(state, jnp.asarray(actions,
                                                                                jnp.float32))
    return jax.device_get(out)


def test_occupation_sitting_then_leaving_gives_the_hand_computed_streams():
    """Agent 0 sits on target 0 (0.6, 0.6) for 5 steps, then walks towards the centre; agent 1
    stays at the origin (on no target). Resource 0: 1 → 0.75 → … while occupied, then +0.02
    per free step; the others stay capped at 1."""
    stay = np.zeros((5, 2, 2), np.float32)
    leave = np.zeros((4, 2, 2), np.float32)
    leave[:, 0] = -1.0
    r, f, p, obs, gs, done = _occupation_run([T0, [0.0, 0.0]], np.ones(4),
                                             np.concatenate([stay, leave]))
    f_stay = [0.75, 0.5625, 0.421875, 0.31640625, 0.2373046875]
    # step t pays the resource of where the agents stand when it starts (p_t, f_t)
    np.testing.assert_allclose(r[:5, 0], [1.0] + f_stay[:4], rtol=1e-6)
    np.testing.assert_allclose(f[:5, 0], f_stay, rtol=1e-6)
    # leaving: at (0.6, 0.6) and (0.5, 0.5) it still occupies (‖·‖ ≤ 0.2), then it is off
    np.testing.assert_allclose(p[5:, 0], [[0.5, 0.5], [0.4, 0.4], [0.3, 0.3], [0.2, 0.2]],
                               atol=1e-6)
    f5 = 0.2373046875 * 0.75
    f6 = f5 * 0.75
    np.testing.assert_allclose(r[5:, 0], [0.2373046875, f5, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(f[5:, 0], [f5, f6, f6 + 0.02, f6 + 0.04], rtol=1e-6)
    np.testing.assert_allclose(f[:, 1:], 1.0)        # never occupied: capped at 1
    np.testing.assert_array_equal(r[:, 0], r[:, 1])  # shared reward
    assert not done.any()
    # obs: [own position, other position, f]; global state: [p^1, p^2, f]
    np.testing.assert_allclose(obs[:, 0], np.concatenate([p[:, 0], p[:, 1], f], -1))
    np.testing.assert_allclose(obs[:, 1], np.concatenate([p[:, 1], p[:, 0], f], -1))
    np.testing.assert_allclose(gs, np.concatenate([p.reshape(-1, 4), f], -1))


def test_occupation_shared_targets_caps_and_walls():
    # both agents on target 0: it counts once; target 3 is free and recovers (cap at 1)
    r, f, _, _, _, _ = _occupation_run([T0, T0 + 0.05], [0.5, 0.99, 1.0, 0.3],
                                       np.zeros((1, 2, 2)))
    np.testing.assert_allclose(r[0, 0], 0.5)
    np.testing.assert_allclose(f[0], [0.375, 1.0, 1.0, 0.32], rtol=1e-6)
    # two agents on two targets: both resources paid, both decay
    r, f, _, _, _, _ = _occupation_run([T0, -T0], [0.5, 1.0, 1.0, 0.25], np.zeros((1, 2, 2)))
    np.testing.assert_allclose(r[0, 0], 0.75)
    np.testing.assert_allclose(f[0], [0.375, 1.0, 1.0, 0.1875], rtol=1e-6)
    # positions are clipped to the box, actions to [-1, 1]
    _, _, p, _, _, _ = _occupation_run([[0.95, -0.95], [0.0, 0.0]], np.ones(4),
                                       [[[1.0, -1.0], [5.0, -0.5]]])
    np.testing.assert_allclose(p[0], [[1.0, -1.0], [0.1, -0.05]], atol=1e-6)


def test_occupation_contract_auto_reset_step_final_jit_eager_vmap_loop():
    env = envs.make("haqo_occupation")
    H = env.spec.max_steps
    assert H == 100 and env.spec.obs_dim == env.spec.state_dim == 8 and env.reports_final
    assert (env.spec.action_low, env.spec.action_high, env.spec.act_dim) == (-1.0, 1.0, 2)

    def rollout(key, steps):
        k0, key = jax.random.split(key)
        obs0, state = env.reset(k0)

        def body(state, k):
            ka, ks = jax.random.split(k)
            a = jax.random.uniform(ka, (2, 2), minval=-1.0, maxval=1.0)
            obs, state, r, done, info = env.step_final(ks, state, a)
            return state, (obs, r, done, info, state.env_state.p, state.env_state.f)

        return obs0, jax.lax.scan(body, state, jax.random.split(key, steps))[1]

    keys = jax.random.split(jax.random.key(7), 3)
    batched = jax.device_get(jax.jit(jax.vmap(lambda k: rollout(k, 2 * H)))(keys))
    obs0, (obs, r, done, info, p, f) = batched
    # auto-reset exactly at H: time limit (not a termination), fresh start state after it
    ends = np.flatnonzero(done[0, :, 0])
    np.testing.assert_array_equal(ends, [H - 1, 2 * H - 1])
    assert not info["terminated"].any() and not info["won"].any()
    np.testing.assert_array_equal(info["returned_episode"][0], done[0, :, 0])
    np.testing.assert_array_equal(f[:, H - 1], 1.0)
    assert np.abs(p[:, H - 1]).max() <= 0.2 and np.abs(obs0[:, :, :4]).max() <= 0.2
    # the episode return is the sum of the (shared) step rewards
    np.testing.assert_allclose(info["episode_return"][:, H - 1], r[:, :H, 0].sum(1), rtol=1e-5)
    # step_final: the pre-reset obs at an end, the returned obs elsewhere
    not_end = np.ones(2 * H, bool)
    not_end[ends] = False
    np.testing.assert_allclose(info["final_obs"][:, not_end], obs[:, not_end])
    assert not np.allclose(info["final_obs"][:, ends], obs[:, ends])
    np.testing.assert_array_equal(info["final_state"], info["final_obs"][:, :, 0])  # [p1, p2, f]
    last_move = info["final_state"][:, H - 1, :4] - p[:, H - 2].reshape(3, 4)
    assert np.abs(last_move).max() <= 0.1 + 1e-6   # one step from where the episode stood
    # vmap == loop; jit == eager (on a short prefix, eager is slow)
    single = jax.jit(lambda k: rollout(k, 2 * H))
    for i, k in enumerate(keys):
        one = jax.device_get(single(k))
        np.testing.assert_allclose(one[1][1], r[i], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(one[1][4], p[i], rtol=1e-6, atol=1e-7)
    eager = jax.device_get(rollout(keys[0], 3))
    np.testing.assert_allclose(eager[1][4], p[0, :3], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(eager[1][5], f[0, :3], rtol=1e-6, atol=1e-7)


def test_occupation_metrics_on_synthetic_log():
    T = 10
    log = np.zeros((T, 2, 2), np.float32)
    log[:6, 0] = T0                       # agent 0: 6 steps on target 0 ...
    log[6:, 0] = [0.6, -0.45]             # ... 4 steps on target 1 (0.15 from its centre)
    log[:5, 1] = [-0.6, 0.6]              # agent 1: 5 steps on target 2, then at the origin
    m = jax.device_get(jax.jit(hq.occupation_metrics)(log))
    counts = np.array([6, 4, 5, 0], np.float64)
    v = counts / counts.sum()
    np.testing.assert_allclose(m["visit_shares"], v, rtol=1e-6)
    np.testing.assert_allclose(m["visit_rate"], 15 / 20)
    assert int(m["n_targets"]) == 3
    np.testing.assert_allclose(m["coverage_entropy"], -np.sum(v[:3] * np.log(v[:3])) / np.log(4),
                               rtol=1e-6)
    np.testing.assert_allclose(m["occupied_share"], [0.6, 0.4, 0.5, 0.0])
    # no visit at all: zeros, not NaN; all four targets equally: entropy 1
    m0 = jax.device_get(hq.occupation_metrics(np.zeros((4, 2, 2))))
    assert float(m0["coverage_entropy"]) == 0.0 and int(m0["n_targets"]) == 0
    np.testing.assert_array_equal(m0["visit_shares"], 0.0)
    tgt = np.array([[0.6, 0.6], [0.6, -0.6], [-0.6, 0.6], [-0.6, -0.6]], np.float32)
    m4 = jax.device_get(hq.occupation_metrics(tgt.reshape(2, 2, 2)))
    np.testing.assert_allclose(m4["coverage_entropy"], 1.0, rtol=1e-6)
    assert int(m4["n_targets"]) == 4


# ----------------------------------------------------------------------------------------
# fixed-landmark spread
# ----------------------------------------------------------------------------------------

def test_landmarks_fixed_for_any_key_and_after_auto_reset_rest_is_jaxmarls():
    env = envs.make("haqo_landmarks")
    spec = env.spec
    assert (spec.n_agents, spec.act_dim, spec.discrete) == (2, 5, False)
    assert (spec.action_low, spec.action_high, spec.max_steps) == (0.0, 1.0, 25)
    s3 = 0.3 * math.sqrt(3)
    expected = np.array([[0.0, 0.6], [-s3, -0.3], [s3, -0.3]], np.float32)
    np.testing.assert_allclose(hq.LANDMARKS, expected, atol=1e-7)
    T = spec.max_steps

    def run(key):
        k0, key = jax.random.split(key)
        _, state = env.reset(k0)
        first = state.env_state

        def body(state, k):
            ka, ks = jax.random.split(k)
            a = jax.random.uniform(ka, (2, 5))
            _, state, r, done, _ = env.step(ks, state, a)
            return state, (state.env_state.p_pos, done[0], hq.agent_positions(state))

        _, out = jax.lax.scan(body, state, jax.random.split(key, T + 2))
        return first, out

    keys = jax.random.split(jax.random.key(11), 8)
    first, (pos, done, agents) = jax.device_get(jax.jit(jax.vmap(run))(keys))
    np.testing.assert_array_equal(first.p_pos[:, 2:], np.broadcast_to(hq.LANDMARKS, (8, 3, 2)))
    assert done[:, T - 1].all()
    np.testing.assert_array_equal(pos[:, :, 2:], np.broadcast_to(hq.LANDMARKS, (8, T + 2, 3, 2)))
    np.testing.assert_array_equal(agents, pos[:, :, :2])
    np.testing.assert_array_equal(hq.agent_positions(first), first.p_pos[:, :2])  # batched state
    # agents drawn as JaxMARL draws them, obs = JaxMARL's obs of the fixed-landmark state
    from jaxmarl.environments.mpe import SimpleSpreadMPE
    from jaxmarl.environments.mpe.default_params import CONTINUOUS_ACT
    plain = SimpleSpreadMPE(num_agents=2, num_landmarks=3, action_type=CONTINUOUS_ACT)
    k0 = jax.random.split(keys[0])[0]
    _, s_plain = plain.reset(k0)
    obs, s_ours = env.unwrapped.reset(k0)
    np.testing.assert_array_equal(s_ours.p_pos[:2], s_plain.p_pos[:2])
    obs_plain = plain.get_obs(s_ours)
    np.testing.assert_allclose(obs, np.stack([obs_plain[a] for a in plain.agents]), atol=1e-6)


def test_landmark_shares_on_synthetic_log():
    L = np.asarray(hq.LANDMARKS)
    far = np.array([0.0, 0.0], np.float32)  # 0.6 from every landmark
    log = np.stack([
        [L[0], L[1]],
        [L[0], L[1] + [0.0, 0.19]],
        [L[0], L[2] + [0.19, 0.0]],
        [L[0], far],
    ]).astype(np.float32)
    np.testing.assert_allclose(jax.jit(hq.landmark_shares)(log), [1.0, 0.5, 0.25])
    both = np.stack([[L[0], L[0]], [far, far]]).astype(np.float32)  # counted once per step
    np.testing.assert_allclose(hq.landmark_shares(both), [0.5, 0.0, 0.0])


# ----------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kw,match", [
    ("haqo_bandit", {"n_agents": 3}, "n_agents"),
    ("haqo_bandit", {"n_agents": True}, "n_agents"),
    ("haqo_occupation", {"max_steps": 0}, "max_steps"),
    ("haqo_landmarks", {"action_type": "box"}, "action_type"),
    ("haqo_landmarks", {"local_ratio": 2.0}, "local_ratio"),
])
def test_bad_options_are_clear_errors(name, kw, match):
    with pytest.raises(ValueError, match=match):
        envs.make(name, **kw)


def test_bad_shapes_are_clear_errors():
    env = envs.make("haqo_occupation")
    _, state = env.reset(jax.random.key(0))
    with pytest.raises(ValueError, match=r"\[2, 2\]"):
        env.step(jax.random.key(1), state, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\[S, 2\]"):
        hq.bandit_metrics(jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"\[T, n_agents, 2\]"):
        hq.occupation_metrics(jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\[T, n_agents, 2\]"):
        hq.landmark_shares(jnp.zeros((4, 2, 3)))
    with pytest.raises(ValueError, match="haqo_occupation or haqo_landmarks"):
        hq.agent_positions(jnp.zeros(3))
