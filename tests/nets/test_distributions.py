"""Action distributions (`nets.distributions`) against distrax and closed forms: categorical
log-probs, entropy and KL with availability masks (= the distribution over the available
actions only), sampling frequencies, finite gradients through masks; diagonal Gaussians with
padded action dims (= the Gaussian over the real dims only)."""
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.nets import distributions as D

A = 6


def _masked_case(seed=0, batch=10):
    k = jax.random.split(jax.random.key(seed), 4)
    logits_p = 2.0 * jax.random.normal(k[0], (batch, A))
    logits_q = 2.0 * jax.random.normal(k[1], (batch, A))
    mask = jax.random.bernoulli(k[2], 0.6, (batch, A))
    mask = mask.at[:, 0].set(mask[:, 0] | ~mask.any(-1))
    mask = mask.at[0].set(jnp.arange(A) == 3)                 # a row with one action left
    return logits_p, logits_q, mask, k[3]


def _subset(logits, mask, i):
    """The distrax categorical over the available actions of row i only."""
    avail = np.flatnonzero(np.asarray(mask[i]))
    return distrax.Categorical(logits=logits[i, avail]), avail


def test_categorical_matches_distrax_on_the_available_actions():
    logits_p, logits_q, mask, _ = _masked_case()
    mp, mq = D.mask_logits(logits_p, mask), D.mask_logits(logits_q, mask)
    ent = np.asarray(D.categorical_entropy(mp))
    kl = np.asarray(D.categorical_kl(mp, mq))
    for i in range(mask.shape[0]):
        p, avail = _subset(logits_p, mask, i)
        q, _ = _subset(logits_q, mask, i)
        np.testing.assert_allclose(ent[i], p.entropy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(kl[i], p.kl_divergence(q), rtol=1e-4, atol=1e-6)
        for j, a in enumerate(avail):
            np.testing.assert_allclose(D.categorical_log_prob(mp[i], jnp.asarray(a)),
                                       p.log_prob(j), rtol=1e-5, atol=1e-6)
    assert ent[0] == 0.0 and kl[0] == 0.0                       # one available action
    # unmasked: the plain distrax categorical
    full = distrax.Categorical(logits=logits_p)
    np.testing.assert_allclose(D.categorical_entropy(logits_p), full.entropy(), rtol=1e-5)
    a = jnp.arange(10) % A
    np.testing.assert_allclose(D.categorical_log_prob(logits_p, a), full.log_prob(a), rtol=1e-5)


def test_masked_gradients_are_finite_and_ignore_unavailable_logits():
    logits_p, logits_q, mask, _ = _masked_case(1)

    def loss(lp):
        mp = D.mask_logits(lp, mask)
        a = jnp.argmax(jnp.where(mask, 0.0, -jnp.inf), -1)     # the first available action
        return (D.categorical_entropy(mp) + D.categorical_log_prob(mp, a)
                + D.categorical_kl(mp, D.mask_logits(logits_q, mask))).sum()

    g = np.asarray(jax.grad(loss)(logits_p))
    assert np.isfinite(g).all()
    assert (g[~np.asarray(mask)] == 0).all()
    assert np.abs(g[np.asarray(mask)]).max() > 0


def test_categorical_sampling_frequencies_follow_the_masked_softmax():
    from scipy import stats
    logits = jnp.array([[0.5, -1.0, 2.0, 0.0, 1.0, -0.5]] * 2)
    mask = jnp.array([[True, True, False, True, True, False],
                      [False, False, True, False, False, False]])
    keys = jax.random.split(jax.random.key(0), 20_000)
    draws = np.asarray(jax.vmap(lambda k: D.categorical_sample(k, D.mask_logits(logits, mask)))(
        keys))
    counts = np.bincount(draws[:, 0], minlength=A)
    assert counts[~np.asarray(mask[0])].sum() == 0
    avail = np.asarray(mask[0])
    probs = np.exp(np.asarray(logits[0][avail], np.float64))
    probs /= probs.sum()
    assert stats.chisquare(counts[avail], len(keys) * probs).pvalue > 1e-3
    assert (draws[:, 1] == 2).all()


def _gauss_case(seed=0, batch=16, dim=4):
    k = jax.random.split(jax.random.key(seed), 6)
    return (jax.random.normal(k[0], (batch, dim)), 0.5 * jax.random.normal(k[1], (batch, dim)),
            jax.random.normal(k[2], (batch, dim)), 0.5 * jax.random.normal(k[3], (batch, dim)),
            jax.random.normal(k[4], (batch, dim)))


def test_gaussian_matches_distrax():
    mean_p, log_std_p, mean_q, log_std_q, a = _gauss_case()
    p = distrax.MultivariateNormalDiag(mean_p, jnp.exp(log_std_p))
    q = distrax.MultivariateNormalDiag(mean_q, jnp.exp(log_std_q))
    np.testing.assert_allclose(D.gaussian_log_prob(mean_p, log_std_p, a), p.log_prob(a),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(D.gaussian_entropy(log_std_p), p.entropy(), rtol=1e-5)
    np.testing.assert_allclose(D.gaussian_kl(mean_p, log_std_p, mean_q, log_std_q),
                               p.kl_divergence(q), rtol=1e-4, atol=1e-5)
    assert (np.asarray(D.gaussian_kl(mean_p, log_std_p, mean_p, log_std_p)) == 0).all()


def test_gaussian_dim_mask_is_the_gaussian_over_the_real_dims():
    """A heterogeneous agent with 2 real action dims padded to 4: its log-prob and entropy are
    those of the 2-d Gaussian, whatever sits in the padded dims."""
    mean, log_std, _, _, a = _gauss_case(1)
    dim_mask = jnp.array([1.0, 1.0, 0.0, 0.0])
    real = distrax.MultivariateNormalDiag(mean[:, :2], jnp.exp(log_std[:, :2]))
    np.testing.assert_allclose(D.gaussian_log_prob(mean, log_std, a, dim_mask),
                               real.log_prob(a[:, :2]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(D.gaussian_entropy(log_std, dim_mask), real.entropy(), rtol=1e-5)
    junk = a.at[:, 2:].set(1e3)
    np.testing.assert_allclose(D.gaussian_log_prob(mean, log_std, junk, dim_mask),
                               real.log_prob(a[:, :2]), rtol=1e-5, atol=1e-5)


def test_gaussian_samples_have_the_right_moments():
    mean = jnp.array([1.0, -2.0, 0.5])
    log_std = jnp.log(jnp.array([0.5, 2.0, 1.0]))
    x = np.asarray(jax.vmap(lambda k: D.gaussian_sample(k, mean, log_std))(
        jax.random.split(jax.random.key(0), 40_000)))
    se = np.exp(np.asarray(log_std)) / np.sqrt(len(x))
    assert (np.abs(x.mean(0) - np.asarray(mean)) < 5 * se).all()
    np.testing.assert_allclose(x.std(0), np.exp(log_std), rtol=0.03)


@pytest.mark.parametrize("shape", [(5,), (3, 7)])
def test_log_probs_are_normalised(shape):
    """exp(log_prob) sums to 1 over actions (categorical) and integrates to 1 (1-d Gaussian,
    trapezoid rule), so the log-probs are proper densities, not only equal to distrax's."""
    logits = jax.random.normal(jax.random.key(0), shape + (A,))
    probs = jnp.exp(jax.vmap(lambda a: D.categorical_log_prob(logits, jnp.full(shape, a)))(
        jnp.arange(A)))
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
    grid = jnp.linspace(-12.0, 12.0, 4001)[:, None]
    dens = jnp.exp(D.gaussian_log_prob(jnp.array([0.7]), jnp.array([np.log(1.3)]), grid))
    np.testing.assert_allclose(np.trapezoid(np.asarray(dens), np.asarray(grid[:, 0])), 1.0,
                               rtol=1e-4)
