"""History encoder τ_i: window contents, zero padding, resets, agent id, online == gather."""
import jax
import numpy as np
import pytest

from jaxdiff.data import history as hist

N, OBS, A, H = 2, 1, 3, 3
SPEC = hist.HistorySpec(n_agents=N, obs_dim=OBS, n_actions=A, history=H)
# A 3-step episode, then a reset (t=3 starts a new episode), then one more step.
FIRST = np.array([True, False, False, True, False])
T = len(FIRST)
OBS_SEQ = np.array([[[10 * t + i + 1.0] for i in range(N)] for t in range(T)], np.float32)
ACT_SEQ = np.array([[(t + i) % A for i in range(N)] for t in range(T)], np.int32)


def onehot(a):
    return np.eye(A, dtype=np.float32)[a]


def expected_tau(t, i):
    """τ_i^t written out by hand from the definition (most recent block first)."""
    start = max(s for s in range(t + 1) if FIRST[s])
    parts = [np.eye(N, dtype=np.float32)[i]]
    for k in range(H):
        s = t - k
        if s >= start:
            act = onehot(ACT_SEQ[s - 1, i]) if s - 1 >= start else np.zeros(A, np.float32)
            parts += [OBS_SEQ[s, i], act]
        else:
            parts += [np.zeros(OBS, np.float32), np.zeros(A, np.float32)]
    return np.concatenate(parts)


def test_dim():
    assert SPEC.dim == N + H * (OBS + A) == 14
    assert SPEC.replace(agent_id=False).dim == H * (OBS + A)
    assert SPEC.replace(n_actions=0).dim == N + H * OBS
    with pytest.raises(ValueError, match="history"):
        hist.HistorySpec(n_agents=2, obs_dim=1, n_actions=3, history=0)


def test_window_contents_against_hand_made_sequence():
    taus = np.asarray(hist.encode_sequence(SPEC, OBS_SEQ, ACT_SEQ, FIRST))
    assert taus.shape == (T, N, SPEC.dim)
    for t in range(T):
        for i in range(N):
            np.testing.assert_array_equal(taus[t, i], expected_tau(t, i), err_msg=f"t={t} i={i}")
    # Spot checks written as literal numbers: agent 0 at t=2 and right after the reset.
    np.testing.assert_array_equal(
        taus[2, 0], [1, 0, 21, 0, 1, 0, 11, 1, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(
        taus[4, 1], [0, 1, 42, 0, 1, 0, 32, 0, 0, 0, 0, 0, 0, 0])


def test_zero_padding_at_episode_start():
    taus = np.asarray(hist.encode_sequence(SPEC, OBS_SEQ, ACT_SEQ, FIRST))
    for t in (0, 3):  # both episode starts
        body = taus[t, :, N:].reshape(N, H, OBS + A)
        assert np.all(body[:, 0, OBS:] == 0)   # no previous action at an episode's first step
        assert np.all(body[:, 1:] == 0)        # no older blocks
        assert np.all(body[:, 0, :OBS] == OBS_SEQ[t])


def test_reset_on_done_no_leakage_across_boundary():
    taus = hist.encode_sequence(SPEC, OBS_SEQ, ACT_SEQ, FIRST)
    rng = np.random.default_rng(0)
    obs2, act2 = OBS_SEQ.copy(), ACT_SEQ.copy()
    obs2[:3] = rng.normal(size=obs2[:3].shape)        # rewrite the whole first episode
    act2[:3] = rng.integers(0, A, size=act2[:3].shape)
    taus2 = hist.encode_sequence(SPEC, obs2, act2, FIRST)
    np.testing.assert_array_equal(taus[3:], taus2[3:])
    assert not np.array_equal(taus[:3], taus2[:3])


def test_online_push_matches_sequence_and_jits():
    push = jax.jit(lambda c, o, a, f: hist.push(SPEC, c, o, a, f))
    carry, prev, out = hist.init(SPEC), np.zeros(N, np.int32), []
    for t in range(T):
        carry = push(carry, OBS_SEQ[t], prev, FIRST[t])
        out.append(hist.encode(SPEC, carry))
        prev = ACT_SEQ[t]
    np.testing.assert_array_equal(np.stack(out), hist.encode_sequence(SPEC, OBS_SEQ, ACT_SEQ, FIRST))


def _random_batch(key, E=4, T=12, spec=SPEC):
    ko, ka, kf = jax.random.split(key, 3)
    obs = jax.random.normal(ko, (E, T, spec.n_agents, spec.obs_dim))
    if spec.discrete:
        act = jax.random.randint(ka, (E, T, spec.n_agents), 0, max(spec.n_actions, 1))
    else:
        act = jax.random.normal(ka, (E, T, spec.n_agents, spec.n_actions))
    first = jax.random.bernoulli(kf, 0.25, (E, T))
    return obs, act, first


@pytest.mark.parametrize("spec", [
    SPEC,
    hist.HistorySpec(n_agents=3, obs_dim=2, n_actions=2, history=4, discrete=False),
    hist.HistorySpec(n_agents=3, obs_dim=2, n_actions=0, history=1, agent_id=False),
], ids=["discrete", "continuous", "no-actions"])
def test_vmap_equals_loop_and_gather_equals_scan(spec):
    obs, act, first = _random_batch(jax.random.PRNGKey(1), spec=spec)
    E, T = first.shape
    single = jax.jit(lambda o, a, f: hist.encode_sequence(spec, o, a, f))
    batched = jax.jit(jax.vmap(single))(obs, act, first)
    loop = np.stack([single(obs[e], act[e], first[e]) for e in range(E)])
    np.testing.assert_array_equal(batched, loop)
    # The gather version (used by datasets) gives the same windows, one env or many at once.
    t = np.arange(T)
    gather_one = jax.jit(lambda o, a, f: hist.windows(spec, o, a, f, t))
    for e in range(E):
        np.testing.assert_array_equal(gather_one(obs[e], act[e], first[e]), loop[e])
    ee, tt = np.repeat(np.arange(E), T), np.tile(t, E)
    gathered = jax.jit(lambda o, a, f: hist.windows(spec, o, a, f, tt, env_index=ee))(obs, act, first)
    np.testing.assert_array_equal(gathered, loop.reshape(E * T, *loop.shape[2:]))
