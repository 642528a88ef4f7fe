"""Load benchmark: simulated participants play through the real ingress; is every frame on time?

``python -m crowdplay.bench load --sessions 40 --seconds 20 --json`` starts Ray, Serve and the app,
connects N ``crowdplay.client`` participants through the Serve ingress (each presses keys like a
player, a few changes per second, and times every frame without decoding it: a browser decodes on
its own CPU), and reports:

* ``on_time_fraction``: frames delivered within one frame period of their tick. A frame id is its
  tick's position on the session's ``t0 + n / fps`` grid, so each frame's due time is known up to
  one offset per session, taken as the best delivery seen; ``frames_dropped`` counts grid positions
  never delivered (skipped ticks and frames replaced for a slow client);
* ``key_to_frame_ms``: from sending a key change to the first frame whose step applied it
  (frames carry the last applied input's sequence number), and ``server_apply_ms``, the same
  inside the EnvActor (input received -> applied);
* ``start_to_first_frame_ms``: from the session request to the first frame, and ``start_parts_ms``
  (``start_parts``: the request and the server's placement, environment build and seat within it,
  the channel, the first frame);
* ``rss_mb_per_session`` and ``cpu_per_session`` (cores) over the server's whole process tree,
  ``cpu_by_kind_per_session`` (EnvActors, ingress replicas, HAProxy, writer, manager, Ray's own),
  and ``bytes_per_s_per_session``;
* ``floor_cpu_per_session``: what stepping the same game and encoding its frames at its frame
  rate costs, measured in this process before the server starts (``crowdplay.bench.floor``), and
  ``floor_ratio``, the server's CPU per session over it.

``--baseline`` runs the same measurement against the same app served by plain uvicorn with every
session in the web process (``crowdplay.web.local``), so the cost of the Ray path is a ratio from
one run. ``--find-max`` searches the largest N with >= 99% of frames on time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import psutil

from crowdplay.bench.floor import Floor, measure_floor
from crowdplay.bench.process_kinds import BASELINE_MODULE, kind_of
from crowdplay.client import Participant, http_json
from crowdplay.config import NO_START_GUARD_ENVIRONMENT, NO_START_LIMITS, Settings, apply_ray_environment, free_port, setting_variable

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.actor import ActorHandle

T = TypeVar("T")
ON_TIME_TARGET = 0.99
#: A participant measures its connection's round trip (a websocket ping) this often.
PING_INTERVAL_S = 1.0
KEYS = ["ArrowLeft", "ArrowRight", "Space"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options on its ``python -m crowdplay.bench load`` parser."""
    parser.add_argument("--sessions", type=session_counts, default=[20], help="concurrent participants; several (20,40,60): a trial at each")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured play time after everyone joined")
    parser.add_argument("--env", default="SpaceInvaders")
    parser.add_argument("--arrival-interval", type=float, default=0.25, help="seconds between participants' arrivals")
    parser.add_argument("--baseline", action="store_true", help="also measure plain uvicorn without Ray hops")
    parser.add_argument("--no-record", action="store_true", help="do not record play (measures what recording costs)")
    parser.add_argument("--find-max", action="store_true", help="search the largest N with >= 99%% frames on time")
    parser.add_argument("--max-n", type=int, default=160, help="upper bound for --find-max")
    parser.add_argument("--seed", type=int, default=0)
    wan = parser.add_argument_group("participants on a shaped link (a netlab of real hosts, docs/netlab.md; needs root)")
    wan.add_argument("--rtt-ms", type=float, default=None, help="the participants' link's round trip, e.g. 50")
    wan.add_argument("--jitter-ms", type=float, default=0.0)
    wan.add_argument("--loss", type=float, default=0.0, help="fraction of packets lost each way, e.g. 0.01")
    wan.add_argument("--rate-kbit", type=float, default=0.0, help="the link's rate each way (0: unlimited)")


# --------------------------------------------------------------------------- the systems under test
@dataclass
class System:
    """A running server: where to reach it, and which processes make it up."""

    url: str
    processes: Callable[[], list[psutil.Process]]
    #: each session's input log (``EnvActor.input_log``: what was applied when, with the wall-clock
    #: times of its path), by session id
    input_logs: Callable[[list[str]], dict[str, list[dict[str, Any]]]] = lambda session_ids: {}
    #: True once no session is left running (the next trial must start on an idle server)
    idle: Callable[[], bool] = lambda: True
    #: The TrajectoryWriter's counters ({} when nothing records)
    recording: Callable[[], dict[str, Any]] = lambda: {}
    settings: Settings | None = None
    #: True once every game process without a game has its spare environments built
    stocked: Callable[[], bool] = lambda: True
    #: The network namespace participants connect from (a netlab site, ``crowdplay.bench.wan``), or None
    site: str | None = None

    def run(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run the participants' coroutine where they connect from."""
        if self.site is None:
            return asyncio.run(work())
        from crowdplay.netlab.namespace import run_inside

        return run_inside(self.site, work)


def _bench_settings(record: bool, data_dir: str, **overrides: object) -> Settings:
    # Sessions end as soon as the simulated participant leaves, so trials do not overlap.
    # Recordings go to a fresh embedded store unless CROWDPLAY_STORE_URI names one.
    # The simulated participants all come from this machine: no per-address start limits.
    # Settings' fields by name, of several types: replace() refuses an unknown one.
    changes: dict[str, Any] = {"namespace": "crowdplay-bench", "reconnect_grace_s": 0.2, "record": record, **NO_START_LIMITS, **overrides}
    settings = replace(Settings.from_env(), **changes)
    if not settings.store_uri:
        settings = replace(settings, store_uri=os.path.join(data_dir, "bench.db"), spool_dir=os.path.join(data_dir, "spool"))
    return settings


@contextmanager
def serve_system(record: bool = True, **settings_overrides: object) -> Iterator[System]:
    """Ray, Serve and the app started for the benchmark (recording into a fresh embedded store unless
    ``CROWDPLAY_STORE_URI`` is set), shut down on exit."""
    import ray
    from ray import serve

    from crowdplay.env_actor import env_actor_names
    from crowdplay.manager import get_or_create_manager
    from crowdplay.recording.writer import get_or_create_writer
    from crowdplay.web.ingress import build_app

    data_dir = tempfile.mkdtemp(prefix="crowdplay-bench-")
    settings = _bench_settings(record, data_dir, **settings_overrides)
    port = free_port()
    os.environ.update(NO_START_GUARD_ENVIRONMENT)  # HAProxy's per-address guard too: one machine's participants
    apply_ray_environment()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(settings), name="crowdplay", route_prefix="/")
        manager = get_or_create_manager(settings)

        def input_logs(session_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
            logs: dict[str, list[dict[str, Any]]] = {}
            for session_id in session_ids:
                try:
                    host: ObjectRef[ActorHandle[Any]] = manager.session_actor.remote(session_id)  # an actor's methods are untyped
                    actor = ray.get(host)
                    logs[session_id] = ray.get(actor.input_log.remote(session_id))
                except Exception:  # the session ended already; its log went with it
                    continue
            return logs

        def recording() -> dict[str, Any]:
            if not record:
                return {}
            counters: ObjectRef[dict[str, Any]] = get_or_create_writer(settings).stats.remote()  # an actor's methods are untyped
            return ray.get(counters)

        def stocked() -> bool:
            actors = [ray.get_actor(name, namespace=settings.namespace) for name in env_actor_names(settings.namespace)]
            counts: list[int] = ray.get([actor.spare_count.remote() for actor in actors])
            return all(count >= settings.spare_envs_per_actor for count in counts)

        me = psutil.Process()
        yield System(
            f"http://127.0.0.1:{port}",
            lambda: me.children(recursive=True),
            input_logs,
            lambda: not ray.get(manager.list_sessions.remote()),
            recording,
            settings,
            stocked,
        )
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def baseline_system() -> Iterator[System]:
    """The in-process baseline (``crowdplay.web.local``) in a subprocess, stopped on exit."""
    port = free_port()
    # As the Serve path's: every simulated participant comes from this machine, so no start limits.
    limits = {setting_variable(name): str(value) for name, value in NO_START_LIMITS.items()}
    env = {**os.environ, "CROWDPLAY_RECONNECT_GRACE_S": "0.2", **limits}
    process = subprocess.Popen([sys.executable, "-m", BASELINE_MODULE, "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                http_json(f"{url}/api/environments", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the baseline server did not start") from None
                time.sleep(0.2)
        root = psutil.Process(process.pid)
        yield System(url, lambda: [root, *root.children(recursive=True)])
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# --------------------------------------------------------------------------- simulated participants
@dataclass
class ParticipantResult:
    """What one simulated participant measured: time to the first frame, frame rate, the frames
    received in the window, key-to-frame latencies and bytes."""

    session_id: str
    start_to_first_frame_s: float
    #: where the start's time went, in ms (``start_parts``)
    start_parts_ms: dict[str, float]
    fps: float
    frames: list[tuple[int, float]] = field(default_factory=list)  # (frame id, received at) within the window
    key_latencies_s: list[float] = field(default_factory=list)
    #: per input sequence number sent within the window: (sent, its first frame arrived), wall clock
    key_walls: dict[int, tuple[float, float]] = field(default_factory=dict)
    bytes: int = 0
    #: websocket ping round trips within the window, seconds
    rtts_s: list[float] = field(default_factory=list)


async def play(url: str, env_id: str, window: tuple[float, float], rng: random.Random, leave: asyncio.Event, joined: list[str]) -> ParticipantResult:
    """Join, press keys like a player until the window closes, and leave when told to."""
    started = time.perf_counter()
    player = await Participant.join(url, env_id, decode=False)
    joined.append(player.session["session_id"])
    try:
        while not player.timings:
            await asyncio.sleep(0.002)
        first_frame = player.timings[0].received_at - started
        wall_offset = time.time() - time.perf_counter()
        parts = start_parts(player)
        rtts: list[float] = []
        next_ping = max(time.perf_counter(), window[0]) + rng.uniform(0, PING_INTERVAL_S)
        while time.perf_counter() < window[1]:
            await asyncio.sleep(rng.uniform(0.15, 0.5))
            await player.press(rng.sample(KEYS, rng.randint(0, 2)))
            if time.perf_counter() >= next_ping:
                rtts.append(await round_trip(player))
                next_ping += PING_INTERVAL_S
        await leave.wait()
    finally:
        await player.close()
    inside = [t for t in player.timings if window[0] <= t.received_at <= window[1]]
    return ParticipantResult(
        session_id=player.session["session_id"],
        start_to_first_frame_s=first_frame,
        start_parts_ms=parts,
        fps=player.hello["fps"],
        frames=[(t.frame_id, t.received_at) for t in inside],
        key_latencies_s=[latency for sent_at, latency in player.key_latencies if window[0] <= sent_at <= window[1]],
        key_walls={seq: walls for seq, walls in player.key_walls.items() if window[0] <= walls[0] - wall_offset <= window[1]},
        bytes=sum(t.size for t in inside),
        rtts_s=rtts,
    )


async def round_trip(player: Participant) -> float:
    """One websocket ping's round trip to the ingress, seconds."""
    pong = await player.websocket.ping()
    sent = time.perf_counter()
    await asyncio.wait_for(pong, 10)
    return time.perf_counter() - sent


def start_parts(player: Participant) -> dict[str, float]:
    """Where a participant's start went, in ms: ``request`` (``POST /api/sessions`` to its answer)
    and within it the server's own parts (``placement``: a host with room; ``env_build``: its
    environment built or a spare taken; ``opening_wait``: what this join waited for both; ``seat``),
    then ``channel`` (answer to ``hello``: the websocket, the ingress attaching and connecting the
    frame channel) and ``first_frame`` (``hello`` to the first frame)."""
    first_frame = player.timings[0].received_at
    return {
        "request": 1000 * (player.answered_at - player.requested_at),
        **{part: float(ms) for part, ms in player.session.get("start_ms", {}).items()},
        "channel": 1000 * (player.hello_at - player.answered_at),
        "first_frame": 1000 * (first_frame - player.hello_at),
    }


#: The stages of a key's path, each between two wall-clock stamps: the participant's send, the
#: ingress receiving it, the EnvActor receiving it, the tick applying it, that tick handing its
#: frames to the channels, the participant receiving the first frame that shows it.
KEY_PATH_STAGES = ("to_ingress", "to_env_actor", "wait_for_tick", "tick", "to_participant")


def key_path(results: list[ParticipantResult], logs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """Percentiles (p50, p99) of each stage of the keys' paths (``KEY_PATH_STAGES``), for the
    inputs the game applied itself (one superseded within a tick has no stamps of its own). All
    processes run on this machine, so their wall clocks agree."""
    stages: dict[str, list[float]] = {stage: [] for stage in KEY_PATH_STAGES}
    for result in results:
        for entry in logs.get(result.session_id, []):
            walls = result.key_walls.get(entry["seq"])
            if walls is None or not entry["ingress_at"] or not entry["frame_sent_at"]:
                continue
            stamps = (walls[0], entry["ingress_at"], entry["arrived_at"], entry["applied_at"], entry["frame_sent_at"], walls[1])
            for stage, start, end in zip(KEY_PATH_STAGES, stamps, stamps[1:]):
                stages[stage].append(end - start)
    return {stage: _percentiles(values, 50, 99) for stage, values in stages.items()}


# --------------------------------------------------------------------------- measurement
def _percentiles(values_s: list[float], *points: int) -> dict[str, float | None]:
    if not values_s:
        return {f"p{p}": None for p in points}
    ordered = sorted(values_s)
    return {f"p{p}": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))], 2) for p in points}


def frame_lateness(frames: list[tuple[int, float]], fps: float) -> tuple[list[float], int]:
    """Each frame's delay past its due time (offset + id / fps, offset = best delivery seen), and the
    number of grid positions never delivered."""
    if not frames:
        return [], 0
    period = 1.0 / fps
    offset = min(received - frame_id * period for frame_id, received in frames)
    ids = [frame_id for frame_id, _ in frames]
    dropped = max(ids) - min(ids) + 1 - len(set(ids))
    return [received - (offset + frame_id * period) for frame_id, received in frames], dropped


@dataclass
class TreeUsage:
    """The server's process tree at one moment: resident MB, and CPU seconds by kind of process
    (``crowdplay.bench.process_kinds``)."""

    rss_mb: float = 0.0
    cpu_s_by_kind: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_s(self) -> float:
        """CPU seconds of the whole tree."""
        return sum(self.cpu_s_by_kind.values())


def _tree_usage(processes: list[psutil.Process]) -> TreeUsage:
    """Memory and CPU summed over the processes still alive, CPU by kind of process."""
    usage = TreeUsage()
    for process in processes:
        try:
            with process.oneshot():
                kind = kind_of(process)
                usage.rss_mb += process.memory_info().rss / 2**20
                times = process.cpu_times()
        except psutil.Error:
            continue
        usage.cpu_s_by_kind[kind] = usage.cpu_s_by_kind.get(kind, 0.0) + times.user + times.system
    return usage


def cpu_by_kind_per_session(before: TreeUsage, after: TreeUsage, seconds: float, sessions: int) -> dict[str, float]:
    """Cores per session each kind of process used between two readings (a process that started in
    between counts from zero; one that exited is not counted)."""
    return {
        kind: round((cpu - before.cpu_s_by_kind.get(kind, 0.0)) / seconds / sessions, 5)
        for kind, cpu in sorted(after.cpu_s_by_kind.items())
    }


async def _trial(system: System, sessions: int, seconds: float, env_id: str, arrival_s: float, seed: int) -> dict[str, Any]:
    idle = _tree_usage(system.processes())
    rng = random.Random(seed)
    warmup = 2.0
    start = time.perf_counter()
    window = (start + sessions * arrival_s + warmup, start + sessions * arrival_s + warmup + seconds)
    leave = asyncio.Event()
    joined: list[str] = []

    async def arrive(index: int) -> ParticipantResult | None:
        await asyncio.sleep(index * arrival_s)
        try:
            return await play(system.url, env_id, window, random.Random(rng.random()), leave, joined)
        except (TimeoutError, OSError, ConnectionError) as error:  # an overloaded server refuses
            print(f"  participant {index} could not play: {error!r}", file=sys.stderr, flush=True)
            return None

    tasks = [asyncio.create_task(arrive(i)) for i in range(sessions)]
    await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
    before = _tree_usage(system.processes())
    await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
    busy = _tree_usage(system.processes())
    logs = await asyncio.to_thread(system.input_logs, list(joined))
    leave.set()
    outcomes = await asyncio.gather(*tasks)
    for _ in range(120):  # the next trial starts on an idle server
        if await asyncio.to_thread(system.idle):
            break
        await asyncio.sleep(0.5)
    results = [result for result in outcomes if result is not None]
    apply_delays = [entry["apply_delay_s"] for entries in logs.values() for entry in entries]
    summary = _summarize_trial(results, apply_delays, sessions, seconds, idle.rss_mb, busy.rss_mb, busy.cpu_s - before.cpu_s)
    summary["cpu_by_kind_per_session"] = cpu_by_kind_per_session(before, busy, seconds, sessions)
    summary["key_path_ms"] = key_path(results, logs)
    summary["failed_joins"] = len(outcomes) - len(results)
    if summary["failed_joins"]:
        summary["on_time_fraction"] = round(summary["on_time_fraction"] * len(results) / len(outcomes), 4)
    return summary


def _summarize_trial(
    results: list[ParticipantResult], apply_delays: list[float], sessions: int, seconds: float, idle_rss: float, busy_rss: float, cpu_s: float
) -> dict[str, Any]:
    lateness: list[float] = []
    on_time = dropped = 0
    for result in results:
        late_by, lost = frame_lateness(result.frames, result.fps)
        lateness += late_by
        on_time += sum(1 for delay in late_by if delay <= 1.0 / result.fps)
        dropped += lost
    delivered = len(lateness)
    keys = [latency for result in results for latency in result.key_latencies_s]
    starts = [result.start_to_first_frame_s for result in results]
    return {
        "sessions": sessions,
        "seconds": seconds,
        "on_time_fraction": round(on_time / delivered, 4) if delivered else 0.0,
        "frames_delivered": delivered,
        "frames_dropped": dropped,
        "frame_lateness_ms": _percentiles(lateness, 50, 99, 100),
        "fps_per_session": round(delivered / seconds / max(1, len(results)), 2),
        "key_to_frame_ms": _percentiles(keys, 50, 90, 99),
        "rtt_ms": _percentiles([rtt for result in results for rtt in result.rtts_s], 50, 99),
        "key_samples_s": keys,
        "server_apply_ms": _percentiles(apply_delays, 50, 99),
        "start_to_first_frame_ms": _percentiles(starts, 50, 95),
        "start_parts_ms": {
            part: _percentiles([r.start_parts_ms[part] / 1000 for r in results if part in r.start_parts_ms], 50, 95)
            for part in dict.fromkeys(part for r in results for part in r.start_parts_ms)
        },
        "rss_mb_per_session": round((busy_rss - idle_rss) / sessions, 1),
        "cpu_per_session": round(cpu_s / seconds / sessions, 4),
        "bytes_per_s_per_session": round(sum(r.bytes for r in results) / seconds / sessions, 1),
    }


def find_max(system: System, args: argparse.Namespace) -> tuple[int, list[dict[str, Any]]]:
    """The largest N with >= 99% of frames on time: double until it fails, then bisect to within 5."""
    trials: list[dict[str, Any]] = []

    def ok(n: int) -> bool:
        trial = run_trial(system, n, min(args.seconds, 10.0), args)
        trials.append(trial)
        on_time: float = trial["on_time_fraction"]
        print(f"  N={n}: on time {on_time:.4f}", file=sys.stderr, flush=True)
        return on_time >= ON_TIME_TARGET

    good, bad = 0, None
    n = 15
    while n <= args.max_n and ok(n):
        good, n = n, n * 2
    bad = min(n, args.max_n + 1)
    while bad - good > 5:
        middle = (good + bad) // 2
        if ok(middle):
            good = middle
        else:
            bad = middle
    return good, trials


def run_trial(system: System, sessions: int, seconds: float, args: argparse.Namespace) -> dict[str, Any]:
    """One trial. The simulated participants keep every frame's timing; the cyclic garbage collector
    would pause them for tens of ms over that heap and make punctual frames look late, so it is off."""
    gc.collect()
    gc.disable()
    try:
        trial = system.run(lambda: _trial(system, sessions, seconds, args.env, args.arrival_interval, args.seed))
        keys: list[float] = trial.pop("key_samples_s")
        if args.rtt_ms is not None:
            trial.update(beyond_link(keys, args.rtt_ms))
        return trial
    finally:
        gc.enable()


def session_counts(text: str) -> list[int]:
    """``--sessions``: one count, or several separated by commas."""
    try:
        counts = [int(count) for count in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count or comma-separated counts") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every count must be at least 1")
    return counts


def measure(system: System, args: argparse.Namespace, floor: Floor) -> dict[str, Any]:
    """A trial at each of ``--sessions`` with the floor's ratio, and the recording's figures: the
    last count's trial at the top level and, for several, each count's under ``by_sessions``; plus
    the largest N on time when ``--find-max``."""
    warm_up(system, args.env)
    trials = {count: with_floor(run_trial(system, count, args.seconds, args), floor) for count in args.sessions}
    result = dict(trials[args.sessions[-1]])
    if len(trials) > 1:
        result["by_sessions"] = {str(count): trial for count, trial in trials.items()}
    result["recording"] = system.recording()
    if args.find_max:
        result["max_sessions"], result["find_max_trials"] = find_max(system, args)
    return result


def warm_up(system: System, env_id: str) -> None:
    """One participant plays a moment and leaves before the trials, and the game processes build
    their spares of the game: a study's server knows its tasks (``EnvsManager`` stocks them from
    the study), but this one, started without a study, learns the game from its first Start."""

    async def one() -> None:
        player = await Participant.join(system.url, env_id, decode=False)
        try:
            while not player.timings:
                await asyncio.sleep(0.01)
        finally:
            await player.close()

    system.run(one)
    deadline = time.monotonic() + 60
    while not (system.idle() and system.stocked()) and time.monotonic() < deadline:
        time.sleep(0.5)


def with_floor(result: dict[str, Any], floor: Floor) -> dict[str, Any]:
    """``result`` with the floor and ``floor_ratio``: the server's CPU per session over the floor's."""
    result.update(floor.as_dict())
    result["floor_ratio"] = round(result["cpu_per_session"] / floor.cpu_per_session, 2)
    return result


def beyond_link(keys: list[float], link_rtt_ms: float) -> dict[str, Any]:
    """Key-to-frame as the link's round trip plus the rest: ``key_beyond_rtt_ms`` is each key's
    latency less the link's round trip (what the server and the participant's TCP added; loss
    shows here as retransmissions)."""
    return {"link_rtt_ms": link_rtt_ms, "key_beyond_rtt_ms": _percentiles([key - link_rtt_ms / 1000 for key in keys], 50, 99)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the floor of the game played (before any server starts), the Serve path, and the
    baseline when ``--baseline`` (with the ratio of their maxima). With ``--rtt-ms`` the server
    is a netlab's cluster and the participants are at its site, behind the link."""
    floor = measure_floor(args.env, seed=args.seed)
    if args.rtt_ms is not None:
        from crowdplay.bench.wan import netlab_system
        from crowdplay.netlab.shape import LinkShape

        shape = LinkShape(args.rtt_ms, args.jitter_ms, args.loss, args.rate_kbit)
        with netlab_system(shape, record=not args.no_record) as system:
            result = measure(system, args, floor)
        result["link"] = shape.to_dict()
        return result
    with serve_system(record=not args.no_record) as system:
        result = measure(system, args, floor)
    if args.baseline:
        with baseline_system() as system:
            result["baseline"] = measure(system, args, floor)
        if args.find_max and result["baseline"]["max_sessions"]:
            result["serve_vs_baseline_max"] = round(result["max_sessions"] / result["baseline"]["max_sessions"], 3)
    return result


def summarize(result: dict[str, Any]) -> str:
    """One table row per path measured."""
    rows = [("serve", result)] + ([("baseline", result["baseline"])] if "baseline" in result else [])
    lines = ["path      N   on-time  dropped  key p50/p99 ms   start p95 ms  MB/sess  cpu/sess  floor x  B/s/sess"]
    for name, r in rows:
        lines.append(
            f"{name:8} {r['sessions']:3}  {r['on_time_fraction']:.4f}  {r['frames_dropped']:7}  "
            f"{r['key_to_frame_ms']['p50']}/{r['key_to_frame_ms']['p99']:<10}  {r['start_to_first_frame_ms']['p95']:<12}  "
            f"{r['rss_mb_per_session']:7}  {r['cpu_per_session']:8}  {r['floor_ratio']:7}  {r['bytes_per_s_per_session']}"
        )
    return "\n".join(lines)
