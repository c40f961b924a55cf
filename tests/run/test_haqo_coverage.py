"""experiments/haqo/coverage.py (HAQO Figs. 1/2 and 5): the rollout and metric part, on untrained
policies. The coverage numbers must equal a brute-force NumPy recount of the same logged
positions, and the logged return must equal the occupation reward recomputed by hand from those
positions (so the log really is the positions the reward paid). Training is not exercised here
except in the slow test (one runner iteration, then restore + measure)."""
from __future__ import annotations

import importlib.util
import math
import os
import sys

import jax
import numpy as np
import pytest

from jaxdiff import envs
from jaxdiff.algos import base as algos
from jaxdiff.envs.toys import haqo_toys

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "haqo", "coverage.py")
TINY = dict(steps=2, hidden=16, layers=1, critic_updates=1, actor_states=16, batch_size=16,
            kl_states=8, warmup_steps=0, num_envs=2, rollout_len=8, buffer_size=64,
            k_behaviour=2, k_target=2, k_train=2, n_entropy=2, time_features=8)


@pytest.fixture(scope="module")
def cov():
    spec = importlib.util.spec_from_file_location("haqo_coverage_experiment", PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod      # its dataclass looks its module up while being built
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def _hand_occupation(pos):
    """Brute-force coverage of pos [E, H, n, 2] (loops, NumPy): shares, #targets, entropy."""
    c = np.array(haqo_toys.OCCUPATION.targets)
    counts = np.zeros(len(c))
    for ep in pos:
        for p_t in ep:
            for p_i in p_t:
                for k in range(len(c)):
                    counts[k] += np.linalg.norm(p_i - c[k]) <= haqo_toys.OCCUPATION.radius + 1e-7
    shares = counts / counts.sum() if counts.sum() else counts
    ent = -sum(s * math.log(s) for s in shares if s > 0) / math.log(len(c))
    return shares, int(np.sum(shares >= 0.1)), ent, counts.sum()


def _hand_return(ep):
    """The occupation game's return from one episode's positions [H, n, 2] (spec §6.4b)."""
    prm = haqo_toys.OCCUPATION
    c = np.array(prm.targets)
    f, total = np.ones(len(c)), 0.0
    for p_t in ep:
        occ = np.array([min(np.linalg.norm(p_i - ck) for p_i in p_t) <= prm.radius for ck in c])
        total += f[occ].sum()
        f = np.where(occ, (1 - prm.kappa) * f, np.minimum(1.0, f + prm.eta))
    return total


@pytest.fixture(scope="module")
def occupation():
    env = envs.make("haqo_occupation")
    algorithm = algos.get("haqo")
    return env, algorithm


def test_random_policy_metrics_match_a_hand_count(cov, occupation):
    """Random policy on the occupation game: shapes, start box, step size 0.1, and every
    coverage number and return equal to the brute-force recount of the same positions."""
    env, algorithm = occupation
    config = algos.make_config(algorithm.Config, dict(TINY))
    pos, ret = jax.device_get(cov.rollout(algorithm, env, config, None,
                                          jax.random.PRNGKey(3), 8, random=True))
    assert pos.shape == (8, env.spec.max_steps, 2, 2) and ret.shape == (8,)
    assert np.all(np.abs(pos[:, 0]) <= 0.2) and np.all(np.abs(pos) <= 1.0)
    assert np.all(np.abs(np.diff(pos, axis=1)) <= 0.1 + 1e-6)
    np.testing.assert_allclose(ret, [_hand_return(ep) for ep in pos], rtol=1e-5)
    m = cov.coverage("haqo_occupation", pos, ret)
    shares, n_targets, ent, visits = _hand_occupation(pos)
    assert visits > 0, "no target visited: the comparison below would be vacuous"
    np.testing.assert_allclose(m["visit_shares"], shares, atol=1e-6)
    assert m["n_targets"] == n_targets
    np.testing.assert_allclose(m["coverage_entropy"], ent, atol=1e-5)
    np.testing.assert_allclose(m["return"], ret.mean(), rtol=1e-6)
    np.testing.assert_allclose(m["visit_rate"], visits / pos[..., 0].size, rtol=1e-6)


# slow: HAQO's act and the coverage metrics are each checked in the fast suite (test_haqo.py,
# the random-policy tests here); this joins them through the script (one HAQO compile)
@pytest.mark.slow
def test_untrained_haqo_rollout_and_seed_mean(cov, occupation):
    """HAQO's own `act` on an initialised (untrained) state: the logged positions pay exactly
    the logged return, and `mean_over_seeds` averages every number and share vector."""
    env, algorithm = occupation
    config = algos.make_config(algorithm.Config, dict(TINY))
    state = jax.jit(lambda k: algorithm.init(k, env, config))(jax.random.PRNGKey(0))
    pos, ret = jax.device_get(cov.rollout(algorithm, env, config, state,
                                          jax.random.PRNGKey(1), 3))
    assert pos.shape == (3, env.spec.max_steps, 2, 2)
    np.testing.assert_allclose(ret, [_hand_return(ep) for ep in pos], rtol=1e-5)
    rows = [cov.coverage("haqo_occupation", pos[:2], ret[:2]),
            cov.coverage("haqo_occupation", pos[2:], ret[2:])]
    mean = cov.mean_over_seeds(rows)
    assert set(mean) == set(rows[0]) | {"per_seed"} and mean["per_seed"] == rows
    np.testing.assert_allclose(mean["return"], (rows[0]["return"] + rows[1]["return"]) / 2,
                               atol=1e-4)
    np.testing.assert_allclose(mean["visit_shares"], np.mean([r["visit_shares"] for r in rows], 0),
                               atol=1e-4)


def test_landmark_metrics_match_a_hand_count(cov):
    """Random policy on the fixed-landmark spread: 25-step episodes, per-landmark shares equal
    a loop over steps, and the 'visited' rule (>= 1/4 of the best share) counted by hand."""
    env = envs.make("haqo_landmarks")
    algorithm = algos.get("haqo")
    config = algos.make_config(algorithm.Config, dict(TINY))
    pos, ret = jax.device_get(cov.rollout(algorithm, env, config, None,
                                          jax.random.PRNGKey(5), 16, random=True))
    assert pos.shape == (16, 25, 2, 2)
    flat = pos.reshape(-1, 2, 2)
    hand = np.array([np.mean([any(np.linalg.norm(p_i - lm) <= 0.2 + 1e-7 for p_i in p_t)
                              for p_t in flat]) for lm in haqo_toys.LANDMARKS])
    m = cov.coverage("haqo_landmarks", pos, ret)
    np.testing.assert_allclose(m["landmark_shares"], hand, atol=1e-6)
    assert m["n_landmarks"] == int(np.sum((hand > 0) & (hand >= 0.25 * hand.max())))
    np.testing.assert_allclose(m["return"], ret.mean(), rtol=1e-6)


def test_verdicts_follow_the_numbers(cov):
    """The claim checks read the seed means: a result where HAQO covers 4 targets, the Gaussian
    1 and alpha = 0 leaves a landmark empty passes every check; swapping the arms fails them."""
    occ = lambda n, ent, r: dict(n_targets=n, coverage_entropy=ent, **{"return": r})
    lm = lambda n, ratio: dict(n_landmarks=n, min_over_max=ratio)
    good = {"haqo_occupation": {"HAQO diffusion, alpha=0.02": occ(4, 0.95, 10.0),
                                "HAQO diffusion, alpha=0": occ(2, 0.5, 9.0),
                                "HAQO Gaussian, alpha=0.02": occ(1, 0.0, 8.0),
                                "random": occ(4, 0.99, 3.0)},
            "haqo_landmarks": {"HAQO diffusion, alpha=0": lm(2, 0.01),
                               "HAQO diffusion, alpha=0.05": lm(3, 0.8)}}
    assert all(ok for ok, _ in cov.verdicts(good).values())
    bad = {"haqo_occupation": {"HAQO diffusion, alpha=0.02": occ(1, 0.0, 2.0),
                               "HAQO diffusion, alpha=0": occ(0, 0.5, 9.0),
                               "HAQO Gaussian, alpha=0.02": occ(4, 0.95, 8.0),
                               "random": occ(4, 0.99, 3.0)},
           "haqo_landmarks": {"HAQO diffusion, alpha=0": lm(3, 0.8),
                              "HAQO diffusion, alpha=0.05": lm(2, 0.01)}}
    assert not any(ok for ok, _ in cov.verdicts(bad).values())


@pytest.mark.slow
def test_evaluate_members_restores_a_runner_run(cov, tmp_path):
    """One runner iteration (2 seeds x 2 alphas) then `evaluate_members`: one metrics row per
    seed for each grid point, each a valid coverage dict (~1 min CPU: HAQO's chunk compile)."""
    from jaxdiff.run import runner
    spec = runner.RunSpec(algo="haqo", env="haqo_occupation", env_kwargs={},
                          algo_overrides=dict(TINY), seeds=2, total_steps=16, chunks=1,
                          eval_episodes=2, grid=[dict(alpha=0.02), dict(alpha=0.0)])
    runner.train(spec, str(tmp_path), progress=False, quiet=True)
    per_grid = cov.evaluate_members(str(tmp_path), 2)
    assert sorted(per_grid) == [0, 1] and all(len(v) == 2 for v in per_grid.values())
    for rows in per_grid.values():
        for r in rows:
            assert len(r["visit_shares"]) == 4 and 0 <= r["n_targets"] <= 4
            assert 0.0 <= r["coverage_entropy"] <= 1.0 + 1e-6
