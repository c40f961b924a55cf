"""Fixed-point flow (Definition 2) and composite flow (Definition 6)."""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import diffusion as d

STATES = jnp.eye(4)  # one-hot global states s1..s4


def posterior_denoiser(tau, y, sigma=0.3):
    """Optimal denoiser at noise level sigma for a discrete posterior tau = p(s | history).

    f(tau, y) = sum_s w_s s with w_s ∝ p(s | tau) N(y; s, sigma^2 I). y: [4] -> [4].
    """
    logits = jnp.log(tau + 1e-12) - jnp.sum((y - STATES) ** 2, axis=-1) / (2 * sigma**2)
    return jax.nn.softmax(logits) @ STATES


def contraction(tau, y):
    """f(tau, y) = tau + 0.5 (y - tau): unique fixed point tau, Jacobian 0.5 I."""
    return tau + 0.5 * (y - tau)


def test_fixed_point_flow_is_repeated_application():
    tau = jnp.array([0.2, 0.8, 0.0, 0.0])
    y0 = jax.random.normal(jax.random.key(0), (4,))
    np.testing.assert_array_equal(d.fixed_point_flow(posterior_denoiser, tau, y0, 0), y0)

    @jax.jit
    def manual(y):
        for _ in range(5):
            y = posterior_denoiser(tau, y)
        return y

    flow = jax.jit(lambda y: d.fixed_point_flow(posterior_denoiser, tau, y, 5, return_trajectory=True))
    y5, traj = flow(y0)
    chex.assert_shape(traj, (6, 4))
    np.testing.assert_array_equal(traj[0], y0)
    np.testing.assert_array_equal(y5, manual(y0))  # spec F10: bitwise under jit
    np.testing.assert_allclose(traj[1], posterior_denoiser(tau, y0), rtol=1e-6, atol=1e-7)


def test_fixed_point_flow_converges_and_differentiates():
    tau = jnp.array([0.3, -1.0])
    y0 = jnp.array([5.0, 5.0])
    L = 30
    np.testing.assert_allclose(d.fixed_point_flow(contraction, tau, y0, L), tau, atol=1e-6)
    # phi_L(y0) = tau + 0.5^L (y0 - tau), so d phi_L / d tau = (1 - 0.5^L) I.
    jac = jax.jacfwd(lambda t: d.fixed_point_flow(contraction, t, y0, 3))(tau)
    np.testing.assert_allclose(jac, (1 - 0.5**3) * np.eye(2), rtol=1e-6)


def test_flow_vmaps_over_starts_and_splits_between_attractors():
    tau = jnp.array([0.5, 0.0, 0.0, 0.5])  # like agent 3 in the 2x2 toy: areas 1 and 4
    y0 = jax.random.normal(jax.random.key(1), (2000, 4))
    y = jax.jit(jax.vmap(lambda y: d.fixed_point_flow(posterior_denoiser, tau, y, 20)))(y0)
    at_s1 = np.linalg.norm(y - STATES[0], axis=-1) < 0.1
    at_s4 = np.linalg.norm(y - STATES[3], axis=-1) < 0.1
    assert (at_s1 | at_s4).mean() > 0.99
    assert abs(at_s1.mean() - 0.5) < 0.05  # symmetric posterior -> equal basins


def test_composite_agent_sequence_and_manual_application():
    order = jnp.array([2, 0, 1])
    np.testing.assert_array_equal(d.composite_agent_sequence(order, 7), [2, 0, 1, 2, 0, 1, 2])
    taus = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    y0 = jnp.array([3.0, -2.0])
    y, traj = d.composite_flow(contraction, taus, y0, 7, order=order, return_trajectory=True)
    chex.assert_shape(traj, (8, 2))
    manual = y0
    for step, agent in enumerate([2, 0, 1, 2, 0, 1, 2]):
        manual = contraction(taus[agent], manual)
        np.testing.assert_allclose(traj[step + 1], manual, rtol=1e-6)
    np.testing.assert_allclose(y, manual, rtol=1e-6)
    # Default order is 0..n-1.
    np.testing.assert_allclose(
        d.composite_flow(contraction, taus, y0, 5),
        d.composite_flow(contraction, taus, y0, 5, order=jnp.arange(3)),
    )


def test_composite_limit_is_in_the_hull_and_beats_mean_individual_error():
    # spec F24: contractions toward distinct y*_i around s. For n = 2 and order (0, 1) the
    # cycle limit is (1/3) y*_0 + (2/3) y*_1.
    s = jnp.zeros(2)
    stars = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    limit = d.composite_flow(contraction, stars, jnp.array([7.0, -3.0]), 60)
    np.testing.assert_allclose(limit, stars[0] / 3 + 2 * stars[1] / 3, atol=1e-5)

    stars = jnp.array([[1.0, 0.2], [-0.3, 0.8], [-0.5, -0.9]])
    rotations = jnp.array([[0, 1, 2], [1, 2, 0], [2, 0, 1]])
    limits = jax.vmap(lambda o: d.composite_flow(contraction, stars, jnp.ones(2), 60, order=o))(
        rotations
    )
    # Each limit is a convex combination of the y*_i (the hull weights solve a 3x3 system).
    for lim in limits:
        lam = np.linalg.lstsq(np.vstack([np.asarray(stars).T, np.ones(3)]), np.append(lim, 1.0))[0]
        assert np.all(lam > -1e-5)
    composite_err = np.mean(np.linalg.norm(limits - s, axis=-1))
    individual_err = np.mean(np.linalg.norm(stars - s, axis=-1))
    assert composite_err <= individual_err


def test_composite_resolves_ambiguity_for_every_order():
    # Agent 0 cannot tell s1 from s2, agent 1 cannot tell s1 from s4; s1 is the only shared
    # state (collective observability), so the composite flow must find it from any start.
    taus = jnp.array([[0.5, 0.5, 0.0, 0.0], [0.5, 0.0, 0.0, 0.5], [1.0, 0.0, 0.0, 0.0]])
    y0 = jax.random.normal(jax.random.key(2), (1000, 4))

    @jax.jit
    def run(order, y0):
        return jax.vmap(lambda y: d.composite_flow(posterior_denoiser, taus, y, 8, order=order))(y0)

    for order in itertools.permutations(range(3)):
        y = run(jnp.array(order), y0)
        assert (np.linalg.norm(y - STATES[0], axis=-1) < 0.1).mean() == 1.0, order
    # Partial composite with agent 0 only stays split between s1 and s2 (Finding 6).
    y = run(jnp.array([0, 0, 0]), y0)
    at_s1 = (np.linalg.norm(y - STATES[0], axis=-1) < 0.1).mean()
    assert 0.35 < at_s1 < 0.65


def test_sample_dispatches_to_flows():
    tau = jnp.array([0.2, 0.8, 0.0, 0.0])
    key = jax.random.key(3)
    y0 = 0.5 * jax.random.normal(key, (4,))
    np.testing.assert_allclose(
        d.sample("fixed_point", key, posterior_denoiser, (4,), tau=tau, num_steps=4, sigma_init=0.5),
        d.fixed_point_flow(posterior_denoiser, tau, y0, 4),
    )
    taus = jnp.stack([tau, tau[::-1]])
    np.testing.assert_allclose(
        d.sample("composite", key, posterior_denoiser, (4,), tau=taus, num_steps=4,
                 sigma_init=0.5, order=jnp.array([1, 0])),
        d.composite_flow(posterior_denoiser, taus, y0, 4, order=jnp.array([1, 0])),
    )
