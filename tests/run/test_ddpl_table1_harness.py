"""experiments/ddpl/table1.py (DDPL Table 1 harness): every cell of every scale composes into a
RunSpec the runner accepts (so a GPU run does not die on a settings error hours in), with the
paper's budgets at `--scale paper`; the Markdown says which cells were not run and why, and puts
the paper's numbers beside ours. Nothing trains."""
from __future__ import annotations

import importlib.util
import os

import pytest

from jaxdiff.run import runner

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "ddpl", "table1.py")


@pytest.fixture(scope="module")
def table1():
    spec = importlib.util.spec_from_file_location("ddpl_table1_experiment", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("which", ["mpe", pytest.param("all", marks=pytest.mark.slow)])
def test_every_cell_composes_and_validates(table1, which):
    """`mpe`: the five algorithms on Simple-Reference (~10 s); `all`: every task (~1 min CPU:
    SMAX and MABrax envs are built for each cell)."""
    tasks = [t for t in table1.TASKS if t not in table1.NOT_RUN]
    assert set(tasks) == {"ant_2x4", "ant_4x2", "ant_8x1", "humanoidstandup_17x1", "mpe",
                          "3s_vs_5z", "6h_vs_8z"}
    tasks = tasks if which == "all" else ["mpe"]
    budgets = {"mpe": 5_000_000, "smax": 50_000_000, "mabrax": 10_000_000}   # spec §5.1
    for task in tasks:
        family = table1.TASKS[task][3]
        for algo in table1.ALGOS:
            for scale in table1.BUDGET:
                spec = table1.cell_spec(scale, algo, task, seeds=3)
                assert spec.seeds == 3
                if scale == "paper":
                    assert spec.total_steps == budgets[family] and spec.eval_episodes == 50
                if family in ("mpe", "smax"):
                    assert spec.env_kwargs["action_type"] == "continuous"
            _, env, base, _ = runner.prepare(table1.cell_spec("paper", algo, task, 3))
            assert not env.spec.discrete
            if algo.startswith("ddpl"):
                assert base.buffer_size >= 100_000


def test_markdown_marks_missing_cells_and_shows_the_paper(table1):
    cell = dict(task="mpe", algo="ddpl", steps=3000, seeds=3, eval_points=3, eval_episodes=8,
                highest=dict(mean=-49.75, std=1.55, step=2000), final=dict(return_mean=-60.0,
                                                                          return_std=1.0),
                env_steps_per_s=38.0, compile_s=10.0, wall_s=100.0)
    text = table1.markdown(dict(scale="tiny", commit="abc", command="python x", machine="cpu",
                                cells=[cell]))
    row = next(ln for ln in text.splitlines() if ln.startswith("| Simple-Reference-v2"))
    assert "-49.75 ± 1.55 @2,000" in row and "-10.35 ± 0.52" in row and "-9.59 ± 0.35" in row
    assert row.count("not run") == 4                        # the other four algorithms
    shadow = next(ln for ln in text.splitlines() if ln.startswith("| ShadowHandOver"))
    assert "no JAX version" in shadow and "669.25 ± 44.82" in shadow
    assert "Scale `tiny`" in text
