"""EnvsManager: the one named, detached actor that knows every game and session in the cluster.

Every ingress replica gets the same actor through ``get_or_create_manager``; Ray's
``get_if_exists`` makes creation atomic, so two replicas racing at start-up share one manager,
and participants arriving through any replica are matched together.

Matchmaking: a newcomer takes an open seat in a waiting game of the same environment on any node,
and only if there is none is a new game created. New games go to the least-loaded node (filling a
process there before opening the next, up to ``sessions_per_actor``); booted empty EnvActors wait
in a warm pool (booting one costs ~0.6 s; Start must not wait for it). The manager keeps the
session table and checks session tokens; what happens inside a game once it is seated (the waiting
room, disconnects, fallback AI) is its Lineup's business, which reports back through
``game_event``.

The manager is restarted by Ray if it dies. The EnvActors are named and detached, so their games
play on meanwhile (frames never pass through the manager), and the new incarnation adopts them:
games, seats, sessions and tokens are rebuilt from what each EnvActor reports (``_adopt``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

import ray
from ray.actor import ActorHandle

from crowdplay.admission import Admission, TooManyStarts
from crowdplay.ai.health import merge_policy_snapshots
from crowdplay.assignments import ANONYMOUS, ASSIGNMENTS_KEPT, AssignmentBook, BadToken, SessionLost, UnknownSession
from crowdplay.config import LONG_LIVED_RUNTIME_ENV, ON_HEAD_NODE, UNRECORDED_CALLS, Settings
from crowdplay.env_actor import DASHBOARD_WAIT_S, UnknownHostedSession, env_actor_names, merge_timings, spawn_env_actor
from crowdplay.environments import EnvironmentFailed, EnvSpec, get_env, list_envs
from crowdplay.lineup import SeatUnavailable
from crowdplay.memory import freeze_startup_objects, release_freed_memory_every
from crowdplay.plugins import load_plugins
from crowdplay.recording.store import pseudonymise
from crowdplay.recording.store_link import BOOK_WAIT_S, KEY_WAIT_S, StoreLink, recording_overview
from crowdplay.recording.writer import WriterClient
from crowdplay.study import current_study

__all__ = ["BadToken", "EnvsManager", "NoCapacity", "SessionLost", "TaskClosed", "TooManyStarts", "UnknownSession", "get_or_create_manager"]


class NoCapacity(RuntimeError):
    """No node could host another EnvActor in time (the cluster is at its autoscaling limit)."""


class TaskClosed(PermissionError):
    """The task takes no new participants now (not open yet, over, or at its target)."""

#: Seconds between stopping a session and retiring an emptied EnvActor process.
ACTOR_RETIRE_DELAY_S = 0.5
#: A participant's start tries this many EnvActor processes before giving up (one may have died).
START_ATTEMPTS = 3
#: A join gives up after finding this many seats gone (games that started or ended under it).
SEAT_ATTEMPTS = 10
#: Warm EnvActors prepare a spare environment of each of the last this-many games started.
RECENT_ENVS = 3
#: What the participants of a game whose process died (crashed, killed, or its node left) are told.
HOST_LOST = "the game server stopped unexpectedly; please start again"
#: Sessions whose game was lost are remembered (to tell a reconnecting page why) up to this many.
LOST_SESSIONS_KEPT = 10_000
#: Seconds before each try to mark a lost game's episodes interrupted: chunks its process sent
#: before it died reach the store first, and a store outage is waited out.
MARK_INTERRUPTED_DELAYS_S = (1, 2, 5, 10, 30, 60, 300)


class UnknownGame(LookupError):
    """No running game has this id (it ended, or never existed)."""


class NotAIOnly(ValueError):
    """Only an environment whose every agent is played by AI can run without participants."""


class RecordingUnavailable(RuntimeError):
    """The recording store has never been reachable, so a participant id cannot be stored safely."""


#: A seat the manager no longer offers because AI plays it.
AI_SEAT = "ai"
log = logging.getLogger(__name__)
#: Policy problem reports the manager keeps, and how many of the newest the dashboard shows.
POLICY_REPORTS_KEPT = 200
POLICY_REPORTS_SHOWN = 20


@dataclass(eq=False)
class Host:
    """An EnvActor process, the node it runs on, and the games it hosts."""

    actor: ActorHandle
    node_id: str
    games: set[str] = field(default_factory=set)
    #: games placed here in the process's life (``Settings.games_per_actor`` bounds it)
    games_started: int = 0
    #: when its last game left (monotonic seconds): a spare host retires only if it stays empty
    emptied_at: float = 0.0
    #: the wait before a spare host retires, while one is pending (one per host)
    lingering: asyncio.Task | None = None


@dataclass(eq=False)
class Game:
    """One running environment and its participants' seats, as far as matchmaking needs it.

    ``seats`` maps each agent a person plays to the session seated there (None: open). It is
    None until the first game of an environment that does not declare its agents has opened."""

    game_id: str
    env_id: str
    seats: dict[str, str | None] | None
    host: Host | None = None
    info: dict = field(default_factory=dict)
    channel: dict = field(default_factory=dict)
    #: False once the game has begun (or is about to): newcomers go elsewhere
    joinable: bool = True
    #: sessions of participants who watch this (AI-only) game rather than play a seat
    watchers: set[str] = field(default_factory=set)
    opening: asyncio.Task | None = None
    created_at: float = field(default_factory=time.time)

    def open_seats(self) -> list[str]:
        return [agent for agent, session_id in (self.seats or {}).items() if session_id is None]


@dataclass
class SessionEntry:
    """One participant's place: a seat in a game, and the token that proves it is theirs."""

    session_id: str
    token: str
    game: Game
    agent: str
    participant: str
    created_at: float = field(default_factory=time.time)
    #: the participant's websocket has reached the game at least once
    connected: bool = False

    def answer(self) -> dict:
        return {
            "session_id": self.session_id,
            "token": self.token,
            "env_id": self.game.env_id,
            "game_id": self.game.game_id,
            "agent": self.agent or None,
            "watching": not self.agent,
            "participant": self.participant,
        }


def resume_secret(key: bytes, session_id: str) -> str:
    """What only the browser that started a session holds (the page keeps it): a second request
    with the same participant id gets that session's seat back only with it. Participant ids are
    not secrets (crowd platforms show them in URLs); derived from the store's key, so a restarted
    manager recognises the secrets it handed out before."""
    return hmac.new(key, b"resume:" + session_id.encode(), hashlib.sha256).hexdigest()[:32]


@ray.remote(num_cpus=0, **UNRECORDED_CALLS)
class EnvsManager:
    def __init__(self, settings: Settings) -> None:
        load_plugins(settings)
        release_freed_memory_every(settings.memory_release_interval_s)
        self.settings = settings
        self.sessions: dict[str, SessionEntry] = {}
        self.games: dict[str, Game] = {}
        self.hosts: list[Host] = []
        #: policies' problems and recoveries as game processes reported them, newest last
        self.policy_reports: deque[dict] = deque(maxlen=POLICY_REPORTS_KEPT)
        self._policy_report_seq = 0
        self._boots: set[asyncio.Task] = set()
        self._recent_envs: deque[str] = deque(maxlen=RECENT_ENVS)
        #: the agents people play, per environment, learnt from its first game where not declared
        self._human_agents: dict[str, list[str]] = {}
        self._writer = WriterClient(settings)
        #: the manager's writer calls, bounded and retried: nobody waits on a late writer
        self._store_link = StoreLink(self._writer.call)
        self._book_loading: asyncio.Task | None = None
        self._pseudonym_key: bytes | None = None
        self.book = AssignmentBook(self._store, is_playing=lambda session_id: session_id in self.sessions, kept=ASSIGNMENTS_KEPT if settings.record else None)
        self._book_loaded = False
        self._adoption: asyncio.Task | None = None
        #: session id -> (token, why its game ended without it) for games whose process died
        self._lost: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._background: set[asyncio.Task] = set()
        self.admission = Admission(
            settings.session_starts_per_client_per_min, settings.session_starts_per_client_burst,
            settings.session_starts_per_s, settings.session_starts_burst, settings.max_unconnected_sessions,
        )

    def _in_background(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _adopt(self) -> None:
        """Take back the EnvActors of an earlier incarnation of this manager (once per process):
        a crash of the manager must not end the games they host. They are named and detached, and
        each tells its node, games (seats, description, frame channel) and seated sessions."""
        if self._adoption is None:
            self._adoption = asyncio.get_running_loop().create_task(self._adopt_all())
        await asyncio.shield(self._adoption)

    async def _adopt_all(self) -> None:
        for name in env_actor_names(self.settings.namespace):
            try:
                actor = ray.get_actor(name, namespace=self.settings.namespace)
                state = await asyncio.wait_for(actor.adopt.remote(), 30)
            except (ValueError, ray.exceptions.RayActorError, asyncio.TimeoutError):
                continue  # gone meanwhile, or not answering: nothing to adopt
            host = Host(actor, state["node_id"], set(state["games"]), state.get("games_opened", len(state["games"])))
            self._add_host(host)
            for game_id, described in state["games"].items():
                seats = {agent: AI_SEAT if seat == "ai" else seat for agent, seat in described["seats"].items()}
                game = Game(game_id, described["env_id"], seats, host, described["info"], described["channel"], joinable=described["phase"] == "waiting")
                game.opening = asyncio.get_running_loop().create_future()
                game.opening.set_result(None)
                self.games[game_id] = game
            for session_id, seat in state["sessions"].items():
                game = self.games.get(seat["game_id"])
                if game is None:
                    continue
                participant = seat["participant"] or f"{ANONYMOUS}{session_id}"
                self.sessions[session_id] = SessionEntry(session_id, seat["token"], game, seat["agent"], participant)
                self.book.open(session_id, game.env_id, participant, {}, seat["token"])

    async def ready(self) -> bool:
        """Fill the warm pool and bring the TrajectoryWriter up before the first participant, so
        neither process boot lands on anyone's Start."""
        await self._adopt()
        self._refill()
        if self.settings.record:
            await self._store("stats")
        await self._load_book()
        freeze_startup_objects()  # only the first replica's call freezes: no participant's objects exist yet
        return True

    async def warm_pool_ready(self, timeout_s: float) -> dict[str, int]:
        """Wait up to ``timeout_s`` for the warm pool's EnvActors to boot and raise the first
        boot's failure: ``crowdplay serve`` calls it before it says it is running, so a process
        that cannot start (a plugin that does not import in it) fails the start with its reason,
        instead of leaving a server up whose every Start fails. Boots still waiting afterwards
        (for a node to join) are counted, not judged."""
        await self._adopt()
        self._refill()
        boots = set(self._boots)
        done, pending = await asyncio.wait(boots, timeout=timeout_s) if boots else (set(), set())
        for task in done:
            task.result()
        return {"ready": len(self._empty_hosts()), "booting": len(pending)}

    async def _store(self, method: str, *args: object) -> object:
        """A writer call for the manager, never one a participant or the dashboard waits on for
        long (``crowdplay.recording.store_link``): saves (assignments, notes) are kept, retried
        until stored and waited for only briefly; reads of assignments are bounded and overlaid
        with the saves not stored yet; the pseudonym key is bounded. ``stats`` (bringing the writer
        up at ``ready``) and ``interrupt_game`` (retried by its caller, in the background) take as
        long as they take."""
        link = self._store_link
        if method == "save_assignment":
            document = args[0]
            await link.save(("assignment", document["_id"]), method, document)
            return None
        if method == "save_note":  # an _id of its own: a retried save replaces itself
            document = {"_id": uuid.uuid4().hex, **args[0]}
            await link.save(("note", document["_id"]), method, document)
            return None
        if method == "assignments":
            query = dict(args[0] or {}) if args else {}
            held = (assignment.document() for assignment in list(self.book.assignments.values()))
            # The whole collection (the book's load) waits as long as it takes: ``_load_book``
            # bounds its own wait.
            return await link.assignments(query, held, wait_s=None if query else float("inf"))
        if method == "pseudonym_key":
            return await link.read(method, wait_s=KEY_WAIT_S)
        return await self._writer.call(method, *args)

    async def _load_book(self) -> None:
        """Completions so far, from the store, once. Loaded in the background and waited for at most
        ``BOOK_WAIT_S``: a late writer holds up neither the dashboard nor a participant (counts
        come from memory until it answers; a failed load is tried again at the next call)."""
        if self._book_loaded or not self.settings.record:
            return
        loading = self._book_loading
        if loading is None or loading.done():
            loading = self._book_loading = asyncio.get_running_loop().create_task(self._load_book_now())
        await asyncio.wait({loading}, timeout=BOOK_WAIT_S)

    async def _load_book_now(self) -> None:
        """Read the completions so far (the manager's whole wait for the writer, in the background)."""
        try:
            await self.book.load()
            self._book_loaded = True
        except Exception:  # the store is down: completions counted from now on; retried next time
            pass

    # ----------------------------------------------------------------- placement and warm pool
    def _empty_hosts(self) -> list[Host]:
        """The warm pool: hosts with no games that may still take some."""
        return [host for host in self.hosts if not host.games and not self._worn_out(host)]

    def _worn_out(self, host: Host) -> bool:
        """The host has had its life's games (``Settings.games_per_actor``): it takes no more."""
        return 0 < self.settings.games_per_actor <= host.games_started

    def _refill(self) -> None:
        missing = self.settings.warm_pool_size - len(self._empty_hosts()) - len(self._boots)
        for _ in range(max(0, missing)):
            self._start_boot()

    def _start_boot(self) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(self._boot())
        self._boots.add(task)
        task.add_done_callback(self._boots.discard)
        return task

    async def _boot(self) -> Host:
        """A new EnvActor. When no node has room for it (its CPU share and custom resources), it
        waits for the autoscaler to add one, up to ``Settings.placement_timeout_s``; the joins
        waiting on it wait too (the page says the study is starting a server)."""
        actor = spawn_env_actor(self.settings)
        try:
            node_id = await asyncio.wait_for(actor.ready.remote(), self.settings.placement_timeout_s)
        except asyncio.TimeoutError:
            ray.kill(actor)
            raise NoCapacity(f"no node had room for a game server within {self.settings.placement_timeout_s:.0f} s") from None
        actor.prepare.remote(list(self._recent_envs))  # so the first game there starts at once
        host = Host(actor, node_id)
        self._add_host(host)
        return host

    def _add_host(self, host: Host) -> None:
        """Offer a host's slots, and watch it: its death (a crash, a kill, its node leaving) is
        noticed at once, not at the next call to it, so its participants hear why and its slots
        and sessions are freed."""
        self.hosts.append(host)
        self._in_background(self._watch(host))

    async def _watch(self, host: Host) -> None:
        while True:
            try:
                await host.actor.until_stopped.remote()
                return
            except ray.exceptions.ActorDiedError:
                break
            except ray.exceptions.RayActorError:  # unreachable for a moment: ask again
                await asyncio.sleep(1.0)
        if host in self.hosts:  # a host retired on purpose was taken out before its kill
            self._forget(host)

    async def _place(self, game_id: str) -> Host:
        """A host with room on the least-loaded node (games spread over the cluster), the fullest
        such host on that node (games share processes), else the next one to boot.

        The slot is reserved with no await in between, so concurrent games never overfill a host,
        and games arriving while processes boot wait for those instead of each booting its own.
        """
        while True:
            open_hosts = [h for h in self.hosts if len(h.games) < self.settings.sessions_per_actor and not self._worn_out(h)]
            if open_hosts:
                node_load = Counter()
                for h in self.hosts:
                    node_load[h.node_id] += len(h.games)
                host = min(open_hosts, key=lambda h: (node_load[h.node_id], -len(h.games)))
                host.games.add(game_id)
                host.games_started += 1
                self._refill()
                return host
            boots = set(self._boots) or {self._start_boot()}
            done, _ = await asyncio.wait(boots, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a failed boot fails this join with its reason

    def _release(self, host: Host, game_id: str) -> None:
        """A game left its host. A worn-out host retires once empty; an emptied host beyond the warm
        pool retires once it has stayed empty for ``Settings.spare_host_linger_s``, so a burst of
        arrivals and departures reuses its processes instead of starting and stopping one each
        time (a start costs ~0.6 s of CPU, and Ray keeps ~20 KB in this process for every actor
        that came and went)."""
        host.games.discard(game_id)
        if host not in self.hosts or host.games:
            return
        host.emptied_at = time.monotonic()
        if self._worn_out(host):
            self._retire_now(host)
        elif len(self._empty_hosts()) > self.settings.warm_pool_size:
            if self.settings.spare_host_linger_s <= 0:
                self._retire_now(host)
            elif host.lingering is None or host.lingering.done():
                host.lingering = asyncio.get_running_loop().create_task(self._retire_if_still_spare(host))

    async def _retire_if_still_spare(self, host: Host) -> None:
        """Retire the host once it has been empty for the linger time since its latest game left,
        if the pool still has more empty hosts than it keeps."""
        while host in self.hosts and not host.games:
            remaining = host.emptied_at + self.settings.spare_host_linger_s - time.monotonic()
            if remaining <= 0:
                if len(self._empty_hosts()) > self.settings.warm_pool_size:
                    self._retire_now(host)
                return
            await asyncio.sleep(remaining)

    def _retire_now(self, host: Host) -> None:
        self.hosts.remove(host)
        asyncio.get_running_loop().create_task(self._retire(host))

    async def _retire(self, host: Host) -> None:
        """Stop an emptied EnvActor process once the writer has acknowledged all it recorded."""
        await asyncio.sleep(ACTOR_RETIRE_DELAY_S)
        try:
            while not await host.actor.drain.remote():
                pass  # the writer or its store is down; keep the chunks alive until it is back
        except ray.exceptions.RayActorError:
            return
        ray.kill(host.actor)

    def _forget(self, host: Host) -> None:
        """A host process died: place nothing more on it, and end the games it hosted. Their
        participants' old tokens hear HOST_LOST (the page says it and offers a new start); their
        episodes are marked interrupted in the store."""
        if host in self.hosts:
            self.hosts.remove(host)
        for game_id in list(host.games):
            game = self.games.get(game_id)
            for session_id in [s for s in ((game.seats or {}).values() if game else ()) if s and s != AI_SEAT]:
                entry = self.sessions.get(session_id)
                if entry is not None:
                    self._lost[session_id] = (entry.token, HOST_LOST)
            if game is not None and self.settings.record:
                self._in_background(self._mark_interrupted(game_id, HOST_LOST))
            self._drop_game(game_id)
            host.games.discard(game_id)
        while len(self._lost) > LOST_SESSIONS_KEPT:
            self._lost.popitem(last=False)
        self._refill()

    async def _mark_interrupted(self, game_id: str, reason: str) -> None:
        for delay in MARK_INTERRUPTED_DELAYS_S:
            await asyncio.sleep(delay)
            try:
                await self._store("interrupt_game", game_id, reason)
                return
            except Exception:  # the writer or its store is down: try again later
                continue

    # ----------------------------------------------------------------- matchmaking
    async def create_session(self, env_id: str, participant: dict | None = None, client: str = "") -> dict:
        """Seat a participant in a game of ``env_id``: a waiting game with an open seat on any
        node, else a new game. Returns the session's id, token, game and agent, and (with a
        participant id) the session's resume secret.

        ``participant`` (all optional): ``id`` (e.g. a crowd-worker id; stored only as a
        pseudonym), ``params`` (the page's URL parameters), ``user_agent``, ``consented_at``,
        ``resume``. A participant who already has a seat in a game of ``env_id`` and sends that
        session's resume secret (a second tab of the same browser) gets that seat back with a new
        token; their other tab is told it was replaced when this one connects. Without the secret
        the request gets a session of its own: knowing a participant id is not enough to take
        their seat.

        ``client``: the requester's address, for ``Admission`` (``TooManyStarts`` past a bound)."""
        await self._adopt()
        self.admission.admit(client, self._unconnected())
        study = current_study()
        await self._load_book()
        if env_id == "auto":
            task = study.choose_task(self.book.completed, time.time())
            if task is None:
                raise TaskClosed("no task takes new participants right now")
            env_id = task.id
        spec = get_env(env_id)  # raises UnknownEnvironment before any actor is touched
        if env_id in study.tasks:
            closed = study.tasks[env_id].closed_reason(self.book.completed[env_id], time.time())
            if closed is not None:
                raise TaskClosed(f"task {env_id!r}: {closed}")
        participant = dict(participant or {})
        session_id = uuid.uuid4().hex
        raw_id = participant.pop("id", None)
        resume = participant.pop("resume", None)
        pseudonym = await self._pseudonym(raw_id) if raw_id else f"{ANONYMOUS}{session_id}"
        key = await self._secret_key() if raw_id else b""
        if raw_id and isinstance(resume, str) and resume:
            seated = next(
                (
                    e for e in self.sessions.values()
                    if e.participant == pseudonym and e.game.env_id == env_id
                    and hmac.compare_digest(resume_secret(key, e.session_id).encode(), resume.encode())
                ),
                None,
            )
            if seated is not None:
                seated.token = secrets.token_urlsafe(24)
                if seated.game.host is not None:
                    seated.game.host.actor.retoken.remote(seated.session_id, seated.token)
                if seated.session_id in self.book.assignments:
                    self.book.assignments[seated.session_id].token = seated.token
                    if self.settings.record:  # the new token's digest
                        self._in_background(self._save_quietly(self.book.assignments[seated.session_id]))
                return {**seated.answer(), "task_id": env_id, "resume": resume}
        controller = {"human": True, "participant": pseudonym}
        details = {**participant, "participant": pseudonym, "created_at": time.time()}
        if env_id in self._recent_envs:
            self._recent_envs.remove(env_id)
        self._recent_envs.append(env_id)
        failures = seats_gone = 0
        while True:
            game, agent = await self._reserve(spec, session_id)
            try:
                await asyncio.shield(game.opening)
                token = secrets.token_urlsafe(24)
                if agent is None:  # an AI-only game: the participant watches it (a demonstration)
                    game.watchers.add(session_id)
                    agent = ""
                    break
                await game.host.actor.take_seat.remote(game.game_id, agent, session_id, controller, details, token)
                break
            except (SeatUnavailable, UnknownHostedSession):
                # The game began or ended while we were on our way: never seat anyone twice; try again.
                if game.seats and game.seats.get(agent) == session_id:
                    game.seats[agent] = None
                game.joinable = False
                seats_gone += 1
                if seats_gone >= SEAT_ATTEMPTS:
                    raise
            except ray.exceptions.RayActorError:
                if game.host is not None:
                    self._forget(game.host)  # the process died (crashed or killed): start elsewhere
                failures += 1
                if failures >= START_ATTEMPTS:
                    raise
        entry = SessionEntry(session_id, token, game, agent, pseudonym)
        self.sessions[session_id] = entry
        assignment = self.book.open(session_id, env_id, pseudonym, participant.get("params", {}), entry.token, participant.get("consented_at"))
        assignment.statistics = {"values": {}}
        if self.settings.record:
            self._in_background(self._save_quietly(assignment))
        answer = {**entry.answer(), "task_id": env_id}
        if raw_id:
            answer["resume"] = resume_secret(key, session_id)
        return answer

    def _unconnected(self) -> int:
        """Sessions created recently whose participant has not connected yet (their seats are
        given up after ``connect_timeout_s``; adopted sessions count as connected once that passed)."""
        since = time.time() - self.settings.connect_timeout_s
        return sum(1 for entry in self.sessions.values() if not entry.connected and entry.created_at > since)

    async def _reserve(self, spec: EnvSpec, session_id: str) -> tuple[Game, str | None]:
        """Reserve an open seat for ``session_id``: in a joinable game of ``spec``, else in a new
        one. Choosing and reserving happen with no await in between, so concurrent joins never
        take the same seat; a new game is visible to the next joiner before it has even opened.
        An AI-only environment has no seats: the session watches a new game of its own (None)."""
        while True:
            game = next((g for g in self.games.values() if g.env_id == spec.id and g.joinable and (g.seats is None or g.open_seats())), None)
            if game is None:
                humans = spec.human_agents(spec.agents) if spec.agents is not None else self._human_agents.get(spec.id)
                game = Game(uuid.uuid4().hex, spec.id, dict.fromkeys(humans) if humans else None)
                self.games[game.game_id] = game
                game.opening = asyncio.get_running_loop().create_task(self._open(game))
            if game.seats is None:  # the environment's agents are learnt when its first game opens
                await asyncio.shield(game.opening)
                if game.seats == {}:
                    return game, None
                continue
            if not game.seats:
                return game, None
            agent = game.open_seats()[0]
            game.seats[agent] = session_id
            return game, agent

    async def _open(self, game: Game) -> None:
        """Place the game on a host and load its environment there."""
        try:
            for attempt in range(START_ATTEMPTS):
                host = await self._place(game.game_id)
                game.host = host
                try:
                    game.info, game.channel = await host.actor.open.remote(game.game_id, game.env_id, secrets.randbelow(2**31))
                    break
                except EnvironmentFailed as failure:
                    self._environment_failed(failure)
                    raise
                except ray.exceptions.RayActorError:
                    host.games.discard(game.game_id)
                    self._forget(host)  # the process died: open the game elsewhere
                    if attempt == START_ATTEMPTS - 1:
                        raise
        except BaseException:
            self._drop_game(game.game_id)
            raise
        if game.seats is None:
            self._human_agents[game.env_id] = list(game.info["humans"])
            game.seats = dict.fromkeys(game.info["humans"])

    async def game_event(self, game_id: str, event: dict) -> None:
        """What a game's lineup decided (sent by its EnvActor)."""
        await self._adopt()
        game = self.games.get(game_id)
        if game is None:
            return
        if event["event"] == "closed":
            game.joinable = False
        elif event["event"] == "seat_released":
            agent, session_id = event["agent"], event["session_id"]
            if game.seats and game.seats.get(agent) == session_id:
                game.seats[agent] = None if event["reopened"] else AI_SEAT
            self.sessions.pop(session_id, None)
            await self._final_statistics({session_id: event.get("statistics", {})})
        elif event["event"] == "ended":
            self._drop_game(game_id)
            await self._final_statistics(event.get("statistics", {}))

    async def policy_report(self, report: dict) -> None:
        """A policy's new problem or recovery, from a game process (``crowdplay.ai.health``):
        logged here and kept for ``crowdplay serve``'s console and the dashboard."""
        self._policy_report_seq += 1
        report = {**report, "seq": self._policy_report_seq}
        self.policy_reports.append(report)
        log.warning("policy %r is %s%s", report["policy_id"], report["state"], f": {report['reason']}" if report.get("reason") else "")

    def _environment_failed(self, failure: EnvironmentFailed) -> None:
        """A game could not be built: logged, and reported to ``crowdplay serve``'s console once
        per environment and cause (each later join fails the same way)."""
        if any(report.get("environment") == failure.env_id and report["reason"] == failure.problem for report in self.policy_reports):
            return
        self._policy_report_seq += 1
        self.policy_reports.append({"environment": failure.env_id, "state": "failed", "reason": failure.problem, "seq": self._policy_report_seq})
        log.error("%s", failure)

    async def policy_reports_after(self, seq: int) -> list[dict]:
        """The reports newer than ``seq`` (``crowdplay serve`` prints them as they come)."""
        return [report for report in self.policy_reports if report["seq"] > seq]

    async def _final_statistics(self, by_session: dict[str, dict]) -> None:
        for session_id, statistics in by_session.items():
            assignment = self.book.assignments.get(session_id)
            if assignment is not None and statistics:
                assignment.statistics = statistics
                if assignment.finished_at is None:
                    assignment.finished_at = time.time()
                await self._save_quietly(assignment)

    async def _save_quietly(self, assignment) -> None:
        """Persist an assignment: kept by the StoreLink (``_store``) and retried until the writer
        acknowledges it, waited for only briefly (memory keeps it meanwhile); never raises."""
        try:
            await self.book.save(assignment)
        except Exception:  # the link keeps every save; nothing the caller could do about another failure
            pass

    def _drop_game(self, game_id: str) -> None:
        """Forget a game that ended, with its participants' sessions, and free its host slot."""
        game = self.games.pop(game_id, None)
        if game is None:
            return
        for session_id in [s for s in (game.seats or {}).values() if s and s != AI_SEAT] + list(game.watchers):
            entry = self.sessions.get(session_id)
            if entry is not None and entry.game is game:
                del self.sessions[session_id]
        if game.host is not None:
            self._release(game.host, game_id)

    async def _secret_key(self) -> bytes:
        """The store's secret key (pseudonyms, completion codes): fetched once through the writer,
        then kept here, so a store outage later does not stop participants from starting."""
        if self._pseudonym_key is None:
            try:
                self._pseudonym_key = await self._store("pseudonym_key")
            except Exception as error:
                raise RecordingUnavailable(f"participant ids cannot be pseudonymised yet: {error}") from error
        return self._pseudonym_key

    async def _pseudonym(self, raw_id: str) -> str:
        return pseudonymise(await self._secret_key(), str(raw_id))

    # ----------------------------------------------------------------- connections
    async def attach(self, session_id: str, token: str) -> tuple[str, dict, dict]:
        """A participant's websocket arrives: check its token, return (agent, hello info, frame
        channel). Connections and disconnections are the game's own business from here on."""
        await self._adopt()
        entry = self.sessions.get(session_id)
        if entry is None:
            lost_token, reason = self._lost.get(session_id, ("", ""))
            if lost_token and hmac.compare_digest(lost_token.encode(), str(token).encode()):
                raise SessionLost(reason)
            raise UnknownSession(f"no session {session_id!r}")
        if not hmac.compare_digest(entry.token.encode(), str(token).encode()):
            raise BadToken("the token does not match this session")
        entry.connected = True
        if not entry.agent:  # a watcher: the channel shows the game read-only, noting who watched
            return entry.agent, entry.game.info, {**entry.game.channel, "watch": entry.participant}
        return entry.agent, entry.game.info, entry.game.channel

    async def start_ai_game(self, env_id: str) -> dict:
        """Start a game of an AI-only environment for the dashboard, before anyone watches it
        (it ends once nobody has watched it for its reconnect grace)."""
        await self._adopt()
        spec = get_env(env_id)
        if spec.agents is not None and not spec.ai_only:
            raise NotAIOnly(f"environment {env_id!r} has agents people play ({spec.human_agents(spec.agents)}): only an AI-only game runs without participants")
        game = Game(uuid.uuid4().hex, env_id, None, joinable=False)
        self.games[game.game_id] = game
        game.opening = asyncio.get_running_loop().create_task(self._open(game))
        await asyncio.shield(game.opening)
        if game.seats:
            await self.end_game(game.game_id, "not an AI-only game")
            raise NotAIOnly(f"environment {env_id!r} has agents people play ({list(game.seats)}): only an AI-only game runs without participants")
        await game.host.actor.begin_unwatched.remote(game.game_id)
        return {"game_id": game.game_id, "env_id": env_id}

    async def watch_game(self, game_id: str) -> tuple[dict, dict]:
        """(hello info, frame channel) to watch a running game read-only from the dashboard."""
        await self._adopt()
        game = self.games.get(game_id)
        if game is None or game.opening is None:
            raise UnknownGame(f"no running game {game_id!r}")
        await asyncio.shield(game.opening)
        return game.info, {**game.channel, "watch": "dashboard"}

    # ----------------------------------------------------------------- the study (assignments)
    async def _fresh(self, session_id: str, token: str):
        """The session's assignment with its statistics as of now (asked from its game if it plays)."""
        await self._adopt()
        assignment = await self.book.get(session_id, token)
        statistics = await self._ask_game(session_id, "statistics")
        if statistics:
            assignment.statistics = statistics
        return assignment

    async def _ask_game(self, session_id: str, method: str) -> dict:
        """The participant's statistics from the EnvActor hosting their game (``statistics``, or
        ``finish`` to give up their seat too); {} if they no longer play."""
        entry = self.sessions.get(session_id)
        if entry is None or entry.game.host is None:
            return {}
        try:
            return await getattr(entry.game.host.actor, method).remote(entry.game.game_id, session_id)
        except (ray.exceptions.RayActorError, UnknownHostedSession):
            return {}

    async def summary(self, session_id: str, token: str) -> dict:
        """Statistics, progress, completion and (once finished) the ranking, for the page."""
        assignment = await self._fresh(session_id, token)
        task = current_study().task_for(assignment.task_id)
        summary = {
            "task_id": task.id,
            "title": task.title,
            "finished": assignment.finished_at is not None,
            "episodes": assignment.statistics.get("episodes", 0),
            "completion_kind": "url" if task.completion_url else "code" if task.completion_code else None,
            **task.summary(assignment.values),
        }
        if assignment.finished_at is not None:
            summary["ranking"] = await self.book.ranking(assignment)
        return summary

    async def finish(self, session_id: str, token: str) -> dict:
        """The participant is done playing: their seat is given up and the summary (with the
        ranking among everyone who finished the task) returned. Never waits on a late writer:
        the save follows in the background (``_save_quietly``), the ranking comes from the scores
        last read while the writer does not answer (``_store``)."""
        assignment = await self.book.get(session_id, token)
        statistics = await self._ask_game(session_id, "finish")
        if statistics:
            assignment.statistics = statistics
        if assignment.finished_at is None:
            assignment.finished_at = time.time()
        await self._save_quietly(assignment)
        return await self.summary(session_id, token)

    async def completion(self, session_id: str, token: str) -> dict:
        """The completion code or redirect URL, only once the server finds the requirements met
        (NotComplete otherwise, with the progress)."""
        assignment = await self._fresh(session_id, token)
        task = current_study().task_for(assignment.task_id)
        return await self.book.complete(assignment, task, await self._secret_key())

    async def note(self, kind: str, text: str, page: str, session_id: str | None = None, token: str | None = None) -> None:
        """Store participant feedback or a problem report (with the session, if it proves its token)."""
        document = {"kind": kind, "text": text, "page": page, "created_at": time.time(), "session_id": None, "task_id": None, "participant": None}
        if session_id is not None:
            assignment = await self.book.get(session_id, token or "")
            document.update(session_id=session_id, task_id=assignment.task_id, participant=assignment.participant)
        await self._store("save_note", document)

    async def task_counts(self) -> dict[str, int]:
        """Completed assignments per task (for the library: a task at its target is closed)."""
        await self._load_book()
        return dict(self.book.completed)

    # ----------------------------------------------------------------- the dashboard
    async def overview(self) -> dict:
        """Everything the researcher dashboard and /metrics show, gathered now."""
        await self._adopt()
        study = current_study()
        await self._load_book()
        now = time.time()
        live = Counter(entry.game.env_id for entry in self.sessions.values())
        waiting = Counter(entry.game.env_id for entry in self.sessions.values() if entry.game.joinable)
        task_ids = list(study.tasks) + sorted(set(live) - set(study.tasks))
        tasks = []
        for task_id in task_ids:
            task = study.task_for(task_id)
            completed = self.book.completed[task_id]
            tasks.append(
                {
                    "task_id": task_id, "title": task.title, "live_sessions": live[task_id], "waiting": waiting[task_id],
                    "completed": completed, "target": task.target_complete_assignments, "participants": self.book.participants(task_id),
                    "open": task.closed_reason(completed, now) is None,
                }
            )
        nodes: dict[str, dict] = {}
        for host in self.hosts:
            node = nodes.setdefault(host.node_id, {"node_id": host.node_id, "games": 0, "sessions": 0})
            node["games"] += len(host.games)
        games = []
        for game in self.games.values():
            sessions = [
                {"session_id": s, "agent": agent, "participant": self.sessions[s].participant}
                for agent, s in (game.seats or {}).items() if s and s != AI_SEAT and s in self.sessions
            ]
            if game.host is not None and game.host.node_id in nodes:
                nodes[game.host.node_id]["sessions"] += len(sessions)
            games.append(
                {
                    "game_id": game.game_id, "task_id": game.env_id, "env_id": get_env(game.env_id).base_env or game.env_id,
                    "node_id": game.host.node_id if game.host else None, "phase": "waiting" if game.joinable else "playing",
                    "seats": {agent: "open" if s is None else "ai" if s == AI_SEAT else "taken" for agent, s in (game.seats or {}).items()},
                    "sessions": sessions, "started_at": game.created_at,
                }
            )
        timings, recording, policy_health = await asyncio.gather(
            asyncio.gather(*(self._ask_host(host, "timing") for host in self.hosts), return_exceptions=True),
            self._recording_overview(now),
            asyncio.gather(*(self._ask_host(host, "policy_health") for host in self.hosts), return_exceptions=True),
        )
        policies = merge_policy_snapshots([health for health in policy_health if isinstance(health, dict)])
        histograms = merge_timings([timing for timing in timings if isinstance(timing, dict)])
        data = recording.pop("data_volume")
        completed_times = sorted(at for at, _ in self.book.completions)
        return {
            "study": study.title,
            "generated_at": now,
            "totals": {
                "live_sessions": len(self.sessions), "waiting": sum(waiting.values()), "completed": sum(self.book.completed.values()),
                "participants": self.book.participants(), "data_bytes": data.get("bytes") or 0,
                "episodes": data.get("episodes", 0),
            },
            "tasks": tasks,
            "nodes": list(nodes.values()),
            "games": games,
            "histograms": histograms,
            "completions_timeline": [[at, index + 1] for index, at in enumerate(completed_times)],
            "recording": recording,
            "policies": policies,
            "policy_reports": [report for report in self.policy_reports if "policy_id" in report][-POLICY_REPORTS_SHOWN:],
            "ai_only_envs": [spec.id for spec in list_envs() if spec.ai_only],
        }

    async def _ask_host(self, host: Host, method: str) -> dict:
        """An EnvActor's answer for the dashboard, or TimeoutError if it has none within
        ``DASHBOARD_WAIT_S`` (a busy or dying process is left out of this overview)."""
        return await asyncio.wait_for(getattr(host.actor, method).remote(), DASHBOARD_WAIT_S)

    async def _recording_overview(self, now: float) -> dict:
        """The recording path's health for the dashboard, without waiting on a late writer: the
        writer (answering, late or unavailable, and how old what it last said is), its store
        (healthy, draining or failing, the last error), its spool, the assignment saves this
        manager still holds, and each EnvActor's unacknowledged chunks (memory, disk, oldest)."""
        if not self.settings.record:
            return recording_overview(None, None, [], {}, now)
        link = self._store_link
        stats, volume, *processes = await asyncio.gather(
            link.probe("stats"), link.probe("data_volume", counts_as_late=False),
            *(self._ask_host(host, "recording") for host in self.hosts), return_exceptions=True,
        )
        processes = [process for process in processes if isinstance(process, dict)]
        return recording_overview(stats, volume, processes, link.pending(now), now)

    async def end_participant_session(self, session_id: str) -> dict:
        """The dashboard ends a participant's game (everyone in it gets ``end``)."""
        self._entry(session_id)
        await self.end_session(session_id, "the researcher ended this session")
        return {"ended": session_id}

    # ----------------------------------------------------------------- ending
    async def end_session(self, session_id: str, reason: str) -> None:
        """End the game this session plays in, for everyone in it (their clients get ``end``)."""
        entry = self.sessions.get(session_id)
        if entry is not None:
            await self.end_game(entry.game.game_id, reason)

    async def end_game(self, game_id: str, reason: str) -> None:
        game = self.games.get(game_id)
        if game is None:
            return
        self._drop_game(game_id)
        if game.host is None:
            return
        try:
            await game.host.actor.stop.remote(game_id, reason)
        except ray.exceptions.RayActorError:
            self._forget(game.host)  # the process is gone, and its games with it

    async def shutdown(self, reason: str = "the server is shutting down", timeout_s: float = 20.0) -> int:
        """End every game and wait until the writer has acknowledged all they recorded (a clean
        stop loses no play); returns how many sessions were ended."""
        hosts = list(self.hosts)
        ended = len(self.sessions)
        await asyncio.gather(*(self.end_game(game_id, reason) for game_id in list(self.games)), return_exceptions=True)
        await asyncio.gather(*(host.actor.drain.remote(timeout_s) for host in hosts), return_exceptions=True)
        return ended

    # ----------------------------------------------------------------- for operators and tests
    def _entry(self, session_id: str) -> SessionEntry:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise UnknownSession(f"no session {session_id!r}") from None

    async def session_actor(self, session_id: str) -> ActorHandle:
        """The EnvActor hosting a session's game."""
        return self._entry(session_id).game.host.actor

    async def list_sessions(self) -> list[dict]:
        await self._adopt()
        return [{**entry.answer(), "created_at": entry.created_at, "token": None} for entry in self.sessions.values()]

    async def list_games(self) -> list[dict]:
        await self._adopt()
        return [
            {
                "game_id": game.game_id,
                "env_id": game.env_id,
                "node_id": game.host.node_id if game.host else None,
                "seats": dict(game.seats or {}),
                "joinable": game.joinable,
            }
            for game in self.games.values()
        ]

    async def warm_pool_size(self) -> int:
        return len(self._empty_hosts())

    async def host_loads(self) -> list[int]:
        """Games per EnvActor process."""
        return [len(host.games) for host in self.hosts]

    async def host_lives(self) -> list[tuple[str, int, int]]:
        """Per EnvActor process: its actor id, the games it hosts, and the games placed on it so far."""
        return [(host.actor._actor_id.hex(), len(host.games), host.games_started) for host in self.hosts]


def get_or_create_manager(settings: Settings) -> ActorHandle:
    """The cluster's EnvsManager, created on first use (atomic: safe when replicas race).

    Await ``manager.ready.remote()`` before relying on the warm pool.
    """
    return EnvsManager.options(
        name=settings.manager_name,
        namespace=settings.namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        resources=ON_HEAD_NODE,
        runtime_env=LONG_LIVED_RUNTIME_ENV,
    ).remote(settings)
