"""HAQO's losses (paper 003, spec-haqo §3.2-3.3, §3.7; features F1-F3, F7, F21, F22).

Values are checked against float64 NumPy written from the formulas on fixed batches (t, noise
and uniform draws passed in), against analytic expectations for a linear eps_fn (the random
draws: t uniform, noise N(0, I), u uniform on the box), against an exact noise predictor (zero
loss: x_t is built with the t handed to eps_fn), and by properties (zero weight or padded dim
=> zero gradient, monotone weights, the PPO clip's dead zones). Each test compiles once."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import losses
from jaxdiff.diffusion import (
    cosine_schedule,
    linear_schedule,
    predict_x0_from_eps,
    q_sample,
    vp_schedule,
)

SCHED = vp_schedule(20)


# --- F1: the vp schedule -------------------------------------------------------------------


def test_vp_schedule_ends_at_exp_minus_5_05_for_every_T():
    for T in (5, 8, 16, 20, 50):
        abar = np.asarray(vp_schedule(T).alphas_cumprod, np.float64)
        np.testing.assert_allclose(abar[-1], np.exp(-5.05), rtol=1e-4)
        assert np.all(np.diff(abar) < 0) and 0 < abar[-1] and abar[0] <= 1
    s = vp_schedule(20)
    np.testing.assert_allclose(s.betas[0], 1 - np.exp(-0.1 / 20 - 0.5 * 9.9 / 400), rtol=1e-5)
    np.testing.assert_allclose([s.betas[0], s.alphas_cumprod[0]], [0.01722, 0.98278], atol=1e-5)


# --- F2: the QV loss -------------------------------------------------------------------------

B, K, D, C = 3, 4, 3, 2
_rng = np.random.default_rng(0)
W_X = _rng.normal(size=(D, D)) * 0.5
W_C = _rng.normal(size=(C, D)) * 0.5
W_T = _rng.normal(size=(D,)) * 0.1


def linear_eps(x_t, t, cond, bias=0.0):
    """eps = x_t W_x + cond W_c + t w_t (+ bias): a 'network' a NumPy formula can follow."""
    return x_t @ W_X + cond @ W_C + t[..., None] * W_T + bias


def _np_qv(x0, cond, w, t, noise, mask, normalise):
    abar = np.asarray(SCHED.alphas_cumprod, np.float64)[t][..., None]
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise
    pred = x_t @ W_X + (cond @ W_C)[:, None, :] + t[..., None] * W_T
    err = (((noise - pred) ** 2) * mask).sum(-1)
    wt = w / (w.mean() + 1e-8) if normalise else w
    return (wt * err).mean()


def test_qv_loss_matches_numpy_on_a_fixed_batch_with_mask_and_normalisation():
    r = np.random.default_rng(1)
    x0 = r.uniform(-1, 1, (B, K, D))
    cond = r.normal(size=(B, C))
    w = np.maximum(r.normal(size=(B, K)), 0.0)
    t = r.integers(0, 20, (B, K))
    noise = r.normal(size=(B, K, D))
    mask = np.array([1.0, 1.0, 0.0])

    @jax.jit
    def run(x0, cond, w, t, noise):
        out = []
        for m in (None, mask):
            for norm in (True, False):
                out.append(losses.qv_weighted(linear_eps, SCHED, jax.random.key(0), x0, cond, w,
                                          mask=m, normalise=norm, t=t, noise=noise))
        return out

    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    results = run(f32(x0), f32(cond), f32(w), jnp.asarray(t, jnp.int32), f32(noise))
    i = 0
    for m in (np.ones(D), mask):
        for norm in (True, False):
            loss, aux = results[i]
            i += 1
            np.testing.assert_allclose(loss, _np_qv(x0, cond, w, t, noise, m, norm), rtol=1e-6)
            np.testing.assert_allclose(aux["mean_weight"], w.mean(), rtol=1e-6)
            np.testing.assert_allclose(aux["frac_nonzero_weights"], (w > 0).mean(), rtol=1e-6)


def test_qv_loss_zero_weight_samples_and_padded_dims_get_zero_gradient():
    r = np.random.default_rng(2)
    x0 = jnp.asarray(r.uniform(-1, 1, (B, K, D)), jnp.float32)
    cond = jnp.asarray(r.normal(size=(B, C)), jnp.float32)
    w = jnp.asarray(r.uniform(0.5, 2.0, (B, K)), jnp.float32).at[0, 1].set(0.0).at[2, 3].set(0.0)
    mask = jnp.array([1.0, 0.0, 1.0])

    # a per-candidate output offset: its gradient is each sample's own contribution
    @jax.jit
    def grads(offset, wx):
        def loss(offset, wx):
            fn = lambda x, t, c: x @ wx + c @ W_C + offset  # noqa: E731
            return losses.qv_weighted(fn, SCHED, jax.random.key(3), x0, cond, w, mask=mask)[0]
        return jax.grad(loss, argnums=(0, 1))(offset, wx)

    g_off, g_wx = grads(jnp.zeros((B, K, D)), jnp.asarray(W_X, jnp.float32))
    g_off, g_wx = np.asarray(g_off), np.asarray(g_wx)
    assert np.all(g_off[0, 1] == 0) and np.all(g_off[2, 3] == 0)          # zero weight
    assert np.all(g_off[..., 1] == 0) and np.all(g_wx[:, 1] == 0)         # padded dim
    live = np.asarray(w > 0)
    assert np.all(np.abs(g_off[live][:, [0, 2]]) > 0)                     # the rest learns
    assert np.all(np.abs(g_wx[:, [0, 2]]) > 0)


def test_qv_loss_random_draws_noise_with_the_t_handed_to_eps_fn():
    # An exact noise predictor for x0 = f(cond) has zero loss whatever t and eps are drawn,
    # so the x_t the loss builds uses the t eps_fn receives and the state's own cond.
    n = 512
    cond = jax.random.normal(jax.random.key(4), (n, C))
    target = lambda c: jnp.tanh(jnp.concatenate([c, c[..., :1]], -1))  # noqa: E731
    x0 = jnp.broadcast_to(target(cond)[:, None], (n, K, D))
    s = SCHED

    def exact(x_t, t, c):
        return (x_t - s.sqrt_alphas_cumprod[t][..., None] * target(c)) / (
            s.sqrt_one_minus_alphas_cumprod[t][..., None])

    @jax.jit
    def run(key):
        zero, _ = losses.qv_weighted(exact, s, key, x0, cond, jnp.ones((n, K)))
        # eps_fn = 0: E||eps||^2 over the 2 real dims = 2 (the noise is N(0, I))
        blind, _ = losses.qv_weighted(lambda x, t, c: jnp.zeros_like(x), s, key, x0, cond,
                                  jnp.ones((n, K)), mask=jnp.array([1.0, 0.0, 1.0]))
        return zero, blind

    zero, blind = run(jax.random.key(5))
    assert zero < 1e-8
    assert abs(blind - 2.0) < 0.15          # sd of the mean ~ sqrt(4 / 2048) = 0.044


def test_qv_loss_refuses_mismatched_shapes():
    x0, cond = jnp.zeros((B, K, D)), jnp.zeros((B, C))
    with pytest.raises(ValueError, match=r"weights \[..., K\]"):
        losses.qv_weighted(linear_eps, SCHED, jax.random.key(0), x0, cond, jnp.ones((B, K + 1)))
    with pytest.raises(ValueError, match="mask"):
        losses.qv_weighted(linear_eps, SCHED, jax.random.key(0), x0, cond, jnp.ones((B, K)),
                       mask=jnp.ones(D + 1))


# --- F3: the eps <-> x0 identity (paper Eq. 131) ----------------------------------------------


def test_eps_error_is_the_x0_error_times_the_snr():
    for sched in (vp_schedule(20), cosine_schedule(16), linear_schedule(8, 0.001, 0.999)):
        k = jax.random.split(jax.random.key(6), 4)
        x0 = jax.random.uniform(k[0], (64, 3), minval=-1, maxval=1)
        eps = jax.random.normal(k[1], (64, 3))
        eps_hat = jax.random.normal(k[2], (64, 3))
        t = jax.random.randint(k[3], (64,), 0, sched.num_steps)
        x_t = q_sample(sched, x0, t, eps)
        x0_hat = predict_x0_from_eps(sched, x_t, t, eps_hat)
        abar = np.asarray(sched.alphas_cumprod, np.float64)[np.asarray(t)]
        lhs = np.sum((np.asarray(eps) - np.asarray(eps_hat)) ** 2, -1)
        rhs = abar / (1 - abar) * np.sum((np.asarray(x0_hat) - np.asarray(x0)) ** 2, -1)
        np.testing.assert_allclose(lhs, rhs, rtol=2e-4)   # float32 inversion at abar ~ 1


# --- F7: qadv / qcut weights -----------------------------------------------------------------


def test_qv_weights_formulas_and_monotonicity():
    q = jax.random.normal(jax.random.key(7), (200, 8)) * 3.0 + 10.0
    qn = np.asarray(q, np.float64)
    adv = qn - qn.mean(-1, keepdims=True)
    qadv = np.asarray(losses.qv_weights(q))
    qcut = np.asarray(losses.qv_weights(q, mode="qcut", eps_cut=1.0))
    np.testing.assert_allclose(qadv, np.maximum(adv, 0), atol=1e-5)
    np.testing.assert_allclose(qcut, np.where(adv >= 1.0, adv, 0.0), atol=1e-5)
    assert (qadv >= 0).all() and (qcut >= 0).all() and (qcut[adv < 0.999] == 0).all()
    # monotone non-decreasing in A within each state (property over 200 random states)
    for w in (qadv, qcut):
        order = np.argsort(adv, axis=-1)
        assert (np.diff(np.take_along_axis(w, order, -1), axis=-1) >= 0).all()
    # axis, eps_cut <= 0 (qcut == qadv) and no gradient through the weights
    np.testing.assert_allclose(losses.qv_weights(q.T, axis=0), qadv.T, atol=1e-6)
    np.testing.assert_allclose(losses.qv_weights(q, mode="qcut", eps_cut=0.0), qadv, atol=1e-6)
    assert np.all(jax.grad(lambda q: jnp.sum(losses.qv_weights(q)))(q) == 0)


def test_qv_weights_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="qadv.*qcut"):
        losses.qv_weights(jnp.zeros((2, 3)), mode="exp")
    with pytest.raises(ValueError, match="K >= 2"):
        losses.qv_weights(jnp.zeros((5, 1)))


# --- entropy surrogate (Eq. 9) ---------------------------------------------------------------


def test_diffusion_entropy_hand_value_analytic_expectation_and_sign():
    n, N, d = 4, 3, 2
    r = np.random.default_rng(8)
    cond = r.normal(size=(n, C))
    u = r.uniform(-1, 1, (n, N, d))
    t = r.integers(0, 20, (n, N))
    noise = r.normal(size=(n, N, d))
    w = r.uniform(0, 2, n)
    wc = r.normal(size=(C, d))
    eps_lin = lambda x, t, c: 0.7 * x + c @ wc  # noqa: E731
    low, high, c0 = -0.5, 1.5, 0.7

    @jax.jit
    def run(key):
        f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
        fixed = [losses.diffusion_entropy(eps_lin, SCHED, key, f32(cond), n_samples=N, d=d,
                                          weights=ww, u=f32(u), t=jnp.asarray(t), noise=f32(noise))
                 for ww in (None, f32(w))]
        # E over t ~ U, eps ~ N(0,I), u ~ U[low, high]^d of ||eps - c0 x_t||^2 with mask [1, 0]
        mc = losses.diffusion_entropy(lambda x, t, c: c0 * x, SCHED, key, jnp.zeros((4096, C)),
                                      n_samples=16, d=d, low=low, high=high,
                                      mask=jnp.array([1.0, 0.0]))
        positive = [losses.diffusion_entropy(lambda x, t, c: s * jnp.sin(3 * x) + c[..., :d],
                                             SCHED, k, f32(cond), n_samples=N, d=d)
                    for s, k in zip((0.0, 1.0, 5.0), jax.random.split(key, 3))]
        return fixed, mc, positive

    fixed, mc, positive = run(jax.random.key(9))
    abar = np.asarray(SCHED.alphas_cumprod, np.float64)
    x_t = np.sqrt(abar[t])[..., None] * u + np.sqrt(1 - abar[t])[..., None] * noise
    per_state = (((noise - 0.7 * x_t - (cond @ wc)[:, None]) ** 2).sum(-1)).mean(-1)
    np.testing.assert_allclose(fixed[0], per_state.mean(), rtol=1e-6)
    np.testing.assert_allclose(fixed[1], (w * per_state).mean(), rtol=1e-6)
    # one dim: eps - c0 x_t = (1 - c0 sqrt(1-abar)) eps - c0 sqrt(abar) u
    mean_u, var_u = (low + high) / 2, (high - low) ** 2 / 12
    expected = np.mean((1 - c0 * np.sqrt(1 - abar)) ** 2 + c0**2 * abar * (var_u + mean_u**2))
    np.testing.assert_allclose(mc, expected, rtol=0.02)
    assert all(p >= 0 for p in positive)


# --- F21: dispersion ratio and adaptive alpha -----------------------------------------------


def test_dispersion_ratio_against_numpy_and_its_anchors():
    x = jax.random.normal(jax.random.key(10), (5, 8, 3)) * jnp.array([0.1, 0.5, 1.0])
    xn = np.asarray(x, np.float64)
    trace = np.array([np.trace(np.cov(s.T)) for s in xn])
    np.testing.assert_allclose(losses.dispersion_ratio(x), trace / (3 * 4 / 12), rtol=1e-5)
    masked = np.array([np.trace(np.cov(s[:, :2].T)) for s in xn]) / (2 * 4 / 12)
    np.testing.assert_allclose(losses.dispersion_ratio(x, mask=jnp.array([1.0, 1.0, 0.0])),
                               masked, rtol=1e-5)
    np.testing.assert_allclose(losses.dispersion_ratio(2 * x), 4 * losses.dispersion_ratio(x),
                               rtol=1e-5)
    uniform = jax.random.uniform(jax.random.key(11), (4096, 2), minval=-3.0, maxval=1.0)
    assert abs(losses.dispersion_ratio(uniform, low=-3.0, high=1.0, axis=0) - 1) < 0.05
    assert losses.dispersion_ratio(jnp.ones((6, 2)), axis=0) == 0
    with pytest.raises(ValueError, match="K >= 2"):
        losses.dispersion_ratio(jnp.ones((1, 2)), axis=0)


def test_adaptive_alpha_grows_on_collapse_and_relaxes_to_alpha0():
    key = jax.random.key(12)
    collapsed = 0.3 + 0.01 * jax.random.normal(key, (8, 2))      # ratio ~ 3e-4 < kappa
    spread = jax.random.uniform(key, (8, 2), minval=-1, maxval=1)  # ratio ~ 1
    r_low = losses.dispersion_ratio(collapsed, axis=0)
    r_high = losses.dispersion_ratio(spread, axis=0)
    assert r_low < 0.05 < r_high
    alpha, history = 0.02, []
    for _ in range(12):                                          # collapse: x1.5 up to the cap
        alpha = losses.adaptive_alpha(alpha, r_low)
        history.append(float(alpha))
    np.testing.assert_allclose(history[:3], [0.03, 0.045, 0.0675], rtol=1e-6)
    assert history[-1] == pytest.approx(0.5) and max(history) <= 0.5 + 1e-7
    down = losses.adaptive_alpha(0.5, r_high)
    assert down == pytest.approx(0.495)
    assert losses.adaptive_alpha(0.0201, r_high) == pytest.approx(0.02)  # never below alpha0
    assert losses.adaptive_alpha(0.01, r_high) == pytest.approx(0.01 / 0.99)  # up towards it
    per_agent = losses.adaptive_alpha(jnp.array([0.02, 0.1]), jnp.array([0.01, 0.9]))
    np.testing.assert_allclose(per_agent, [0.03, 0.099], rtol=1e-6)
    with pytest.raises(ValueError, match="kappa"):
        losses.adaptive_alpha(0.02, r_low, kappa=1.5)


# --- F22: PPO clip on the chain ratio ----------------------------------------------------------


def test_ppo_clip_gradient_vanishes_outside_the_clip_range_in_the_right_direction():
    eps = 0.2
    rho = np.array([0.5, 0.9, 1.0, 1.1, 1.5, 0.5, 0.9, 1.1, 1.5])
    adv = np.array([1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0])
    log_ratio = jnp.log(jnp.asarray(rho, jnp.float32))
    loss, grad = jax.value_and_grad(losses.ppo_clip_loss)(log_ratio, jnp.asarray(adv), eps)
    n = len(rho)
    np.testing.assert_allclose(
        loss, -np.mean(np.minimum(rho * adv, np.clip(rho, 1 - eps, 1 + eps) * adv)), rtol=1e-6)
    # the unclipped term -rho A / n is active unless rho has left the range the way A pushes it
    dead = ((adv > 0) & (rho > 1 + eps)) | ((adv < 0) & (rho < 1 - eps))
    np.testing.assert_allclose(grad, np.where(dead, 0.0, -rho * adv / n), rtol=1e-6)
    assert dead.sum() == 2
    # below the range with A > 0 (or above it with A < 0) the gradient still pulls rho back
    assert grad[0] < 0 and grad[8] > 0
    np.testing.assert_allclose(losses.ppo_clip_loss(jnp.zeros(3), jnp.array([1.0, 2.0, 3.0])),
                               -2.0)
    with pytest.raises(ValueError, match="clip"):
        losses.ppo_clip_loss(log_ratio, jnp.asarray(adv), 0.0)
