"""EnvsManager: the one named, detached actor that knows every game and session in the cluster.

Every ingress replica gets the same actor through ``get_or_create_manager``; Ray's
``get_if_exists`` makes creation atomic, so two replicas racing at start-up share one manager,
and participants arriving through any replica are matched together.

The actor wires Ray-free parts, each in its own module: ``HostPool`` (``crowdplay.hosts``: the
game processes, the warm pool, placement), ``SessionTable`` (``crowdplay.session_table``: games,
seats, sessions, tokens), ``StudyService`` (``crowdplay.study_service``: assignments, scores,
completion codes, the writer), ``ProblemReports`` and ``build_overview`` (the dashboard). What
stays here is what needs Ray: booting and watching EnvActors, asking them things, and the
order in which a join touches the parts.

The manager is restarted by Ray if it dies. The EnvActors are named and detached, so their games
play on meanwhile (frames never pass through the manager), and the new incarnation adopts them:
games, seats, sessions and tokens are rebuilt from what each EnvActor reports (``_adopt``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray.actor import ActorHandle

from crowdplay.admission import Admission, TooManyStarts
from crowdplay.assignments import ANONYMOUS, ASSIGNMENTS_KEPT, BadToken, SessionLost, UnknownSession
from crowdplay.background import Background
from crowdplay.config import LONG_LIVED_RUNTIME_ENV, ON_HEAD_NODE, UNRECORDED_CALLS, Settings
from crowdplay.env_actor import DASHBOARD_WAIT_S, UnknownHostedSession, env_actor_names, spawn_env_actor
from crowdplay.environments import get_env
from crowdplay.hosts import Host, HostPool, NoCapacity, PoolLimits
from crowdplay.lineup import SeatUnavailable
from crowdplay.matchmaking import HostDied, Matchmaker, SeatGone
from crowdplay.memory import freeze_startup_objects, release_freed_memory_every
from crowdplay.overview import build_overview, gather
from crowdplay.plugins import load_plugins
from crowdplay.problem_reports import ProblemReports
from crowdplay.recording.writer import WriterClient
from crowdplay.session_table import Game, SessionEntry, SessionTable, resume_secret
from crowdplay.study import current_study
from crowdplay.study_service import RecordingUnavailable, StudyService, StudyStore, TaskClosed
from crowdplay.vocabulary import GameEvent

__all__ = [
    "BadToken", "EnvsManager", "HOST_LOST", "NoCapacity", "NotAIOnly", "RecordingUnavailable", "SessionLost", "TaskClosed",
    "TooManyStarts", "UnknownGame", "UnknownSession", "get_or_create_manager",
]

log = logging.getLogger(__name__)

#: Seconds between stopping a session and retiring an emptied EnvActor process.
ACTOR_RETIRE_DELAY_S = 0.5
#: Warm EnvActors prepare a spare environment of each of the last this-many games started.
RECENT_ENVS = 3
#: What the participants of a game whose process died (crashed, killed, or its node left) are told.
HOST_LOST = "the game server stopped unexpectedly; please start again"


class UnknownGame(LookupError):
    """No running game has this id (it ended, or never existed)."""


class NotAIOnly(ValueError):
    """Only an environment whose every agent is played by AI can run without participants."""


class EnvActorLauncher:
    """Boots and retires EnvActor processes for the ``HostPool``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: the environments of the last games started, newest last: a new process prepares a
        #: spare environment of each, so the first game placed there starts at once
        self.recent_envs: deque[str] = deque(maxlen=RECENT_ENVS)

    def started(self, env_id: str) -> None:
        if env_id in self.recent_envs:
            self.recent_envs.remove(env_id)
        self.recent_envs.append(env_id)

    async def boot(self) -> Host:
        """A new EnvActor. When no node has room for it, it waits for the autoscaler to add one, up
        to ``Settings.placement_timeout_s`` (the joins waiting on it wait too)."""
        actor = spawn_env_actor(self.settings)
        try:
            node_id: str = await asyncio.wait_for(actor.ready.remote(), self.settings.placement_timeout_s)
        except TimeoutError:
            ray.kill(actor)
            raise NoCapacity(f"no node had room for a game server within {self.settings.placement_timeout_s:.0f} s") from None
        actor.prepare.remote(list(self.recent_envs))  # so the first game there starts at once
        return Host(actor, node_id)

    async def retire(self, host: Host) -> None:
        """Stop an emptied EnvActor once the writer has acknowledged all it recorded (while the
        writer or its store is down, the process keeps its chunks alive)."""
        await asyncio.sleep(ACTOR_RETIRE_DELAY_S)
        try:
            while not await host.actor.drain.remote():
                pass
        except ray.exceptions.RayActorError:
            return
        ray.kill(host.actor)


async def running_env_actors(namespace: str) -> AsyncIterator[tuple[Host, dict[str, Any]]]:
    """The EnvActors an earlier incarnation of the manager started, each as a host with what it
    reports of its games and sessions (one that does not answer is left alone)."""
    for name in env_actor_names(namespace):
        try:
            actor = ray.get_actor(name, namespace=namespace)
            state: dict[str, Any] = await asyncio.wait_for(actor.adopt.remote(), 30)
        except (TimeoutError, ValueError, ray.exceptions.RayActorError) as error:
            log.warning("not adopting game process %s: %s", name, type(error).__name__)
            continue
        yield Host(actor, state["node_id"], set(state["games"]), state.get("games_opened", len(state["games"]))), state


async def until_dead(host: Host) -> bool:
    """Wait until the host's EnvActor stops: True if it died, False if it stopped on purpose."""
    while True:
        try:
            await host.actor.until_stopped.remote()
            return False
        except ray.exceptions.ActorDiedError:
            return True
        except ray.exceptions.RayActorError:  # unreachable for a moment: ask again
            await asyncio.sleep(1.0)


class EnvActorCalls:
    """Matchmaking's calls to EnvActors, with Ray's errors as matchmaking's (``GameHosts``)."""

    async def open_game(self, host: Host, game_id: str, env_id: str, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            info, channel = await host.actor.open.remote(game_id, env_id, seed)
            return info, channel
        except ray.exceptions.RayActorError as error:
            raise HostDied(str(error)) from error

    async def take_seat(self, host: Host, game: Game, agent: str, session_id: str, controller: dict[str, Any], details: dict[str, Any], token: str) -> None:
        try:
            await host.actor.take_seat.remote(game.game_id, agent, session_id, controller, details, token)
        except (SeatUnavailable, UnknownHostedSession) as gone:
            raise SeatGone(str(gone)) from gone
        except ray.exceptions.RayActorError as error:
            raise HostDied(str(error)) from error


@ray.remote(num_cpus=0, **UNRECORDED_CALLS)  # type: ignore[call-overload]  # Ray's remote() overloads do not cover actor options given as **kwargs
class EnvsManager:
    """The cluster's matchmaker and session authority (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        load_plugins(settings)
        release_freed_memory_every(settings.memory_release_interval_s)
        self.settings = settings
        self.background = Background(log)
        self.table = SessionTable()
        self.launcher = EnvActorLauncher(settings)
        limits = PoolLimits(settings.warm_pool_size, settings.concurrent_games_per_actor, settings.games_per_actor, settings.spare_host_linger_s)
        self.pool = HostPool(self.launcher, limits, self.background, on_added=self._watch)
        self.store = StudyStore(WriterClient(settings).call)
        self.study = StudyService(self.store, self._ask_game, lambda s: s in self.table.sessions, settings.record, ASSIGNMENTS_KEPT, self.background)
        self.problems = ProblemReports()
        self.matchmaker = Matchmaker(self.table, self.pool, EnvActorCalls(), self.problems, self._host_lost)
        self._adoption: asyncio.Task[None] | None = None
        self.admission = Admission(
            settings.session_starts_per_client_per_min, settings.session_starts_per_client_burst,
            settings.session_starts_per_s, settings.session_starts_burst, settings.max_unconnected_sessions,
        )

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

    # ----------------------------------------------------------------- hosts dying
    def _watch(self, host: Host) -> None:
        """Notice a host's death at once (a crash, a kill, its node leaving), not at the next call;
        a host retired on purpose was taken out of the pool before its kill."""
        async def watch() -> None:
            if await until_dead(host) and host in self.pool.hosts:
                self._host_lost(host)
        self.background.start(watch(), f"watching game process on node {host.node_id}")

    def _host_lost(self, host: Host) -> None:
        """Its games end; their participants' tokens hear HOST_LOST; their episodes are marked
        interrupted in the store."""
        log.warning("game process on node %s stopped with %d game(s)", host.node_id, len(host.games))
        self.pool.forget(host)
        for game_id in list(host.games):
            if self.table.lose(game_id, HOST_LOST) is not None and self.settings.record:
                self.background.start(self.store.mark_interrupted(game_id, HOST_LOST), f"marking lost game {game_id} interrupted")
            host.games.discard(game_id)

    def _drop_game(self, game_id: str) -> None:
        game = self.table.drop(game_id)
        if game is not None and game.host is not None:
            self.pool.release(game.host, game_id)

    # ----------------------------------------------------------------- matchmaking
    async def create_session(self, env_id: str, participant: dict[str, Any] | None = None, client: str = "") -> dict[str, Any]:
        """Seat a participant in a game of ``env_id`` (a waiting game's open seat on any node, else
        a new game). Returns the session's id, token, game and agent, and with a participant id
        its resume secret. ``participant`` (all optional): ``id`` (stored only as a pseudonym),
        ``params``, ``user_agent``, ``consented_at``, ``resume`` (the secret of their session in a
        game of ``env_id``, to get that seat back from a second tab). ``client``: the requester's
        address, for ``Admission``."""
        await self._adopt()
        self.admission.admit(client, self.table.unconnected_since(time.time() - self.settings.connect_timeout_s))
        spec = get_env(await self.study.open_task(env_id))
        self.launcher.started(spec.id)
        participant = dict(participant or {})
        session_id = uuid.uuid4().hex
        raw_id, resume = participant.pop("id", None), participant.pop("resume", None)
        pseudonym = await self.study.pseudonym(raw_id) if raw_id else f"{ANONYMOUS}{session_id}"
        key = await self.study.secret_key() if raw_id else b""
        resumed = self.table.resumable(pseudonym, spec.id, key, resume) if raw_id else None
        if resumed is not None:
            return {**self._retoken(resumed), "task_id": spec.id, "resume": resume}
        details = {**participant, "participant": pseudonym, "created_at": time.time()}
        entry = await self.matchmaker.seat(spec, session_id, {"human": True, "participant": pseudonym}, details)
        assignment = self.study.book.open(session_id, spec.id, pseudonym, participant.get("params", {}), entry.token, participant.get("consented_at"))
        assignment.statistics = {"values": {}}
        self.study.save_later(assignment)
        return {**entry.answer(), "task_id": spec.id, **({"resume": resume_secret(key, session_id)} if raw_id else {})}

    def _retoken(self, entry: SessionEntry) -> dict[str, Any]:
        """A second tab takes its session back with a new token (the old tab is told it was
        replaced when this one connects)."""
        entry.token = secrets.token_urlsafe(24)
        if entry.game.host is not None:
            entry.game.host.actor.retoken.remote(entry.session_id, entry.token)
        assignment = self.study.book.assignments.get(entry.session_id)
        if assignment is not None:
            assignment.token = entry.token
            self.study.save_later(assignment)  # the new token's digest
        return entry.answer()

    async def game_event(self, game_id: str, event: dict[str, Any]) -> None:
        """What a game's lineup decided (sent by its EnvActor)."""
        await self._adopt()
        game = self.table.games.get(game_id)
        departed = self.table.apply_event(game_id, event)
        if event["event"] == GameEvent.ENDED and game is not None and game.host is not None:
            self.pool.release(game.host, game_id)
        await self.study.final_statistics(departed)

    async def policy_report(self, report: dict[str, Any]) -> None:
        """A policy's new problem or recovery, from a game process (``crowdplay.ai.health``)."""
        self.problems.policy(report)

    async def policy_reports_after(self, seq: int) -> list[dict[str, Any]]:
        """The reports newer than ``seq`` (``crowdplay serve`` prints them as they come)."""
        return self.problems.after(seq)

    # ----------------------------------------------------------------- connections
    async def attach(self, session_id: str, token: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """A participant's websocket arrives: check its token, return (agent, hello info, frame
        channel). A watcher's channel shows the game read-only, noting who watched."""
        await self._adopt()
        entry = self.table.check(session_id, token)
        entry.connected = True
        watch = {} if entry.agent else {"watch": entry.participant}
        return entry.agent, entry.game.info, {**entry.game.channel, **watch}

    async def start_ai_game(self, env_id: str) -> dict[str, Any]:
        """Start a game of an AI-only environment for the dashboard, before anyone watches it
        (it ends once nobody has watched it for its reconnect grace)."""
        await self._adopt()
        spec = get_env(env_id)
        people = spec.human_agents(spec.agents) if spec.agents is not None else []
        if not people:
            game = self.matchmaker.new_game(env_id)
            await asyncio.shield(game.opening)  # type: ignore[arg-type]
            people = list(game.seats or ())
            if not people:
                await game.host.actor.begin_unwatched.remote(game.game_id)  # type: ignore[union-attr]
                return {"game_id": game.game_id, "env_id": env_id}
            await self.end_game(game.game_id, "not an AI-only game")
        raise NotAIOnly(f"environment {env_id!r} has agents people play ({people}): only an AI-only game runs without participants")

    async def watch_game(self, game_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(hello info, frame channel) to watch a running game read-only from the dashboard."""
        await self._adopt()
        game = self.table.games.get(game_id)
        if game is None or game.opening is None:
            raise UnknownGame(f"no running game {game_id!r}")
        await asyncio.shield(game.opening)
        return game.info, {**game.channel, "watch": "dashboard"}

    async def _ask_game(self, session_id: str, method: str) -> dict[str, Any]:
        """The participant's statistics from their game's EnvActor (``statistics``, or ``finish``
        to give up their seat too); {} if they no longer play."""
        entry = self.table.sessions.get(session_id)
        if entry is None or entry.game.host is None:
            return {}
        try:
            answer: dict[str, Any] = await getattr(entry.game.host.actor, method).remote(entry.game.game_id, session_id)
            return answer
        except (ray.exceptions.RayActorError, UnknownHostedSession):
            return {}

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

    async def note(self, kind: str, text: str, page: str, session_id: str | None = None, token: str | None = None) -> None:
        """Store feedback or a problem report (``StudyService.note``)."""
        await self.study.note(kind, text, page, session_id, token)

    async def task_counts(self) -> dict[str, int]:
        """Completed assignments per task (``StudyService.task_counts``)."""
        return await self.study.task_counts()

    # ----------------------------------------------------------------- the dashboard
    async def overview(self) -> dict[str, Any]:
        """Everything the researcher dashboard and /metrics show, gathered now."""
        await self._adopt()
        await self.study.load_book()
        hosts = list(self.pool.hosts)
        gathered = await gather(hosts, ask_env_actor, self.store.link if self.settings.record else None, self.problems)
        return build_overview(current_study(), self.study.book, self.table, hosts, gathered, time.time())

    async def end_participant_session(self, session_id: str) -> dict[str, Any]:
        """The dashboard ends a participant's game (everyone in it gets ``end``)."""
        await self.end_game_of_session(self.table.entry(session_id).session_id, "the researcher ended this session")
        return {"ended": session_id}

    # ----------------------------------------------------------------- ending
    async def end_game_of_session(self, session_id: str, reason: str) -> None:
        """End the game this session plays in, for everyone in it (their clients get ``end``)."""
        entry = self.table.sessions.get(session_id)
        if entry is not None:
            await self.end_game(entry.game.game_id, reason)

    async def end_game(self, game_id: str, reason: str) -> None:
        """End the game for everyone in it and forget it; nothing if it is unknown. Its EnvActor is told to
        stop it with ``reason``."""
        game = self.table.games.get(game_id)
        if game is None:
            return
        self._drop_game(game_id)
        if game.host is None:
            return
        try:
            await game.host.actor.stop.remote(game_id, reason)
        except ray.exceptions.RayActorError:
            self._host_lost(game.host)

    async def shutdown(self, reason: str = "the server is shutting down", timeout_s: float = 20.0) -> int:
        """End every game and wait until the writer has acknowledged all they recorded (a clean
        stop loses no play); returns how many sessions were ended."""
        hosts, ended = list(self.pool.hosts), len(self.table.sessions)
        await asyncio.gather(*(self.end_game(game_id, reason) for game_id in list(self.table.games)), return_exceptions=True)
        await asyncio.gather(*(host.actor.drain.remote(timeout_s) for host in hosts), return_exceptions=True)
        return ended

    # ----------------------------------------------------------------- for operators and tests
    async def session_actor(self, session_id: str) -> ActorHandle[Any]:
        """The EnvActor hosting a session's game."""
        return self.table.entry(session_id).game.host.actor  # type: ignore[union-attr,no-any-return]

    async def list_sessions(self) -> list[dict[str, Any]]:
        """Every session with its game and seat, tokens left out (the load benchmark waits for none to remain)."""
        await self._adopt()
        return [{**entry.answer(), "created_at": entry.created_at, "token": None} for entry in self.table.sessions.values()]

    async def list_games(self) -> list[dict[str, Any]]:
        """Every game with its env, node, seats and whether it takes newcomers (tests find games here)."""
        await self._adopt()
        return [
            {"game_id": g.game_id, "env_id": g.env_id, "node_id": g.host.node_id if g.host else None, "seats": dict(g.seats or {}), "joinable": g.joinable}
            for g in self.table.games.values()
        ]

    async def warm_pool_size(self) -> int:
        """Spare hosts in the warm pool now."""
        return len(self.pool.spare())

    async def host_loads(self) -> list[int]:
        """Games per EnvActor process."""
        return self.pool.loads()

    async def host_lives(self) -> list[tuple[str, int, int]]:
        """Per EnvActor process: its actor id, the games it hosts, and the games placed on it so far."""
        return [(host.actor._actor_id.hex(), len(host.games), host.games_started) for host in self.pool.hosts]


async def ask_env_actor(host: Host, method: str) -> dict[str, Any]:
    """An EnvActor's answer for the dashboard, or TimeoutError if it has none within
    ``DASHBOARD_WAIT_S`` (a busy or dying process is left out of this overview)."""
    answer: dict[str, Any] = await asyncio.wait_for(getattr(host.actor, method).remote(), DASHBOARD_WAIT_S)
    return answer


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
