"""The sequential (HA*) update machinery: scan over the permutation == explicit loop, the M
factor is the product of the earlier agents' ratios, orders are uniform permutations, the
traced program does not grow with the number of agents, and jit == no-jit for one step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff.envs.toys  # noqa: F401  (registers coordination_game)
from jaxdiff import envs
from jaxdiff import optim
from jaxdiff.algos import base, happo, onpolicy, sequential

N_ACT, S = 3, 64


def _toy(n, seed=0):
    """Per-agent tabular softmax policies (a pytree, to exercise stacked indexing), per-agent
    sampled actions, one joint advantage per sample, stacked Adam states."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = {"logits": 0.3 * jax.random.normal(k1, (n, N_ACT)), "scale": jnp.ones((n, 1))}
    data = {"action": jax.random.randint(k2, (n, S), 0, N_ACT),
            "adv": jnp.broadcast_to(jax.random.normal(k3, (S,)), (n, S))}
    return params, jax.vmap(optim.adam().init)(params), data


def _log_prob(i, theta, d):
    return jax.nn.log_softmax(theta["logits"] * theta["scale"])[d["action"]]


def _update(i, theta, opt, d, key):
    """Three Adam steps on the M-weighted clipped surrogate (randomised by key, so the per-agent
    keys matter too). Records the factor it was handed."""
    def loss(theta):
        ratio = jnp.exp(_log_prob(i, theta, d) - d["logp"])
        noise = 1.0 + 0.1 * jax.random.uniform(key, ratio.shape)
        surr = jnp.minimum(ratio * d["adv"], jnp.clip(ratio, 0.8, 1.2) * d["adv"])
        return -(d["factor"] * surr * noise).mean()
    for _ in range(3):
        theta, opt, _ = optim.apply(optim.adam(), theta, opt, jax.grad(loss)(theta), 0.1, 10.0)
    return theta, opt, {"factor_seen": d["factor"]}


def _run_scan(params, opt, data, order, keys, sequential_mode=True):
    fn = jax.jit(lambda p, o, d, order, keys: sequential.sequential_update(
        _update, _log_prob, p, o, d, order, keys, jnp.ones((S,)), sequential_mode))
    return fn(params, opt, data, order, keys)


def test_scan_over_permutation_equals_python_loop():
    n = 4
    params, opt, data = _toy(n)
    order = jnp.array([2, 0, 3, 1], jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(7), n)
    p_scan, o_scan, f_scan, _ = _run_scan(params, opt, data, order, keys)

    p_loop, o_loop, factor = params, opt, jnp.ones((S,))
    for m, i in enumerate(order.tolist()):     # plain Python, static indices
        take = lambda t: jax.tree.map(lambda x: x[i], t)
        p_i, o_i, d_i = take(p_loop), take(o_loop), take(data)
        logp_old = _log_prob(i, p_i, d_i)
        p_i, o_i, _ = _update(i, p_i, o_i, dict(d_i, logp=logp_old, factor=factor), keys[m])
        factor = factor * jnp.exp(_log_prob(i, p_i, d_i) - logp_old)
        p_loop = jax.tree.map(lambda x, s: x.at[i].set(s), p_loop, p_i)
        o_loop = jax.tree.map(lambda x, s: x.at[i].set(s), o_loop, o_i)

    for a, b in zip(jax.tree.leaves((p_scan, o_scan, f_scan)),
                    jax.tree.leaves((p_loop, o_loop, factor))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # every agent moved (each was updated exactly once, none skipped)
    moved = np.abs(np.asarray(p_scan["logits"] - params["logits"])).sum(-1)
    assert (moved > 1e-3).all()


def test_m_factor_is_product_of_earlier_agents_ratios():
    n = 3
    params, opt, data = _toy(n, seed=1)
    order = jnp.array([1, 2, 0], jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    new, _, final, metrics = _run_scan(params, opt, data, order, keys)
    # Each agent is updated once, so its final parameters are its "new" policy.
    def log_prob_of(tree, i):
        return _log_prob(i, jax.tree.map(lambda x: x[i], tree), {"action": data["action"][i]})

    ratio = {i: np.exp(log_prob_of(new, i) - log_prob_of(params, i)) for i in range(n)}
    expected = np.ones(S)
    for m, i in enumerate(order.tolist()):
        np.testing.assert_allclose(metrics["factor_seen"][m], expected, rtol=1e-5, atol=1e-6)
        expected = expected * ratio[i]
    np.testing.assert_allclose(final, expected, rtol=1e-5)
    assert np.abs(expected - 1).max() > 1e-2     # the factor is not trivially one


def test_simultaneous_mode_keeps_factor_one():
    params, opt, data = _toy(3)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    _, _, final, metrics = _run_scan(params, opt, data, jnp.arange(3), keys, False)
    np.testing.assert_array_equal(metrics["factor_seen"], 1.0)
    np.testing.assert_array_equal(final, 1.0)


def test_agent_order_is_a_uniform_permutation():
    keys = jax.random.split(jax.random.PRNGKey(0), 6000)
    orders = np.asarray(jax.vmap(lambda k: sequential.agent_order(k, 3, False))(keys))
    assert (np.sort(orders, axis=1) == np.arange(3)).all()   # every agent exactly once
    _, counts = np.unique(orders, axis=0, return_counts=True)
    assert len(counts) == 6
    chi2 = ((counts - 1000.0) ** 2 / 1000.0).sum()
    assert chi2 < 20.5            # p > 0.001 for 5 degrees of freedom
    np.testing.assert_array_equal(sequential.agent_order(keys[0], 5, True), np.arange(5))


def test_compiled_program_does_not_grow_with_agents():
    """The update of agent i is traced once (dynamic index), so the optimised HLO of the
    sequential update has the same size for 2 and 16 agents, while unrolling the agent loop
    (what a Python `for` compiles to) grows it with the agent count (tests never time compiles)."""
    def hlo_lines(n, unroll):
        params, opt, data = _toy(n)
        fn = jax.jit(lambda p, o, d, order, keys: sequential.sequential_update(
            _update, _log_prob, p, o, d, order, keys, jnp.ones((S,)), True, unroll))
        compiled = fn.lower(params, opt, data, jnp.arange(n),
                            jax.random.split(jax.random.PRNGKey(0), n)).compile()
        return len(compiled.as_text().splitlines())

    scanned = {n: hlo_lines(n, False) for n in (2, 16)}
    assert scanned[16] <= scanned[2] * 1.05, scanned
    unrolled = {n: hlo_lines(n, True) for n in (2, 6)}
    assert unrolled[6] > 2 * unrolled[2], unrolled


def _tiny_state(algo, **kw):
    alg = base.get(algo)
    env = envs.make("coordination_game", n_agents=2)
    cfg = base.make_config(alg.Config, dict(num_envs=2, num_steps=2, hidden=8, critic_epochs=1,
                                            **kw))
    return env, cfg, alg, jax.jit(lambda k: alg.init(k, env, cfg))(jax.random.PRNGKey(0))


@pytest.mark.parametrize("algo,kw", [
    pytest.param("happo", dict(update_epochs=1, num_minibatches=2), marks=pytest.mark.slow),
    # eager HATRPO runs its CG and line-search loops op by op (about a minute)
    pytest.param("hatrpo", dict(cg_iters=2, ls_steps=2), marks=pytest.mark.slow),
    # eager HAPPO: about a minute on 2 cores; MAPPO's jit == no-jit (tests/run) stays in the fast set
    pytest.param("happo", dict(update_epochs=1, critic_state="agent"), marks=pytest.mark.slow)])
def test_jit_equals_no_jit_for_one_step(algo, kw):
    env, cfg, alg, state = _tiny_state(algo, **kw)
    step = alg.step(env, cfg, iterations=50)
    s_jit, m_jit = jax.jit(step)(state)
    with jax.disable_jit():
        s_ref, m_ref = step(state)
    for k in m_ref:
        for a, b in zip(jax.tree.leaves(m_jit[k]), jax.tree.leaves(m_ref[k])):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=k)
    for a, b in zip(jax.tree.leaves((s_jit.actor, s_jit.critic)),
                    jax.tree.leaves((s_ref.actor, s_ref.critic))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_config_validation_names_the_key():
    with pytest.raises(base.ConfigError, match="num_minibatches"):
        base.make_config(happo.Config, dict(num_envs=3, num_steps=5, num_minibatches=2))
    with pytest.raises(base.ConfigError, match="critic_minibatches"):
        base.make_config(happo.Config, dict(num_envs=3, num_steps=5, critic_minibatches=4))


def test_f14_coordination_game_mirror_step():
    """spec-haqo F14: one exact mirror step pi' ∝ pi exp(5A) from pi1 = (0.9, 0.1),
    pi2 = (0.1, 0.9) through `sequential_update`: sequential ≈ 0.856, simultaneous ≈ 0.243."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).parents[2] / "experiments" / "baselines" / "coordination_game.py"
    spec = importlib.util.spec_from_file_location("coordination_game_experiment", path)
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    for order in ((0, 1), (1, 0)):
        seq, probs = exp.mirror_step(order, True)
        sim, _ = exp.mirror_step(order, False)
        np.testing.assert_allclose(seq, 0.856, atol=5e-4)
        np.testing.assert_allclose(sim, 0.243, atol=5e-4)
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


# the feed-forward case (30 s) runs with -m slow; the recurrent one covers the same EP path
@pytest.mark.parametrize("recurrent", [pytest.param(False, marks=pytest.mark.slow), True])
def test_ep_critic_is_one_value_per_env_on_the_team_reward(recurrent):
    """HARL's EP critic: values and targets have one row per env, every agent gets the same
    advantage, and that advantage is GAE (written out here as a plain loop) of the summed team
    reward under V(s) evaluated directly on the stored global states."""
    env = envs.make("mpe_simple_spread", action_type="continuous")
    assert not env.spec.shared_reward
    cfg = base.make_config(happo.Config, dict(num_envs=3, num_steps=30, hidden=8,
                                              recurrent=recurrent, value_norm=False))
    assert cfg.critic_state == "ep"
    state = jax.jit(lambda k: happo.init(k, env, cfg))(jax.random.PRNGKey(0))
    assert state.critic_carry.shape == (3, 1, 8)
    p = sequential.parts(env, cfg)
    after, tr, adv, target, _ = onpolicy.rollout_fn(env, cfg, p)(state)
    T, E, n = 30, 3, env.spec.n_agents
    assert tr["c_x"].shape == (T, E, 1, env.spec.state_dim)
    assert target.shape == tr["value"].shape == (T, E, 1) and adv.shape == (T, E, n)
    np.testing.assert_array_equal(adv, jnp.broadcast_to(adv[..., :1], adv.shape))
    # independent recomputation
    gs = np.asarray(tr["c_x"][:, :, 0])                       # [T, E, state_dim]
    reset = np.asarray(tr["reset"][:, :, 0])
    if recurrent:
        carry, vals = jnp.zeros((E, 8)), []
        for t in range(T):
            carry, v = p.critic.apply(state.critic, carry, gs[t], reset[t])
            vals.append(v)
        v = np.stack(vals)
    else:
        v = np.asarray(p.critic.apply(state.critic, jnp.zeros((E, 8)), gs, reset)[1])
    np.testing.assert_allclose(v, tr["value"][..., 0], rtol=1e-5, atol=1e-6)
    r = np.asarray(tr["reward"]).sum(-1)
    d = np.asarray(tr["done"][..., 0], np.float32)
    g_last = jax.vmap(env.global_state)(after.env_state)           # bootstrap V(s_T)
    v_next = np.asarray(p.critic.apply(state.critic, after.critic_carry[:, 0], g_last,
                                       after.done[:, 0])[1])
    gae, want = np.zeros(E), np.zeros((T, E))
    for t in reversed(range(T)):
        nxt = v_next if t == T - 1 else v[t + 1]
        delta = r[t] + 0.99 * nxt * (1 - d[t]) - v[t]
        gae = delta + 0.99 * 0.95 * (1 - d[t]) * gae
        want[t] = gae
    np.testing.assert_allclose(adv[..., 0], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(target[..., 0], want + v, rtol=1e-4, atol=1e-4)


def test_ep_critic_needs_the_global_state():
    with pytest.raises(base.ConfigError, match="critic_state"):
        base.make_config(happo.Config, dict(centralised_critic=False))
    cfg = base.make_config(happo.Config, dict(centralised_critic=False, critic_state="agent"))
    assert cfg.critic_state == "agent"


@pytest.mark.parametrize("recurrent", [pytest.param(False, marks=pytest.mark.slow), True])
def test_rollout_log_probs_are_the_pre_update_log_probs(recurrent):
    """The sequential update takes agent i's pre-update log-probs from the rollout (agent i has
    not moved since): they equal a recomputation with its current parameters."""
    env = envs.make("mpe_simple_spread", action_type="continuous")
    cfg = base.make_config(happo.Config, dict(num_envs=2, num_steps=30, hidden=8,
                                              recurrent=recurrent))
    state = jax.jit(lambda k: happo.init(k, env, cfg))(jax.random.PRNGKey(1))
    p = sequential.parts(env, cfg)
    _, tr, _, _, _ = onpolicy.rollout_fn(env, cfg, p)(state)
    log_prob = sequential.log_prob_fn(p, cfg)
    for i in range(env.spec.n_agents):
        d_i = {k: tr[k][:, :, i] for k in ("a_x", "mask", "reset", "action")}
        d_i["ca0"] = state.actor_carry[:, i]
        got = log_prob(i, sequential.take_agent(state.actor, i), d_i)
        np.testing.assert_allclose(got, tr["logp"][:, :, i], rtol=1e-4, atol=1e-4)
