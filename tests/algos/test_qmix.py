"""QMIX: monotonic mixer, masked greedy/epsilon-greedy actions, double-Q and TD(lambda) targets
by hand, replay/target-update bookkeeping, runner smoke on SMAX 3m, resume with the replay
buffer, and (slow) learning on 3m."""
import functools
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import envs
from jaxdiff.algos import base, qmix
from jaxdiff.run import logging as runlog
from jaxdiff.run import runner
from jaxdiff.run.checkpoint import Checkpointer

TINY = dict(num_envs=2, num_steps=8, buffer_size=8, batch_size=4, hidden=8, mixer_embed=8,
            hypernet_embed=8, updates_per_iter=2, target_update_interval=3)


# ----------------------------------------------------------------------------- mixer
@pytest.mark.parametrize("init_scale", [0.01, 1.0])
def test_mixer_is_monotonic_in_every_agent_q(init_scale):
    n, S = 5, 12
    mixer = qmix.Mixer(embed=16, hypernet_embed=32, init_scale=init_scale)

    @jax.jit
    def d_qtot_d_q(key):                                    # -> [256, n]
        k_p, k_n, k_q, k_s = jax.random.split(key, 4)
        params = mixer.init(k_p, jnp.zeros((n,)), jnp.zeros((S,)))
        # perturb every parameter so the check does not lean on the initialisation
        leaves, tree = jax.tree.flatten(params)
        params = jax.tree.unflatten(tree, [x + jax.random.normal(k, x.shape) for x, k
                                           in zip(leaves, jax.random.split(k_n, len(leaves)))])
        q = 10.0 * jax.random.normal(k_q, (256, n))
        s = 20.0 * jax.random.normal(k_s, (256, S))
        grad = jax.grad(lambda q1, s1: mixer.apply(params, q1, s1))
        return jax.vmap(grad)(q, s)

    for key in jax.random.split(jax.random.PRNGKey(0), 4):
        g = np.asarray(d_qtot_d_q(key))
        assert g.shape == (256, n)
        assert (g >= 0).all(), g.min()
        assert (g > 0).mean() > 0.5


def test_mixer_accepts_leading_dims():
    mixer = qmix.Mixer(embed=4, hypernet_embed=8, init_scale=0.01)
    params = mixer.init(jax.random.PRNGKey(0), jnp.zeros((3,)), jnp.zeros((7,)))
    out = mixer.apply(params, jnp.ones((5, 2, 3)), jnp.ones((5, 2, 7)))
    assert out.shape == (5, 2)


# ----------------------------------------------------------------------------- masks
def test_masked_argmax_and_epsilon_greedy_respect_masks():
    k_q, k_m, k_e = jax.random.split(jax.random.PRNGKey(1), 3)
    q = jax.random.normal(k_q, (4096, 6))
    mask = jax.random.bernoulli(k_m, 0.4, (4096, 6))
    mask = mask.at[:, 0].set(mask[:, 0] | ~mask.any(-1))          # at least one available
    q = jnp.where(mask, q, q + 100.0)                               # unavailable look best
    greedy = np.asarray(qmix.masked_argmax(q, mask))
    assert np.take_along_axis(np.asarray(mask), greedy[:, None], 1).all()
    for eps in (0.5, 1.0):
        a = np.asarray(qmix.epsilon_greedy(k_e, q, mask, eps))
        assert np.take_along_axis(np.asarray(mask), a[:, None], 1).all()
    # eps=1 is uniform over the available actions: every available action shows up
    a = np.asarray(qmix.epsilon_greedy(k_e, jnp.zeros((4096, 3)), jnp.ones((4096, 3), bool), 1.0))
    assert set(a.tolist()) == {0, 1, 2}


def _numpy_rnn_agent(params, obs, h, last_action, n_actions):
    """pymarl's RNNAgent written out in numpy (flax GRUCell equations): input [obs, one-hot
    last action (zeros for -1), one-hot agent id] -> Dense -> ReLU -> GRU -> Dense.
    obs [B, n, d], h [B, n, H], last_action int [B, n] -> (h' [B, n, H], q [B, n, A])."""
    P = jax.tree.map(lambda x: np.asarray(x, np.float64), params["params"])
    B, n = last_action.shape
    la = (last_action[..., None] == np.arange(n_actions)).astype(np.float64)
    agent_id = np.broadcast_to(np.eye(n), (B, n, n))
    x = np.concatenate([obs, la, agent_id], -1)

    def lin(p, v):
        return v @ p["kernel"] + p.get("bias", 0.0)

    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    x = np.maximum(lin(P["Torso_0"]["Dense_0"], x), 0.0)
    g = P["Torso_0"]["GRUCell_0"]
    r = sig(lin(g["ir"], x) + lin(g["hr"], h))
    z = sig(lin(g["iz"], x) + lin(g["hz"], h))
    cand = np.tanh(lin(g["in"], x) + r * lin(g["hn"], h))
    h_new = (1.0 - z) * cand + z * h
    return h_new, lin(P["Dense_0"], h_new)


@pytest.fixture(scope="module")
def speaker_listener():
    """QMIX on speaker-listener (speaker: 3 of 5 actions, listener: 5) with every agent
    parameter perturbed, so no bias is zero and the checks lean on no initialisation; `act`
    is jitted once with the state as an argument (hyper-parameters vary without recompiling)."""
    algorithm = base.get("qmix")
    env = envs.make("mpe_simple_speaker_listener")
    config = base.make_config(algorithm.Config, TINY)
    state = jax.jit(lambda k: algorithm.init(k, env, config))(jax.random.PRNGKey(0))
    leaves, tree = jax.tree.flatten(state.params["agent"])
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    agent = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape)
                                      for x, k in zip(leaves, keys)])
    state = state.replace(params=dict(state.params, agent=agent))
    _, env_state = env.reset(jax.random.PRNGKey(2))

    @functools.partial(jax.jit, static_argnames="deterministic")
    def act(state, obs, carry, mask, key, deterministic):     # batched over a leading axis
        return jax.vmap(lambda o, c, m, k: algorithm.act(config, env, state, o, c, m, k,
                                                         deterministic=deterministic))(
            obs, carry, mask, key)

    return SimpleNamespace(algorithm=algorithm, env=env, config=config, state=state, act=act,
                           env_mask=np.asarray(env.action_mask(env_state)))


def test_greedy_act_is_the_masked_argmax_of_the_agent_q_values(speaker_listener):
    """Deterministic act = argmax over the AVAILABLE actions of Q-values recomputed in numpy from
    the agent parameters, on random observations, GRU states, last actions and masks; the new
    carry is the numpy GRU state and the chosen action."""
    sl = speaker_listener
    spec = sl.env.spec
    n, A, B = spec.n_agents, spec.act_dim, 256
    k = jax.random.split(jax.random.PRNGKey(3), 4)
    obs = np.asarray(jax.random.normal(k[0], (B, n, spec.obs_dim)))
    h = np.asarray(0.5 * jax.random.normal(k[1], (B, n, sl.config.hidden)))
    last = np.asarray(jax.random.randint(k[2], (B, n), -1, A), np.int32)
    mask = np.asarray(jax.random.bernoulli(k[3], 0.5, (B, n, A))) & sl.env_mask
    mask[..., 0] |= ~mask.any(-1)                                   # one action at least

    actions, carry = jax.device_get(sl.act(sl.state, obs, dict(h=h, last_action=last), mask,
                                           jax.random.split(k[0], B), deterministic=True))
    h_ref, q_ref = _numpy_rnn_agent(sl.state.params["agent"], obs, h, last, A)
    np.testing.assert_allclose(carry["h"], h_ref, rtol=1e-4, atol=1e-5)
    expected = np.argmax(np.where(mask, q_ref, -np.inf), -1)
    np.testing.assert_array_equal(actions, expected)
    np.testing.assert_array_equal(carry["last_action"], actions)
    assert np.take_along_axis(mask, actions[..., None], -1).all()
    # the masks mattered: the unmasked argmax is often unavailable
    assert (~np.take_along_axis(mask, np.argmax(q_ref, -1)[..., None], -1)).mean() > 0.2


@pytest.mark.parametrize("eps", [0.0, 0.4, 1.0])
def test_epsilon_greedy_act_frequencies(speaker_listener, eps):
    """Stochastic act draws a uniformly random AVAILABLE action with probability eps_finish,
    else the greedy one: P(a) = (1 - eps) 1{a = greedy} + eps / #available, checked by a
    chi-square test over 20k keys per agent; unavailable actions never appear."""
    from scipy import stats

    sl = speaker_listener
    n, A = sl.env.spec.n_agents, sl.env.spec.act_dim
    mask = sl.env_mask.copy()
    mask[1, 3] = False                                     # listener: 4 of its 5 actions
    obs = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (n, sl.env.spec.obs_dim)))
    carry = sl.algorithm.init_carry(sl.config, sl.env)
    state = sl.state.replace(hp=sl.state.hp.replace(eps_finish=jnp.asarray(eps)))
    draws = 20_000
    batch = lambda x: jax.tree.map(lambda v: np.broadcast_to(v, (draws,) + np.shape(v)), x)
    keys = jax.random.split(jax.random.PRNGKey(6), draws)
    greedy = np.asarray(sl.act(state, *batch((obs, carry, mask)), keys, deterministic=True)[0][0])
    actions = np.asarray(sl.act(state, *batch((obs, carry, mask)), keys, deterministic=False)[0])
    for i in range(n):
        counts = np.bincount(actions[:, i], minlength=A)
        assert counts[~mask[i]].sum() == 0, (i, counts)
        p = mask[i] * eps / mask[i].sum()
        p[greedy[i]] += 1.0 - eps
        if eps == 0.0:
            assert counts[greedy[i]] == draws
            continue
        avail = mask[i]
        assert stats.chisquare(counts[avail], draws * p[avail]).pvalue > 1e-3, (i, counts, p)


def test_double_q_uses_online_argmax_over_available_actions():
    q_online = jnp.array([[1.0, 5.0, 3.0], [2.0, 0.0, 9.0]])
    q_target = jnp.array([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]])
    mask = jnp.array([[True, False, True], [True, True, False]])
    # row 0: online prefers 1 (unavailable) -> 2 -> target 30; row 1: prefers 2 (unavailable)
    # -> 0 -> target 40 (not the target's own max, 50: that is the double-Q part)
    np.testing.assert_allclose(qmix.double_q_values(q_online, q_target, mask), [30.0, 40.0])


# ----------------------------------------------------------------------------- targets
def test_td_targets_by_hand():
    r = jnp.array([1.0, 0.0, 2.0])
    d = jnp.array([False, True, False])
    q_next = jnp.array([9.0, 4.0, 6.0, 8.0])   # target Q_tot at t = 0..3 (t=3: bootstrap)
    g = 0.9
    # one step: G_t = r_t + g (1 - d_t) Q'_{t+1}
    np.testing.assert_allclose(qmix.td_targets(r, d, q_next, g, 0.0), [4.6, 0.0, 9.2],
                               rtol=1e-6)
    # lambda = 0.5: G2 = 2 + .9*8 = 9.2; G1 = 0 (terminal); G0 = 1 + .9*(.5*4 + .5*G1) = 2.8
    np.testing.assert_allclose(qmix.td_targets(r, d, q_next, g, 0.5), [2.8, 0.0, 9.2],
                               rtol=1e-6)
    # lambda = 1 with no terminal: the discounted Monte-Carlo return bootstrapped at the end
    d0 = jnp.zeros(3, bool)
    mc = [1 + g * (0 + g * (2 + g * 8.0)), 0 + g * (2 + g * 8.0), 2 + g * 8.0]
    np.testing.assert_allclose(qmix.td_targets(r, d0, q_next, g, 1.0), mc, rtol=1e-6)


def test_epsilon_schedule_is_linear_in_env_steps():
    config = base.make_config(qmix.Config, dict(eps_start=1.0, eps_finish=0.1,
                                                eps_anneal_steps=1000.0))
    hp = jax.tree.map(jnp.asarray, config)
    np.testing.assert_allclose([qmix.epsilon(hp, t) for t in (0, 500, 1000, 5000)],
                               [1.0, 0.55, 0.1, 0.1], rtol=1e-6)


# ----------------------------------------------------------------------------- step
def test_step_bookkeeping_on_mpe(tmp_path):
    """Exact env steps, no update before the buffer holds a batch, an exact target copy every
    `target_update_interval` gradient steps and none in between, every stored sequence
    consistent with the env (done <-> next reset), and the whole state, replay buffer included,
    survives a checkpoint: stepping the restored copy is bit-identical."""
    env = envs.make("mpe_simple_spread")
    config = base.make_config(qmix.Config, dict(TINY, num_steps=13, updates_per_iter=1,
                                                target_update_interval=2))
    state = jax.jit(lambda k: qmix.init(k, env, config))(jax.random.PRNGKey(0))
    # committed to the device as a restored checkpoint is, so one compile serves both
    state = jax.device_put(state, jax.devices()[0])
    step = jax.jit(qmix.step(env, config))
    leaves = jax.tree.leaves

    def same(a, b):
        return all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b)))

    s1, m1 = step(state)                      # 2 sequences stored < batch 4: no update
    assert int(s1.env_steps) == qmix.env_steps_per_iter(config, env) == 26
    assert float(m1["learning"]) == 0 and int(s1.grad_steps) == 0
    assert same(s1.params, state.params)
    s2, m2 = step(s1)                         # 4 stored: gradient step 1, target kept
    assert float(m2["learning"]) == 1 and int(s2.grad_steps) == 1
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(m2))
    assert not same(s2.params, state.params) and same(s2.target, state.target)
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(2, s2, {})
    restored = ckpt.restore_latest(jax.eval_shape(lambda: s2))[1]
    s3, _ = step(s2)                          # gradient step 2: target = online, exactly
    assert int(s3.grad_steps) == 2 and same(s3.target, s3.params)
    assert same(s3, step(restored)[0])
    # replay items: the reset flag of step t+1 is the done flag of step t; -1 last action there
    exp = jax.tree.map(lambda x: np.asarray(x[0, :6]), s3.buffer.experience)
    np.testing.assert_array_equal(exp["reset"][:, 1:], exp["done"])
    assert (exp["last_action"][:, 1:][exp["done"]] == -1).all()
    np.testing.assert_array_equal(exp["last_action"][:, 1:][~exp["done"]],
                                  exp["action"][~exp["done"]])
    # MPE episodes last 25 steps: each env ends one episode in its 39 steps, at step 25
    assert exp["done"].sum() == 2 and exp["done"][2:4, 11].all()


def test_refuses_continuous_actions():
    algorithm = base.get("qmix")
    with pytest.raises(base.ConfigError, match="does not support continuous"):
        base.check_action_type(algorithm, envs.make("mpe_simple_spread",
                                                    action_type="continuous").spec)
    with pytest.raises(base.ConfigError, match="buffer_size"):
        base.make_config(qmix.Config, dict(buffer_size=4, batch_size=8))


# ----------------------------------------------------------------------------- runner
@pytest.mark.slow
def test_smoke_runner_smax_3m_two_seeds(tmp_path):
    spec = runner.RunSpec(algo="qmix", env="smax_3m", env_kwargs={},
                          algo_overrides=dict(TINY, reward_scale=10.0), seeds=2,
                          total_steps=64, chunks=2, eval_episodes=2)
    summary = runner.train(spec, str(tmp_path), progress=False, quiet=True)
    assert math.isfinite(summary["final"]["return_mean"])
    assert "win_rate_mean" in summary["final"]
    rows = runlog.read_jsonl(str(tmp_path / "metrics.jsonl"))
    assert len(rows) == 4
    for r in rows:
        for k in ("loss", "q_tot", "target", "epsilon", "grad_norm", "eval_return"):
            assert math.isfinite(r[k]), k
    assert rows[-1]["grad_steps"] > 0


@pytest.mark.slow
def test_resume_with_replay_buffer_is_bit_identical(tmp_path):
    def spec():
        return runner.RunSpec(algo="qmix", env="mpe_simple_spread", env_kwargs={},
                              algo_overrides=TINY, seeds=2, total_steps=4 * 16, chunks=4,
                              eval_episodes=2)
    full, part = tmp_path / "full", tmp_path / "part"
    runner.train(spec(), str(full), progress=False, quiet=True)
    runner.train(spec(), str(part), progress=False, quiet=True, max_chunks=2)
    runner.train(spec(), str(part), progress=False, quiet=True)
    a = runner.restore_state(str(full))[4]
    b = runner.restore_state(str(part))[4]
    assert int(a.buffer.current_index[0]) == 0 and bool(a.buffer.is_full[0])  # 8 of 8 stored
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_learns_smax_3m(tmp_path):
    """QMIX wins 3m against the heuristic enemy (a random policy wins 0%) on a CPU budget."""
    over = dict(reward_scale=10.0)   # the smax preset of configs/algo/qmix.yaml
    spec = runner.RunSpec(algo="qmix", env="smax_3m", env_kwargs={}, algo_overrides=over,
                          seeds=1, total_steps=200_000, chunks=4, eval_episodes=64)
    summary = runner.train(spec, str(tmp_path), progress=False, quiet=True)
    assert summary["best"]["win_rate_mean"] >= 0.3, summary
