"""EnvActor: the Ray actor that runs games in real time.

One EnvActor process hosts up to ``Settings.concurrent_games_per_actor`` games. A Ray actor process costs
~60 MB and its own event loop waking 60 times a second; measured on 2 cores, one process per game
spent ~0.03 cores per game on wake-ups alone, so games share a process and a tick clock
(docs/decisions/games-per-process.md). Each game has its own LiveEnv, Lineup (who plays which
agent, the waiting room, fallbacks) and frame channel; ``concurrent_games_per_actor = 1`` gives one
process per game.

A game has one or more participants, each with a session (id and token) the EnvsManager handed
out and seated here (``take_seat``). The Lineup decides when the game starts and what happens when
someone leaves, and this actor reports those decisions to the EnvsManager (``game_event``).

Actors boot empty and wait in the EnvsManager's warm pool. Building an ALE environment takes
~90 ms holding the interpreter lock, so an actor builds spares of the recent games while it runs
none (``crowdplay.spares``), a game starts on a spare at once, and no environment is built while
games play here. Frames and inputs travel over each game's
frame channel (``crowdplay.channel``); Ray carries placement, lifecycle and control. AI agents'
observations go to the shared policy actors through this process's ``PolicyClient``, one call per
policy actor per tick for all its games (``crowdplay.ai.remote``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.actor import ActorHandle

from crowdplay.ai.answers import one_line
from crowdplay.ai.remote import PolicyClient
from crowdplay.channel import ChannelServer
from crowdplay.config import FRAME_PATH_RUNTIME_ENV, UNRECORDED_CALLS, Settings
from crowdplay.controllers import Controller, Human
from crowdplay.environments import EnvironmentFailed, EnvSpec, get_env, make_adapter
from crowdplay.hosts import lived_its_life
from crowdplay.lineup import Lineup
from crowdplay.memory import freeze_startup_objects, release_freed_memory_every
from crowdplay.plugins import load_plugins
from crowdplay.realtime import Clocks, LiveEnv
from crowdplay.recording.batcher import NOTHING_SENT
from crowdplay.recording.recorder import ChunkBatcher, Recorder
from crowdplay.recording.status import INTERRUPTED
from crowdplay.recording.unacked import UnackedChunks
from crowdplay.recording.writer import WriterClient
from crowdplay.spares import Built, SpareEnvs, WouldStall
from crowdplay.timing import TIMING_EDGES_MS, process_histograms, recent_input_latencies
from crowdplay.vocabulary import GameEvent


class UnknownHostedSession(LookupError):
    """The game (or participant session) is not, or no longer, hosted by this EnvActor."""


@dataclass
class HostedGame:
    """One game hosted by this process: its Lineup (which owns the LiveEnv) and its frame channel."""

    lineup: Lineup
    channel: ChannelServer

    @property
    def live(self) -> LiveEnv:
        """The game's LiveEnv."""
        return self.lineup.live


@ray.remote(**UNRECORDED_CALLS)  # type: ignore[call-overload]  # Ray's remote() overloads do not cover actor options given as **kwargs
class EnvActor:
    """A Ray actor process hosting up to ``Settings.concurrent_games_per_actor`` games on shared tick clocks,
    seating the participants the EnvsManager sends and reporting game events back."""

    def __init__(self, settings: Settings) -> None:
        load_plugins(settings)
        self.settings = settings
        self.games: dict[str, HostedGame] = {}
        #: participant session id -> the game it plays in
        self._game_of: dict[str, str] = {}
        #: participant session id -> its game, agent, token and participant (for ``adopt``)
        self._seated: dict[str, dict[str, Any]] = {}
        self.clocks = Clocks()
        self.policies = PolicyClient(settings)
        self.policies.on_report = self._report_policy
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="env-builder")
        self._stocker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="env-stocker")
        #: the stocking thread's id, once it has run (``_hurry_stocking``)
        self._stocker_thread: int | None = None
        self.spares = SpareEnvs(
            self._build, self._build_ahead, settings.spare_envs_per_actor, running=lambda: bool(self.games) or self._opening > 0,
            playing=lambda: any(hosted.live.running for hosted in self.games.values()), on_change=self._report_builds,
        )
        #: games in ``open`` now: the process counts as running them (it stocks no spares meanwhile)
        self._opening = 0
        self.recorders: list[Recorder] = []
        self._batcher: ChunkBatcher | None = None
        self._writer = WriterClient(settings)
        self._manager: ActorHandle[Any] | None = None
        #: games opened in this process's life (the EnvsManager retires it after ``games_per_actor``)
        self.games_opened = 0

    async def ready(self) -> str:
        """Answers (with this process's node id) once the process is up; the pool waits on it
        before offering the actor. Looks up the writer now, while the actor is still in the warm
        pool, not during someone's Start."""
        if self.settings.record:
            self._chunk_batcher()
        freeze_startup_objects()  # full collections would otherwise stall every session here
        release_freed_memory_every(self.settings.memory_release_interval_s)
        return ray.get_runtime_context().get_node_id()

    async def until_stopped(self) -> None:
        """Never answers: the EnvsManager keeps one call out per process and hears of the
        process's death (a crash, a kill, its node leaving) as soon as Ray does."""
        await asyncio.Event().wait()

    async def open(
        self, game_id: str, env_id: str, seed: int, episode_fields: dict[str, Any] | None = None, behind_play: bool = False,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Load a game's environment, waiting for its players; returns its description (the
        client's ``hello``) and the frame channel's address and secret.

        ``episode_fields`` are stored with each of the game's episodes; ``behind_play``: build it
        even behind games playing here (``SpareEnvs.take``)."""
        self._opening += 1
        try:
            return await self._open(game_id, env_id, seed, episode_fields, behind_play)
        finally:
            self._opening -= 1

    async def _open(
        self, game_id: str, env_id: str, seed: int, episode_fields: dict[str, Any] | None, behind_play: bool,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        spec = get_env(env_id)
        self._hurry_stocking()
        try:
            adapter = await self.spares.take(spec, behind_play)
        except WouldStall:
            raise
        except Exception as error:  # its configuration: every retry would fail the same way
            self.games_opened += 1
            raise EnvironmentFailed(env_id, one_line(error)[:500]) from None
        self.games_opened += 1
        recorder = None
        if self.settings.record:
            controllers = {agent: Human() for agent in adapter.agents}
            fields = {"task_id": env_id, **(episode_fields or {})}
            batcher = self._chunk_batcher()
            recorder = Recorder(
                game_id, adapter.agents, batcher.deliver, self.settings.chunk_steps, controllers,
                adapter.snapshot, self.settings.snapshot_interval, fields, batcher.seal_later, batcher,
            )
            self.recorders = [r for r in self.recorders if not r.idle] + [recorder]
        try:
            live = LiveEnv(spec, seed, self.settings, self.clocks.at(spec.fps), adapter, recorder)
        except Exception as error:  # its first reset or screen (no rgb_array render): its configuration again
            raise EnvironmentFailed(env_id, one_line(error)[:500]) from None
        lineup = Lineup(live, self.settings, lambda event: self._report(game_id, event), self.policies, self._builds_under_way)
        channel = ChannelServer(lineup, secrets.token_urlsafe(24), self.settings.frame_backpressure, self.settings.channel_stall_s)
        host = ray.util.get_node_ip_address()
        port = await channel.start(host)
        self.games[game_id] = HostedGame(lineup, channel)
        return live.describe(), {"host": host, "port": port, "secret": channel.secret}

    async def take_seat(self, game_id: str, agent: str, session_id: str, controller: Controller, details: dict[str, Any], token: str = "") -> None:
        """Seat a participant's session at ``agent``; SeatUnavailable if the seat is not open. The
        session's token is kept here too, so that a restarted EnvsManager can rebuild its table."""
        self._game(game_id).lineup.take(agent, session_id, controller, details)
        self._game_of[session_id] = game_id
        self._seated[session_id] = {"game_id": game_id, "agent": agent, "token": token, "participant": controller.participant if isinstance(controller, Human) else None}

    async def retoken(self, session_id: str, token: str) -> None:
        """A participant's session got a new token (a second tab)."""
        if session_id in self._seated:
            self._seated[session_id]["token"] = token

    async def adopt(self) -> dict[str, Any]:
        """Everything a restarted EnvsManager needs to take this process back: its node, and per
        game the environment, phase, seats (the session seated at each agent, None if none), the
        agents AI plays instead of a participant, description and frame channel; and the seated sessions."""
        games: dict[str, dict[str, Any]] = {}
        for game_id, hosted in self.games.items():
            description = hosted.lineup.describe()
            games[game_id] = {
                "env_id": hosted.live.spec.id,
                "phase": description["phase"],
                "seats": {agent: seat.session_id or None for agent, seat in hosted.lineup.seats.items()},
                "ai_seats": [agent for agent, seat in hosted.lineup.seats.items() if not seat.session_id and seat.policy is not None],
                "info": hosted.live.describe(),
                "channel": {"host": hosted.channel.host, "port": hosted.channel.port, "secret": hosted.channel.secret},
            }
        seated = {session: seat for session, seat in self._seated.items() if seat["game_id"] in self.games}
        return {"node_id": ray.get_runtime_context().get_node_id(), "games": games, "sessions": seated, "games_opened": self.games_opened, "builds": self.spares.report()}

    def _report(self, game_id: str, event: dict[str, Any]) -> None:
        """Tell the EnvsManager what changed (fire and forget: it also rebuilds from ``games``)."""
        if event["event"] == GameEvent.ENDED:
            hosted = self.games.pop(game_id, None)
            if hosted is not None:
                hosted.channel.close()
            self.recorders = [r for r in self.recorders if not r.idle]  # ended games' emulators go
            self._game_of = {session: game for session, game in self._game_of.items() if game != game_id}
            self._seated = {session: seat for session, seat in self._seated.items() if seat["game_id"] != game_id}
            if not self.games and not lived_its_life(self.settings.games_per_actor, self.games_opened):
                self.spares.restock()  # emptied (and not retiring for age): build ahead again, with no game to stall
        elif event["event"] == GameEvent.SEAT_RELEASED:
            self._seated.pop(event["session_id"], None)
        manager = self._manager_handle()
        if manager is not None:
            manager.game_event.remote(game_id, event)

    def _manager_handle(self) -> ActorHandle[Any] | None:
        """The EnvsManager (None without one: an EnvActor driven directly, as in some tests)."""
        if self._manager is None:
            try:
                self._manager = ray.get_actor(self.settings.manager_name, namespace=self.settings.namespace)
            except ValueError:
                return None
        return self._manager

    def _report_policy(self, report: dict[str, Any]) -> None:
        """A policy's new problem (or recovery), for the console, dashboard and /metrics (fire and forget)."""
        manager = self._manager_handle()
        if manager is not None:
            manager.policy_report.remote(report)

    async def policy_health(self) -> dict[str, dict[str, Any]]:
        """How each policy this process's games use is doing (``crowdplay.ai.health``)."""
        return self.policies.health.snapshot()

    def _chunk_batcher(self) -> ChunkBatcher:
        """The process's one batcher, with the buffer every Recorder here keeps its unacknowledged
        chunks in: ``Settings.unacked_memory_mb`` in memory, the rest spilled to files."""
        if self._batcher is None:
            self._writer.look_up()
            limit = int(self.settings.unacked_memory_mb * 2**20) if self.settings.unacked_memory_mb > 0 else None
            unacked = UnackedChunks(limit, self.settings.unacked_spill_dir or None)
            timeout_s = self.settings.writer_call_timeout_s or None
            self._batcher = ChunkBatcher(lambda chunks: self._writer.call("write_chunks", chunks), unacked, call_timeout_s=timeout_s)
        return self._batcher

    async def drain(self, timeout_s: float = 60.0) -> bool:
        """Wait until the writer acknowledged every recorded chunk (before this process retires)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.recorders = [r for r in self.recorders if not r.idle]
            if not self.recorders:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)

    async def recording(self) -> dict[str, Any]:
        """What this process holds for the writer, for the dashboard: chunks and bytes not yet
        acknowledged, in memory and spilled to disk, the age of the oldest, and the writer calls
        unanswered (all zero in a process that records nothing)."""
        batcher = self._batcher
        stats = batcher.unacked.stats() if batcher is not None else UnackedChunks().stats()
        return {
            **stats,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "actor_id": ray.get_runtime_context().get_actor_id(),
            **(batcher.sending() if batcher is not None else NOTHING_SENT),
        }

    async def prepare(self, env_ids: list[str]) -> None:
        """Keep spares of these games (the recent ones, oldest first), built while this process
        runs no game (``SpareEnvs.stock``)."""
        self.spares.stock(env_ids)

    async def spare_count(self) -> int:
        """Spare environments built or being built here (for tests and operators)."""
        return self.spares.count()

    def _builds_under_way(self) -> Awaitable[None] | None:
        """What a game about to play waits for: the builds under way here (``Lineup.hold``), a
        spare being stocked among them hurried, and for ``BUILD_HOLD_MAX_S`` at most (a stocking
        build at the lowest priority on a saturated machine, where it may not be hurried, could
        otherwise hold the game for seconds)."""
        if not self.spares.building():
            return None
        self._hurry_stocking()
        return self._settled_within(BUILD_HOLD_MAX_S)

    async def _settled_within(self, limit_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.spares.settled(), limit_s)

    def _report_builds(self) -> None:
        """Tell the EnvsManager what this process has built and opened (fire and forget): it places
        a game here only if that builds nothing behind running games (``crowdplay.hosts``)."""
        manager = self._manager_handle()
        if manager is not None:
            manager.host_builds.remote(ray.get_runtime_context().get_actor_id(), self.spares.report())

    async def _build(self, spec: EnvSpec) -> Built:
        """An environment, built off the event loop in the one builder thread: emulators built in
        whichever pool thread was free spread over glibc's per-thread heaps, and every game that
        ended left a hole in one of them (EnvActors grew ~1 MB a minute with games coming and going)."""
        return await asyncio.get_running_loop().run_in_executor(self._builder, timed_build, spec)

    async def _build_ahead(self, spec: EnvSpec) -> Built:
        """A spare built in the stocking thread, at the lowest CPU priority (``crowdplay.spares``)."""
        return await asyncio.get_running_loop().run_in_executor(self._stocker, self._stock_one, spec)

    def _stock_one(self, spec: EnvSpec) -> Built:
        """(In the stocking thread) one spare, built on CPU nothing else wants."""
        self._stocker_thread = threading.get_native_id()
        lowest_cpu_priority()
        return timed_build(spec)

    def _hurry_stocking(self) -> None:
        """A game is opening: a spare still being built must not hold the interpreter lock at the
        lowest priority while the opening waits for it (on a busy machine that took seconds).
        Where raising a thread's priority back is not permitted, it stays as it was."""
        if self._stocker_thread is not None and self.spares.building():
            with contextlib.suppress(OSError, AttributeError):
                os.sched_setscheduler(self._stocker_thread, os.SCHED_OTHER, os.sched_param(0))

    def _game(self, key: str) -> HostedGame:
        """A hosted game by its id or by the session id of one of its participants."""
        hosted = self.games.get(key) or self.games.get(self._game_of.get(key, ""))
        if hosted is None:
            raise UnknownHostedSession(f"no game or session {key!r} is hosted here")
        return hosted

    async def input_log(self, key: str) -> list[dict[str, Any]]:
        """The inputs applied in a game (by game id or a participant's session id), for tests and debugging."""
        return self._game(key).live.input_log.as_dicts()

    async def episodes(self, key: str) -> list[dict[str, Any]]:
        """The episodes' replay records of a game (by game id or a participant's session id)."""
        return [record.as_dict() for record in self._game(key).live.episodes]

    async def game_state(self, key: str) -> dict[str, Any]:
        """Where a game stands, for tests and operators: its LiveEnv's counters and subscribers with
        its lineup's phase and seats (by game id or a participant's session id)."""
        hosted = self._game(key)
        return {**hosted.live.stats(), **hosted.lineup.describe()}

    async def list_games(self) -> dict[str, dict[str, Any]]:
        """Every hosted game with its seats (for the EnvsManager and operators)."""
        return {game_id: {"env_id": hosted.live.spec.id, **hosted.lineup.describe()} for game_id, hosted in self.games.items()}

    async def participant_statistics(self, key: str, session_id: str) -> dict[str, Any]:
        """A seated participant's task statistics so far, for their score page ({} if not seated here)."""
        return self._game(key).lineup.statistics(session_id)

    async def engagement(self) -> dict[str, dict[str, float]]:
        """Every participant seated here: their engagement so far, by session id, for the
        dashboard's session rows (``Lineup.engagement``); one answer per process per overview."""
        return {session_id: values for hosted in self.games.values() for session_id, values in hosted.lineup.engagement().items()}

    async def finish(self, key: str, session_id: str) -> dict[str, Any]:
        """The participant finished playing: give up their seat now; their final statistics."""
        return self._game(key).lineup.finish(session_id)

    async def withdraw(self, key: str, session_id: str) -> bool:
        """The session's request was given up before its answer arrived: its seat is given up now
        unless it connected after all (``Lineup.withdraw``)."""
        return self._game(key).lineup.withdraw(session_id)

    async def timing(self) -> dict[str, Any]:
        """Histogram counts of this process's latest tick intervals and input apply delays (ms),
        on the fixed edges of ``TIMING_EDGES_MS``, for the dashboard; and under ``since_start``
        this process's cumulative histograms (``crowdplay.timing.process_histograms``) for ``/metrics``."""
        intervals = [interval * 1000 for clock in self.clocks.all() for interval in clock.intervals]
        delays = recent_input_latencies()  # also of games that have ended since
        latest = {name: np.histogram(samples, bins=TIMING_EDGES_MS[name])[0].tolist() for name, samples in (("frame_interval_ms", intervals), ("input_latency_ms", delays))}
        context = ray.get_runtime_context()
        return {**latest, "since_start": {"actor": context.get_actor_id(), "node": context.get_node_id(), **process_histograms()}}

    async def begin_unwatched(self, game_id: str) -> None:
        """Start an AI-only game nobody watches yet (``Lineup.begin_unwatched``)."""
        self._game(game_id).lineup.begin_unwatched()

    async def stop(self, key: str, reason: str, status: str = INTERRUPTED) -> None:
        """End one game: its participants get ``end``; the episode under way is stored with
        ``status``; its channel stops accepting connections."""
        try:
            hosted = self._game(key)
        except UnknownHostedSession:
            return
        hosted.lineup.end(reason, status)
        hosted.channel.close()


#: The longest a game waits to begin for the builds under way in its process (``Lineup.hold``).
BUILD_HOLD_MAX_S = 0.5


def timed_build(spec: EnvSpec) -> Built:
    """``make_adapter(spec)`` and the CPU seconds the calling thread spent on it."""
    started = time.thread_time()
    adapter = make_adapter(spec)
    return Built(adapter, time.thread_time() - started)


def lowest_cpu_priority() -> None:
    """The calling thread runs only on CPU no other thread wants (Linux's ``SCHED_IDLE``; else
    nice 19), the rest of the process as it was: a per-thread setting on Linux, and lowering one's
    own priority needs no privilege. Where neither works, the thread runs as is."""
    thread = threading.get_native_id()
    try:
        os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, thread, 19)


#: The dashboard asks every EnvActor for its timing and recording figures and leaves out a process
#: that has not answered within this (a busy or dying one must not hold up the overview).
DASHBOARD_WAIT_S = 1.0


def merge_timings(timings: list[dict[str, Any]]) -> dict[str, Any]:
    """Several processes' ``EnvActor.timing`` summed, with edges and estimated p50/p99 (bucket upper
    edges); each process's cumulative histogram listed under ``processes`` (Prometheus sums
    per-process series itself, and a process that retires must not look like a counter reset)."""
    merged: dict[str, Any] = {}
    for name, edges in TIMING_EDGES_MS.items():
        counts = np.sum([timing[name] for timing in timings if name in timing], axis=0) if timings else np.zeros(len(edges) - 1)
        counts = np.asarray(counts, dtype=np.int64)
        total = int(counts.sum())
        cumulative = np.cumsum(counts)
        shown_edges = [*edges[:-1], edges[-2] * 2]  # the open-ended last bucket, drawn twice as wide
        processes = [{"actor": t["since_start"]["actor"], "node": t["since_start"]["node"], **t["since_start"][name]} for t in timings if "since_start" in t]
        merged[name] = {"edges": shown_edges, "counts": counts.tolist(), "p50": bucket_quantile(shown_edges, cumulative, 0.5), "p99": bucket_quantile(shown_edges, cumulative, 0.99), "samples": total, "processes": processes}
    return merged


def bucket_quantile(edges: list[float], cumulative: Any, q: float) -> float | None:
    """The upper edge of the bucket holding quantile ``q`` of a histogram given by its cumulative
    counts (None when it is empty): the dashboard's p50 and p99, an upper bound, never an interpolation."""
    total = int(cumulative[-1]) if len(cumulative) else 0
    return float(edges[int(np.searchsorted(cumulative, q * total)) + 1]) if total else None


def env_actor_resources(settings: Settings) -> dict[str, float]:
    """``Settings.env_actor_resources`` ("name=amount,...") as Ray custom resources."""
    resources = {}
    for item in filter(None, (part.strip() for part in settings.env_actor_resources.split(","))):
        name, _, amount = item.partition("=")
        try:
            resources[name.strip()] = float(amount or 1)
        except ValueError:
            raise ValueError(f"env_actor_resources: {item!r} is not name=amount") from None
    return resources


#: EnvActors are named with this prefix (and detached), so that a restarted EnvsManager finds them.
ENV_ACTOR_PREFIX = "envactor-"


def env_actor_names(namespace: str) -> list[str]:
    """The names of the EnvActors Ray knows in ``namespace`` (found by their name prefix)."""
    return [entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
            if entry.get("namespace") == namespace and entry["name"].startswith(ENV_ACTOR_PREFIX)]


def spawn_env_actor(settings: Settings) -> ActorHandle[Any]:
    """A new EnvActor reserving this deployment's CPU share (and custom resources) per hosting
    process; processes spread over the nodes that have room. Detached: the games it hosts outlive
    an EnvsManager crash, and the restarted manager adopts them by name."""
    return EnvActor.options(  # type: ignore[attr-defined,no-any-return]  # ray.remote's class decorator is typed as returning the bare class
        name=f"{ENV_ACTOR_PREFIX}{uuid.uuid4().hex}",
        namespace=settings.namespace,
        lifetime="detached",
        num_cpus=settings.env_actor_num_cpus,
        resources=env_actor_resources(settings),
        scheduling_strategy="SPREAD",
        runtime_env=FRAME_PATH_RUNTIME_ENV,
    ).remote(settings)
