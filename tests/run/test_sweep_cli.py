"""Sweeps (vmapped dynamic grid) and the CLI's user-facing errors."""
import json

import pytest
from conftest import TINY

from jaxdiff import cli
from jaxdiff.run import sweep


def test_sweep_two_lrs_two_seeds_gives_two_rows(tmp_path):
    doc = dict(algo="mappo", env="mpe_simple_spread", seeds=2, total_steps=256, chunks=2,
               fixed={f"algo.{k}": v for k, v in TINY.items()},
               grid={"algo.lr": [1e-4, 1e-3]})
    rows = sweep.run(doc, str(tmp_path), compose=cli.compose, progress=False)
    assert [r["point"]["algo.lr"] for r in rows] == [1e-4, 1e-3]
    assert all("return_mean" in r["final"] for r in rows)
    table = (tmp_path / "results.md").read_text()
    assert table.count("\n| 0.001") + table.count("\n| 0.0001") == 2
    assert len(json.loads((tmp_path / "results.json").read_text())) == 2
    assert (tmp_path / "sweep.png").exists()
    # one compiled program: a single run folder holds both grid points and both seeds
    metrics = [json.loads(x) for x in open(tmp_path / "all" / "metrics.jsonl")]
    assert {(m["grid"], m["seed"]) for m in metrics} == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_sweep_rejects_bad_grid_key(tmp_path):
    doc = dict(algo="mappo", env="mpe_simple_spread", grid={"algo.lrr": [1e-3]})
    with pytest.raises(sweep.SweepError, match="lrr"):
        sweep.run(doc, str(tmp_path), compose=cli.compose, progress=False)


@pytest.mark.parametrize("arg, needle", [
    ("algo=nonexistent", "Valid names: "),
    ("env=mpe_nonexistent", "mpe_simple_spread"),
    ("algo.lr=-1", "algo.lr=-1"),
    ("algo.no_such_key=1", "no_such_key"),
    ("algo.num_envs=0", "num_envs"),
    ("algo.hiden=3", "Did you mean `algo.hidden`"),
    ("env.action_type=sideways", "action_type"),
    ("bogus=1", "Unknown setting `bogus`"),
])
def test_cli_bad_input_exits_nonzero_with_message(arg, needle, capsys, tmp_path):
    rc = cli.main(["train", arg, f"run_dir={tmp_path}/r"])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err
    assert "Traceback" not in err
    assert not (tmp_path / "r" / "checkpoints").exists()  # failed before any work


def test_cli_unknown_sweep(capsys):
    assert cli.main(["sweep", "sweep=nope"]) == 2
    assert "mappo_mpe_lr" in capsys.readouterr().err


def test_cli_train_and_eval(tmp_path, capsys):
    over = [f"algo.{k}={v}" for k, v in TINY.items()]
    rc = cli.main(["train", "algo=ippo", "env=mpe_simple_spread", "seeds=1", "total_steps=128",
                   "chunks=1", "eval_episodes=2", "progress=false", "tensorboard=true",
                   f"run_dir={tmp_path}", *over])
    assert rc == 0
    out = capsys.readouterr().out
    assert str(tmp_path) in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["algo"] == "ippo" and summary["seeds"] == 1
    assert (tmp_path / "curves.png").exists()
    assert any((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert cli.main(["eval", f"run_dir={tmp_path}", "episodes=3"]) == 0
    assert "eval_return" in json.loads((tmp_path / "eval.json").read_text())["mean"]
