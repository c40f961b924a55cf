"""The LAPACK-free orthogonal initialiser, and that no algorithm's vmapped `init` compiles a
LAPACK custom call (batched LAPACK calls can deadlock XLA:CPU's intra-op pool on 2 cores)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen.initializers import orthogonal as flax_orthogonal

from jaxdiff import algos, envs
from jaxdiff.nets.init import householder_q, orthogonal


@pytest.mark.parametrize("shape", [(18, 64), (64, 64), (64, 5), (3, 4, 7), (130, 20)])
def test_orthogonal_equals_flax_for_same_key(shape):
    key = jax.random.key(7)
    ours = orthogonal(1.7)(key, shape)
    ref = flax_orthogonal(1.7)(key, shape)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_householder_q_is_orthonormal_and_reconstructs():
    a = jax.random.normal(jax.random.key(0), (40, 25))
    q = householder_q(a)
    np.testing.assert_allclose(q.T @ q, np.eye(25), atol=2e-5)
    r = q.T @ a                                   # upper triangular with a non-negative diagonal
    np.testing.assert_allclose(jnp.tril(r, -1), 0.0, atol=2e-4)
    assert bool(jnp.all(jnp.diagonal(r) >= 0))
    np.testing.assert_allclose(q @ r, a, atol=2e-4)


def test_orthogonal_rejects_vectors():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        orthogonal()(jax.random.key(0), (5,))


def _cases():
    for name in algos.names():
        algorithm = algos.get(name)
        if algorithm.data is not None:        # offline: needs a dataset on disk
            continue
        kind = "continuous" if "discrete" not in algorithm.action_types else "discrete"
        yield pytest.param(name, kind, {}, id=name)
    yield pytest.param("mappo", "discrete", {"recurrent": True}, id="mappo-gru")


@pytest.mark.parametrize("name,kind,over", list(_cases()))
def test_vmapped_init_has_no_lapack_call(name, kind, over):
    algorithm = algos.get(name)
    env = envs.make("mpe_simple_spread", action_type=kind)
    fields = algorithm.Config.__dataclass_fields__
    config = algos.make_config(algorithm.Config, {**over, **({"hidden": 16} if "hidden" in fields
                                                            else {})})
    keys = jax.random.split(jax.random.key(0), 2)
    init = jax.jit(jax.vmap(lambda k: algorithm.init(k, env, config)))
    hlo = init.lower(keys).as_text()
    assert "lapack" not in hlo.lower(), f"{name}: vmapped init lowers to a LAPACK custom call"
