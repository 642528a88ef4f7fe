"""The server's memory while idle, by kind of process, and whether it is flat: the soak's verdict.

A process's resident memory is three kinds of page. File-backed pages (code and libraries as they
first run) and shared memory (Ray's object store, mapped into each worker that touches it) are
bounded by what they map; private (anonymous) pages are the process's own, where a leak grows, and
they are what is judged. Under load a process's memory follows the games it hosts, so it is read
idle, where the load is always the same, at checkpoints: a line through the long-lived processes'
memory against minutes of play says whether it grows.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import psutil

from crowdplay.bench.load import System
from crowdplay.bench.process_kinds import kind_of

LONG_LIVED = ("ingress", "manager", "writer", "policy")
#: process id -> (kind, private MB)
Sample = dict[int, tuple[str, float]]


def private_mb(processes: list[psutil.Process]) -> Sample:
    """Each process's kind and private resident memory (``RssAnon`` in ``/proc/<pid>/status``)."""
    sample: Sample = {}
    for process in processes:
        try:
            kind = kind_of(process)
            with open(f"/proc/{process.pid}/status") as status:
                kb = next((int(line.split()[1]) for line in status if line.startswith("RssAnon:")), None)
        except (psutil.Error, OSError):
            continue
        if kb is not None:  # a zombie has no memory lines
            sample[process.pid] = (kind, kb / 1024)
    return sample


@dataclass
class Checkpoint:
    """The server's idle memory after ``minutes`` of judged play."""

    minutes: float
    sample: Sample

    def kind_of(self, pid: int) -> str:
        """The kind of process ``pid`` was at this checkpoint."""
        return self.sample[pid][0]

    def total_mb(self, pids: set[int]) -> float:
        """The private memory of ``pids`` together: the long-lived processes are judged as one."""
        return sum(self.sample[pid][1] for pid in pids)

    def kind_mb(self, kind: str) -> float:
        """The private memory of every process of ``kind``, for the report by kind."""
        return sum(mb for k, mb in self.sample.values() if k == kind)

    def kind_count(self, kind: str) -> int:
        """How many processes of ``kind`` were alive: a jump in memory may be a process more."""
        return sum(k == kind for k, _ in self.sample.values())


def idle_checkpoint(system: System, minutes: float, quiet_s: float, readings: int, timeout_s: float = 300.0) -> Checkpoint:
    """Once no game is left and ``quiet_s`` more seconds passed, each process's median of
    ``readings`` 5 s apart (an idle process still moves a little: a health check, a metrics push)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not system.idle():
        time.sleep(1.0)
    time.sleep(quiet_s)
    taken = []
    for reading in range(readings):
        time.sleep(5.0 if reading else 0.0)
        taken.append(private_mb(system.processes()))
    lived = set.intersection(*(set(reading) for reading in taken))
    return Checkpoint(minutes, {pid: (taken[-1][pid][0], statistics.median(reading[pid][1] for reading in taken)) for pid in lived})


def fit_slope_mb_per_min(series: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of (minutes, MB) points and its standard error, MB a minute: the error
    says how small a rate a run this long and this noisy can tell apart from none."""
    if len(series) < 2:
        return 0.0, 0.0
    mean_t, mean_mb = statistics.fmean(t for t, _ in series), statistics.fmean(mb for _, mb in series)
    spread = sum((t - mean_t) ** 2 for t, _ in series)
    if not spread:
        return 0.0, 0.0
    slope = sum((t - mean_t) * (mb - mean_mb) for t, mb in series) / spread
    if len(series) < 3:
        return slope, 0.0
    residual = sum((mb - mean_mb - slope * (t - mean_t)) ** 2 for t, mb in series) / (len(series) - 2)
    return slope, math.sqrt(residual / spread)


def memory_series(checkpoints: list[Checkpoint], pids: set[int]) -> list[tuple[float, float]]:
    """(minutes, MB) of ``pids`` together at each checkpoint: the points a growth rate is fitted to."""
    return [(checkpoint.minutes, checkpoint.total_mb(pids)) for checkpoint in checkpoints]


def flat_verdict(checkpoints: int, rate: float, error: float, line: float) -> bool | None:
    """Flat if the rate's band (two standard errors) lies below the line, growing if above it, and
    no verdict from too few checkpoints or a band straddling the line: a noisy run must not pass."""
    if checkpoints < 3:
        return None
    if rate + 2 * error < line:
        return True
    if rate - 2 * error > line:
        return False
    return None


def memory_by_kind(checkpoints: list[Checkpoint]) -> dict[str, dict[str, list[float]] | dict[str, list[int]]]:
    """Each kind's private memory and process count at each checkpoint, Ray's own processes too:
    where a judged growth comes from, or what the unjudged processes do."""
    kinds = sorted({kind for checkpoint in checkpoints for kind, _ in checkpoint.sample.values()})
    return {
        "idle_private_mb": {kind: [round(checkpoint.kind_mb(kind), 2) for checkpoint in checkpoints] for kind in kinds},
        "idle_processes": {kind: [checkpoint.kind_count(kind) for checkpoint in checkpoints] for kind in kinds},
    }


def growth_by_kind(checkpoints: list[Checkpoint], ours: set[int]) -> dict[str, float]:
    """Each long-lived kind's own growth rate, MB a minute: which process a leak is in."""
    last = checkpoints[-1]
    kinds = {kind for checkpoint in checkpoints for kind, _ in checkpoint.sample.values()}
    return {
        kind: round(fit_slope_mb_per_min(memory_series(checkpoints, {pid for pid in ours if last.kind_of(pid) == kind}))[0], 4)
        for kind in LONG_LIVED
        if kind in kinds
    }


def memory_verdict(checkpoints: list[Checkpoint], day_tolerance: float) -> dict[str, Any]:
    """Memory by kind at each checkpoint, and whether the long-lived processes' is flat (those
    alive at every checkpoint: a replaced process would read as a jump). Flat means growing by less
    than ``day_tolerance`` of their memory a day."""
    lived = set.intersection(*(set(checkpoint.sample) for checkpoint in checkpoints))
    ours = {pid for pid in lived if checkpoints[-1].kind_of(pid) in LONG_LIVED}
    long_lived = memory_series(checkpoints, ours)
    rate, error = fit_slope_mb_per_min(long_lived)
    line = day_tolerance * statistics.fmean(mb for _, mb in long_lived) / (60 * 24)
    return {
        "memory_flat": flat_verdict(len(checkpoints), rate, error, line),
        "idle_minutes": [round(checkpoint.minutes, 2) for checkpoint in checkpoints],
        **memory_by_kind(checkpoints),
        "long_lived_mb": [round(mb, 2) for _, mb in long_lived],
        "long_lived_growth_mb_per_min": round(rate, 4),
        "long_lived_growth_error": round(error, 4),
        "growth_mb_per_min_by_kind": growth_by_kind(checkpoints, ours),
        "flat_line_mb_per_min": round(line, 4),
    }
