"""Soak: many participants for a long time, dropping their connections at random; nothing recorded
is lost or corrupt and memory stays flat.

``python -m crowdplay.bench soak --sessions 30 --minutes 10`` starts Ray, Serve and the app (as the
load benchmark does, recording into a fresh embedded store) and keeps ``--sessions`` simulated
participants playing. Each presses keys a few times a second; at random (on average every
``--drop-every`` seconds) its connection drops without a close, as a network failure does, and it
reconnects after a pause inside the grace period, expecting its seat back; one drop in
``--leave-every`` instead leaves for good and starts a new session. The server's process tree's
memory is sampled every ``--sample-every`` seconds.

At the end everyone leaves and every episode the run recorded is read back and replayed from its
emulator snapshots (``crowdplay.data.replay_check``). The result:

* ``episodes``, ``replay_failures``, ``games_without_episode`` (a game a participant played that
  left nothing in the store) and ``episodes_incomplete`` (no final status, or fewer chunks stored
  than the episode announces): all but the first must be 0;
* ``reconnects`` and ``reconnects_refused`` (a seat not given back within the grace period),
  ``unexpected_closes`` (the server closed a connection nobody dropped);
* memory, judged where the load is the same: idle. The participants first play for ``--warmup``
  seconds (10 minutes: the writer, manager and ingress replica keep growing over their first ~200
  sessions, then level off); then the soak's ``--minutes`` are played in stretches of
  ``--checkpoint-every`` minutes, and before the first and after each one everyone leaves and,
  once every game has ended and ``--quiet`` seconds have passed (a memory release has run), every
  process's resident memory is sampled by kind five times, 5 s apart, and its median kept
  (``idle_crowdplay_spread_mb``: how far CrowdPlay's total moved between the repeats). The kind
  judged (``idle_memory_judged``) is private memory: anonymous pages, the process's own, where a
  leak grows. File-backed pages (libraries paged in as code first runs) and shared memory (Ray's
  object store, mapped into each worker that touches it, bounded by its fixed size) are part of
  RSS but not the process's to leak; they are reported beside the verdict
  (``idle_long_lived_mb_by_kind``, first and last; ``idle_long_lived_growth_mb_per_min_by_kind``,
  each kind's line and its error; ``rss`` all three). A least-squares line through the idle private memory of
  CrowdPlay's long-lived processes (ingress replicas, EnvsManager, TrajectoryWriter, policy actors)
  against minutes of play (``idle_long_lived_mb``, ``idle_long_lived_growth_mb_per_min`` and its
  standard error, ``idle_growth_mb_per_min_by_process``, ``idle_long_lived_growth_kb_per_session``)
  gives the verdict, ``memory_flat``: true when even the line's upper bound (two standard errors)
  would in a day grow them by under ``--flat-tolerance`` of their memory
  (``idle_flat_line_mb_per_min``), false when even its lower bound would grow them by more, and
  null when the run cannot tell (play longer: each process's idle memory lands somewhere in a band
  of a few tenths of a MB after a burst of work, so only many checkpoints separate a steady rate
  from that band). The warm pool's EnvActors are replaced as they wear out, so what one keeps is
  bounded by its life: the largest idle one at each checkpoint is reported
  (``idle_envactor_mb``). (What the processes grew from an idle sample before anyone played
  to the first checkpoint, as caches and heaps reach their working size, is reported as
  ``idle_*_warmup_growth_mb``.) At each checkpoint the manager, writer and ingress replicas are
  also asked what their memory is made of (``crowdplay.bench.heaps``: Python blocks and object
  counts, the C heap in use, anonymous resident memory, also by region: glibc's main arena, its
  other arenas, the rest): ``idle_heap_kb`` at each checkpoint, ``idle_heap_growth`` first to
  last, ``warmup_heap_growth``, so growth can be told apart as Python objects or native
  allocations. Ray's own processes (GCS, raylet, dashboard agent, Serve's controller and
  proxies) are reported as ``idle_ray_*``, not judged. Under load a process's memory follows the
  games it hosts (MBs as they start and end), so the samples taken while people play are reported,
  not judged: of the processes that lived through the soak (EnvActors the pool started or retired
  are counted in ``processes_started`` and ``processes_stopped``), CrowdPlay's (``crowdplay_*``)
  and Ray's (``ray_*``) apart: ``rss_mb`` in the first minute, ``rss_growth_mb`` from the first
  minute to the last, the growth rate in each half (the second half's with its standard error);
  ``rss_growth_mb_by_process`` over the whole soak and over its second half; ``envactor_rss_mb_max``
  (the largest EnvActor seen: each retires after ``Settings.games_per_actor`` games); ``rss_mb``
  samples of the whole process tree.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from crowdplay.bench.heaps import ARENA_REGIONS, census, heap_growth, long_lived_actors
from crowdplay.bench.load import KEYS, serve_system
from crowdplay.client import Participant, http_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=30, help="participants playing at once")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long they play")
    parser.add_argument("--envs", default="SpaceInvaders,Pong,Breakout", help="games, comma-separated, dealt round robin")
    parser.add_argument("--drop-every", type=float, default=60.0, help="mean seconds between a participant's connection drops")
    parser.add_argument("--leave-every", type=int, default=4, help="one drop in this many is a participant leaving for good")
    parser.add_argument("--grace", type=float, default=5.0, help="the server's reconnect grace period (s)")
    parser.add_argument("--warmup", type=float, default=600.0, help="seconds of play before the idle memory baseline (the writer, manager and ingress reach their working size after ~200 sessions)")
    parser.add_argument("--checkpoint-every", type=float, default=2.5, help="minutes of play between idle memory checkpoints (everyone leaves, the server goes idle, memory is sampled, play resumes)")
    parser.add_argument("--spare-linger", type=float, default=300.0, help="seconds an emptied EnvActor beyond the warm pool waits for new games before it retires: longer than a checkpoint's pause, so the checkpoints do not retire and restart the pool, which steady play would not")
    parser.add_argument("--quiet", type=float, default=None, help="seconds idle before each idle memory sample (default: the memory release interval and 5)")
    parser.add_argument("--idle-samples", type=int, default=5, help="memory samples at each idle checkpoint (their median per process is the checkpoint's)")
    parser.add_argument("--idle-spacing", type=float, default=5.0, help="seconds between an idle checkpoint's samples")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between memory samples")
    parser.add_argument("--flat-tolerance", type=float, default=0.1, help="idle growth in a day, at the soak's rate, counted as flat (fraction)")
    parser.add_argument("--seed", type=int, default=0)


@dataclass
class Tally:
    sessions: int = 0
    games: set[str] = field(default_factory=set)
    reconnects: int = 0
    reconnects_refused: int = 0
    unexpected_closes: int = 0
    failed_joins: int = 0
    frames: int = 0

    def add(self, other: Tally) -> None:
        """Count another stretch of play into this one."""
        self.games |= other.games
        for name in ("sessions", "reconnects", "reconnects_refused", "unexpected_closes", "failed_joins", "frames"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


async def press_keys_until(player: Participant, deadline: float, rng: random.Random) -> bool:
    """Play until ``deadline``; False if the server closed the connection first."""
    while time.monotonic() < deadline:
        if player.closed.is_set():
            return False
        await asyncio.sleep(rng.uniform(0.1, 0.5))
        held = [key for key in KEYS if rng.random() < 0.3]
        try:
            await player.press(held)
        except Exception:
            return False
    return True


async def await_frames(player: Participant, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not player.timings and not player.closed.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return bool(player.timings)


async def participant(url: str, env_id: str, until: float, args: argparse.Namespace, rng: random.Random, tally: Tally) -> None:
    """Sessions one after another until ``until``, each with drops and reconnects."""
    while time.monotonic() < until:
        try:
            session = await asyncio.to_thread(http_json, f"{url}/api/sessions", {"env_id": env_id})
            player = await Participant.connect(url, session, decode=False)
        except Exception:
            tally.failed_joins += 1
            await asyncio.sleep(1.0)
            continue
        tally.sessions += 1
        tally.games.add(session["game_id"])
        while True:
            next_drop = min(until, time.monotonic() + rng.expovariate(1.0 / args.drop_every))
            if not await press_keys_until(player, next_drop, rng):
                tally.unexpected_closes += 1
                tally.frames += len(player.timings)
                break
            tally.frames += len(player.timings)
            if time.monotonic() >= until or rng.randrange(args.leave_every) == 0:
                await player.close()  # leaves for good (or the run is over)
                break
            player.websocket.transport.abort()  # the network drops: no close frame
            await asyncio.sleep(rng.uniform(0.2, args.grace * 0.6))
            try:
                player = await Participant.connect(url, session, decode=False)
                if not await await_frames(player):
                    raise ConnectionError("no frame after reconnecting")
                tally.reconnects += 1
            except Exception:
                tally.reconnects_refused += 1
                break


async def soak(url: str, args: argparse.Namespace, sample_memory) -> tuple[Tally, list[tuple[float, float]]]:
    envs = [env.strip() for env in args.envs.split(",") if env.strip()]
    tally, samples = Tally(), []
    started = time.monotonic()
    until = started + args.minutes * 60
    players = [
        asyncio.create_task(participant(url, envs[index % len(envs)], until, args, random.Random(args.seed * 1000 + index), tally))
        for index in range(args.sessions)
    ]
    while time.monotonic() < until:
        await asyncio.sleep(min(args.sample_every, max(0.0, until - time.monotonic())))
        samples.append((time.monotonic() - started, await asyncio.to_thread(sample_memory)))
    await asyncio.gather(*players)
    return tally, samples


def check_recordings(store_uri: str, games: set[str], timeout_s: float = 120.0) -> dict:
    """Every game left episodes, each ended with all its chunks, each replays exactly."""
    from crowdplay.data import Dataset, replay_check

    data = Dataset.open(store_uri)
    try:
        deadline = time.monotonic() + timeout_s
        while True:  # the last episodes end after their grace period and their chunks follow
            episodes = [doc for doc in data.episodes() if doc["game_id"] in games]
            unfinished = [doc for doc in episodes if "status" not in doc]
            if not unfinished or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        incomplete = [doc["_id"] for doc in episodes if "status" not in doc or len(list(data.chunks(doc["_id"]))) != doc.get("chunks")]
        checked_at = time.monotonic()
        failures = [doc["_id"] for doc in episodes if not replay_check(data, doc["_id"]).ok]
        return {
            "episodes": len(episodes),
            "episode_statuses": dict(sorted(Counter(doc.get("status", "none") for doc in episodes).items())),
            "steps_recorded": sum(doc.get("steps", 0) for doc in episodes),
            "games_without_episode": len(games - {doc["game_id"] for doc in episodes}),
            "episodes_incomplete": len(incomplete),
            "replay_failures": len(failures),
            "replay_seconds": round(time.monotonic() - checked_at, 1),
            "failed_episode_ids": (incomplete + failures)[:10],
        }
    finally:
        data.close()


def fit_slope_mb_per_min(series: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of (seconds, MB) samples and its standard error, both in MB a minute:
    the error says how small a rate a run this long and this noisy can tell apart from none."""
    if len(series) < 2:
        return 0.0, 0.0
    mean_t = statistics.fmean(t for t, _ in series)
    mean_mb = statistics.fmean(mb for _, mb in series)
    spread = sum((t - mean_t) ** 2 for t, _ in series)
    if not spread:
        return 0.0, 0.0
    slope = sum((t - mean_t) * (mb - mean_mb) for t, mb in series) / spread
    if len(series) < 3:
        return 60 * slope, 0.0
    residual = sum((mb - mean_mb - slope * (t - mean_t)) ** 2 for t, mb in series) / (len(series) - 2)
    return 60 * slope, 60 * math.sqrt(residual / spread)


#: Resident memory by kind, as ``/proc/<pid>/status`` counts it. ``private``: anonymous pages,
#: the process's own (heaps, stacks, Python's arenas), where a leak grows, and the one judged;
#: ``file``: pages of mapped files (code and libraries as they are first run; the kernel can drop
#: them and they are shared with every process that maps them); ``shared``: shared memory, above
#: all Ray's object store, mapped into every worker that reads or writes an object there and
#: bounded by the store's fixed size; ``rss``: the three together.
RESIDENT_KINDS = {"rss": "VmRSS", "private": "RssAnon", "file": "RssFile", "shared": "RssShmem"}
JUDGED_KIND = "private"

#: Process titles of CrowdPlay's own long-lived processes (the Serve replica's is
#: ``ray::ServeReplica:<app>:Ingress``); every other process of the tree is Ray's.
CROWDPLAY_PROCESSES = ("ray::EnvActor", "ray::EnvsManager", "ray::ServeReplica", "ray::TrajectoryWriter", "ray::PolicyActor")
#: The ones that live as long as the server; EnvActors retire as they wear out.
LONG_LIVED_PROCESSES = tuple(title for title in CROWDPLAY_PROCESSES if title != "ray::EnvActor")


def memory_trend(times: list[float], by_process: list[dict[int, tuple[str, float]]], warmup_s: float = 0.0) -> dict:
    """Growth under load, after ``warmup_s``, of the processes that lived through the whole run
    (EnvActors the warm pool starts or retires are capacity, not growth: counted apart),
    CrowdPlay's own processes and Ray's apart."""
    counted = [(t, sample) for t, sample in zip(times, by_process) if t >= warmup_s] or list(zip(times, by_process))
    lived = present_in_all([sample for _, sample in counted])
    ours = {pid for pid in lived if counted[-1][1][pid][0].startswith(CROWDPLAY_PROCESSES)}
    crowdplay = growth_of([(t, sum(sample[pid][1] for pid in ours)) for t, sample in counted])
    ray_daemons = growth_of([(t, sum(sample[pid][1] for pid in lived - ours)) for t, sample in counted])
    seen = set().union(*(set(sample) for _, sample in counted))
    env_actors = [rss for _, sample in counted for title, rss in sample.values() if title.startswith("ray::EnvActor")]
    return {
        **{f"crowdplay_{name}": value for name, value in crowdplay.items()},
        **{f"ray_{name}": value for name, value in ray_daemons.items()},
        "envactor_rss_mb_max": round(max(env_actors, default=0.0), 1),
        "processes_started": len(seen - set(counted[0][1])),
        "processes_stopped": len(seen - set(counted[-1][1])),
        "rss_growth_mb_by_process": growth_by_process(counted[0][1], counted[-1][1]),
        "rss_growth_mb_by_process_second_half": growth_by_process(counted[len(counted) // 2][1], counted[-1][1]),
    }


@dataclass
class Checkpoint:
    """Every process's idle private memory (``JUDGED_KIND``; the median of repeated samples) after
    ``minutes`` of play and ``sessions`` participant sessions; ``spread_mb``: how far CrowdPlay's
    total moved between the repeats; ``heaps``: the long-lived actors' heap censuses
    (``crowdplay.bench.heaps``) taken after the samples; ``other_kinds``: the same medians of the
    other kinds of resident memory (``RESIDENT_KINDS``), reported beside the verdict."""

    minutes: float
    sessions: int
    sample: dict[int, tuple[str, float]]
    spread_mb: float
    heaps: dict[str, dict] = field(default_factory=dict)
    other_kinds: dict[str, dict[int, tuple[str, float]]] = field(default_factory=dict)


def idle_trend(checkpoints: list[Checkpoint], day_tolerance: float) -> dict:
    """Memory flat, judged at idle checkpoints: a least-squares line through the idle private
    memory (``JUDGED_KIND``) of CrowdPlay's processes that lived through all of them (the ingress
    replicas, the manager, the writer, policy actors) against minutes of play. Flat when even the line's upper bound (slope
    plus two standard errors) would in a day grow them by under ``day_tolerance`` of their memory;
    growing when even its lower bound would grow them by more; None when the run cannot tell
    (too few checkpoints, or the band straddles the line: play longer). A process's idle memory
    settles within a band after each burst of work, so two end points cannot tell a steady rate
    from where in its band each landed; more points can. The other kinds of resident memory get
    the same line, reported (``idle_long_lived_growth_mb_per_min_by_kind``): file-backed and shared
    pages are bounded by the files and the object store they map, and are not the process's own.

    The warm pool's EnvActors are replaced as they wear out (``Settings.games_per_actor``), so
    what one keeps is bounded by its life: reported (``idle_envactor_mb``, the largest idle
    one at each checkpoint), not fitted. Ray's own daemons are reported, not judged: they are the
    platform's, and grow about as much in the first minutes of a Ray that runs nothing at all."""
    samples = [checkpoint.sample for checkpoint in checkpoints]
    lived = long_lived_in(samples)
    series = idle_series(checkpoints, memory_of(lived))
    rate, error = fit_slope_mb_per_min(series)
    line = day_tolerance * statistics.fmean(mb for _, mb in series) / (60 * 24)  # MB a minute
    flat = None
    if len(checkpoints) >= 3:
        flat = True if rate + 2 * error < line else False if rate - 2 * error > line else None
    played = checkpoints[-1].minutes - checkpoints[0].minutes
    sessions = checkpoints[-1].sessions - checkpoints[0].sessions
    titles: dict[str, set[int]] = {}
    for pid in lived:
        titles.setdefault(samples[-1][pid][0], set()).add(pid)
    ray_series = idle_series(checkpoints, ray_mb)
    kinds = set.intersection(*(set(checkpoint.other_kinds) for checkpoint in checkpoints))
    by_kind = {JUDGED_KIND: series, **{kind: idle_series(checkpoints, memory_of(lived), kind) for kind in sorted(kinds)}}
    return {
        "memory_flat": flat,
        "idle_memory_judged": JUDGED_KIND,
        "idle_checkpoints": len(checkpoints),
        "idle_long_lived_mb": [[round(t / 60, 1), round(mb, 2)] for t, mb in series],
        "idle_long_lived_growth_mb_per_min": round(rate, 4),
        "idle_long_lived_growth_mb_per_min_error": round(error, 4),
        "idle_flat_line_mb_per_min": round(line, 4),
        "idle_long_lived_growth_kb_per_session": round(1024 * rate * played / sessions, 2) if sessions else 0.0,
        "idle_growth_mb_per_min_by_process": {title: round(fit_slope_mb_per_min(idle_series(checkpoints, memory_of(pids)))[0], 4) for title, pids in sorted(titles.items())},
        "idle_long_lived_mb_by_kind": {kind: [round(kind_series[0][1], 2), round(kind_series[-1][1], 2)] for kind, kind_series in by_kind.items()},
        "idle_long_lived_growth_mb_per_min_by_kind": {kind: [round(value, 4) for value in fit_slope_mb_per_min(kind_series)] for kind, kind_series in by_kind.items()},
        "idle_envactor_mb": [round(max((rss for title, rss in sample.values() if title.startswith("ray::EnvActor")), default=0.0), 1) for sample in samples],
        "idle_crowdplay_spread_mb": round(max(checkpoint.spread_mb for checkpoint in checkpoints), 2),
        "idle_ray_growth_mb_per_min": round(fit_slope_mb_per_min(ray_series)[0], 4),
        "idle_heap_kb": heap_series(checkpoints),
        "idle_heap_growth": heap_growth(checkpoints[0].heaps, checkpoints[-1].heaps),
        "idle_ray_mb": round(ray_series[0][1], 1),
    }


def heap_series(checkpoints: list[Checkpoint]) -> dict[str, dict[str, list[int]]]:
    """Per long-lived actor censused at every checkpoint, its Python blocks, C heap in use,
    anonymous resident memory, glibc's arenas' address space and the resident part of it (KB)."""
    names = set.intersection(*(set(checkpoint.heaps) for checkpoint in checkpoints)) if checkpoints else set()
    return {name: {**{key: [checkpoint.heaps[name][key] for checkpoint in checkpoints] for key in ("python_blocks", "malloc_in_use_kb", "rss_anon_kb")},
                   "malloc_heaps_kb": [sum(checkpoint.heaps[name]["malloc_heaps_kb"].values()) for checkpoint in checkpoints],
                   "rss_anon_heaps_kb": [sum(checkpoint.heaps[name]["rss_anon_by_region_kb"][region] for region in ARENA_REGIONS) for checkpoint in checkpoints]}
            for name in sorted(names)}


def warmup_growth(before: Checkpoint, after: Checkpoint) -> dict:
    """What the warm-up grew, idle to idle: the long-lived processes, Ray's, and the long-lived
    actors' heaps by kind (caches and heaps reaching their working size)."""
    lived = long_lived_in([before.sample, after.sample])
    return {
        "idle_long_lived_warmup_growth_mb": round(memory_of(lived)(after.sample) - memory_of(lived)(before.sample), 2),
        "idle_ray_warmup_growth_mb": round(ray_mb(after.sample) - ray_mb(before.sample), 2),
        "warmup_heap_growth": heap_growth(before.heaps, after.heaps),
    }


def idle_series(checkpoints: list[Checkpoint], measure: Callable[[dict[int, tuple[str, float]]], float], kind: str = JUDGED_KIND) -> list[tuple[float, float]]:
    """(seconds of play, MB that ``measure`` finds in the sample of ``kind``) at each checkpoint."""
    return [(60 * checkpoint.minutes, measure(checkpoint.sample if kind == JUDGED_KIND else checkpoint.other_kinds[kind])) for checkpoint in checkpoints]


def memory_of(pids: set[int]) -> Callable[[dict[int, tuple[str, float]]], float]:
    """A measure for ``idle_series``: the memory of these processes in a sample."""
    return lambda sample: sum(sample[pid][1] for pid in pids)


def crowdplay_mb(sample: dict[int, tuple[str, float]]) -> float:
    """The memory of CrowdPlay's own processes in a sample."""
    return sum(rss for title, rss in sample.values() if title.startswith(CROWDPLAY_PROCESSES))


def ray_mb(sample: dict[int, tuple[str, float]]) -> float:
    """The memory of Ray's own processes (and the soak's) in a sample."""
    return sum(rss for title, rss in sample.values() if not title.startswith(CROWDPLAY_PROCESSES))


def idle_samples(system, quiet_s: float, timeout_s: float = 300.0, repeats: int = 5, spacing_s: float = 5.0) -> list[dict[str, dict[int, tuple[str, float]]]]:
    """Every process's memory, by kind (``resident_by_kind``), once the server is idle (no session left) and ``quiet_s`` seconds
    passed since; ``repeats`` samples ``spacing_s`` apart, as an idle process still moves a little
    (a health check, a metrics push) and a 10-minute line is a fraction of a MB. The EnvActors
    that emptied stay up (``--spare-linger``), as they would had play gone on."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not system.idle():
        time.sleep(1.0)
    time.sleep(quiet_s)
    samples = []
    for repeat in range(repeats):
        if repeat:
            time.sleep(spacing_s)
        samples.append(resident_by_kind(system.processes()))
    return samples


def idle_checkpoint(system, quiet_s: float, minutes: float, sessions: int, repeats: int = 5, spacing_s: float = 5.0) -> Checkpoint:
    """The server's idle memory after ``minutes`` of play and ``sessions`` sessions."""
    samples = idle_samples(system, quiet_s, repeats=repeats, spacing_s=spacing_s)
    medians = {kind: median_by_process([sample[kind] for sample in samples]) for kind in RESIDENT_KINDS}
    judged = medians.pop(JUDGED_KIND)
    return Checkpoint(minutes, sessions, judged, spread_mb([sample[JUDGED_KIND] for sample in samples]), census(long_lived_actors(system.settings)), medians)


def long_lived_in(samples: list[dict[int, tuple[str, float]]]) -> set[int]:
    """The long-lived CrowdPlay processes (not EnvActors) found in every one of the samples."""
    return {pid for pid in present_in_all(samples) if samples[-1][pid][0].startswith(LONG_LIVED_PROCESSES)}


def present_in_all(samples: list[dict[int, tuple[str, float]]]) -> set[int]:
    """The processes found in every one of the samples."""
    return set.intersection(*(set(sample) for sample in samples))


def median_by_process(samples: list[dict[int, tuple[str, float]]]) -> dict[int, tuple[str, float]]:
    """Per process present in every sample, its median memory: the idle sample judged."""
    lived = present_in_all(samples)
    return {pid: (samples[-1][pid][0], statistics.median(sample[pid][1] for sample in samples)) for pid in lived}


def spread_mb(samples: list[dict[int, tuple[str, float]]]) -> float:
    """How far CrowdPlay's idle memory moved between repeated samples (largest less smallest), of
    the processes present in all of them."""
    lived = present_in_all(samples)
    totals = [crowdplay_mb({pid: sample[pid] for pid in lived}) for sample in samples]
    return max(totals) - min(totals)


def growth_of(series: list[tuple[float, float]]) -> dict:
    """Memory of (seconds, MB) samples in the first minute, growth from the first minute to the
    last, and the growth rate in each half (the second half's with its standard error)."""
    first = [mb for t, mb in series if t < series[0][0] + 60]
    last = [mb for t, mb in series if t > series[-1][0] - 60]
    middle = (series[0][0] + series[-1][0]) / 2
    rate, rate_error = fit_slope_mb_per_min([(t, mb) for t, mb in series if t >= middle])
    return {
        "rss_mb": round(statistics.fmean(first), 1),
        "rss_growth_mb": round(statistics.fmean(last) - statistics.fmean(first), 1),
        "rss_growth_mb_per_min_first_half": round(fit_slope_mb_per_min([(t, mb) for t, mb in series if t < middle])[0], 3),
        "rss_growth_mb_per_min_second_half": round(rate, 3),
        "rss_growth_mb_per_min_second_half_error": round(rate_error, 3),
    }


def resident_by_kind(processes: list[psutil.Process]) -> dict[str, dict[int, tuple[str, float]]]:
    """Per kind of ``RESIDENT_KINDS``, process id -> (title such as ``ray::EnvActor``, MB)."""
    by_kind: dict[str, dict[int, tuple[str, float]]] = {kind: {} for kind in RESIDENT_KINDS}
    for process in processes:
        try:
            title = " ".join(process.cmdline()[:1]) or process.name()
            with open(f"/proc/{process.pid}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except (psutil.Error, OSError):
            continue
        for kind, name in RESIDENT_KINDS.items():
            if name in fields:  # a zombie has no memory lines
                by_kind[kind][process.pid] = (title, int(fields[name].split()[0]) / 1024)
    return by_kind


def growth_by_process(first: dict[int, tuple[str, float]], last: dict[int, tuple[str, float]], top: int = 5) -> dict[str, dict]:
    """Per process title, the memory growth of the processes alive at both samples, and how many
    processes of that title came and went between them (new processes are not growth)."""
    titles: dict[str, dict] = {}
    for pid, (title, rss) in last.items():
        entry = titles.setdefault(title, {"grew_mb": 0.0, "processes": 0, "started": 0, "stopped": 0})
        entry["processes"] += 1
        if pid in first:
            entry["grew_mb"] += rss - first[pid][1]
        else:
            entry["started"] += 1
    for pid, (title, _) in first.items():
        if pid not in last:
            titles.setdefault(title, {"grew_mb": 0.0, "processes": 0, "started": 0, "stopped": 0})["stopped"] += 1
    ranked = sorted(titles.items(), key=lambda item: -item[1]["grew_mb"])[:top]
    return {title: {**entry, "grew_mb": round(entry["grew_mb"], 1)} for title, entry in ranked}


def run(args: argparse.Namespace) -> dict:
    with serve_system(record=True, reconnect_grace_s=args.grace, spare_host_linger_s=args.spare_linger) as system:
        quiet_s = args.quiet if args.quiet is not None else system.settings.memory_release_interval_s + 5.0
        by_process: list[dict[int, tuple[str, float]]] = []

        def sample_memory() -> float:
            by_process.append(resident_by_kind(system.processes())["rss"])
            return sum(rss for _, rss in by_process[-1].values())

        def checkpoint(minutes: float, sessions: int) -> Checkpoint:
            return idle_checkpoint(system, quiet_s, minutes, sessions, args.idle_samples, args.idle_spacing)

        idle_at_start = checkpoint(0.0, 0)
        warmup = Tally()
        if args.warmup > 0:
            warmup, _ = asyncio.run(soak(system.url, argparse.Namespace(**{**vars(args), "minutes": args.warmup / 60}), lambda: 0.0))
        checkpoints = [checkpoint(0.0, 0) if args.warmup > 0 else idle_at_start]  # without a warm-up, the start is the baseline
        tally, samples, played = Tally(), [], 0.0
        while played < args.minutes - 1e-6:  # stretches of play, each followed by an idle checkpoint
            stretch = min(args.checkpoint_every, args.minutes - played) if args.checkpoint_every > 0 else args.minutes
            stretch_args = argparse.Namespace(**{**vars(args), "minutes": stretch, "seed": args.seed * 1000 + len(checkpoints)})
            played_part, samples_part = asyncio.run(soak(system.url, stretch_args, sample_memory))
            tally.add(played_part)
            samples += [(60 * played + t, mb) for t, mb in samples_part]
            played += stretch
            checkpoints.append(checkpoint(played, tally.sessions))
        recordings = check_recordings(system.settings.store_uri, tally.games | warmup.games)
        writer = system.recording()
    return {
        "benchmark": "soak",
        "sessions": args.sessions,
        "minutes": args.minutes,
        "participant_sessions": tally.sessions,
        "games": len(tally.games),
        "warmup_games": len(warmup.games),
        "warmup_sessions": warmup.sessions,
        "frames_received": tally.frames,
        "reconnects": tally.reconnects,
        "reconnects_refused": tally.reconnects_refused,
        "unexpected_closes": tally.unexpected_closes,
        "failed_joins": tally.failed_joins + warmup.failed_joins,
        **recordings,
        "chunks_written": writer.get("chunks_written"),
        "chunks_spooled": writer.get("chunks_spooled"),
        **warmup_growth(idle_at_start, checkpoints[0]),
        **idle_trend(checkpoints, args.flat_tolerance),
        **memory_trend([t for t, _ in samples], by_process),
        "rss_mb": [[round(t), round(rss, 1)] for t, rss in samples],
    }


def summarize(result: dict) -> str:
    return "\n".join([
        f"soak: {result['sessions']} participants for {result['minutes']} min: {result['participant_sessions']} sessions, "
        f"{result['games']} games, {result['frames_received']} frames",
        f"  drops: {result['reconnects']} reconnected, {result['reconnects_refused']} refused; "
        f"{result['unexpected_closes']} unexpected closes, {result['failed_joins']} failed joins",
        f"  episodes: {result['episodes']} {result['episode_statuses']}, {result['steps_recorded']} steps; "
        f"incomplete {result['episodes_incomplete']}, replay failures {result['replay_failures']}, "
        f"games without an episode {result['games_without_episode']} (replayed in {result['replay_seconds']} s)",
        f"  memory idle at {result['idle_checkpoints']} checkpoints (the warm-up grew the long-lived processes {result['idle_long_lived_warmup_growth_mb']:+} MB, "
        f"Ray's {result['idle_ray_warmup_growth_mb']:+} MB): long-lived processes [minutes, MB] {result['idle_long_lived_mb']}, "
        f"{result['idle_long_lived_growth_mb_per_min']:+} ± {result['idle_long_lived_growth_mb_per_min_error']} MB/min "
        f"(line {result['idle_flat_line_mb_per_min']}; {result['idle_long_lived_growth_kb_per_session']:+} KB a session); flat: {result['memory_flat']}; "
        f"by process {result['idle_growth_mb_per_min_by_process']} MB/min; largest idle EnvActor {result['idle_envactor_mb']} MB; "
        f"repeated idle samples moved {result['idle_crowdplay_spread_mb']} MB; Ray's {result['idle_ray_mb']} MB, {result['idle_ray_growth_mb_per_min']:+} MB/min",
        f"  judged: {result['idle_memory_judged']} memory; the long-lived processes' idle memory by kind, first and last MB {result['idle_long_lived_mb_by_kind']}, "
        f"[MB/min, error] {result['idle_long_lived_growth_mb_per_min_by_kind']}",
        f"  under load, CrowdPlay's processes alive throughout: {result['crowdplay_rss_mb']} MB, {result['crowdplay_rss_growth_mb']:+} MB "
        f"({result['crowdplay_rss_growth_mb_per_min_first_half']:+} MB/min in the first half, {result['crowdplay_rss_growth_mb_per_min_second_half']:+} "
        f"± {result['crowdplay_rss_growth_mb_per_min_second_half_error']} in the second); largest EnvActor {result['envactor_rss_mb_max']} MB; "
        f"processes started {result['processes_started']}, stopped {result['processes_stopped']}",
        f"  under load, Ray's own processes: {result['ray_rss_mb']} MB, {result['ray_rss_growth_mb']:+} MB "
        f"({result['ray_rss_growth_mb_per_min_first_half']:+} MB/min in the first half, {result['ray_rss_growth_mb_per_min_second_half']:+} "
        f"± {result['ray_rss_growth_mb_per_min_second_half_error']} in the second)",
        f"  grew most: {result['rss_growth_mb_by_process']}; in the second half: {result['rss_growth_mb_by_process_second_half']}",
    ])
