"""EnvActor: the Ray actor that runs sessions' environments in real time.

One EnvActor process hosts up to ``Settings.sessions_per_actor`` sessions. A Ray actor process
costs ~60 MB and its own event loop waking 60 times a second; measured on 2 cores, one process per
session spent ~0.03 cores per session on wake-ups alone, so sessions share a process and a tick
clock (docs/performance.md). Each session keeps its own id, LiveEnv, frame channel and record of
where it runs; ``sessions_per_actor = 1`` gives one process per session.

Actors boot empty and wait in the EnvsManager's warm pool. Building an ALE environment takes
~120 ms, so after a game starts here the actor builds a spare of that game in the background, and
the next participant of that game starts on the spare at once. Frames and inputs travel over each
session's frame channel (``crowdplay.channel``); Ray carries placement, lifecycle and control.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

import ray

from crowdplay.channel import ChannelServer
from crowdplay.config import Settings
from crowdplay.environments import EnvAdapter, get_env
from crowdplay.realtime import Clocks, LiveEnv


class UnknownHostedSession(LookupError):
    """The session is not (or no longer) hosted by this EnvActor."""


@dataclass
class HostedSession:
    live: LiveEnv
    channel: ChannelServer


@ray.remote
class EnvActor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions: dict[str, HostedSession] = {}
        self.clocks = Clocks()
        self.spares: dict[str, asyncio.Task[EnvAdapter]] = {}

    async def ready(self) -> bool:
        """Answers once the process is up; the pool waits on it before offering the actor."""
        return True

    async def start(self, session_id: str, env_id: str, seed: int) -> tuple[dict, dict]:
        """Load a session's environment; returns its description (the client's ``hello``) and
        the frame channel's address and secret."""
        spec = get_env(env_id)
        spare = self.spares.pop(env_id, None)
        adapter = await spare if spare is not None else await asyncio.to_thread(EnvAdapter, spec)
        live = LiveEnv(spec, seed, self.settings, self.clocks.at(spec.fps), adapter)
        await self.prepare([env_id])
        channel = ChannelServer(live, secrets.token_urlsafe(24), self.settings.frame_backpressure)
        host = ray.util.get_node_ip_address()
        port = await channel.start(host)
        self.sessions[session_id] = HostedSession(live, channel)
        return live.describe(), {"host": host, "port": port, "secret": channel.secret}

    async def prepare(self, env_ids: list[str]) -> None:
        """Build a spare environment of each game that has none, in the background."""
        for env_id in env_ids:
            if env_id not in self.spares:
                self.spares[env_id] = asyncio.get_running_loop().create_task(asyncio.to_thread(EnvAdapter, get_env(env_id)))

    def _session(self, session_id: str) -> HostedSession:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise UnknownHostedSession(f"session {session_id!r} is not hosted here") from None

    async def input_log(self, session_id: str) -> list[dict]:
        return list(self._session(session_id).live.input_log)

    async def episodes(self, session_id: str) -> list[dict]:
        return [vars(record) for record in self._session(session_id).live.episodes]

    async def stats(self, session_id: str) -> dict:
        return self._session(session_id).live.stats()

    async def stop(self, session_id: str, reason: str) -> None:
        """End one session: its participants get ``end``; its channel stops accepting connections."""
        hosted = self.sessions.pop(session_id, None)
        if hosted is not None:
            hosted.live.stop(reason)
            hosted.channel.close()


def spawn_env_actor(settings: Settings):
    """A new EnvActor reserving this deployment's CPU share per hosting process."""
    return EnvActor.options(num_cpus=settings.env_actor_num_cpus).remote(settings)
