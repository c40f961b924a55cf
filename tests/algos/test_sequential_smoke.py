"""Each sequential HA algorithm trains through the runner (2 seeds, continuous simple_spread)
with finite metrics; HATRPO's logged KL respects its trust region."""
import math

import pytest

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
            assert r["kl"] <= 0.01 * (1 + 1e-4)
