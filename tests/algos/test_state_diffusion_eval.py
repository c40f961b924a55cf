"""state_diffusion's evaluation (`Algorithm.evaluate`) against PSNRs computed by hand in numpy.

The denoiser is given hand-set weights that make it an exactly known affine map: with ReLU
layers, a first layer [I, -I] and identity hidden layers carry relu(x) and relu(-x) through, and
a last layer [M; -M] gives f(tau, y) = tau M_tau + y M_y + b. The individual flow of agent i and
the composite flow over the alive agents (cycled in index order) are then iterated in numpy, and
the per-sample PSNRs (alive-weighted mean over agents for individual diffusion) are averaged
over the joint samples of each split.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import envs
from jaxdiff.algos import base
from jaxdiff.data import collect as col

ENV = "sensor_2x2_co"
FLOW_STEPS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny real dataset (only to build the state: its tau and state sizes), the algorithm's
    state and its jitted evaluation."""
    out = str(tmp_path_factory.mktemp("sd_eval") / "ds")
    env = envs.make(ENV)
    col.collect(env, col.random_policy(env), out, samples=16, test_samples=8, history=1,
                num_envs=8, chunk_steps=4, progress=False, env_name=ENV)
    algorithm = base.get("state_diffusion")
    config = base.make_config(algorithm.Config, dict(
        dataset=out, width=32, depth=2, activation="relu", batch_size=8,
        flow_steps=FLOW_STEPS, eval_samples=16))
    state = jax.jit(lambda k: algorithm.init(k, env, config))(jax.random.key(0))
    data = algorithm.data(config, env)
    tau_dim = data["test"]["tau"].shape[-1]
    state_dim = data["test"]["state"].shape[-1]
    evaluate = jax.jit(algorithm.evaluate(config, env))
    return dict(env=env, config=config, state=state, evaluate=evaluate, tau_dim=tau_dim,
                state_dim=state_dim, n=env.spec.n_agents)


def affine_denoiser_params(params, m_tau, m_y, b):
    """Weights of the Denoiser (ReLU, any depth, width >= 2 (tau_dim + state_dim)) that compute
    f(tau, y) = tau @ m_tau + y @ m_y + b exactly."""
    p = params["params"]
    depth = len(p) - 1
    m = np.concatenate([m_tau, m_y], 0)                        # [d_in, s]
    d_in, width = m.shape[0], p["Dense_0"]["kernel"].shape[1]
    assert width >= 2 * d_in
    out = {}
    k0 = np.zeros((d_in, width))
    k0[:, :d_in], k0[:, d_in:2 * d_in] = np.eye(d_in), -np.eye(d_in)
    out["Dense_0"] = dict(kernel=k0, bias=np.zeros(width))
    for k in range(1, depth):
        out[f"Dense_{k}"] = dict(kernel=np.eye(width), bias=np.zeros(width))
    last = np.zeros((width, m.shape[1]))
    last[:d_in], last[d_in:2 * d_in] = m, -m
    out[f"Dense_{depth}"] = dict(kernel=last, bias=np.asarray(b))
    new = {"params": out}
    assert jax.tree.structure(new) == jax.tree.structure(params)
    return jax.tree.map(lambda x, ref: jnp.asarray(x, ref.dtype), new, params)


def numpy_psnr(est, target):
    return 10.0 * np.log10(1.0 / np.maximum(np.mean((est - target) ** 2, -1), 1e-10))


def numpy_eval(split, m_tau, m_y, b, y0):
    """(mean individual PSNR, mean composite PSNR) of one split, by hand."""
    f = lambda tau, y: tau @ m_tau + y @ m_y + b
    ind, comp = [], []
    for taus, s, alive, y_start in zip(split["tau"], split["state"], split["alive"], y0):
        p = []
        for tau in taus:                                       # individual flows, same start
            y = y_start
            for _ in range(FLOW_STEPS):
                y = f(tau, y)
            p.append(numpy_psnr(y, s))
        ind.append(np.sum(alive * np.array(p)) / alive.sum())
        order = np.flatnonzero(alive)                          # composite: alive agents, cycled
        y = y_start
        for step in range(FLOW_STEPS):
            y = f(taus[order[step % len(order)]], y)
        comp.append(numpy_psnr(y, s))
    return np.mean(ind), np.mean(comp)


def random_split(rng, samples, n, tau_dim, state_dim):
    alive = rng.random((samples, n)) < 0.6
    alive[np.arange(samples), rng.integers(0, n, samples)] = True   # one alive at least
    alive[0] = False
    alive[0, [0, 2]] = True              # agents 0, 2 alive: the composite runs 0, 2, 0
    return dict(tau=rng.normal(size=(samples, n, tau_dim)).astype(np.float32),
                state=rng.random((samples, state_dim)).astype(np.float32), alive=alive)


@pytest.mark.parametrize("y_gain,sigma_init", [(0.0, 1.0), (0.5, 0.0)])
def test_evaluate_matches_psnr_by_hand(setup, y_gain, sigma_init):
    """y_gain = 0: f ignores y, so the random start (sigma_init = 1) cannot matter and every flow
    lands on f(tau_last, .) after one step. y_gain = 0.5: the flows are proper contractions in y
    from the deterministic start y0 = 0 (sigma_init = 0), so every step and the composite order
    over the alive agents count."""
    rng = np.random.default_rng(1)
    n, td, sd_ = setup["n"], setup["tau_dim"], setup["state_dim"]
    m_tau = 0.3 * rng.normal(size=(td, sd_))
    m_y = y_gain * np.eye(sd_)
    b = rng.random(sd_)
    state = setup["state"]
    state = state.replace(params=affine_denoiser_params(state.params, m_tau, m_y, b),
                          hp=state.hp.replace(sigma_init=jnp.asarray(sigma_init)))
    data = dict(test=random_split(rng, 6, n, td, sd_), train=random_split(rng, 5, n, td, sd_))
    # the evaluation reads only the two eval splits; the training rows are not used
    out = jax.device_get(setup["evaluate"](state, jax.random.key(3),
                                           jax.tree.map(jnp.asarray, data)))
    zeros = lambda split: np.zeros((len(split["state"]), sd_))
    test_ind, test_comp = numpy_eval(data["test"], m_tau, m_y, b, zeros(data["test"]))
    train_ind, train_comp = numpy_eval(data["train"], m_tau, m_y, b, zeros(data["train"]))
    np.testing.assert_allclose(out["eval_psnr_individual"], test_ind, rtol=1e-4)
    np.testing.assert_allclose(out["eval_psnr_composite"], test_comp, rtol=1e-4)
    np.testing.assert_allclose(out["eval_train_psnr_individual"], train_ind, rtol=1e-4)
    np.testing.assert_allclose(out["eval_train_psnr_composite"], train_comp, rtol=1e-4)
    np.testing.assert_allclose(out["eval_psnr_gap"], test_comp - test_ind, rtol=1e-3, atol=1e-4)
    # the numbers are not degenerate: individual and composite differ, splits differ
    assert abs(test_comp - test_ind) > 0.1 and abs(test_ind - train_ind) > 0.1
