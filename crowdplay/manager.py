"""EnvsManager: the one named, detached actor that knows every session in the cluster.

Every ingress replica gets the same actor through ``get_or_create_manager``; Ray's
``get_if_exists`` makes creation atomic, so two replicas racing at start-up share one manager.
It places sessions on EnvActors (filling a process before opening the next, up to
``sessions_per_actor``), keeps booted empty EnvActors in a warm pool (booting one costs ~0.6 s;
Start must not wait for it), keeps the session table, checks session tokens, and ends sessions
nobody is connected to.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import ray
from ray.actor import ActorHandle

from crowdplay.config import Settings
from crowdplay.env_actor import spawn_env_actor
from crowdplay.environments import get_env
from crowdplay.recording.store import pseudonymise
from crowdplay.recording.writer import get_or_create_writer

#: Seconds between stopping a session and retiring an emptied EnvActor process.
ACTOR_RETIRE_DELAY_S = 0.5
#: A participant's start tries this many EnvActor processes before giving up (one may have died).
START_ATTEMPTS = 3
#: Warm EnvActors prepare a spare environment of each of the last this-many games started.
RECENT_ENVS = 3


class UnknownSession(LookupError):
    """No session with this id (never created, or already ended)."""


class RecordingUnavailable(RuntimeError):
    """The recording store has never been reachable, so a participant id cannot be stored safely."""


class BadToken(PermissionError):
    """The token does not belong to the session."""


@dataclass(eq=False)
class Host:
    """An EnvActor process and the sessions it hosts."""

    actor: ActorHandle
    sessions: set[str] = field(default_factory=set)


@dataclass
class SessionEntry:
    session_id: str
    token: str
    env_id: str
    agent: str
    host: Host
    info: dict
    channel: dict
    created_at: float = field(default_factory=time.time)
    connections: int = 0
    #: monotonic time since which nobody is connected (creation counts as a disconnect)
    idle_since: float = field(default_factory=time.monotonic)


@ray.remote(num_cpus=0)
class EnvsManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions: dict[str, SessionEntry] = {}
        self.hosts: list[Host] = []
        self._boots: set[asyncio.Task] = set()
        self._recent_envs: deque[str] = deque(maxlen=RECENT_ENVS)
        self._writer: ActorHandle | None = None
        self._pseudonym_key: bytes | None = None

    async def ready(self) -> bool:
        """Fill the warm pool and bring the TrajectoryWriter up before the first participant, so
        neither process boot lands on anyone's Start."""
        self._refill()
        if self.settings.record and self._writer is None:
            self._writer = get_or_create_writer(self.settings)
            await self._writer.stats.remote()
        return True

    # ----------------------------------------------------------------- placement and warm pool
    def _empty_hosts(self) -> list[Host]:
        return [host for host in self.hosts if not host.sessions]

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
        actor = spawn_env_actor(self.settings)
        await actor.ready.remote()
        actor.prepare.remote(list(self._recent_envs))  # so the first participant there starts at once
        host = Host(actor)
        self.hosts.append(host)
        return host

    async def _place(self, session_id: str) -> Host:
        """The fullest host with a free slot, else a warm empty one, else the next one to boot.

        The slot is reserved with no await in between, so concurrent joins never double-book a host,
        and joins arriving while processes boot wait for those instead of each booting its own.
        """
        while True:
            open_hosts = [h for h in self.hosts if len(h.sessions) < self.settings.sessions_per_actor]
            if open_hosts:
                host = max(open_hosts, key=lambda h: len(h.sessions))
                host.sessions.add(session_id)
                self._refill()
                return host
            boots = set(self._boots) or {self._start_boot()}
            done, _ = await asyncio.wait(boots, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a failed boot fails this join with its reason

    def _release(self, host: Host, session_id: str) -> None:
        host.sessions.discard(session_id)
        if host in self.hosts and not host.sessions and len(self._empty_hosts()) > self.settings.warm_pool_size:
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
        """A host process died: place nothing more on it."""
        if host in self.hosts:
            self.hosts.remove(host)
        self._refill()

    # ----------------------------------------------------------------- sessions
    async def create_session(self, env_id: str, participant: dict | None = None) -> dict:
        """Start a session of ``env_id``; returns its id, token and agent.

        ``participant`` (all optional): ``id`` (e.g. a crowd-worker id; stored only as a
        pseudonym), ``params`` (the page's URL parameters), ``user_agent``, ``consented_at``."""
        get_env(env_id)  # raises UnknownEnvironment before any actor is touched
        participant = dict(participant or {})
        session_id = uuid.uuid4().hex
        raw_id = participant.pop("id", None)
        pseudonym = await self._pseudonym(raw_id) if raw_id else f"anonymous-{session_id}"
        controller = {"human": True, "participant": pseudonym}
        episode_fields = {"session": {**participant, "participant": pseudonym, "created_at": time.time()}}
        if env_id in self._recent_envs:
            self._recent_envs.remove(env_id)
        self._recent_envs.append(env_id)
        for attempt in range(START_ATTEMPTS):
            host = await self._place(session_id)
            try:
                info, channel = await host.actor.start.remote(session_id, env_id, secrets.randbelow(2**31), controller, episode_fields)
                break
            except ray.exceptions.RayActorError:
                self._forget(host)  # the process died (crashed or killed): start elsewhere
                if attempt == START_ATTEMPTS - 1:
                    raise
            except Exception:
                self._release(host, session_id)
                raise
        entry = SessionEntry(session_id, secrets.token_urlsafe(24), env_id, info["agents"][0], host, info, channel)
        self.sessions[session_id] = entry
        asyncio.get_running_loop().create_task(
            self._end_if_unconnected(session_id, self.settings.connect_timeout_s, "nobody connected to the session")
        )
        return {"session_id": session_id, "token": entry.token, "env_id": env_id, "agent": entry.agent, "participant": pseudonym}

    async def _pseudonym(self, raw_id: str) -> str:
        """Fetched once from the store (through the writer), then computed here: a store outage
        later does not stop participants from starting."""
        if self._pseudonym_key is None:
            if self._writer is None:
                self._writer = get_or_create_writer(self.settings)
            try:
                self._pseudonym_key = await self._writer.pseudonym_key.remote()
            except Exception as error:
                raise RecordingUnavailable(f"participant ids cannot be pseudonymised yet: {error}") from error
        return pseudonymise(self._pseudonym_key, str(raw_id))

    async def attach(self, session_id: str, token: str) -> tuple[str, dict, dict]:
        """A participant's websocket arrives: check its token, return (agent, hello info, frame channel)."""
        entry = self._entry(session_id)
        if not hmac.compare_digest(entry.token.encode(), str(token).encode()):
            raise BadToken("the token does not match this session")
        entry.connections += 1
        return entry.agent, entry.info, entry.channel

    async def detach(self, session_id: str) -> None:
        """The participant's websocket closed; without a reconnect within the grace period the session ends."""
        entry = self.sessions.get(session_id)
        if entry is None:
            return
        entry.connections -= 1
        if entry.connections <= 0:
            entry.idle_since = time.monotonic()
            asyncio.get_running_loop().create_task(
                self._end_if_unconnected(session_id, self.settings.reconnect_grace_s, "the participant left")
            )

    async def end_session(self, session_id: str, reason: str) -> None:
        """Stop the session (connected clients get ``end``) and free its slot."""
        entry = self.sessions.pop(session_id, None)
        if entry is None:
            return
        try:
            await entry.host.actor.stop.remote(session_id, reason)
        except ray.exceptions.RayActorError:
            self._forget(entry.host)  # the process is gone, and its sessions with it
        finally:
            self._release(entry.host, session_id)

    async def shutdown(self, reason: str = "the server is shutting down", timeout_s: float = 20.0) -> int:
        """End every session and wait until the writer has acknowledged all they recorded (a clean
        stop loses no play); returns how many sessions were ended."""
        hosts = list(self.hosts)
        ended = list(self.sessions)
        await asyncio.gather(*(self.end_session(session_id, reason) for session_id in ended), return_exceptions=True)
        await asyncio.gather(*(host.actor.drain.remote(timeout_s) for host in hosts), return_exceptions=True)
        return len(ended)

    async def _end_if_unconnected(self, session_id: str, delay_s: float, reason: str) -> None:
        await asyncio.sleep(delay_s)
        entry = self.sessions.get(session_id)
        if entry is not None and entry.connections <= 0 and time.monotonic() - entry.idle_since >= delay_s * 0.99:
            await self.end_session(session_id, reason)

    def _entry(self, session_id: str) -> SessionEntry:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise UnknownSession(f"no session {session_id!r}") from None

    async def session_actor(self, session_id: str) -> ActorHandle:
        """For operators and tests: the EnvActor hosting a running session."""
        return self._entry(session_id).host.actor

    async def list_sessions(self) -> list[dict]:
        return [
            {"session_id": e.session_id, "env_id": e.env_id, "agent": e.agent, "created_at": e.created_at, "connections": e.connections}
            for e in self.sessions.values()
        ]

    async def warm_pool_size(self) -> int:
        return len(self._empty_hosts())

    async def host_loads(self) -> list[int]:
        """Sessions per EnvActor process."""
        return [len(host.sessions) for host in self.hosts]


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
    ).remote(settings)
