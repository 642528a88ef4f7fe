"""How ``crowdplay serve`` stops on Ctrl-C or SIGTERM: the recordings first, then everything else at once.

The two halves want opposite things, so they are two steps, in this order:

1. ``save_recordings``: the EnvsManager ends every game (its participants are told ``end``) and
   waits until the TrajectoryWriter has acknowledged all the games recorded, stored or, while the
   store is down, in the writer's spool (``GameControl.shutdown``). This is the wait that keeps
   play from being lost, so its bound (``RECORDINGS_TIMEOUT_S``) is generous: a writer that cannot
   keep up holds the stop up rather than lose what it was sent. It normally takes under a second.
   What was saved is printed; a stop that could not confirm it says so on stderr.
2. ``stop_ray``: once the recordings are safe nothing is left worth draining, so nothing is drained.
   ``serve.shutdown()`` stops Serve gracefully: each ingress replica stays open for its draining
   period (2 s for an instance ``crowdplay serve`` starts, Serve's default 30 s otherwise), and it
   waits up to 30 s for the controller ("Controller failed to shut down within 30.0s"); measured on
   2 cores it took 2.3-3 s of a 5.1-5.6 s stop. For a Ray instance this process started,
   ``ray.shutdown()`` ends every one of its processes anyway, Serve's controller, replicas and
   HAProxy among them (~1.4 s), so Serve is not asked; any process this one started that still
   runs after it is killed, and so is any HAProxy still running this instance's configuration (an
   HAProxy left behind would keep the port). A cluster joined with
   ``--address`` keeps running: Serve is asked to shut down there and left to finish on its own
   after ``SERVE_HANDOFF_S``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass
from typing import Any

import psutil
import ray
from ray.actor import ActorHandle

from crowdplay import config
from crowdplay.config import Settings

log = logging.getLogger(__name__)

#: How long the writer may take to acknowledge what the ended games recorded (the EnvsManager's
#: drain bound). Data comes first: only a writer that is down or far behind comes near it.
RECORDINGS_TIMEOUT_S = 20.0
#: On top of that, for the EnvsManager to end the games and answer.
MANAGER_ANSWER_S = 5.0
#: How long the writer's counters may take to arrive for the summary line.
WRITER_STATS_S = 2.0
#: On a cluster joined with ``--address``: how long to wait for Serve's controller to take the
#: shutdown request before leaving it to finish (its replicas drain there for 30 s).
SERVE_HANDOFF_S = 2.0
#: After ``ray.shutdown()``: how long its processes may take to exit before they are killed.
PROCESS_EXIT_S = 1.0


@dataclass(frozen=True)
class Saved:
    """What ``save_recordings`` ended and what the writer reports it holds, for the console."""

    #: sessions ended; None when the EnvsManager did not answer within its bound
    sessions: int | None
    #: whether the EnvsManager answered before its drain could have given up (``RECORDINGS_TIMEOUT_S``):
    #: only then is everything the games recorded known to be acknowledged
    confirmed: bool
    #: the writer's counters afterwards (``TrajectoryWriter.stats``); None when recording is off or they did not arrive
    writer: dict[str, Any] | None
    #: whether anything is recorded at all (``CROWDPLAY_RECORD``)
    record: bool
    #: why the EnvsManager did not answer, if it did not
    error: str = ""

    def summary(self) -> str:
        """One line on what was saved, or a warning beginning ``crowdplay: warning:`` when it may not all have been."""
        if self.sessions is None:
            return (f"crowdplay: warning: the sessions were not ended within {RECORDINGS_TIMEOUT_S + MANAGER_ANSWER_S:.0f} s ({self.error}); "
                    "stopping anyway: what the writer had not acknowledged is lost")
        ended = f"Ended {self.sessions} session{'' if self.sessions == 1 else 's'}"
        if not self.record:
            return f"{ended} (recording is off)."
        if not self.confirmed:
            return (f"crowdplay: warning: {ended}, but the writer did not acknowledge all they recorded within {RECORDINGS_TIMEOUT_S:.0f} s; "
                    "stopping anyway: what it had not is lost (the EnvsManager's log names the game processes)")
        if self.writer is None:
            return f"{ended} and saved their recordings (the writer's counters did not arrive)."
        spooled = self.writer["spooled_batches"]
        spool = f"; {spooled} batch{'' if spooled == 1 else 'es'} wait in the spool for the store" if spooled else ""
        return f"{ended} and saved their recordings: {self.writer['chunks_written']} chunks stored this run{spool}."

    @property
    def warning(self) -> bool:
        """Whether ``summary`` is a warning (for stderr)."""
        return self.summary().startswith("crowdplay: warning:")


def save_recordings(manager: ActorHandle[Any], settings: Settings) -> Saved:
    """End every game and wait, bounded, until the writer has acknowledged what they recorded."""
    from crowdplay.recording.writer import get_or_create_writer

    started = time.monotonic()
    try:
        ended: Any = ray.get(manager.shutdown.remote(timeout_s=RECORDINGS_TIMEOUT_S), timeout=RECORDINGS_TIMEOUT_S + MANAGER_ANSWER_S)
    except Exception as error:  # noqa: BLE001 - a manager that is stuck or gone: say so and stop all the same
        return Saved(None, False, None, settings.record, f"{type(error).__name__}: {error}")
    # The manager's drain gives up silently after RECORDINGS_TIMEOUT_S (it logs which processes): an
    # answer that came later is not a confirmation.
    confirmed = time.monotonic() - started < RECORDINGS_TIMEOUT_S
    writer: dict[str, Any] | None = None
    if settings.record:
        try:
            writer = ray.get(get_or_create_writer(settings).stats.remote(), timeout=WRITER_STATS_S)
        except Exception:  # noqa: BLE001 - the counters are for the console only
            writer = None
    return Saved(int(ended), confirmed, writer, settings.record)


def stop_ray(started_here: bool) -> int:
    """Stop Serve and Ray without draining anything (see the module docstring); returns how many
    of this process's child processes had to be killed because they outlived ``ray.shutdown()``."""
    if not ray.is_initialized():
        return 0
    if not started_here:
        hand_serve_its_shutdown()
    started = psutil.Process().children(recursive=True) if started_here else []
    ray.shutdown()
    killed = kill_leftovers(started, PROCESS_EXIT_S)
    directory = config.private_haproxy_directory if started_here else None
    if directory is not None:  # after the rest: with Serve's processes gone, no HAProxy starts any more
        killed += kill_leftovers(haproxies_running_in(str(directory)), PROCESS_EXIT_S)
    return killed


def haproxies_running_in(directory: str) -> list[psutil.Process]:
    """The HAProxy processes whose configuration is a file in ``directory`` (each is told ``-f
    <directory>/<node id>/haproxy.cfg``). Serve reloads HAProxy by starting a new one, which can
    happen while Ray shuts down, after the list of this process's children was taken; the HAProxy
    manager dies next, and the new HAProxy, now a child of init, kept the port (5 of 10 stops in
    one session)."""
    prefix = directory.rstrip("/") + "/"
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        words = process.info["cmdline"] or []
        if "haproxy" in (process.info["name"] or "") and any(word.startswith(prefix) for word in words):
            found.append(process)
    return found


def hand_serve_its_shutdown() -> None:
    """On a cluster joined with ``--address``: ask Serve to shut down there, and leave it to it
    after ``SERVE_HANDOFF_S`` (``serve.shutdown()`` would wait out the replicas' drain)."""
    from ray import serve

    async def bounded() -> None:
        try:
            await asyncio.wait_for(serve.shutdown_async(), SERVE_HANDOFF_S)
        except TimeoutError:
            pass  # the request is with the controller, which goes on without this process

    try:
        asyncio.run(bounded())
    except Exception as error:  # noqa: BLE001 - Serve already gone or unreachable: Ray's shutdown still follows
        log.warning("shutting Serve down: %s: %s", type(error).__name__, error)


def kill_leftovers(processes: list[psutil.Process], timeout_s: float) -> int:
    """Wait up to ``timeout_s`` for ``processes`` to exit, then SIGKILL those still running;
    returns how many were killed. A pid reused meanwhile is not touched (psutil checks the
    process's start time); a zombie has exited (its parent, gone too, leaves it to be reaped)."""
    deadline = time.monotonic() + timeout_s
    while (alive := [process for process in processes if still_running(process)]) and time.monotonic() < deadline:
        psutil.wait_procs(alive, timeout=0.05)  # reaps those that are this process's own children
    killed = 0
    for process in alive:
        try:
            process.send_signal(signal.SIGKILL)
            killed += 1
        except psutil.Error:  # exited in between
            continue
    return killed


def still_running(process: psutil.Process) -> bool:
    """Whether ``process`` (the very one, not a reuse of its pid) has not exited."""
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
