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

#: Process title prefix -> kind; every other process of the server's tree is Ray's own.
KINDS = {"ray::ServeReplica": "ingress", "ray::EnvsManager": "manager", "ray::TrajectoryWriter": "writer", "ray::PolicyActor": "policy", "ray::EnvActor": "env_actor"}
LONG_LIVED = ("ingress", "manager", "writer", "policy")
#: process id -> (kind, private MB)
Sample = dict[int, tuple[str, float]]


def private_mb(processes: list[psutil.Process]) -> Sample:
    """Each process's kind and private resident memory (``RssAnon`` in ``/proc/<pid>/status``)."""
    sample: Sample = {}
    for process in processes:
        try:
            title = " ".join(process.cmdline()[:1]) or process.name()
            with open(f"/proc/{process.pid}/status") as status:
                kb = next((int(line.split()[1]) for line in status if line.startswith("RssAnon:")), None)
        except (psutil.Error, OSError):
            continue
        if kb is not None:  # a zombie has no memory lines
            sample[process.pid] = (next((kind for prefix, kind in KINDS.items() if title.startswith(prefix)), "ray"), kb / 1024)
    return sample


@dataclass
class Checkpoint:
    """The server's idle memory after ``minutes`` of judged play."""

    minutes: float
    sample: Sample


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


def memory_verdict(checkpoints: list[Checkpoint], day_tolerance: float) -> dict[str, Any]:
    """Memory by kind at each checkpoint, and whether the long-lived processes' is flat (those
    alive at every checkpoint: a replaced process would read as a jump)."""
    lived = set.intersection(*(set(checkpoint.sample) for checkpoint in checkpoints))
    ours = {pid for pid in lived if checkpoints[-1].sample[pid][0] in LONG_LIVED}

    def series(pids: set[int]) -> list[tuple[float, float]]:
        return [(checkpoint.minutes, sum(checkpoint.sample[pid][1] for pid in pids)) for checkpoint in checkpoints]

    long_lived = series(ours)
    rate, error = fit_slope_mb_per_min(long_lived)
    line = day_tolerance * statistics.fmean(mb for _, mb in long_lived) / (60 * 24)
    upper, lower = rate + 2 * error, rate - 2 * error  # too few checkpoints, or a band straddling the line: no verdict
    flat = None if len(checkpoints) < 3 else True if upper < line else False if lower > line else None
    kinds = sorted({kind for checkpoint in checkpoints for kind, _ in checkpoint.sample.values()})
    return {
        "memory_flat": flat,
        "idle_minutes": [round(checkpoint.minutes, 2) for checkpoint in checkpoints],
        "idle_private_mb": {kind: [round(sum(mb for k, mb in checkpoint.sample.values() if k == kind), 2) for checkpoint in checkpoints] for kind in kinds},
        "idle_processes": {kind: [sum(k == kind for k, _ in checkpoint.sample.values()) for checkpoint in checkpoints] for kind in kinds},
        "long_lived_mb": [round(mb, 2) for _, mb in long_lived],
        "long_lived_growth_mb_per_min": round(rate, 4),
        "long_lived_growth_error": round(error, 4),
        "growth_mb_per_min_by_kind": {kind: round(fit_slope_mb_per_min(series({pid for pid in ours if checkpoints[-1].sample[pid][0] == kind}))[0], 4) for kind in LONG_LIVED if kind in kinds},
        "flat_line_mb_per_min": round(line, 4),
    }
