"""Several processes (on one or several hosts) running one ensemble, with JAX's own engine.

    jaxdiff train ... distributed=true coordinator=10.0.0.1:8476 num_processes=2 process_id=0
    jaxdiff train ... distributed=true coordinator=10.0.0.1:8476 num_processes=2 process_id=1

`jax.distributed.initialize` connects the processes; `jax.devices()` then lists every process's
devices and the runner lays the ensemble axis over all of them (each process holds and steps
its slice of the members). Results are gathered (`process_allgather`) so that every process
sees every member's metrics and takes the same decisions; process 0 alone writes the run's files
and orbax writes the checkpoints from all processes. Small host-side agreements (the resolved
configuration, process 0's verdict on the run folder, its summary) go through the coordinator's
key-value store with a bounded wait, so a missing or diverging peer ends in a message, not a hang.

Settings (flags win over the environment): `coordinator` (JAX_COORDINATOR_ADDRESS),
`num_processes` (JAXDIFF_NUM_PROCESSES), `process_id` (JAXDIFF_PROCESS_ID), `timeout` seconds
(JAXDIFF_DIST_TIMEOUT, default 120). Left unset, JAX detects them itself under SLURM or Open MPI.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os

OPTIONS = ("distributed", "coordinator", "num_processes", "process_id", "timeout")
DEFAULT_TIMEOUT = 120

_timeout_s = DEFAULT_TIMEOUT
_counter = 0   # every process makes the same sequence of agreements: a key per agreement


class DistributedError(RuntimeError):
    """A peer is missing, late beyond the timeout, or reports something else than this one."""


class ProcessMismatch(ValueError):
    """The processes of one job were launched with different settings."""


def pop_options(argv: list[str]) -> tuple[list[str], dict]:
    """Split the launch settings (`distributed=true`, `coordinator=...`, ...) off a command line;
    they are not part of a run's identity (the same run may resume with another process count)."""
    rest, opts = [], {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") in OPTIONS:
            opts[key.lstrip("+")] = value
        else:
            rest.append(arg)
    return rest, opts


def _int(name: str, value) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"`{name}={value}` must be a whole number.") from None


def initialize(opts: dict) -> bool:
    """Connect this process to the others when `distributed=true` (else do nothing and return
    False). Call before anything runs on a device."""
    flag = str(opts.get("distributed", "false")).strip().lower()
    if flag not in ("true", "1", "yes", "false", "0", "no"):
        raise ValueError(f"`distributed={opts['distributed']}` must be true or false.")
    if flag in ("false", "0", "no"):
        extra = sorted(set(opts) - {"distributed"})
        if extra:
            raise ValueError(f"{', '.join(f'`{k}`' for k in extra)} only apply with "
                             f"`distributed=true`.")
        return False
    global _timeout_s
    env = os.environ
    coordinator = opts.get("coordinator") or env.get("JAX_COORDINATOR_ADDRESS") or None
    num = _int("num_processes", opts.get("num_processes", env.get("JAXDIFF_NUM_PROCESSES")))
    pid = _int("process_id", opts.get("process_id", env.get("JAXDIFF_PROCESS_ID")))
    _timeout_s = _int("timeout", opts.get("timeout", env.get("JAXDIFF_DIST_TIMEOUT"))) \
        or DEFAULT_TIMEOUT
    if num is not None and pid is not None and not 0 <= pid < num:
        raise ValueError(f"`process_id={pid}` must be in 0..{num - 1} (`num_processes={num}`).")
    import jax
    # CPU devices of different processes talk through gloo (TCP); harmless on GPU hosts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num, pid,
                                   initialization_timeout=_timeout_s,
                                   heartbeat_timeout_seconds=_timeout_s,
                                   shutdown_timeout_seconds=_timeout_s)
    except ValueError as e:
        raise ValueError(f"`distributed=true` needs the coordinator address, the number of "
                         f"processes and this process's id: pass `coordinator=<host:port> "
                         f"num_processes=<n> process_id=<i>` (or set JAX_COORDINATOR_ADDRESS, "
                         f"JAXDIFF_NUM_PROCESSES, JAXDIFF_PROCESS_ID; under SLURM or Open MPI "
                         f"JAX finds them itself). JAX said: {e}") from None
    except Exception as e:  # noqa: BLE001 -- the runtime's connection errors have no common type
        raise DistributedError(
            f"Could not join the job at {coordinator or '(auto-detected coordinator)'} within "
            f"{_timeout_s} s ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]}). "
            f"Start every process with the same `coordinator` and `num_processes` (process 0 "
            f"hosts the coordinator), or raise `timeout=`.") from None
    _start_watchdog()
    return True


_ALIVE = "jaxdiff/alive/"
_state = dict(stopping=False)   # this process reported its own failure, or is exiting


def _start_watchdog() -> None:
    """A daemon thread: publish a beat every second under the coordinator's key-value store and
    watch the others'. A peer whose beat stops for half the timeout (killed, hung, host lost),
    or a lost coordinator, ends this process at once with a message saying how to resume,
    instead of a hang in a collective (JAX's own heartbeat would abort it at the timeout)."""
    import atexit
    import sys
    import threading
    import time

    import jax
    client, me, n = _client(), jax.process_index(), jax.process_count()
    limit = max(_timeout_s / 2, 3.0)

    def mark_done():
        _state["stopping"] = True
        try:
            client.key_value_set(f"{_ALIVE}{me}", "done", True)
        except Exception:  # noqa: BLE001 -- best effort on the way out
            pass

    atexit.register(mark_done)   # after JAX's own exit handler is registered: runs before it

    def watch():
        try:
            watch_beats()
        except Exception:  # noqa: BLE001 -- never a traceback from the watchdog; JAX's
            pass           # heartbeat still bounds the wait

    def watch_beats():
        beat, seen, since = 0, {}, {}
        lost_since = first_failure = None
        while not _state["stopping"]:
            beat += 1
            now = time.monotonic()
            try:
                client.key_value_set(f"{_ALIVE}{me}", str(beat), True)
                values = dict(client.key_value_dir_get(_ALIVE))
                lost_since = None
            except Exception as e:  # noqa: BLE001 -- the coordinator (process 0) is gone?
                lost_since = lost_since or now
                if now - lost_since > limit and not _state["stopping"]:
                    _die(f"lost the job's coordinator (process 0) for {limit:.0f} s "
                         f"({type(e).__name__}).")
                time.sleep(1)
                continue
            failed = _failures(client)
            if failed:   # a peer raised; unless this process stops too (the same error), follow
                first_failure = first_failure or now
                if now - first_failure > 3 and not _state["stopping"]:
                    _die(f"process {failed[0][0]} stopped: {failed[0][1]}")
            for p in range(n):
                value = values.get(f"{_ALIVE}{p}")
                if p == me or value == "done":
                    continue
                if p not in since or value != seen[p]:   # None: no beat from it yet
                    seen[p], since[p] = value, now
                elif now - since[p] > limit and not _state["stopping"]:
                    _die(f"process {p} stopped answering {limit:.0f} s ago (killed, hung or its "
                         f"host lost).")
            time.sleep(1)

    def _die(reason: str) -> None:
        print(f"[jaxdiff] process {me}: {reason} Stopping this process too; rerun the same "
              f"command on every process to resume from the last checkpoint.", file=sys.stderr,
              flush=True)
        os._exit(2)

    threading.Thread(target=watch, name="jaxdiff-peer-watchdog", daemon=True).start()


def active() -> bool:
    """True in a job of several processes."""
    import jax
    return jax.process_count() > 1


def is_main() -> bool:
    """True on the process that writes the run's files (process 0, or the only one)."""
    import jax
    return jax.process_index() == 0


def _client():
    from jax._src import distributed as jd   # the coordinator's key-value store (orbax uses it)
    return jd.global_state.client


def _next_key(tag: str) -> str:
    global _counter
    _counter += 1
    return f"jaxdiff/{_counter}/{tag}"


def _get(client, key: str, who: str):
    """The value under `key`, waiting at most the timeout; a peer that failed (`report_failure`)
    ends the wait at once with its message."""
    import time
    deadline = time.monotonic() + _timeout_s
    while True:
        try:
            return client.blocking_key_value_get(key, 1000)
        except Exception as e:  # noqa: BLE001 -- a one-second slice ran out, or the coordinator is gone
            last = e
        failed = _failures(client)
        if failed:
            p, message = failed[0]
            raise DistributedError(f"Process {p} stopped: {message}") from None
        if time.monotonic() > deadline:
            text = str(last).strip().splitlines()[0][:160] if str(last).strip() else ""
            raise DistributedError(
                f"Process {who} did not answer within {_timeout_s} s while agreeing on `{key}` "
                f"({type(last).__name__}: {text}). It may have stopped, or been launched with "
                f"other settings; check its output, then relaunch every process with the same "
                f"command.") from None


def _failures(client) -> list[tuple[str, str]]:
    try:
        return sorted((k.rsplit("/", 1)[-1], v) for k, v in client.key_value_dir_get(_ABORT))
    except Exception:  # noqa: BLE001 -- the coordinator itself is gone: the caller times out
        return []


_ABORT = "jaxdiff/failed/"


def report_failure(error: BaseException) -> None:
    """Tell the other processes that this one stops (their waits end with this message)."""
    _state["stopping"] = True
    try:
        import jax
        client = _client()
        if client is None:
            return
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        client.key_value_set(f"{_ABORT}{jax.process_index()}", text[:2000], True)
    except Exception:  # noqa: BLE001 -- best effort on the way out
        pass


def exchange(tag: str, text: str) -> list[str]:
    """Every process's `text`, in process order (one key-value round trip, bounded wait)."""
    import jax
    if not active():
        return [text]
    client, key = _client(), _next_key(tag)
    client.key_value_set(f"{key}/{jax.process_index()}", text)
    return [text if p == jax.process_index() else _get(client, f"{key}/{p}", str(p))
            for p in range(jax.process_count())]


def from_main(tag: str, text: str | None) -> str:
    """Process 0's `text` on every process (the others pass None; None travels as "")."""
    import jax
    if not active():
        return text
    client, key = _client(), _next_key(tag)
    if jax.process_index() == 0:
        client.key_value_set(key, text or "")
        return text
    return _get(client, key, "0")


def agree(what: str, identity: dict) -> None:
    """Refuse (every process, with the differing keys) unless all processes hold the same
    `identity` (a JSON-able dict). A hash travels first; the full texts only on a mismatch."""
    if not active():
        return
    import jax

    from jaxdiff.run.runner import config_diff
    text = json.dumps(identity, sort_keys=True, default=str)
    digests = exchange(f"{what}-hash", hashlib.sha256(text.encode()).hexdigest())
    if len(set(digests)) == 1:
        return
    texts = exchange(f"{what}-text", text)
    me = jax.process_index()
    other = 0 if me != 0 else next(p for p, d in enumerate(digests) if d != digests[0])
    diff = config_diff(json.loads(texts[other]), json.loads(texts[me]),
                       labels=(f"process {other}", f"process {me}"))
    differing = [p for p, d in enumerate(digests) if d != digests[0]]
    raise ProcessMismatch(
        f"The processes of this job were launched with different {what}s (process(es) "
        f"{', '.join(map(str, differing))} differ from process 0), so nothing is compiled. "
        f"{'; '.join(diff)}. "
        f"Launch every process with the same settings (only `process_id` differs).")


def gather(tree):
    """A pytree of (possibly process-spanning) arrays as host numpy arrays holding every
    member, on every process."""
    import jax
    if not active():
        return jax.device_get(tree)
    from jax.experimental import multihost_utils
    with collective("gathering the chunk's results"):
        return multihost_utils.process_allgather(tree, tiled=True)


_LOST = ("gloo", "connection reset", "connection closed", "connection refused", "unavailable",
         "deadline_exceeded", "heartbeat")


@contextlib.contextmanager
def collective(what: str):
    """Inside a multi-process job, an error of a cross-process step (a gather, orbax's barriers)
    that says a connection to a peer broke becomes a `DistributedError` naming what was being
    done and how to resume; anything else passes unchanged."""
    try:
        yield
    except Exception as e:
        text = str(e).strip()
        if not active() or not any(k in text.lower() for k in _LOST):
            raise
        first = text.splitlines()[0][:200]
        raise DistributedError(
            f"Lost a peer process while {what} ({type(e).__name__}: {first}). Rerun the same "
            f"command on every process to resume from the last checkpoint.") from None


def exit_now(code: int) -> None:
    """Leave at once after a lost peer: JAX's exit handler would otherwise wait for the dead
    process at its shutdown barrier until the heartbeat timeout, then abort with a core log."""
    import sys
    _state["stopping"] = True
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on some process (an interrupt on one host)."""
    if not active():
        return flag
    return any(v == "1" for v in exchange("flag", "1" if flag else "0"))
