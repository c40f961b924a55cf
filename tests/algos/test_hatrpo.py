"""HATRPO: conjugate gradient, the KL-bounded line search (toys and the real step), smoke run."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxdiff.envs.toys  # noqa: F401  (registers coordination_game)
from jaxdiff import envs
from jaxdiff.algos import base, hatrpo, sequential
from jaxdiff.nets import distributions as D
from jaxdiff.nets.agents import apply_agents

HP = hatrpo.Config()


def test_conjugate_gradient_solves_spd_system():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    A = (q * np.linspace(0.5, 5.0, 12)) @ q.T            # SPD, condition number 10
    b = rng.normal(size=12)
    A, b = jnp.asarray(A, jnp.float32), jnp.asarray(b, jnp.float32)
    x, rr = hatrpo.conjugate_gradient(lambda v: A @ v, b, iters=40)
    np.testing.assert_allclose(A @ x, b, atol=1e-4)
    np.testing.assert_allclose(x, np.linalg.solve(np.asarray(A, np.float64), np.asarray(b)),
                               rtol=1e-3, atol=1e-4)
    assert rr < 1e-8
    # A diagonal system with 3 distinct eigenvalues is solved exactly in 3 iterations.
    d = jnp.array([1.0, 2.0, 2.0, 7.0, 7.0, 1.0])
    x3, _ = hatrpo.conjugate_gradient(lambda v: d * v, jnp.ones(6), iters=3)
    np.testing.assert_allclose(x3, 1.0 / d, rtol=1e-5)


def _categorical_problem(k=5, seed=0):
    """One state, a tabular softmax policy, fixed advantages: maximise E_old[r * A]."""
    rng = np.random.default_rng(seed)
    theta0 = jnp.asarray(rng.normal(size=k), jnp.float32)
    adv = jnp.asarray(rng.normal(size=k), jnp.float32)
    p_old = jax.nn.softmax(theta0)
    surrogate = lambda th: jnp.sum(p_old * jnp.exp(jax.nn.log_softmax(th) - jnp.log(p_old)) * adv)
    mean_kl = lambda th: D.categorical_kl(theta0, th)
    return theta0, surrogate, mean_kl


@pytest.mark.parametrize("delta", [1e-4, 1e-2, 0.3])
def test_accepted_step_respects_kl_and_improves(delta):
    theta0, surrogate, mean_kl = _categorical_problem()
    hp = HP.replace(kl_threshold=delta)
    theta, m = jax.jit(lambda t: hatrpo.trust_region_step(surrogate, mean_kl, t, hp, HP))(theta0)
    assert m["accepted"] == 1.0
    kl = float(D.categorical_kl(theta0, theta))          # measured independently
    assert kl <= delta * (1 + 1e-5)
    np.testing.assert_allclose(kl, m["kl"], rtol=1e-4, atol=1e-9)
    assert surrogate(theta) > surrogate(theta0)
    # the quadratic model makes the full step land near the boundary for small delta
    if delta <= 1e-2:
        assert kl > 0.3 * delta


def test_gaussian_policy_step_respects_kl():
    """Linear-Gaussian policy on a batch of states; KL checked with the closed form."""
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(1), 4)
    x = jax.random.normal(k1, (64, 3))
    params0 = {"w": 0.1 * jax.random.normal(k2, (3, 2)), "log_std": jnp.full((2,), -0.5)}
    a = jax.random.normal(k3, (64, 2))
    adv = jax.random.normal(k4, (64,))
    dist = lambda p: (x @ p["w"], jnp.broadcast_to(p["log_std"], (64, 2)))
    theta0, unravel = ravel_pytree(params0)
    logp0 = D.gaussian_log_prob(*dist(params0), a)

    def surrogate(th):
        return (jnp.exp(D.gaussian_log_prob(*dist(unravel(th)), a) - logp0) * adv).mean()

    def mean_kl(th):
        return D.gaussian_kl(*dist(params0), *dist(unravel(th))).mean()

    theta, m = hatrpo.trust_region_step(surrogate, mean_kl, theta0, HP, HP)
    assert m["accepted"] == 1.0
    assert float(mean_kl(theta)) <= HP.kl_threshold * (1 + 1e-5)
    assert surrogate(theta) > surrogate(theta0)


def test_no_acceptable_step_keeps_parameters():
    theta0, _, mean_kl = _categorical_problem()
    flat = lambda th: 0.0 * jnp.sum(th)                  # nothing to improve
    theta, m = hatrpo.trust_region_step(flat, mean_kl, theta0, HP, HP)
    np.testing.assert_array_equal(theta, theta0)
    assert m["accepted"] == 0.0 and m["kl"] == 0.0


def test_real_step_keeps_every_agents_kl_below_delta():
    """One HATRPO iteration on the 3-agent coordination game: the observation is constant,
    so each agent's policy is a single categorical and its KL is exact."""
    env = envs.make("coordination_game", n_agents=3, n_actions=3)
    delta = 0.01
    cfg = base.make_config(hatrpo.Config, dict(num_envs=8, num_steps=4, hidden=16,
                                               critic_epochs=1, kl_threshold=delta))
    state = jax.jit(lambda k: hatrpo.init(k, env, cfg))(jax.random.PRNGKey(0))
    p = sequential.parts(env, cfg)

    def probs(actor):
        _, out = apply_agents(p.actor, actor, False, jnp.zeros((3, 16)), jnp.ones((3, 1)),
                              jnp.zeros((3,), bool))
        return out[0]

    new, metrics = jax.jit(hatrpo.step(env, cfg))(state)
    kls = D.categorical_kl(probs(state.actor), probs(new.actor))
    assert metrics["accepted"] > 0
    assert (kls <= delta * (1 + 1e-4)).all(), kls
    assert (kls > 0).any()
    assert math.isfinite(float(metrics["value_loss"]))

