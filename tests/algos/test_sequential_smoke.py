"""Each sequential HA algorithm trains through the runner (2 seeds, continuous simple_spread)
with finite metrics; HATRPO's accepted steps respect its trust region, checked against the KL
of the policies measured from their actions (not only the KL the algorithm reports)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import envs
from jaxdiff.algos import base
from jaxdiff.run import logging as runlog
from jaxdiff.run import runner

TINY = dict(num_envs=4, num_steps=25, hidden=16, critic_epochs=2)


@pytest.mark.parametrize("algo, extra, keys", [
    ("happo", dict(update_epochs=2), ("actor_loss", "value_loss", "entropy", "factor_mean",
                                      "final_factor_mean")),
    # the other two share all but their actor update with HAPPO (one runner path is enough for
    # `make test`; `-m slow` runs all three)
    pytest.param("haa2c", dict(update_epochs=2),
                 ("actor_loss", "value_loss", "entropy", "factor_mean"), marks=pytest.mark.slow),
    pytest.param("hatrpo", {}, ("kl", "accepted", "value_loss", "factor_mean"),
                 marks=pytest.mark.slow),
])
def test_smoke_train_continuous_spread(algo, extra, keys, tmp_path):
    spec = runner.RunSpec(algo=algo, env="mpe_simple_spread",
                          env_kwargs={"action_type": "continuous"},
                          algo_overrides=dict(TINY, **extra),
                          seeds=2, total_steps=2000, chunks=2, eval_episodes=4)
    summary = runner.train(spec, str(tmp_path), progress=False, quiet=True)
    assert math.isfinite(summary["final"]["return_mean"])
    rows = runlog.read_jsonl(str(tmp_path / "metrics.jsonl"))
    assert len(rows) == 4
    for r in rows:
        for k in keys:
            assert math.isfinite(r[k]), k
    if algo == "hatrpo":
        # `kl` is reported as 0 for a rejected step, so on its own `kl <= delta` holds for an
        # algorithm that never moves. `kl` and `accepted` are both means over agents and
        # iterations of kl_i * accepted_i and accepted_i: their ratio is the mean KL of the
        # accepted steps, which must lie in (0, delta], and some steps must be accepted.
        accepted = np.array([r["accepted"] for r in rows])
        assert (accepted > 0).all(), accepted
        kl_accepted = np.array([r["kl"] for r in rows]) / accepted
        assert ((kl_accepted > 0) & (kl_accepted <= 0.01 * (1 + 1e-4))).all(), kl_accepted


def test_hatrpo_steps_respect_the_trust_region_measured_from_actions():
    """On the one-shot coordination game every observation is the same, so each agent's policy
    is one categorical, and the mean KL over a batch that HATRPO constrains is exactly the KL
    between the agent's action distributions before and after a step. Those are estimated here
    from 10^5 sampled actions per agent (the same keys before and after, so unchanged policies
    give identical samples): accepted steps move the policy by a KL in (0, delta] that matches
    the reported one; a rejected step (impossible acceptance ratio) leaves it exactly as it was;
    delta is read from the state's hyper-parameters (sweepable)."""
    algorithm = base.get("hatrpo")
    n_actions, n = 3, 2
    env = envs.make("coordination_game", n_agents=n, n_actions=n_actions)
    config = base.make_config(algorithm.Config, dict(num_envs=8, num_steps=4, hidden=8,
                                                     critic_epochs=1, kl_threshold=0.01))
    state = jax.jit(lambda k: algorithm.init(k, env, config))(jax.random.key(0))
    step = jax.jit(algorithm.step(env, config))
    obs, env_state = env.reset(jax.random.key(1))
    mask, carry = env.action_mask(env_state), algorithm.init_carry(config, env)
    samples = 100_000
    keys = jax.random.split(jax.random.key(2), samples)

    @jax.jit
    def action_freqs(state):                                          # -> [n, n_actions]
        act = lambda k: algorithm.act(config, env, state, obs, carry, mask, k,
                                      deterministic=False)[0]
        a = jax.vmap(act)(keys)                                       # [samples, n]
        return jax.vmap(lambda ai: jnp.bincount(ai, length=n_actions), 1)(a) / samples

    def kl(p, q):
        return np.sum(np.where(p > 0, p * np.log(p / np.maximum(q, 1e-12)), 0.0), -1)

    def checked_step(state):
        before = np.asarray(action_freqs(state))
        state, m = step(state)
        after = np.asarray(action_freqs(state))
        m = {k: float(m[k]) for k in ("kl", "accepted", "step_fraction")}
        return state, m, kl(before, after), before, after

    for delta in (0.01, 0.01, 0.002):
        state = state.replace(hp=state.hp.replace(kl_threshold=jnp.asarray(delta)))
        state, m, kl_measured, _, _ = checked_step(state)
        assert m["accepted"] == 1.0, m                # both agents accepted their step
        assert (kl_measured > 0.2 * delta).all(), kl_measured
        assert (kl_measured <= 1.15 * delta).all(), (delta, kl_measured)
        np.testing.assert_allclose(kl_measured.mean(), m["kl"], rtol=0.15)
        assert m["kl"] <= delta * (1 + 1e-4)

    # no step can improve the surrogate by 10^6 times the linear prediction: all are rejected
    state = state.replace(hp=state.hp.replace(accept_ratio=jnp.asarray(1e6)))
    state, m, kl_measured, before, after = checked_step(state)
    assert m["accepted"] == 0.0 and m["kl"] == 0.0 and m["step_fraction"] == 0.0, m
    np.testing.assert_array_equal(before, after)
