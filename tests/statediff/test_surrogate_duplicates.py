"""F19 (issue 17): the surrogate residuals on neighbourhoods made of duplicate histories, the
case that dominates the 5x5 toy (H = 1, few distinct tau). With every tau' equal to the anchor's
tau, nothing is explained: Eq. 17 is the (weighted) total state variance Tr S_s of M, and Eq. 15
(anchored, no intercept) is the mean ||s - s'||^2 = Tr S_s + ||s - mean s'||^2 -- about twice
the conditional variance for an anchor drawn from the same conditional. Independent check: the
brute-force moments of the selected rows."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import statediff as sd


def test_residuals_of_duplicate_histories_are_the_unexplained_variance():
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    tau = jax.random.normal(k1, (7,))
    states = jax.random.bernoulli(k2, 0.3, (60, 5)).astype(jnp.float32)
    taus = jnp.tile(tau, (60, 1))
    mask = (jax.random.uniform(k3, (60,)) < 0.5).astype(jnp.float32)      # a subset M
    s_anchor = states[0]
    sel = np.asarray(states)[np.asarray(mask) > 0]

    trace_s = np.trace(np.cov(sel.T, bias=True))
    mean_sq = np.mean(np.sum((np.asarray(s_anchor) - sel) ** 2, axis=1))
    r17 = float(sd.regression_residual(taus, states, mask))
    r15 = float(sd.local_regression_residual(tau, s_anchor, taus, states, mask))
    np.testing.assert_allclose(r17, trace_s, rtol=1e-4)
    np.testing.assert_allclose(r15, mean_sq, rtol=1e-4)
    # Eq. 15's decomposition: Tr S_s + the anchor's squared distance to the mean of M.
    np.testing.assert_allclose(r15, trace_s + np.sum((np.asarray(s_anchor) - sel.mean(0)) ** 2),
                               rtol=1e-4)
    # One distinct non-duplicate row is fitted exactly by the anchored map, so Eq. 15 then
    # drops by that row's share and no more.
    taus2 = taus.at[1].add(1.0)
    mask2 = mask.at[1].set(1.0)
    sel2 = np.asarray(states)[np.asarray(mask2) > 0]
    dup = np.asarray(mask2).copy()
    dup[1] = 0.0
    expect = np.sum(np.sum((np.asarray(s_anchor) - np.asarray(states)[dup > 0]) ** 2, 1)) / len(sel2)
    r15b = float(sd.local_regression_residual(tau, s_anchor, taus2, states, mask2))
    np.testing.assert_allclose(r15b, expect, rtol=1e-4)
