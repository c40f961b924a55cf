"""Fixed points, individual / composite / partial-composite flows and the composite algorithm
with the exact (analytic) denoisers of the 2x2 sensor network (F11-F14, F20-F24)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import diffusion as d
from jaxdiff import statediff as sd
from jaxdiff.envs.sensor_grid import sensor_2x2

TRUE = np.eye(4, dtype=np.float32)


def exact_setup(co=True, target=0, key=0):
    """Analytic denoiser and every agent's conditioning log p(s | o_i) for a target area."""
    env = sensor_2x2(co)
    f = sd.analytic_blind_denoiser(env.states())
    if co:
        obs = env.observe(jax.random.key(key), jnp.asarray(TRUE[target]))
    else:
        obs = jnp.zeros((4, 2))  # every agent sees 00
    log_post = jax.vmap(lambda i, o: jax.nn.log_softmax(env.log_likelihood(i, o)))(
        jnp.arange(4), obs
    )
    return env, f, log_post


def stable_points(fp):
    keep = np.asarray(fp.stable)
    return np.asarray(fp.points)[keep], np.asarray(fp.basin_fraction)[keep]


def test_attractors_are_the_consistent_states_co():
    env, f, lp = exact_setup()
    find = jax.jit(lambda tau, k: sd.attractors(f, tau, k, num_starts=1024, state_dim=4))
    counts, all_points, all_valid = [], [], []
    for i in range(4):
        fp = find(lp[i], jax.random.key(i))
        pts, frac = stable_points(fp)
        counts.append(len(pts))
        consistent = np.flatnonzero(np.asarray(env.posterior(i, env.observe(jax.random.key(0), jnp.asarray(TRUE[0]))[i])) > 0)
        np.testing.assert_allclose(sorted(map(tuple, pts.round(3))), sorted(map(tuple, TRUE[consistent])), atol=1e-3)
        assert np.all(np.asarray(fp.spectral_radius)[np.asarray(fp.stable)] < 1.0)
        if len(pts) == 2:
            assert np.all(np.abs(frac - 0.5) < 0.06)  # symmetric posterior, equal basins
        all_points.append(fp.points)
        all_valid.append(fp.stable)
    assert counts == [1, 1, 2, 2]  # the paper's Fig. 1, top row
    shared = d.shared_fixed_points(jnp.stack(all_points), jnp.stack(all_valid), tol=0.1)
    np.testing.assert_allclose(np.asarray(all_points[0])[np.asarray(shared)], TRUE[:1], atol=1e-3)


def test_newton_finds_the_saddle_that_the_stability_filter_excludes():
    _, f, lp = exact_setup()
    g = lambda y: f(lp[2], y)  # Agent 3: attractors at Areas 1 and 4
    fp = d.find_fixed_points(g, jnp.array([[0.5, 0.0, 0.0, 0.5]]), method="newton")
    assert bool(fp.valid[0]) and float(fp.residual[0]) < 1e-4
    assert float(fp.spectral_radius[0]) > 1.0 and not bool(fp.stable[0])


def test_nonco_shared_points_and_basins_track_the_posterior():
    env, f, lp = exact_setup(co=False)
    find = jax.jit(lambda tau, k: sd.attractors(f, tau, k, num_starts=2000, state_dim=4))
    fps = [find(lp[i], jax.random.key(10 + i)) for i in range(4)]
    shared = d.shared_fixed_points(jnp.stack([fp.points for fp in fps]), jnp.stack([fp.stable for fp in fps]))
    got = np.asarray(fps[0].points)[np.asarray(shared)]
    np.testing.assert_allclose(sorted(map(tuple, got.round(3))), [tuple(TRUE[1]), tuple(TRUE[0])], atol=1e-3)
    # Agent 1 (posterior 1/6, 1/6, 1/3, 1/3): more basin mass on Areas 3+4 than on 1+2 (F14).
    pts, frac = stable_points(fps[0])
    mass = {a: frac[np.argmax(pts, axis=1) == a].sum() for a in range(4)}
    assert mass[2] + mass[3] > mass[0] + mass[1] + 0.2
    pts, frac = stable_points(fps[3])  # Agent 4: 0.5 / 0.5 between Areas 1 and 2
    assert len(pts) == 2 and np.all(np.abs(frac - 0.5) < 0.07)


def test_composite_reaches_the_true_state_for_every_order_and_target():
    y0 = jax.random.normal(jax.random.key(0), (300, 4))
    orders = jnp.array(list(itertools.permutations(range(4))))  # all 24
    for target in range(4):
        _, f, lp = exact_setup(target=target, key=target)
        run = jax.vmap(lambda o: jax.vmap(lambda y: sd.composite_estimate(f, lp, y, 8, order=o))(y0))
        y = np.asarray(jax.jit(run)(orders))  # [24, 300, 4]
        assert np.all(np.linalg.norm(y - TRUE[target], axis=-1) < 0.1)  # 2n = 8 iterations
    # Individual diffusion of Agent 3 alone reaches the truth only about half the time.
    _, f, lp = exact_setup()
    ind = np.asarray(jax.vmap(lambda y: sd.individual_estimates(f, lp, y, 8))(y0))  # [300, 4, 4]
    hit = np.linalg.norm(ind - TRUE[0], axis=-1) < 0.1
    assert hit[:, :2].all() and 0.35 < hit[:, 2].mean() < 0.65 and 0.35 < hit[:, 3].mean() < 0.65


def test_partial_composites_follow_the_participants_histories():
    _, f, lp = exact_setup()
    y0 = jax.random.normal(jax.random.key(1), (1000, 4))
    run = lambda order: np.asarray(jax.vmap(lambda y: sd.composite_estimate(f, lp, y, 8, order=jnp.array(order)))(y0))
    alone = run([2])
    at_1 = np.linalg.norm(alone - TRUE[0], axis=-1) < 0.1
    at_4 = np.linalg.norm(alone - TRUE[3], axis=-1) < 0.1
    assert (at_1 | at_4).all() and abs(at_1.mean() - 0.5) < 0.06  # {A3}: split
    pair = run([2, 3])  # {A3, A4}: their only shared state is the truth
    assert np.all(np.linalg.norm(pair - TRUE[0], axis=-1) < 0.1)


def test_nonco_composite_splits_between_the_jointly_consistent_states():
    _, f, lp = exact_setup(co=False)
    y0 = jax.random.normal(jax.random.key(2), (4000, 4))
    y = np.asarray(jax.jit(jax.vmap(lambda y: sd.composite_estimate(f, lp, y, 12)))(y0))
    at = [np.linalg.norm(y - TRUE[a], axis=-1) < 0.1 for a in range(4)]
    assert (at[0] | at[1]).all()
    assert at[0].mean() >= 0.3 and at[1].mean() >= 0.3


def test_composite_algorithm_accepts_exact_and_rejects_random_models():
    _, f, lp = exact_setup()
    starts = jax.random.normal(jax.random.key(3), (64, 4))
    res = jax.jit(lambda s: sd.composite_algorithm(f, lp, s, num_steps=8, d_hat=0.05))(starts)
    assert float(res.acceptance_rate) == 1.0
    np.testing.assert_allclose(res.estimate, TRUE[0], atol=1e-3)
    # A network with random weights: its flows do not settle where the composite ends.
    model = sd.Denoiser(state_dim=4, width=64)
    params = sd.init_params(jax.random.key(4), model, 6)
    g = sd.denoise_fn(model, params)
    taus = jnp.concatenate([jnp.eye(4), jax.random.bernoulli(jax.random.key(5), 0.5, (4, 2))], axis=1)
    bad = jax.jit(lambda s: sd.composite_algorithm(g, taus.astype(jnp.float32), s, num_steps=8, d_hat=0.05))(starts)
    assert float(bad.acceptance_rate) < 0.5


def test_active_agents_restrict_the_composite():
    seq = sd.active_order(jnp.array([True, False, True, True]), 7, order=jnp.array([3, 2, 1, 0]))
    np.testing.assert_array_equal(seq, [3, 2, 0, 3, 2, 0, 3])
    _, f, lp = exact_setup()
    y0 = jax.random.normal(jax.random.key(6), (4,))
    a = sd.composite_estimate(f, lp, y0, 6, active=jnp.array([False, False, True, True]))
    b = sd.composite_estimate(f, lp, y0, 6, order=jnp.array([2, 3]))
    np.testing.assert_allclose(a, b, atol=1e-6)
    # The composite algorithm with an active mask equals the one over that subset.
    starts = jax.random.normal(jax.random.key(7), (16, 4))
    masked = sd.composite_algorithm(f, lp, starts, num_steps=8, d_hat=0.05,
                                    active=jnp.array([False, False, True, True]))
    subset = sd.composite_algorithm(f, lp, starts, num_steps=8, d_hat=0.05, order=jnp.array([2, 3]))
    np.testing.assert_allclose(masked.samples, subset.samples, atol=1e-6)
    np.testing.assert_allclose(masked.max_rho, subset.max_rho, atol=1e-6)
    np.testing.assert_allclose(masked.max_shift, subset.max_shift, atol=1e-6)
    np.testing.assert_allclose(masked.estimate, TRUE[0], atol=1e-3)


def test_composite_error_below_mean_individual_error_for_contractions():
    # Theorem 8 with f_i(y) = y*_i + 0.5 (y - y*_i): each agent has one fixed point y*_i near s.
    s = jnp.array([1.0, 0.0, 0.0])
    y_star = s + 0.2 * jax.random.normal(jax.random.key(7), (3, 3))
    f = lambda tau, y: tau + 0.5 * (y - tau)
    y0 = jnp.zeros(3)
    ind_err = jnp.mean(jnp.linalg.norm(y_star - s, axis=-1))
    limits = []
    for r in range(3):  # the n cyclic rotations of the order: uniform barycentric weights
        order = jnp.roll(jnp.arange(3), -r)
        limits.append(sd.composite_estimate(f, y_star, y0, 60, order=order))
    limits = jnp.stack(limits)
    comp_err = jnp.mean(jnp.linalg.norm(limits - s, axis=-1))
    assert float(comp_err) <= float(ind_err) + 1e-6
    # One fixed order: the limit lies in the convex hull, with weights 1/7, 2/7, 4/7 (n = 3).
    lam = jnp.linalg.lstsq(jnp.vstack([y_star.T, jnp.ones(3)]), jnp.append(limits[0], 1.0))[0]
    np.testing.assert_allclose(lam, [1 / 7, 2 / 7, 4 / 7], atol=1e-4)


def test_deviation_is_zero_for_the_exact_denoiser():
    env, f, lp = exact_setup()
    for i in range(4):
        dev, y_star = sd.deviation(f, lp[i], jnp.asarray(TRUE[0]))
        assert float(jnp.linalg.norm(dev)) < 1e-4
