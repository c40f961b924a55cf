"""Reverse chains as data (spec-haqo §3.7.3, §3.7.5; F16, F17, F22's ratio): `sample_chain`,
`chain_kl`, `chain_log_ratio` of `DiffusionActor`, and the trust-region `line_search`.

The independent reference is the DDPM posterior written with the schedule's own helpers
(`predict_x0_from_eps`, `q_posterior`), applied to the states `sample_chain` visited; the chain
itself is checked against `sample` (same key, same a0). Tiny networks (hidden 16, 2 layers,
H = 4) and one compiled program per test."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxdiff.diffusion import line_search, predict_x0_from_eps, q_posterior
from jaxdiff.nets.diffusion_actor import DiffusionActor

N_AGENTS, A, C, M = 2, 3, 4, 5
ACTOR = DiffusionActor(A, steps=4, schedule="vp", hidden=16, layers=2)


def _setup(actor=ACTOR):
    """params, a random direction in parameter space, cond [M, n, C] and a key. The direction
    is one flat draw unravelled (a draw per leaf compiles one slow threefry program each)."""
    k = jax.random.split(jax.random.key(0), 4)
    params = actor.init(k[0], N_AGENTS, C)
    flat, unravel = ravel_pytree(params)

    @jax.jit
    def draw(k1, k2):
        return unravel(jax.random.normal(k1, flat.shape)), jax.random.normal(k2, (M, N_AGENTS, C))
    return (params, *draw(k[1], k[2]), k[3])


def _shift(params, direction, s):
    return jax.tree.map(lambda p, d: p + s * d, params, direction)


def _ref_mean(actor, params, x, t, cond):
    """The DDPM posterior mean with a clipped x0 estimate, from the schedule helpers."""
    s = actor.diffusion_schedule()
    tb = jnp.full(x.shape[:-1], t)
    flat = lambda v: v.reshape((-1, v.shape[-1]))  # noqa: E731
    eps = actor.eps(params, x, tb, cond)
    x0 = predict_x0_from_eps(s, flat(x), tb.reshape(-1), flat(eps))
    x0 = x0 if actor.clip_x0 is None else jnp.clip(x0, -actor.clip_x0, actor.clip_x0)
    return q_posterior(s, x0, flat(x), tb.reshape(-1))[0].reshape(x.shape)


def test_sample_chain_is_samples_chain_and_records_it():
    params, _, cond, key = _setup()

    @jax.jit
    def run(params, cond, key):
        a0, chain = ACTOR.sample_chain(params, cond, key)
        a0_noisy, chain_noisy = ACTOR.sample_chain(params, cond, key, last_step_noise=True)
        means = [_ref_mean(ACTOR, params, chain["x_t"][k], t, cond)
                 for k, t in enumerate(range(ACTOR.steps - 1, -1, -1))]
        return ACTOR.sample(params, cond, key), a0, chain, a0_noisy, chain_noisy, means

    a_sample, a0, chain, a0_noisy, chain_noisy, means = run(params, cond, key)
    H = ACTOR.steps
    assert chain["x_t"].shape == chain["x_prev"].shape == chain["noise"].shape == (H, M,
                                                                                   N_AGENTS, A)
    np.testing.assert_allclose(a0, a_sample, atol=1e-5)                  # the sampler's chain
    np.testing.assert_array_equal(chain["t"], np.arange(H - 1, -1, -1))
    np.testing.assert_allclose(chain["x_prev"][:-1], chain["x_t"][1:], atol=0)
    np.testing.assert_allclose(a0, np.clip(chain["x_prev"][-1], -1, 1), atol=0)
    for k in range(H):                         # x_{t-1} = mu(x_t) + std_t z with the sampler's std
        np.testing.assert_allclose(
            chain["x_prev"][k], means[k] + chain["std"][k] * chain["noise"][k], atol=2e-5)
    assert chain["std"][-1] == 0
    # last_step_noise changes only the last transition, by sigma~_1 z (sigma~_1^2 = beta~_2)
    np.testing.assert_allclose(chain_noisy["x_t"], chain["x_t"], atol=0)
    floor = np.sqrt(ACTOR.diffusion_schedule().posterior_variance[1])
    np.testing.assert_allclose(chain_noisy["std"][-1], floor, rtol=1e-6)
    np.testing.assert_allclose(chain_noisy["x_prev"][-1],
                               chain["x_prev"][-1] + floor * chain["noise"][-1], atol=1e-6)
    assert not np.allclose(a0_noisy, a0)


def test_chain_kl_properties_and_the_independent_per_step_formula():
    params, direction, cond, key = _setup()
    scales = (0.0, 0.01, 0.02, 0.04, 0.08)
    mask = jnp.array([1.0, 0.0, 1.0])

    @jax.jit
    def run(params, direction, cond, key):
        kls = jax.vmap(lambda s: ACTOR.chain_kl(params, _shift(params, direction, s), cond,
                                                key))(jnp.asarray(scales))
        new = _shift(params, direction, 0.05)
        _, chain = ACTOR.sample_chain(params, cond, key)
        var = ACTOR.diffusion_schedule().posterior_variance
        ref = sum(
            jnp.sum((_ref_mean(ACTOR, params, chain["x_t"][k], t, cond)
                     - _ref_mean(ACTOR, new, chain["x_t"][k], t, cond)) ** 2, -1)
            / (2 * var[max(t, 1)])
            for k, t in enumerate(range(ACTOR.steps - 1, -1, -1)))
        # only the output weights of action dim 1 move: masked away, the KL is exactly 0
        only_dim1 = jax.tree.map(jnp.zeros_like, direction)
        only_dim1["params"]["Dense_2"]["bias"] = jnp.ones((N_AGENTS, A)).at[:, [0, 2]].set(0)
        dim1 = _shift(params, only_dim1, 0.5)
        return (kls, ACTOR.chain_kl(params, new, cond, key), ref,
                ACTOR.chain_kl(params, new, cond, key),
                ACTOR.chain_kl(params, dim1, cond, key, mask=mask),
                ACTOR.chain_kl(params, dim1, cond, key))

    kls, kl_new, ref, kl_again, kl_masked, kl_dim1 = run(params, direction, cond, key)
    assert kls[0].shape == (M, N_AGENTS)
    np.testing.assert_array_equal(kls[0], 0.0)                              # KL(theta, theta)
    assert all((k >= 0).all() for k in kls)
    means = [float(jnp.mean(k)) for k in kls]
    assert all(b > a for a, b in zip(means, means[1:])), means              # grows with scale
    assert means[1] > 0
    np.testing.assert_allclose(kl_new, ref, rtol=2e-4, atol=1e-7)          # sigma~_1^2 = beta~_2
    np.testing.assert_array_equal(kl_new, kl_again)                         # same key, same chains
    np.testing.assert_array_equal(kl_masked, 0.0)
    assert kl_dim1.mean() > 0        # (single entries can be 0: an x0 clipped at every step)


def test_chain_kl_with_one_step_is_the_gaussian_closed_form():
    # no x0 clip: at H = 1 (abar ~ e^-5) the clip would pin almost every x0 to the box edge
    actor = DiffusionActor(A, steps=1, schedule="vp", hidden=16, layers=2, clip_x0=None)
    params, direction, cond, key = _setup(actor)

    @jax.jit
    def run(params, direction, cond, key):
        new = _shift(params, direction, 0.1)
        _, chain = actor.sample_chain(params, cond, key)
        x1 = chain["x_t"][0]
        d = _ref_mean(actor, params, x1, 0, cond) - _ref_mean(actor, new, x1, 0, cond)
        return actor.chain_kl(params, new, cond, key), jnp.sum(d**2, -1)

    kl, sq = run(params, direction, cond, key)
    sigma2 = float(actor.diffusion_schedule().betas[0])        # H = 1: no beta~_2, floor beta_1
    np.testing.assert_allclose(kl, sq / (2 * sigma2), rtol=1e-5)
    assert (kl > 0).all()


def test_chain_log_ratio_is_zero_at_old_params_and_the_kl_plus_a_zero_mean_term():
    # On chains from the old policy with the last step noised, x_{t-1} = mu_old + sigma z, so
    # -log ratio = sum_t ||mu_old - mu_new||^2 / (2 sigma^2) + z . (mu_old - mu_new) / sigma
    # exactly: the chain KL plus a term whose expectation is 0.
    params, direction, cond, key = _setup()
    new = _shift(params, direction, 0.05)

    @jax.jit
    def run(params, new, cond, key):
        _, chain = ACTOR.sample_chain(params, cond, key, last_step_noise=True)
        lr_same = ACTOR.chain_log_ratio(params, params, chain, cond)
        lr = ACTOR.chain_log_ratio(new, params, chain, cond)
        var = ACTOR.diffusion_schedule().posterior_variance
        kl, cross = 0.0, 0.0
        for k, t in enumerate(range(ACTOR.steps - 1, -1, -1)):
            d = (_ref_mean(ACTOR, params, chain["x_t"][k], t, cond)
                 - _ref_mean(ACTOR, new, chain["x_t"][k], t, cond))
            kl += jnp.sum(d**2, -1) / (2 * var[max(t, 1)])            # sigma~_1^2 = beta~_2
            cross += jnp.sum(chain["noise"][k] * d, -1) / jnp.sqrt(var[max(t, 1)])
        grad = jax.grad(lambda p: jnp.sum(ACTOR.chain_log_ratio(p, params, chain, cond)))(new)
        return lr_same, lr, cross, kl, grad

    lr_same, lr, cross, kl, grad = run(params, new, cond, key)
    np.testing.assert_array_equal(lr_same, 0.0)                          # ratio 1 at theta_old
    np.testing.assert_allclose(-lr, kl + cross, rtol=1e-4, atol=1e-5)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grad))
    assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grad))
    with pytest.raises(ValueError, match=r"\[H, ..., n, A\]"):
        ACTOR.chain_log_ratio(new, params, {"x_t": jnp.zeros((1, 2)), "x_prev": jnp.zeros((1, 2))},
                              cond)


# --- F17: the line search ----------------------------------------------------------------------


def test_line_search_against_brute_force_on_a_quadratic_divergence():
    old = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([[0.5], [0.0]])}
    step = {"a": jnp.array([0.3, 0.4]), "b": jnp.array([[1.2], [-0.1]])}
    sq = sum(float(jnp.sum(v**2)) for v in jax.tree.leaves(step))
    kl_fn = lambda p: 2.0 * sum(jnp.sum((p[k] - old[k]) ** 2) for k in old)  # noqa: E731
    grid = 0.8 ** np.arange(10)

    @jax.jit
    def run(scale, delta):
        return line_search(kl_fn, old, jax.tree.map(lambda o, d: o + scale * d, old, step),
                           delta=delta)

    for scale, delta in ((0.1, 0.5), (1.0, 0.5), (3.0, 0.2), (100.0, 0.01), (1.0, 1e-9)):
        params, c, raw, real = run(scale, delta)
        kl = 2.0 * sq * (scale * grid) ** 2
        feasible = grid[kl <= delta]
        c_ref = feasible[0] if len(feasible) else 0.0
        np.testing.assert_allclose(c, c_ref, rtol=1e-6)
        np.testing.assert_allclose(raw, kl[0], rtol=1e-5)
        assert real <= delta and np.isclose(float(kl_fn(params)), real, rtol=1e-5, atol=1e-12)
        if kl[0] <= delta:
            assert c == 1.0
        if c_ref == 0.0:                                          # infeasible: unchanged
            assert real == 0 and all(np.array_equal(p, o) for p, o in
                                     zip(jax.tree.leaves(params), jax.tree.leaves(old)))
    assert run(3.0, 0.2)[1] < 1.0


def test_line_search_per_agent_and_nan_divergence():
    old = {"w": jnp.zeros((3, 2))}
    new = {"w": jnp.array([[0.1, 0.0], [1.0, 1.0], [100.0, 0.0]])}
    kl_fn = lambda p: jnp.sum(p["w"] ** 2, -1)  # noqa: E731     one value per agent [n]
    params, c, raw, real = jax.jit(lambda o, n: line_search(kl_fn, o, n, delta=0.5))(old, new)
    grid = 0.8 ** np.arange(10)
    expected = [1.0, grid[np.argmax(2 * grid**2 <= 0.5)], 0.0]
    np.testing.assert_allclose(c, expected, rtol=1e-6)
    np.testing.assert_allclose(params["w"], np.asarray(new["w"]) * np.array(expected)[:, None],
                               rtol=1e-6)
    assert (real <= 0.5).all()
    nan_kl = lambda p: jnp.where(jnp.sum(p["w"]) > 0, jnp.nan, 0.0)  # noqa: E731
    p_nan, c_nan, _, _ = line_search(nan_kl, old, new, delta=0.5)
    assert c_nan == 0 and np.array_equal(p_nan["w"], old["w"])
    with pytest.raises(ValueError, match="shrink"):
        line_search(kl_fn, old, new, delta=0.5, shrink=1.0)


def test_line_search_on_the_chain_kl_keeps_the_realised_kl_under_delta():
    params, direction, cond, key = _setup()
    delta = 0.01

    @jax.jit
    def run(params, direction, cond, key):
        kl_fn = lambda p: jnp.mean(ACTOR.chain_kl(params, p, cond, key))  # noqa: E731
        out = []
        for s in (0.002, 0.3):                                  # small and huge proposals
            new, c, raw, real = line_search(kl_fn, params, _shift(params, direction, s),
                                            delta=delta)
            out.append((c, raw, real, kl_fn(new)))
        return out

    (c_small, raw_small, _, _), (c_big, raw_big, real_big, check_big) = run(
        params, direction, cond, key)
    assert raw_small <= delta and c_small == 1.0
    assert raw_big > delta and c_big < 1.0
    assert check_big <= delta and np.isclose(check_big, real_big, rtol=1e-4, atol=1e-9)
