"""The minibatch split of the PPO family: every sample exactly once per epoch, stratified by
env (no sample crosses the env axis, which is what lets a split run shuffle locally)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.algos import onpolicy


def _ids(T, E, extra=()):
    t = jnp.arange(T)[:, None] * jnp.ones((1, E), jnp.int32)
    e = jnp.ones((T, 1), jnp.int32) * jnp.arange(E)[None, :]
    shape = (T, E) + extra
    expand = lambda x: jnp.broadcast_to(x.reshape((T, E) + (1,) * len(extra)), shape)
    return expand(t), expand(e)


@pytest.mark.parametrize("T,E,M", [(8, 4, 2), (8, 3, 4), (6, 5, 1)])
def test_feed_forward_split_is_a_stratified_permutation(T, E, M):
    cfg = dict(num_minibatches=M, num_steps=T, num_envs=E, recurrent=False)
    t, e = _ids(T, E, (3,))
    out = onpolicy.minibatches(jax.random.PRNGKey(1), dict(t=t, e=e, ca0=jnp.zeros((E, 3, 2))), **cfg)
    assert out["t"].shape == (M, 1, T * E // M, 3) and out["ca0"].shape == (M, T * E // M, 3, 2)
    pairs = np.stack([np.asarray(out["t"])[..., 0].ravel(), np.asarray(out["e"])[..., 0].ravel()], 1)
    assert len({tuple(p) for p in pairs}) == T * E            # each (t, env) exactly once
    # the trailing (agent) axis moves with its sample
    assert np.all(np.asarray(out["t"]) == np.asarray(out["t"])[..., :1])
    for m in range(M):                                         # T/M steps of every env
        counts = np.bincount(np.asarray(out["e"])[m, 0, :, 0], minlength=E)
        assert np.all(counts == T // M)
    # a different key gives a different order
    again = onpolicy.minibatches(jax.random.PRNGKey(2), dict(t=t, e=e), **cfg)
    assert M == 1 or not np.array_equal(np.asarray(again["t"]), np.asarray(out["t"]))


def test_feed_forward_split_without_m_dividing_t_is_still_a_permutation():
    T, E, M = 6, 4, 4
    cfg = dict(num_minibatches=M, num_steps=T, num_envs=E, recurrent=False)
    t, e = _ids(T, E)
    out = onpolicy.minibatches(jax.random.PRNGKey(0), dict(t=t, e=e), **cfg)
    pairs = {(a, b) for a, b in zip(np.asarray(out["t"]).ravel(), np.asarray(out["e"]).ravel())}
    assert len(pairs) == T * E


def test_recurrent_split_keeps_sequences_and_one_env_per_block():
    T, E, M = 5, 12, 3
    cfg = dict(num_minibatches=M, num_steps=T, num_envs=E, recurrent=True)
    t, e = _ids(T, E, (2,))
    carry = jnp.broadcast_to(jnp.arange(E)[:, None, None], (E, 2, 4)).astype(jnp.float32)
    out = onpolicy.minibatches(jax.random.PRNGKey(3), dict(t=t, e=e, ca0=carry), **cfg)
    assert out["e"].shape == (M, T, E // M, 2) and out["ca0"].shape == (M, E // M, 2, 4)
    envs = np.asarray(out["e"])[:, 0, :, 0]                    # [M, E/M]
    assert sorted(envs.ravel().tolist()) == list(range(E))     # every env once per epoch
    assert np.all(np.asarray(out["e"]) == envs[:, None, :, None])           # whole sequences
    assert np.all(np.asarray(out["t"]) == np.arange(T)[None, :, None, None])  # in time order
    assert np.all(envs // M == np.arange(E // M)[None, :])     # slot j <- block j
    assert np.array_equal(np.asarray(out["ca0"])[:, :, 0, 0], envs)   # carries follow their env
