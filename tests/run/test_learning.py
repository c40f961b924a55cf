"""Learning checks (slow): trained policies beat a uniform-random policy on the same env."""
import os
import sys

import pytest

from jaxdiff.run import runner

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "baselines"))


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["mappo", "ippo"])
def test_ppo_beats_random_on_mpe(algo, tmp_path):
    from learning import random_policy
    spec = runner.RunSpec(algo=algo, env="mpe_simple_spread", env_kwargs={},
                          algo_overrides=dict(lr=1e-3), seeds=2, total_steps=200_000, chunks=4)
    summary = runner.train(spec, str(tmp_path), progress=False)
    rnd = random_policy("mpe_simple_spread", episodes=256)["return_mean"]
    # Both seeds, not just the mean, must clear random by a margin well above eval noise.
    for s in summary["per_seed"]:
        assert s["final_return"] > rnd + 5.0, (s, rnd)
