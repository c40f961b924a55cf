"""Several processes on localhost (`distributed=true`, a loopback coordinator, gloo CPU
collectives, one XLA device per process): the same rows and files as one process with two
devices, config mismatches refused before compiling, a dead peer ends the job, a relaunch resumes."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_ARGS = [f"algo.{k}={v}" for k, v in TINY.items()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env() -> dict:
    """The test session's environment (compile cache, XLA level) with one host device per
    process: the two processes' mesh is then the one the 2-device reference run uses."""
    env = dict(os.environ, JAXDIFF_HOST_DEVICES="1", PYTHONUNBUFFERED="1")
    env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                              env.get("XLA_FLAGS", "")).strip()
    return env


def _launch(argv_of, n=2, timeout_s=20):
    """Start `n` processes of `python <argv_of(process_id)>` joined through a fresh port."""
    port = _free_port()
    dist = ["distributed=true", f"coordinator=127.0.0.1:{port}", f"num_processes={n}",
            f"timeout={timeout_s}"]
    return [subprocess.Popen([sys.executable, *argv_of(p), *dist, f"process_id={p}"],
                             cwd=ROOT, env=_child_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for p in range(n)]


def _finish(procs, timeout=600):
    return [(p.wait(timeout=timeout), *p.communicate()) for p in procs]


def test_processes_with_different_configs_refuse_before_compiling(tmp_path):
    """Process 1 has another learning rate: both exit with status 2 and a message naming the
    key and both values, and nothing (not even the run folder) is written."""
    run_dir = tmp_path / "run"
    common = ["-m", "jaxdiff.cli", "train", "algo=mappo", "env=coordination_game", "seeds=2",
              "total_steps=64", "chunks=1", "progress=false", f"run_dir={run_dir}", *TINY_ARGS]
    out = _finish(_launch(lambda p: common + [f"algo.lr={1e-3 if p == 0 else 3e-4}"]),
                  timeout=120)
    for p, (rc, _, err) in enumerate(out):
        assert rc == 2, err
        assert "different run configurations" in err and "nothing is compiled" in err, err
        assert "algo_overrides.lr: process" in err and "0.001" in err and "0.0003" in err, err
        assert "Traceback" not in err
    assert not run_dir.exists()


def test_an_ensemble_the_processes_cannot_share_evenly_is_refused(tmp_path):
    """3 seeds over 2 processes: refused on both, before the run folder is claimed."""
    run_dir = tmp_path / "run"
    argv = ["-m", "jaxdiff.cli", "train", "algo=mappo", "env=coordination_game", "seeds=3",
            "total_steps=64", "chunks=1", "progress=false", f"run_dir={run_dir}", *TINY_ARGS]
    for rc, _, err in _finish(_launch(lambda p: argv), timeout=120):
        assert rc == 2 and "3 ensemble members" in err and "2 processes" in err, err
    assert not run_dir.exists()


def test_launch_settings_are_checked_before_joining():
    from jaxdiff.run import distributed
    argv, opts = distributed.pop_options(["algo=mappo", "distributed=true", "process_id=1",
                                          "algo.lr=1e-3"])
    assert argv == ["algo=mappo", "algo.lr=1e-3"]
    assert opts == dict(distributed="true", process_id="1")
    assert distributed.initialize({}) is False
    with pytest.raises(ValueError, match="only apply with `distributed=true`"):
        distributed.initialize(dict(coordinator="127.0.0.1:1"))
    with pytest.raises(ValueError, match=r"`process_id=2` must be in 0\.\.1"):
        distributed.initialize(dict(distributed="true", num_processes="2", process_id="2"))
    with pytest.raises(ValueError, match="must be true or false"):
        distributed.initialize(dict(distributed="maybe"))


_SWEEP = dict(algo="mappo", env="mpe_simple_spread", seeds=2, total_steps=4 * 32 * 3, chunks=3,
              fixed={f"algo.{k}": v for k, v in TINY.items()},
              grid={"algo.lr": [3e-4, 1e-3]})

_DRIVER = textwrap.dedent("""
    import json, sys
    import jaxdiff
    jaxdiff.use_host_devices()
    from jaxdiff.run import distributed, sweep
    from jaxdiff.run.distributed import pop_options
    _, opts = pop_options(sys.argv[3:])
    distributed.initialize(opts)
    sweep.run(json.loads(sys.argv[1]), sys.argv[2], progress=False)
""")


def _table(out) -> list:
    rows = json.load(open(os.path.join(out, "results.json")))
    return [{k: r[k] for k in ("point", "final", "best")} for r in rows]


@pytest.mark.slow
def test_two_process_sweep_writes_the_one_process_rows(tmp_path):
    """2 learning rates x 2 seeds: 2 processes x 1 device == 1 process x 2 devices, bitwise
    (the results table, summary.json's blocks and every metrics.jsonl line)."""
    from jaxdiff.run import sweep
    one, two = tmp_path / "one", tmp_path / "two"
    sweep.run(_SWEEP, str(one), progress=False)
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    out = _finish(_launch(lambda p: [str(driver), json.dumps(_SWEEP), str(two)]))
    assert [rc for rc, _, _ in out] == [0, 0], out[0][2][-3000:] + out[1][2][-3000:]
    assert _table(two) == _table(one)
    # process 0 alone wrote the tables (process 1's stdout has no table)
    assert "| algo.lr |" in out[0][1] and "| algo.lr |" not in out[1][1]
    a, b = (json.load(open(d / "all" / "summary.json")) for d in (one, two))
    assert (a["final"], a["best"], a["per_seed"], a["grid"]) == \
        (b["final"], b["best"], b["per_seed"], b["grid"])
    assert (one / "all" / "metrics.jsonl").read_text() == (two / "all" / "metrics.jsonl").read_text()
    assert (two / "all" / "curves.png").exists() and (two / "sweep.png").exists()


@pytest.mark.slow
def test_dead_peer_ends_the_job_and_a_relaunch_resumes(tmp_path):
    """Kill process 1 after the first chunks: process 0 exits within the timeout (no hang);
    relaunching the same command resumes from the last checkpoint and ends with the metrics of
    an uninterrupted one-process run."""
    from jaxdiff import config
    from jaxdiff.run import runner
    run_dir, ref = tmp_path / "run", tmp_path / "ref"
    args = dict(seeds=2, total_steps=4 * 32 * 40, chunks=40, eval_episodes=4)
    argv = ["-m", "jaxdiff.cli", "train", "algo=mappo", "env=mpe_simple_spread",
            "progress=false", f"run_dir={run_dir}", *TINY_ARGS,
            *[f"{k}={v}" for k, v in args.items()]]
    timeout_s = 15
    procs = _launch(lambda p: argv, timeout_s=timeout_s)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 4):
        assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].communicate()
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    rc, _, err = _finish(procs[:1], timeout=4 * timeout_s)[0]
    waited = time.monotonic() - t0
    procs[1].wait()
    assert rc == 2 and waited < timeout_s, (rc, waited, err[-2000:])
    # jaxdiff's message (a broken gather or checkpoint barrier, or the peer watchdog), not
    # JAX's abort at its heartbeat timeout
    assert "Lost a peer process" in err or "process 1 stopped answering" in err, err[-2000:]
    assert "erun the same command on every process" in err and "Check failure" not in err
    done = len(metrics.read_text().splitlines()) // 2
    assert done < 40, "the kill came after the run ended"
    out = _finish(_launch(lambda p: argv, timeout_s=timeout_s))
    assert [rc for rc, _, _ in out] == [0, 0], out[0][2][-3000:] + out[1][2][-3000:]
    assert "resuming from chunk" in out[0][2]
    # the reference composes its settings exactly as the command line did, in this process
    runner.train(config.run_spec(config.compose(argv[3:])), str(ref), progress=False)
    assert metrics.read_text() == (ref / "metrics.jsonl").read_text()
