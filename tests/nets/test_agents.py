"""Per-agent parameters (`nets.agents`) and the shared torsos (`nets.mlp`): shared and stacked
parameters applied to an agent axis anywhere equal a Python loop over the agents, the one-hot
agent id, feed-forward layers against numpy, and the GRU torso's reset semantics."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.nets.agents import apply_agents, init_agents, with_agent_id
from jaxdiff.nets.mlp import ACTIVATIONS, MLP, Torso

N, H, D = 3, 8, 5


def _inputs(seed, lead, agent_axis):
    """carry [.., H], x [.., D], reset [..] with the agent axis (size N) at `agent_axis`
    (numpy draws: no per-shape compile of JAX's random ops)."""
    shape = list(lead)
    shape.insert(agent_axis, N)
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(*shape, H)).astype(np.float32),
            rng.normal(size=(*shape, D)).astype(np.float32), rng.random(shape) < 0.3)


def _loop(module, params_of, args, agent_axis):
    """module.apply agent by agent (agent i's slice of every input), stacked back at
    agent_axis: the reference that apply_agents must reproduce."""
    outs = [module.apply(params_of(i), *[jnp.take(a, i, axis=agent_axis) for a in args])
            for i in range(N)]
    return jax.tree.map(lambda *o: jnp.stack(o, axis=agent_axis), *outs)


EXAMPLE = (jnp.zeros((H,)), jnp.zeros((D,)), jnp.zeros((), bool))   # one agent's inputs


def _random_like(tree, seed, lead=()):
    """Random parameters with the structure of `tree` (ShapeDtypeStructs), no initialiser run:
    the orthogonal initialiser is slow to compile, and any values will do here."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: (0.5 * rng.normal(size=lead + x.shape)).astype(x.dtype), tree)


def test_init_agents_shared_or_one_draw_per_agent():
    module = nn.Dense(4)
    key, x = jax.random.key(0), jnp.zeros((D,))
    shared = init_agents(module, key, N, True, x)
    jax.tree.map(np.testing.assert_array_equal, shared, module.init(key, x))
    stacked = init_agents(module, key, N, False, x)
    kernels = np.asarray(stacked["params"]["kernel"])
    assert kernels.shape == (N, D, 4)
    for i, k in enumerate(jax.random.split(key, N)):        # agent i = an init with its own key
        np.testing.assert_array_equal(kernels[i], module.init(k, x)["params"]["kernel"])
    assert not np.allclose(kernels[0], kernels[1])


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("lead,agent_axis", [((), 0), ((4,), 1), ((2, 4), 2), ((4,), 0)])
def test_shared_and_stacked_params_equal_a_loop_over_agents(recurrent, lead, agent_axis):
    module = Torso(H, "tanh", recurrent=recurrent, layers=2)
    shapes = jax.eval_shape(module.init, jax.random.key(0), *EXAMPLE)
    shared = _random_like(shapes, 1)
    stacked = _random_like(shapes, 2, lead=(N,))
    args = _inputs(3, lead, agent_axis)

    @jax.jit
    def run(shared, stacked, args):
        agent = lambda i: jax.tree.map(lambda x: x[i], stacked)
        same = [jnp.take(a, 0, axis=agent_axis) for a in args]   # agent 0's inputs for all
        return dict(
            shared=apply_agents(module, shared, True, *args, agent_axis=agent_axis),
            shared_ref=_loop(module, lambda i: shared, args, agent_axis),
            stacked=apply_agents(module, stacked, False, *args, agent_axis=agent_axis),
            stacked_ref=_loop(module, agent, args, agent_axis),
            same_input=[module.apply(agent(i), *same)[1] for i in range(N)])

    out = jax.device_get(run(shared, stacked, args))
    for kind in ("shared", "stacked"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     out[kind], out[kind + "_ref"])
    # the stacked agents really are different functions of the same input
    assert not np.allclose(out["same_input"][0], out["same_input"][1])


@pytest.mark.parametrize("shape,agent_axis", [((N, D), 0), ((4, N, D), 1), ((2, 4, N, D), 2),
                                              ((N, 4, D), 0)])
def test_with_agent_id_appends_the_one_hot_index(shape, agent_axis):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    out = np.asarray(with_agent_id(x, agent_axis, N))
    assert out.shape == shape[:-1] + (D + N,)
    np.testing.assert_array_equal(out[..., :D], x)
    ids = np.moveaxis(out[..., D:], agent_axis, 0)             # [N, ..., N]
    for i in range(N):
        np.testing.assert_array_equal(ids[i], np.broadcast_to(np.eye(N)[i], ids[i].shape))


def _init(module, key, *args):
    return _random_like(jax.eval_shape(module.init, key, *args), 0)


def _np_dense(p, x):
    return x @ np.asarray(p["kernel"]) + np.asarray(p["bias"])


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_mlp_and_feedforward_torso_against_numpy(activation):
    x = np.random.default_rng(0).normal(size=(6, D)).astype(np.float32)
    act = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0),
           "silu": lambda v: v / (1 + np.exp(-v)),
           "mish": lambda v: v * np.tanh(np.log1p(np.exp(v))),
           "gelu": lambda v: np.asarray(nn.gelu(jnp.asarray(v)))}[activation]

    mlp = MLP((7, 4), activation, out=2, out_scale=0.5)
    params = _init(mlp, jax.random.key(1), x)
    p = params["params"]
    want = _np_dense(p["Dense_2"], act(_np_dense(p["Dense_1"], act(_np_dense(p["Dense_0"], x)))))
    np.testing.assert_allclose(mlp.apply(params, x), want, rtol=1e-4, atol=1e-5)

    torso = Torso(H, activation, recurrent=False, layers=3)
    carry = np.random.default_rng(2).normal(size=(6, H)).astype(np.float32)
    params = _init(torso, jax.random.key(3), carry, x, jnp.zeros((6,), bool))
    p = params["params"]
    assert sorted(p) == ["Dense_0", "Dense_1", "Dense_2"]
    want = act(_np_dense(p["Dense_2"], act(_np_dense(p["Dense_1"], act(_np_dense(p["Dense_0"],
                                                                                  x))))))
    new_carry, h = torso.apply(params, carry, x, jnp.ones((6,), bool))
    np.testing.assert_allclose(h, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(new_carry, carry)            # no state: the carry is untouched


def test_recurrent_torso_reset_zeroes_the_carry_per_row():
    torso = Torso(H, "relu", recurrent=True, layers=2)
    B = 6
    rng = np.random.default_rng(0)
    carry = rng.normal(size=(B, H)).astype(np.float32)
    x = rng.normal(size=(B, D)).astype(np.float32)
    params = _init(torso, jax.random.key(0), carry, x, jnp.zeros((B,), bool))
    reset = jnp.array([True, False, True, False, False, True])
    got_c, got_h = torso.apply(params, carry, x, reset)
    zero_c, zero_h = torso.apply(params, jnp.zeros_like(carry), x, jnp.zeros((B,), bool))
    keep_c, keep_h = torso.apply(params, carry, x, jnp.zeros((B,), bool))
    r = np.asarray(reset)[:, None]
    np.testing.assert_allclose(got_c, np.where(r, zero_c, keep_c), rtol=1e-6)
    np.testing.assert_allclose(got_h, np.where(r, zero_h, keep_h), rtol=1e-6)
    # without a reset the carry matters (the GRU has memory) and is updated
    assert not np.allclose(keep_h, zero_h) and not np.allclose(keep_c, carry)


def test_recurrent_torso_sequence_with_a_reset_restarts_the_memory():
    """Scanning a sequence with a reset at step k gives, from step k on, exactly the outputs
    of a fresh scan of the suffix from a zero carry; the prefix cannot leak through."""
    torso = Torso(H, "tanh", recurrent=True, layers=1)
    T, k_reset = 7, 4
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(T, D)), jnp.float32)
    params = _init(torso, jax.random.key(1), jnp.zeros((H,)), xs[0], jnp.zeros((), bool))

    def scan(carry, xs, resets):
        def body(c, inp):
            c, h = torso.apply(params, c, *inp)
            return c, h
        return jax.lax.scan(body, carry, (xs, resets))[1]

    resets = jnp.zeros((T,), bool).at[k_reset].set(True)
    full = scan(jnp.ones((H,)), xs, resets)
    suffix = scan(jnp.zeros((H,)), xs[k_reset:], jnp.zeros((T - k_reset,), bool))
    np.testing.assert_allclose(full[k_reset:], suffix, rtol=1e-5, atol=1e-6)
    other_prefix = scan(-jnp.ones((H,)), xs.at[:k_reset].set(3.0), resets)
    np.testing.assert_allclose(other_prefix[k_reset:], full[k_reset:], rtol=1e-5, atol=1e-6)
    assert not np.allclose(other_prefix[:k_reset], full[:k_reset])
