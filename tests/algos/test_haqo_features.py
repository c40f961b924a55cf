"""HAQO acceptance checks F9, F10, F12, F13, F19, F22, F25 (spec-haqo §7; §3.7, §3.8, §4).

Independent references: the 1/K law of a mean of K independent draws (F9); the reward of a
one-step bandit and the Bellman fixed point of a two-state chain solved by hand (F10); a
chi-square test against the uniform law on the 3! orders and a counting body (F12); a
brute-force NumPy enumeration of Lemma A.6's conditional value chain (F13); the actions an
instrumented env actually receives and the per-agent rewards it actually returns (F19, F25);
MuJoCo's own joint names for the MABrax partitions (F25, slow: Brax compiles).
"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxdiff import envs
from jaxdiff.algos import base, haqo, sequential

TINY = dict(hidden=16, layers=1, time_features=8, steps=3, num_envs=4, rollout_len=4,
            critic_updates=2, batch_size=16, actor_states=32, kl_states=16, buffer_size=256,
            warmup_steps=16, k_behaviour=3, k_target=2, k_train=4, n_entropy=2)


def _config(**over):
    return base.make_config(haqo.Config, dict(TINY, **over))


# ------------------------------------------------------------------------------------- F9
def _init(env, config):
    """HAQO's initial state, compiled (a third faster than eager on these tiny nets)."""
    return jax.jit(lambda k: haqo.init(k, env, config))(jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def spread():
    """mpe_simple_spread (continuous) behind the recording env of F19/F25, its HAQO state."""
    config = _config()
    env = _Recorder(envs.make("mpe_simple_spread", action_type="continuous"))
    return env, config, _init(env, config)


def test_k_sample_baseline_variance_falls_as_one_over_k_f9(spread):
    """V^(s) = mean_K min-twin Q(s, ctx with agent i at candidate k), the candidates drawn by
    HAQO's own sampler from a fresh actor and scored by `q_min` with a fresh critic (the claim
    is about Monte-Carlo variance, so untrained networks do): over 4096 seeds (batch rows),
    Var(K=8) / Var(K=2) = 0.25 for independent candidates (sd of the ratio ~0.03 here); the
    three K share one draw of 8 candidates per seed (one compile); each variance estimate
    stays unbiased."""
    env, config, state = spread
    p = haqo._parts(env, config)
    obs, es = env.reset(jax.random.PRNGKey(1))
    gstate = env.global_state(es)
    ctx = haqo.sample_candidates(p, state.actor, obs[None], jax.random.PRNGKey(2), 1)[:, 0]
    i = 1

    @jax.jit
    def v_hat(key, actor, critic, obs, gstate, ctx):   # arguments, not constants to fold
        S = 4096         # one row per seed; V^ from the first 1, 2 and all 8 candidates of a row
        rows = jnp.broadcast_to(obs, (S,) + obs.shape)
        cand = haqo.sample_candidates(p, actor, rows, key, 8)[:, :, i]              # [S, 8, A]
        q = haqo.q_min(p, critic, gstate[None, None],
                       haqo.with_agent(ctx[:, None], i, cand))                      # [S, 8]
        return {k: q[:, :k].mean(1) for k in (1, 2, 8)}

    v = v_hat(jax.random.PRNGKey(3), state.actor, state.critic, obs, gstate, ctx)
    var = {k: float(jnp.var(x)) for k, x in v.items()}
    assert var[1] > 0.0
    ratio = var[8] / var[2]
    print(f"F9 Var(K=8)/Var(K=2) = {ratio:.3f}, Var(K=2)/Var(K=1) = {var[2] / var[1]:.3f}")
    assert 0.15 <= ratio <= 0.35, (ratio, var)
    assert 0.35 <= var[2] / var[1] <= 0.65, var       # the same law one step earlier


# ------------------------------------------------------------------------------------ F10
def _chain_items(p, rewards, next_state, term):
    """Transitions of a 2-state, 2-agent, 2-action problem: every (state, joint action) once
    (gstate -1 or +1), stored 4 times (32 items). rewards/next_state/term: per state [2]."""
    rows = []
    for s, a0, a1 in itertools.product(range(2), range(2), range(2)):
        x = 2.0 * jax.nn.one_hot(jnp.array([a0, a1]), 2) - 1.0          # analog one-hot
        rows.append(dict(gstate=jnp.array([2.0 * s - 1.0]), obs=jnp.ones((2, 1)), action=x,
                         mask=jnp.ones((2, 2), bool), reward=jnp.float32(rewards[s]),
                         next_gstate=jnp.array([2.0 * next_state[s] - 1.0]),
                         next_obs=jnp.ones((2, 1)), next_mask=jnp.ones((2, 2), bool),
                         term=jnp.bool_(term[s]), valid=jnp.float32(1.0)))
    items = jax.tree.map(lambda *xs: jnp.stack(xs * 4), *rows)
    return items


@pytest.fixture(scope="module")
def critic_fit():
    """One compiled run of `make_critic_update` (1500 TD steps) on a buffer built directly;
    gamma, lr and tau are dynamic, so every case reuses the compile."""
    env = envs.make("coordination_game", n_agents=2, n_actions=2)
    config = _config(batch_size=16, actor_states=16, buffer_size=32)
    p = haqo._parts(env, config)
    state0 = _init(env, config)
    update = haqo.make_critic_update(env, config)

    @jax.jit
    def run(state, items, keys):
        state = state.replace(buffer=p.buffer.add(p.buffer.init(jax.tree.map(lambda x: x[0],
                                                                              items)), items))
        state, m = jax.lax.scan(update, state, keys)
        q = haqo.q_min(p, state.critic, items["gstate"],
                       haqo.critic_action(p, items["action"], items["mask"]))
        return q, m

    def fit(items, gamma, steps=1500):
        state = state0.replace(hp=state0.hp.replace(
            gamma=jnp.asarray(gamma), critic_lr=jnp.asarray(1e-2), polyak=jnp.asarray(0.1)))
        q, m = run(state, items, jax.random.split(jax.random.PRNGKey(1), steps))
        return np.asarray(q), jax.tree.map(np.asarray, m)

    return p, fit


def test_critic_fits_the_reward_of_a_one_step_bandit_f10(critic_fit):
    """(a) gamma = 0, every transition terminal: the TD target is r, so Q(s, a) -> r(s, a)
    (8 distinct state-joint-action rewards)."""
    p, fit = critic_fit
    r = np.random.default_rng(0).uniform(-1, 1, 8).astype(np.float32)
    items = _chain_items(p, [0.0, 0.0], [0, 1], [True, True])
    items["reward"] = jnp.asarray(np.tile(r, 4))
    q, m = fit(items, 0.0)
    mse = float(np.mean((q[:8] - r) ** 2))
    print(f"F10 bandit MSE {mse:.2e}")
    assert mse < 1e-3, (mse, q[:8], r)
    assert m["q_loss"][-100:].mean() < m["q_loss"][:10].mean()


def test_critic_reaches_the_bellman_fixed_point_and_term_cuts_the_bootstrap_f10(critic_fit):
    """(b) s0 -> s1 (r = 0), s1 -> s0 (r = 1), rewards and moves independent of the action, so
    Q(s, a) = V(s) for every policy: V(s0) = g V(s1), V(s1) = 1 + g V(s0), i.e.
    V = (g, 1) / (1 - g^2) = (2/3, 4/3) at g = 0.5. The s1 -> s0 step stands for an episode
    end by the time limit (term False; s' the true pre-reset state): it bootstraps.
    (c) the same data with that step a termination: V(s1) = 1, V(s0) = g = 0.5."""
    p, fit = critic_fit
    g = 0.5
    for term, want in (((False, False), (g / (1 - g * g), 1 / (1 - g * g))),
                       ((False, True), (g, 1.0))):
        q, m = fit(_chain_items(p, [0.0, 1.0], [1, 0], term), g)
        v = np.array([q[:4].mean(), q[4:8].mean()])          # by state (actions 0..3)
        print(f"F10 term={term}: V = {v}, want {want}")
        np.testing.assert_allclose(q[:8], np.repeat(v, 4), atol=1e-2)
        np.testing.assert_allclose(v, want, atol=1e-2, err_msg=f"term={term}")


# ------------------------------------------------------------------------------------ F12
def test_agent_order_is_uniform_over_permutations_and_each_agent_updates_once_f12():
    """6000 orders for n = 3: chi-square against the uniform law on the 6 permutations
    (p > 0.01); the same statistic flags a biased sampler (a fixed order). A counting body run
    by `agent_scan` under random orders: each agent updated exactly once per round, in the
    order given."""
    keys = jax.random.split(jax.random.PRNGKey(0), 6000)
    orders = np.asarray(jax.jit(jax.vmap(lambda k: sequential.agent_order(k, 3, False)))(keys))
    perms = list(itertools.permutations(range(3)))
    index = {p: j for j, p in enumerate(perms)}
    counts = np.bincount([index[tuple(o)] for o in orders], minlength=6)
    assert counts.sum() == 6000
    p_value = stats.chisquare(counts).pvalue
    print(f"F12 counts {counts.tolist()}, chi-square p = {p_value:.3f}")
    assert p_value > 0.01, (counts, p_value)
    fixed = np.asarray(sequential.agent_order(keys[0], 3, True))
    np.testing.assert_array_equal(fixed, [0, 1, 2])
    biased = np.bincount([index[tuple(fixed)]] * 5000 + [index[tuple(o)] for o in orders[:1000]],
                         minlength=6)
    assert stats.chisquare(biased).pvalue < 1e-10

    def body(i, p_i, o_i, carry, key):
        visits, pos = carry
        return p_i + 1.0, o_i, (visits.at[i].add(1), pos.at[i].set(visits.sum())), i

    @jax.jit
    def round_(order):
        z = jnp.zeros(3, jnp.int32)
        params, opt, (visits, pos), seen = sequential.agent_scan(
            body, jnp.zeros((3, 2)), jnp.zeros((3,)), (z, z), order,
            jax.random.split(jax.random.PRNGKey(1), 3))
        return params, visits, pos, seen

    for order in orders[:12]:
        params, visits, pos, seen = round_(jnp.asarray(order))
        np.testing.assert_array_equal(params, np.ones((3, 2)))   # each agent's params moved once
        np.testing.assert_array_equal(visits, [1, 1, 1])
        np.testing.assert_array_equal(seen, order)               # visited in the drawn order
        np.testing.assert_array_equal(np.asarray(pos)[order], [0, 1, 2])


# ------------------------------------------------------------------------------------ F13
def _brute_force_deltas(q, probs, order):
    """Lemma A.6 by enumeration: Q^(m)(a^{i_1:m}) sums Q over every successor action with its
    probability; Delta_m = Q^(m) - Q^(m-1) for every joint action a."""
    n, A = probs.shape
    out = np.zeros((n,) + (A,) * n)

    def q_m(a, m):       # condition on the first m agents of the order, average the rest
        rest = [int(j) for j in order[m:]]
        total = 0.0
        for b in itertools.product(range(A), repeat=len(rest)):
            joint, w = list(a), 1.0
            for j, bj in zip(rest, b):
                joint[j] = bj
                w *= probs[j, bj]
            total += w * q[tuple(joint)]
        return total

    for a in itertools.product(range(A), repeat=n):
        for m in range(1, n + 1):
            out[(m - 1,) + a] = q_m(a, m) - q_m(a, m - 1)
    return out


def _game(seed, n=3, A=3):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(A,) * n)
    probs = rng.dirichlet(np.ones(A), size=n)
    return q, probs


def test_conditional_advantages_match_brute_force_and_lemma_a6_f13():
    """Random 3-agent 3-action game, random tabular policies, every order: the jitted tabular
    Delta_m equals the enumeration, sums to A = Q - V, has zero mean under pi^{i_m}, and does
    not depend on the successors' actions."""
    fn = jax.jit(sequential.conditional_advantages)
    for seed in range(3):
        q, probs = _game(seed)
        v = np.einsum("abc,a,b,c->", q, *probs)
        for order in itertools.permutations(range(3)):
            order = np.array(order)
            delta = np.asarray(fn(jnp.asarray(q, jnp.float32), jnp.asarray(probs, jnp.float32),
                                  jnp.asarray(order, jnp.int32)), np.float64)
            np.testing.assert_allclose(delta, _brute_force_deltas(q, probs, order), atol=1e-5)
            np.testing.assert_allclose(delta.sum(0), q - v, atol=1e-5)
            for m in range(3):
                j = order[m]
                mean = np.moveaxis(delta[m], j, -1) @ probs[j]        # E_{a^j ~ pi^j}
                np.testing.assert_allclose(mean, 0.0, atol=1e-6)
                for k in order[m + 1:]:                               # successors: constant
                    spread = delta[m].max(k) - delta[m].min(k)
                    np.testing.assert_allclose(spread, 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="q must be"):
        sequential.conditional_advantages(jnp.zeros((3, 3)), jnp.ones((3, 3)) / 3,
                                          jnp.arange(3))


def test_haqo_sampled_conditional_advantage_converges_to_delta_f13():
    """HAQO's per-agent advantage (spec §3.8): other agents at one sampled context action,
    agent i_m's candidate against the mean of K baseline candidates, scored by `q_min` over
    `with_agent` joints. Averaged over N draws of the successors (predecessors fixed at a^{i<m})
    it estimates Delta_m: the max error over every (position, predecessor, own action) shrinks
    ~ 1/sqrt(N) and is small at N = 16384. The critic is the game's Q table read from the
    one-hot joint action the critic is given."""
    q, probs = _game(7)
    order = np.array([2, 0, 1])
    env = envs.make("coordination_game", n_agents=3, n_actions=3)
    table = jnp.asarray(q, jnp.float32)

    class TableQ:
        def apply(self, params, x):
            onehot = x[..., env.spec.state_dim:].reshape(x.shape[:-1] + (3, 3))
            a = jnp.argmax(onehot, -1)
            return table[a[..., 0], a[..., 1], a[..., 2]]

    p = haqo._parts(env, _config()).replace(critic=TableQ())
    critic = jnp.zeros((2,))
    mask = jnp.ones((3, 3), bool)
    analog = lambda a: 2.0 * jax.nn.one_hot(a, 3) - 1.0
    log_probs = jnp.log(jnp.asarray(probs, jnp.float32))
    K = 4

    pos = jnp.argsort(jnp.asarray(order))              # each agent's position in the order

    def estimate(key, m, pred, own, n_draws):
        """Delta^_m for predecessor actions `pred` [3] (entries of agents at positions < m
        used) and own action `own`, over n_draws contexts; m may be traced."""
        i = jnp.asarray(order)[m]
        k_ctx, k_base = jax.random.split(key)
        ctx = jax.random.categorical(k_ctx, log_probs, shape=(n_draws, 3))          # [N, n]
        ctx = jnp.where(pos < m, pred, ctx)                                        # fix preds
        base = jax.random.categorical(k_base, log_probs[i], shape=(n_draws, K))     # [N, K]
        cand = jnp.concatenate([jnp.full((n_draws, 1), own), base], 1)              # [N, 1+K]
        ctx_x = haqo.critic_action(p, analog(ctx), mask)                           # [N, n, A]
        feat = haqo.critic_action(p, analog(cand)[:, :, None], mask[i][None, None])[:, :, 0]
        qs = haqo.q_min(p, critic, jnp.zeros((n_draws, 1, 1)),
                        haqo.with_agent(ctx_x[:, None], i, feat))                  # [N, 1+K]
        return jnp.mean(qs[:, 0] - qs[:, 1:].mean(1))

    exact = np.asarray(sequential.conditional_advantages(table, jnp.asarray(probs, jnp.float32),
                                                         jnp.asarray(order)))
    cases = [(m, pred, own) for m in range(3) for pred in itertools.product(range(3), repeat=3)
             if all(pred[j] == 0 for j in order[m:]) for own in range(3)]
    want = []
    for m, pred, own in cases:
        a = np.array(pred)
        a[order[m]] = own
        want.append(exact[(m,) + tuple(a)])
    ms, preds, owns = (jnp.asarray(np.array(c)) for c in zip(*cases))
    keys = jax.random.split(jax.random.PRNGKey(0), len(cases))
    errors = {}
    for n_draws in (64, 16384):
        est = jax.jit(jax.vmap(lambda k, m, pr, o: estimate(k, m, pr, o, n_draws)))
        errors[n_draws] = float(np.abs(np.asarray(est(keys, ms, preds, owns)) - want).max())
    scale = np.abs(exact).max()
    print(f"F13 max |Delta^ - Delta| by draws: {errors}, max |Delta| {scale:.3f}")
    assert errors[16384] < 0.05 * scale, (errors, scale)
    assert errors[16384] < errors[64] / 4, errors


# ------------------------------------------------------------------------------------ F19
class _Recorder:
    """An env that passes everything through and reports, in info, the actions it received
    and its per-agent rewards (what HAQO sends, what the env pays)."""

    def __init__(self, env):
        self.env, self.spec, self.reports_final = env, env.spec, env.reports_final

    def reset(self, key):
        return self.env.reset(key)

    def global_state(self, state):
        return self.env.global_state(state)

    def action_mask(self, state):
        return self.env.action_mask(state)

    def _record(self, out, actions):
        obs, state, reward, done, info = out
        return obs, state, reward, done, dict(info, sent=actions, rewards=reward)

    def step(self, key, state, actions):
        return self._record(self.env.step(key, state, actions), actions)

    def step_final(self, key, state, actions):
        return self._record(self.env.step_final(key, state, actions), actions)


def _collect(env, config, state, steps=4):
    """HAQO's collection step on the recorded env, during warm-up (uniform actions) and after
    it (best-of-K policy actions), compiled once: -> (p, state, tr, info) with [2, L, E, ...]."""
    p = haqo._parts(env, config)
    env_step = haqo.make_env_step(env, config)
    run = jax.jit(lambda s: jax.lax.scan(env_step, s, None, steps))
    outs = [run(state.replace(env_steps=jnp.int32(t))) for t in (0, config.warmup_steps)]
    tr, info = jax.tree.map(lambda *x: np.stack(x), *[o[1] for o in outs])
    return p, outs[-1][0], tr, info


@pytest.fixture(scope="module")
def speaker():
    """HAQO's collection on mpe_simple_speaker_listener (continuous), shared by the F19s."""
    config = _config(alpha=0.1)
    env = _Recorder(envs.make("mpe_simple_speaker_listener", action_type="continuous"))
    return (env, config) + _collect(env, config, _init(env, config))


def test_speaker_listener_padding_never_reaches_the_env_and_shapes_round_trip_f19(speaker):
    """mpe_simple_speaker_listener (speaker 3 dims, listener 5, padded to 5): the speaker's
    padded dims are 0 in every action the env receives (warm-up and policy), in the stored
    actor-space actions and in `act`; real dims stay in the env box [0, 1]; the buffer items,
    actions and observations keep the spec's shapes."""
    env, config, p, state, tr, info = speaker
    spec = env.spec
    assert spec.act_sizes == (3, 5) and spec.act_dim == 5 and spec.obs_sizes == (3, 11)
    np.testing.assert_array_equal(p.dim_mask, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    sent, stored = info["sent"], tr["action"]
    assert sent.shape == stored.shape == (2, 4, config.num_envs, 2, 5)
    np.testing.assert_array_equal(sent[..., 0, 3:], 0.0)
    np.testing.assert_array_equal(stored[..., 0, 3:], 0.0)
    assert np.all((sent >= 0.0) & (sent <= 1.0)) and np.all(np.abs(stored) <= 1.0)
    # both phases sent varied real actions (else the padding check is vacuous)
    assert all(np.ptp(sent[k, ..., 0, :3]) > 0.1 for k in range(2))
    np.testing.assert_allclose(sent, np.asarray(haqo.decode(p, jnp.asarray(stored), None)),
                               atol=1e-6)
    example = haqo._example_item(env, p)
    for k, v in example.items():
        assert tr[k].shape[3:] == v.shape and tr[k].dtype == v.dtype, k
    np.testing.assert_array_equal(tr["obs"][..., 0, 3:], 0.0)        # speaker obs padding
    # a shared-reward task: the stored team reward is the reward every agent got, not 2x it
    np.testing.assert_allclose(info["rewards"][..., 1], info["rewards"][..., 0])
    np.testing.assert_allclose(tr["reward"], info["rewards"][..., 0], rtol=1e-6)
    obs, es = env.reset(jax.random.PRNGKey(5))
    a, _ = haqo.act(config, env, state, obs, {}, env.action_mask(es), jax.random.PRNGKey(6),
                    deterministic=True)
    assert a.shape == (2, 5)
    np.testing.assert_array_equal(a[0, 3:], 0.0)


@pytest.mark.slow
def test_speaker_padded_dims_get_no_gradient_in_the_real_agent_update_f19(speaker):
    """HAQO's own per-agent update (QV + entropy loss, Adam, line search) for the speaker on a
    buffer of collected transitions: the output weights and biases of its padded dims 3, 4 are
    unchanged (zero gradient: Adam moves nothing where every gradient is 0) while its real
    dims moved. ~30 s of compile."""
    env, config, p, state, tr, _ = speaker
    items = jax.tree.map(lambda x: jnp.asarray(x.reshape((-1,) + x.shape[3:])), tr)
    buffer = p.buffer.add(state.buffer, items)
    body = jax.jit(haqo.make_agent_update(env, config)(buffer, state.critic, state.hp))
    take = lambda t: jax.tree.map(lambda x: x[0], t)
    carry = dict(stack=state.actor, alpha=state.alpha)
    new, _, _, metrics = body(jnp.int32(0), take(state.actor), take(state.actor_opt), carry,
                              jax.random.PRNGKey(9))
    assert float(metrics["c_star"]) > 0.0
    last = f"Dense_{config.layers}"
    old = take(state.actor)["params"][last]
    moved = {k: np.abs(np.asarray(new["params"][last][k]) - np.asarray(old[k]))
             for k in ("kernel", "bias")}
    np.testing.assert_array_equal(moved["kernel"][:, 3:], 0.0)
    np.testing.assert_array_equal(moved["bias"][3:], 0.0)
    assert moved["kernel"][:, :3].max() > 0 and moved["bias"][:3].max() > 0


# ------------------------------------------------------------------------------------ F22
def test_ppo_clip_drift_uses_the_chain_ratio_against_the_pre_update_actor_f22(speaker):
    """drift=ppo_clip in HAQO's own agent update (2 minibatches): with actor_lr 0 the actor
    never moves, so every stored candidate chain has ratio exactly 1 (the ratio is taken
    against the pre-update actor on the chains it drew) and nothing is clipped; with a
    learning rate the second minibatch sees a moved actor, so the mean |rho - 1| is > 0, and
    the loss stays finite. One compile, two calls (the learning rate is a traced
    hyper-parameter). The Gaussian ablation refuses the mode (no chains)."""
    env, _, p, state, tr, _ = speaker
    config = _config(alpha=0.1, drift="ppo_clip", actor_lr=1e-2)
    items = jax.tree.map(lambda x: jnp.asarray(x.reshape((-1,) + x.shape[3:])), tr)
    buffer = p.buffer.add(state.buffer, items)
    make_body = haqo.make_agent_update(env, config)
    body = jax.jit(lambda hp, *a: make_body(buffer, state.critic, hp)(*a))
    take = lambda t: jax.tree.map(lambda x: x[0], t)
    carry = dict(stack=state.actor, alpha=state.alpha)
    hp = jax.tree.map(jnp.asarray, config)
    out = {lr: body(hp.replace(actor_lr=jnp.float32(lr)), jnp.int32(1), take(state.actor),
                    take(state.actor_opt), carry, jax.random.PRNGKey(9)) for lr in (0.0, 1e-2)}
    still, moved = out[0.0][3], out[1e-2][3]
    assert float(still["ppo_ratio_dev"]) == 0.0 and float(still["ppo_clip_frac"]) == 0.0
    assert np.isfinite(float(moved["ppo_loss"])) and float(moved["ppo_ratio_dev"]) > 1e-4
    assert 0.0 <= float(moved["ppo_clip_frac"]) <= 1.0
    with pytest.raises(base.ConfigError, match="ppo_clip"):
        _config(drift="ppo_clip", actor="gaussian")


# ------------------------------------------------------------------------------------ F25
def test_mpe_actions_map_to_the_unit_box_and_the_team_reward_is_the_sum_f25(spread):
    """simple_spread continuous: HAQO's decode maps the actor box [-1, 1] affinely onto the
    env's [0, 1] (ends to ends); the reward HAQO stores is the sum of the per-agent rewards the
    env returned (HARL's MPE team reward; simple_spread's agents get different rewards)."""
    env, config, state = spread
    p, _, tr, info = _collect(env, config, state, steps=3)
    assert (env.spec.action_low, env.spec.action_high) == (0.0, 1.0)
    assert not env.spec.shared_reward
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (64, 3, 5)), jnp.float32)
    x = x.at[0].set(-1.0).at[1].set(1.0)
    a = np.asarray(haqo.decode(p, x, None))
    np.testing.assert_allclose(a, (np.asarray(x) + 1.0) / 2.0, atol=1e-6)
    np.testing.assert_allclose(a[0], 0.0, atol=1e-7)
    np.testing.assert_allclose(a[1], 1.0, atol=1e-7)
    rewards = info["rewards"]                                         # [2, L, E, n]
    assert np.abs(rewards - rewards[..., :1]).max() > 1e-4           # agents differ
    np.testing.assert_allclose(tr["reward"], rewards.sum(-1), rtol=1e-6, atol=1e-6)


# MA-MuJoCo's partitions (joint names, agent order as MA-MuJoCo's); the ...x1 partitions give
# every actuator its own agent.
MAMUJOCO = {
    "halfcheetah_2x3": [["bthigh", "bshin", "bfoot"], ["fthigh", "fshin", "ffoot"]],
    "walker2d_6x1": None,
    "humanoid_17x1": None,
}


@pytest.mark.slow
@pytest.mark.parametrize("key", list(MAMUJOCO))
def test_mabrax_haqo_partitions_own_each_actuator_once_and_step_f25(key):
    """The three MABrax tasks of the HAQO paper that F18 (tests/algos/test_ddpl_checks.py,
    ant_2x4/4x2/8x1, humanoidstandup_17x1) does not cover: each actuator has exactly one owner
    (a distinct code per agent slot read back from the global action), the owners' joint sets
    are MA-MuJoCo's, and a jitted step from a reset gives finite obs and rewards."""
    import mujoco

    env = envs.make(f"mabrax_{key}")
    adapter, spec = env.unwrapped, env.spec
    m = adapter.brax_env.sys.mj_model
    joints = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, m.actuator_trnid[k, 0])
              for k in range(m.nu)]
    valid = [(i, j) for i in range(spec.n_agents) for j in range(spec.act_sizes[i])]
    assert len(valid) == m.nu
    codes = np.zeros((spec.n_agents, spec.act_dim), np.float32)
    for c, (i, j) in enumerate(valid):
        codes[i, j] = (c + 1) / 64.0
    got = np.round(np.asarray(jax.jit(adapter.global_action)(codes)) * 64).astype(int)
    assert sorted(got.tolist()) == list(range(1, m.nu + 1))
    owner = [valid[g - 1][0] for g in got]
    groups = [{joints[k] for k in range(m.nu) if owner[k] == i} for i in range(spec.n_agents)]
    want = MAMUJOCO[key]
    if want is None:
        assert spec.n_agents == m.nu and all(len(g) == 1 for g in groups)
    else:
        assert groups == [set(w) for w in want], groups
    obs, state = env.reset(jax.random.PRNGKey(0))
    a = jax.random.uniform(jax.random.PRNGKey(1), (spec.n_agents, spec.act_dim), minval=-1,
                           maxval=1) * spec.dim_mask
    obs, state, reward, done, _ = jax.jit(env.step)(jax.random.PRNGKey(2), state, a)
    assert obs.shape == (spec.n_agents, spec.obs_dim) and np.isfinite(obs).all()
    assert reward.shape == (spec.n_agents,) and np.isfinite(reward).all()
