"""The DDPL toy MDPs (spec-ddpl §2.1/§2.3, F19): Monte-Carlo returns of the registered envs
against the analytic Q and J, the exact per-state rewards/transitions, jit/vmap invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff.envs as envs
from jaxdiff.envs.toys import ddpl_toy as toy

N = 1 << 19  # episodes per Monte-Carlo estimate


def _mc_returns(env, actions, goal_actions, n):
    """Discounted returns of N episodes: `actions` [n] at the start state, `goal_actions` [n]
    on the second step (only taken when the first step did not end the episode)."""
    a0 = jnp.asarray(actions, jnp.float32)[:, None]
    a1 = jnp.asarray(goal_actions, jnp.float32)[:, None]

    @jax.jit
    @jax.vmap
    def one(key):
        k1, k2 = jax.random.split(key)
        _, state = env.reset(key)
        _, state, r0, d0, _ = env.step(k1, state, a0)
        _, _, r1, _, info = env.step(k2, state, a1)
        g = r0[0] + toy.PARAMS.gamma * jnp.where(d0[0], 0.0, r1[0])
        return g, ~d0[0], jnp.where(d0[0], 0.0, info["won"])

    return jax.device_get(one(jax.random.split(jax.random.key(n), N)))


def test_analytic_values_are_the_specs():
    """The closed forms give the spec's numbers: Q(s0, ·) = 10.2, 0.0, 0.2 at −β, 0, +β and
    J = 20.4 for two agents at (−β, −β) with a' = 0 at the goal."""
    np.testing.assert_allclose(toy.q_sa(jnp.array([-0.5, 0.0, 0.5])), [10.2, 0.0, 0.2],
                               atol=2e-3)
    np.testing.assert_allclose(toy.j_ma(jnp.array([-0.5, -0.5])), 20.4, atol=2e-3)
    assert float(toy.p_start(-0.5 + 0.2501)) == 0.0
    np.testing.assert_allclose(toy.p_start(-0.5), 0.005, rtol=1e-6)


@pytest.mark.parametrize("a", [-0.5, 0.0, 0.5])
def test_sa_monte_carlo_q_matches_analytic(a):
    env = envs.make("ddpl_toy_sa")
    g, success, won = _mc_returns(env, [a], [0.0], 1)
    se = max(g.std() / np.sqrt(N), 1e-6)
    assert abs(g.mean() - float(toy.q_sa(a))) < 4 * se + 1e-4, (g.mean(), float(toy.q_sa(a)))
    p = float(toy.p_start(a))
    assert abs(success.mean() - p) < 4 * np.sqrt(max(p, 1e-7) * (1 - p) / N)
    np.testing.assert_array_equal(won, success)   # won = the episode visited s1


def test_ma_monte_carlo_j_at_minus_beta():
    env = envs.make("ddpl_toy_ma", n_agents=2)
    g, _, won = _mc_returns(env, [-0.5, -0.5], [0.0, 0.0], 2)
    se = g.std() / np.sqrt(N)
    assert abs(g.mean() - 20.4) < 4 * se, (g.mean(), se)
    assert abs(won.mean() - 0.005 ** 2) < 4 * np.sqrt(0.005 ** 2 / N)


def test_ma_rewards_and_transitions_per_state():
    """Each state class of M_ma: the goal 1_n pays c2 + c3 exp(−aᵀa), a partial success pays
    c1 × its count, both move to the absorbing zero vector (episode ends, env resets)."""
    env = toy.ToyMultiAgent(n_agents=3)
    a = jnp.array([[0.3], [-0.2], [0.1]])
    for s, want in (([1.0, 1.0, 1.0], 30000.0 + 10000.0 * np.exp(-0.14)),
                    ([1.0, 0.0, 1.0], 40000.0), ([0.0, 0.0, 0.0], 0.0)):
        state = toy.ToyState(jnp.array(s), jnp.ones((), jnp.int32), jnp.array(True))
        obs, nxt, r, done, info = env.step(jax.random.key(0), state, a)
        np.testing.assert_allclose(r, want, rtol=1e-6)
        assert done.all() and bool(info["terminated"])
        np.testing.assert_array_equal(nxt.s, -np.ones(3))   # auto-reset to −1_n
        np.testing.assert_array_equal(obs, -np.ones((3, 3)))
    # from the start: the sum of r_start over agents, no success possible far from −β
    _, state = env.reset(jax.random.key(1))
    _, nxt, r, done, _ = env.step(jax.random.key(2), state, a)
    np.testing.assert_allclose(r, float(jnp.sum(toy.r_start(a[:, 0]))), rtol=1e-6)
    assert done.all()


def _actions(key, n):
    k_a, k_s = jax.random.split(key)
    return k_s, jax.random.uniform(k_a, (n, 1), minval=-0.75, maxval=-0.25)


def _rollout(env, key, T=4):
    """Scanned rollout near −β (where successes happen) from one key."""
    n = env.spec.n_agents

    def body(state, k):
        k_s, a = _actions(k, n)
        obs, state, r, d, info = env.step(k_s, state, a)
        return state, (obs, r, d, info["won"])

    _, state = env.reset(key)
    return jax.lax.scan(body, state, jax.random.split(key, T))[1]


def _eager_rollout(env, key, T=4):
    """The same rollout as a Python loop of op-by-op (unjitted) calls."""
    _, state = env.reset(key)
    out = []
    for k in jax.random.split(key, T):
        k_s, a = _actions(k, env.spec.n_agents)
        obs, state, r, d, info = env.step(k_s, state, a)
        out.append((obs, r, d, info["won"]))
    return jax.tree.map(lambda *x: jnp.stack(x), *out)


@pytest.mark.parametrize("name,kw", [("ddpl_toy_sa", {}), ("ddpl_toy_ma", {"n_agents": 2})])
def test_jit_equals_nojit_and_vmap_equals_loop(name, kw):
    env = envs.make(name, **kw)
    keys = jax.random.split(jax.random.key(3), 3)
    batched = jax.jit(jax.vmap(lambda k: _rollout(env, k)))(keys)
    for i, k in enumerate(keys):
        for x, y in zip(jax.tree.leaves(_eager_rollout(env, k)), jax.tree.leaves(batched)):
            np.testing.assert_allclose(x, y[i], rtol=1e-6)


def test_bad_options_and_actions_are_refused():
    with pytest.raises(ValueError, match="n_agents"):
        envs.make("ddpl_toy_ma", n_agents=0)
    with pytest.raises(ValueError, match="action_bound"):
        envs.make("ddpl_toy_sa", action_bound=-1.0)
    env = envs.make("ddpl_toy_ma", n_agents=2)
    _, state = env.reset(jax.random.key(0))
    with pytest.raises(ValueError, match=r"f32\[n_agents, 1\]"):
        env.step(jax.random.key(0), state, jnp.zeros((2,)))
