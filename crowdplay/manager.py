"""EnvsManager: the one named, detached actor that knows every game and session in the cluster.

Every ingress replica gets the same actor through ``get_or_create_manager``; Ray's
``get_if_exists`` makes creation atomic, so two replicas racing at start-up share one manager,
and participants arriving through any replica are matched together.

The actor only wires and delegates, to Ray-free parts each in its own module: ``HostPool``
(``crowdplay.hosts``: the game processes, the warm pool, placement), ``SessionTable``
(``crowdplay.session_table``: games, seats, sessions, tokens), ``Matchmaker``
(``crowdplay.matchmaking``: seating), ``Arrivals`` (``crowdplay.arrivals``: a participant's Start),
``GameControl`` (``crowdplay.game_control``: watching, ending and losing games), ``StudyService``
(``crowdplay.study_service``: assignments, scores, completion codes, the writer),
``ProblemReports`` and ``build_overview`` (the dashboard). The EnvActors are reached through
``crowdplay.env_actor_client``, the one module that calls them through Ray.

The manager is restarted by Ray if it dies. The EnvActors are named and detached, so their games
play on meanwhile (frames never pass through the manager), and the new incarnation adopts them:
games, seats, sessions and tokens are rebuilt from what each EnvActor reports (``_adopt``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray
from ray.actor import ActorHandle

from crowdplay.admission import Admission, TooManyStarts
from crowdplay.arrivals import Arrivals
from crowdplay.assignments import ASSIGNMENTS_KEPT, BadToken, SessionLost, UnknownSession
from crowdplay.background import Background
from crowdplay.config import LONG_LIVED_RUNTIME_ENV, ON_HEAD_NODE, UNRECORDED_CALLS, Settings
from crowdplay.env_actor_client import EnvActorCalls, EnvActorLauncher, ask_env_actor, running_env_actors
from crowdplay.game_control import HOST_LOST, SERVER_UNREACHABLE, GameControl, NotAIOnly, UnknownGame
from crowdplay.hosts import HostPool, NoCapacity, PoolLimits
from crowdplay.matchmaking import Matchmaker
from crowdplay.memory import freeze_startup_objects, release_freed_memory_every
from crowdplay.note_limits import NoteLimits
from crowdplay.overview import build_overview, gather
from crowdplay.plugins import load_plugins
from crowdplay.problem_reports import ProblemReports
from crowdplay.recording.writer import WriterClient
from crowdplay.session_table import SessionTable
from crowdplay.study import current_study, defined_study
from crowdplay.study_service import RecordingUnavailable, StudyService, StudyStore, TaskClosed

__all__ = [
    "BadToken", "EnvsManager", "HOST_LOST", "NoCapacity", "NotAIOnly", "RecordingUnavailable", "SERVER_UNREACHABLE", "SessionLost", "TaskClosed",
    "TooManyStarts", "UnknownGame", "UnknownSession", "get_or_create_manager",
]

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, **UNRECORDED_CALLS)  # type: ignore[call-overload]  # Ray's remote() overloads do not cover actor options given as **kwargs
class EnvsManager:
    """The cluster's matchmaker and session authority: one actor, so that every ingress replica
    sees the same games and seats (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        load_plugins(settings)
        release_freed_memory_every(settings.memory_release_interval_s)
        self.settings = settings
        background = Background(log)
        self.table = SessionTable()
        self.launcher = EnvActorLauncher(settings)
        study = defined_study()
        if study is not None:
            self.launcher.expect(list(study.tasks))  # the warm pool's processes stock spares of its tasks
        calls = EnvActorCalls()
        limits = PoolLimits(settings.warm_pool_size, settings.concurrent_games_per_actor, settings.games_per_actor, settings.spare_host_linger_s)
        self.pool = HostPool(self.launcher, limits, background, on_added=lambda host: self.games.watch_host(host))
        self.store = StudyStore(WriterClient(settings).call)
        mark_interrupted = self.store.mark_interrupted if settings.record else None
        self.games = GameControl(self.table, self.pool, calls, background, lambda env_id: self.matchmaker.new_game(env_id), mark_interrupted)
        notes = NoteLimits(
            settings.notes_per_client_per_min, settings.notes_per_client_burst, settings.notes_per_min, settings.notes_burst, settings.notes_per_session,
        )
        self.study = StudyService(self.store, self.games.ask, lambda s: s in self.table.sessions, settings.record, ASSIGNMENTS_KEPT, background, notes)
        self.problems = ProblemReports()
        self.matchmaker = Matchmaker(self.table, self.pool, calls, self.problems, self.games.host_lost, self.games.end_if_nobody_comes)
        admission = Admission(
            settings.session_starts_per_client_per_min, settings.session_starts_per_client_burst,
            settings.session_starts_per_s, settings.session_starts_burst, settings.max_unconnected_sessions,
        )
        self.arrivals = Arrivals(self.table, self.matchmaker, self.study, admission, calls, settings.connect_timeout_s, self._task_admitted)
        self._adoption: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- adoption and start-up
    async def _adopt(self) -> None:
        """Take back the EnvActors of an earlier incarnation of this manager (once per process)."""
        if self._adoption is None:
            self._adoption = asyncio.get_running_loop().create_task(self._adopt_all())
        await asyncio.shield(self._adoption)

    async def _adopt_all(self) -> None:
        async for host, state in running_env_actors(self.settings.namespace):
            self.pool.add(host)
            for entry in self.table.adopt(host, state):
                self.study.book.open(entry.session_id, entry.game.env_id, entry.participant, {}, entry.token)

    async def ready(self) -> bool:
        """Fill the warm pool and bring the TrajectoryWriter up before the first participant."""
        await self._adopt()
        self.pool.refill()
        if self.settings.record:
            await self.store.bring_up_writer()
        await self.study.load_book()
        freeze_startup_objects()  # only the first replica's call freezes: no participant's objects exist yet
        return True

    async def warm_pool_ready(self, timeout_s: float) -> dict[str, int]:
        """``crowdplay serve`` waits for the warm pool before it says it runs: a process that cannot
        start fails the start with its reason (``HostPool.wait_for_boots``)."""
        await self._adopt()
        return await self.pool.wait_for_boots(timeout_s)

    def _task_admitted(self, env_id: str) -> None:
        """A Start for ``env_id`` was admitted: processes waiting in the warm pool build spares of
        it too when it is new among the recent games (``EnvActor.prepare``)."""
        if self.launcher.started(env_id):
            for host in self.pool.spare():
                host.actor.prepare.remote(list(self.launcher.recent_envs))

    # ----------------------------------------------------------------- participants and games
    async def create_session(self, env_id: str, participant: dict[str, Any] | None = None, client: str = "", start_id: str = "") -> dict[str, Any]:
        """Seat a participant in a game of ``env_id`` (``Arrivals.start``; ``start_id``: the
        ingress's name for this request, should its client go away before the answer)."""
        await self._adopt()
        return await self.arrivals.start(env_id, participant, client, start_id)

    async def withdraw_start(self, start_id: str) -> None:
        """The client of a session request went away before its answer: it is not fulfilled
        (``Arrivals.withdraw``)."""
        await self.arrivals.withdraw(start_id)

    async def attach(self, session_id: str, token: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """A participant's websocket arrives: (agent, hello info, frame channel) (``SessionTable.connect``);
        the first one makes them one of the study's participants (``AssignmentBook.connected``)."""
        await self._adopt()
        attached = self.table.connect(session_id, token)
        if attached[0]:  # a participant, not a watcher; counted once (``connected`` notes when)
            self.study.book.connected(session_id)
        return attached

    async def game_event(self, game_id: str, event: dict[str, Any]) -> None:
        """What a game's lineup decided (sent by its EnvActor); departed participants' final
        statistics go to their assignments."""
        await self._adopt()
        await self.study.final_statistics(self.games.event(game_id, event))

    async def channel_stalled(self, session_id: str) -> None:
        """An ingress heard nothing from this session's game server within ``channel_stall_s``:
        the game is lost and its node takes no new game until it answers (``GameControl.channel_stalled``)."""
        await self._adopt()
        self.games.channel_stalled(session_id)

    async def host_builds(self, actor_id: str, report: dict[str, Any]) -> None:
        """An EnvActor built an environment or opened a game (``SpareEnvs.report``): where its spares
        are, for placement (``HostPool.note_builds``)."""
        self.pool.note_builds(actor_id, report)

    async def policy_report(self, report: dict[str, Any]) -> None:
        """A policy's new problem or recovery, from a game process (``crowdplay.ai.health``)."""
        self.problems.policy(report)

    async def policy_reports_after(self, seq: int) -> list[dict[str, Any]]:
        """The reports newer than ``seq`` (``crowdplay serve`` prints them as they come)."""
        return self.problems.after(seq)

    async def start_ai_game(self, env_id: str) -> dict[str, Any]:
        """Start an AI-only game for the dashboard (``GameControl.start_ai_game``)."""
        await self._adopt()
        return await self.games.start_ai_game(env_id)

    async def watch_game(self, game_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(hello info, frame channel) to watch a running game read-only from the dashboard."""
        await self._adopt()
        return await self.games.watch(game_id)

    # ----------------------------------------------------------------- the study
    async def summary(self, session_id: str, token: str) -> dict[str, Any]:
        """The participant's summary (``StudyService.summary``), after adopting any games running before a restart."""
        await self._adopt()
        return await self.study.summary(session_id, token)

    async def finish(self, session_id: str, token: str) -> dict[str, Any]:
        """The participant is done (``StudyService.finish``): their seat is given up; the summary with the ranking."""
        return await self.study.finish(session_id, token)

    async def completion(self, session_id: str, token: str) -> dict[str, Any]:
        """The completion code or URL once the requirements are met (``StudyService.completion``)."""
        await self._adopt()
        return await self.study.completion(session_id, token)

    async def note(self, kind: str, text: str, page: str, session_id: str | None = None, token: str | None = None, client: str = "") -> None:
        """Store feedback or a problem report from ``client``'s address (``StudyService.note``)."""
        await self.study.note(kind, text, page, session_id, token, client)

    async def task_counts(self) -> dict[str, int]:
        """Completed assignments per task (``StudyService.task_counts``)."""
        return await self.study.task_counts()

    # ----------------------------------------------------------------- the dashboard and ending
    async def overview(self) -> dict[str, Any]:
        """Everything the researcher dashboard and /metrics show, gathered now."""
        await self._adopt()
        await self.study.load_book()
        hosts = list(self.pool.hosts)
        gathered = await gather(hosts, ask_env_actor, self.store.link if self.settings.record else None, self.problems)
        return build_overview(current_study(), self.study.book, self.table, hosts, gathered, time.time(), self.pool.builds_behind_play, self.arrivals.withdrawals.count)

    async def end_participant_session(self, session_id: str) -> dict[str, Any]:
        """The dashboard ends a participant's game (everyone in it gets ``end``)."""
        await self.games.end_of_session(self.table.entry(session_id).session_id, "the researcher ended this session")
        return {"ended": session_id}

    async def end_game_of_session(self, session_id: str, reason: str) -> None:
        """End the game this session plays in, for everyone in it (their clients get ``end``)."""
        await self.games.end_of_session(session_id, reason)

    async def end_game(self, game_id: str, reason: str) -> None:
        """End the game for everyone in it and forget it; nothing if it is unknown."""
        await self.games.end(game_id, reason)

    async def shutdown(self, reason: str = "the server is shutting down", timeout_s: float = 20.0) -> int:
        """End every game and wait for the writer (``GameControl.shutdown``); returns how many sessions were ended."""
        return await self.games.shutdown(reason, timeout_s)

    # ----------------------------------------------------------------- for operators and tests
    async def session_actor(self, session_id: str) -> ActorHandle[Any]:
        """The EnvActor hosting a session's game."""
        return self.table.entry(session_id).game.host.actor  # type: ignore[union-attr,no-any-return]

    async def list_sessions(self) -> list[dict[str, Any]]:
        """Every session with its game and seat, tokens left out (the load benchmark waits for none to remain)."""
        await self._adopt()
        return self.table.session_listing()

    async def list_games(self) -> list[dict[str, Any]]:
        """Every game with its env, node, seats and whether it takes newcomers (tests find games here)."""
        await self._adopt()
        return self.table.game_listing()

    async def warm_pool_size(self) -> int:
        """Spare hosts in the warm pool now."""
        return len(self.pool.spare())

    async def host_loads(self) -> list[int]:
        """Games per EnvActor process."""
        return self.pool.loads()

    async def host_lives(self) -> list[tuple[str, int, int]]:
        """Per EnvActor process: its actor id, the games it hosts, and the games placed on it so far."""
        return [(host.actor._actor_id.hex(), len(host.games), host.games_started) for host in self.pool.hosts]


def get_or_create_manager(settings: Settings) -> ActorHandle[Any]:
    """The cluster's EnvsManager, created on first use (atomic: safe when replicas race).

    Await ``manager.ready.remote()`` before relying on the warm pool.
    """
    return EnvsManager.options(  # type: ignore[attr-defined,no-any-return]
        name=settings.manager_name,
        namespace=settings.namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        resources=ON_HEAD_NODE,
        runtime_env=LONG_LIVED_RUNTIME_ENV,
    ).remote(settings)
