"""EnvsManager: the one named, detached actor that knows every session in the cluster.

Every ingress replica gets the same actor through ``get_or_create_manager``; Ray's
``get_if_exists`` makes creation atomic, so two replicas racing at start-up share one manager.
It hands out EnvActors from a warm pool (booting a process costs ~0.6 s; Start must not wait for
it), keeps the session table, checks session tokens, and ends sessions nobody connects to.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass, field

import ray
from ray.actor import ActorHandle

from crowdplay.config import Settings
from crowdplay.env_actor import spawn_env_actor
from crowdplay.environments import get_env


#: Seconds between stopping a session and killing its EnvActor process.
ACTOR_RETIRE_DELAY_S = 0.5


class UnknownSession(LookupError):
    """No session with this id (never created, or already ended)."""


class BadToken(PermissionError):
    """The token does not belong to the session."""


@dataclass
class SessionEntry:
    session_id: str
    token: str
    env_id: str
    agent: str
    actor: ActorHandle
    info: dict
    created_at: float = field(default_factory=time.time)
    connections: int = 0
    #: monotonic time since which nobody is connected (creation counts as a disconnect)
    idle_since: float = field(default_factory=time.monotonic)


@ray.remote(num_cpus=0)
class EnvsManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions: dict[str, SessionEntry] = {}
        self.pool: list[ActorHandle] = []
        self._booting = 0

    async def ready(self) -> bool:
        self._refill()
        return True

    # ----------------------------------------------------------------- warm pool
    def _refill(self) -> None:
        missing = self.settings.warm_pool_size - len(self.pool) - self._booting
        for _ in range(max(0, missing)):
            self._booting += 1
            asyncio.get_running_loop().create_task(self._boot())

    async def _boot(self) -> None:
        try:
            actor = spawn_env_actor(self.settings)
            await actor.ready.remote()
            self.pool.append(actor)
        finally:
            self._booting -= 1

    async def _take_actor(self) -> ActorHandle:
        if self.pool:
            actor = self.pool.pop()
        else:
            actor = spawn_env_actor(self.settings)
        self._refill()
        return actor

    # ----------------------------------------------------------------- sessions
    async def create_session(self, env_id: str) -> dict:
        """Start a session of ``env_id`` on a warm EnvActor; returns its id, token and description."""
        get_env(env_id)  # raises UnknownEnvironment before any actor is touched
        actor = await self._take_actor()
        session_id = uuid.uuid4().hex
        seed = secrets.randbelow(2**31)
        try:
            info = await actor.start.remote(session_id, env_id, seed)
        except Exception:
            ray.kill(actor)
            raise
        entry = SessionEntry(session_id, secrets.token_urlsafe(24), env_id, info["agents"][0], actor, info)
        self.sessions[session_id] = entry
        asyncio.get_running_loop().create_task(
            self._end_if_unconnected(session_id, self.settings.connect_timeout_s, "nobody connected to the session")
        )
        return {"session_id": session_id, "token": entry.token, "env_id": env_id, "agent": entry.agent}

    async def attach(self, session_id: str, token: str) -> tuple[ActorHandle, str, dict]:
        """A participant's websocket arrives: check its token, return (EnvActor, agent, hello info)."""
        entry = self._entry(session_id)
        if not hmac.compare_digest(entry.token.encode(), str(token).encode()):
            raise BadToken("the token does not match this session")
        entry.connections += 1
        return entry.actor, entry.agent, entry.info

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
        """Stop the session's loop (connected clients get ``end``), then retire its actor."""
        entry = self.sessions.pop(session_id, None)
        if entry is None:
            return
        try:
            await entry.actor.stop.remote(reason)
            await asyncio.sleep(ACTOR_RETIRE_DELAY_S)  # let the ``end`` message reach the ingress
        finally:
            ray.kill(entry.actor)

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
        """For operators and tests: the EnvActor of a running session."""
        return self._entry(session_id).actor

    async def list_sessions(self) -> list[dict]:
        return [
            {"session_id": e.session_id, "env_id": e.env_id, "agent": e.agent, "created_at": e.created_at, "connections": e.connections}
            for e in self.sessions.values()
        ]

    async def warm_pool_size(self) -> int:
        return len(self.pool)


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
