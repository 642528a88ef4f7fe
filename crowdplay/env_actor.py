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
import gc
import secrets
import time
from dataclasses import dataclass

import ray

from crowdplay.channel import ChannelServer
from crowdplay.config import Settings
from crowdplay.environments import EnvAdapter, get_env, make_adapter
from crowdplay.realtime import Clocks, LiveEnv
from crowdplay.recording.recorder import ChunkBatcher, Recorder
from crowdplay.recording.writer import get_or_create_writer


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
        self.recorders: list[Recorder] = []
        self._batcher: ChunkBatcher | None = None

    async def ready(self) -> bool:
        """Answers once the process is up; the pool waits on it before offering the actor. Looks up
        the writer now, while the actor is still in the warm pool, not during someone's Start."""
        if self.settings.record:
            self._chunk_batcher()
        # Everything allocated so far (Ray, numpy, ALE bindings) lives as long as the process: keep
        # it out of the collector's full passes, which would otherwise stall every session here.
        gc.freeze()
        return True

    async def start(
        self, session_id: str, env_id: str, seed: int, controller: dict | None = None, episode_fields: dict | None = None
    ) -> tuple[dict, dict]:
        """Load a session's environment; returns its description (the client's ``hello``) and
        the frame channel's address and secret.

        ``controller`` says who plays (``{"human": True, "participant": <pseudonym>}``);
        ``episode_fields`` are stored with each of the session's episodes."""
        spec = get_env(env_id)
        spare = self.spares.pop(env_id, None)
        adapter = await spare if spare is not None else await asyncio.to_thread(make_adapter, spec)
        recorder = None
        if self.settings.record:
            controllers = {agent: controller or {"human": True, "participant": f"anonymous-{session_id}"} for agent in adapter.agents}
            fields = {"task_id": env_id, **(episode_fields or {})}
            batcher = self._chunk_batcher()
            recorder = Recorder(
                session_id, adapter.agents, batcher.deliver, self.settings.chunk_steps, controllers,
                adapter.snapshot, self.settings.snapshot_interval, fields, batcher.seal_later,
            )
            self.recorders.append(recorder)
        live = LiveEnv(spec, seed, self.settings, self.clocks.at(spec.fps), adapter, recorder)
        await self.prepare([env_id])
        channel = ChannelServer(live, secrets.token_urlsafe(24), self.settings.frame_backpressure)
        host = ray.util.get_node_ip_address()
        port = await channel.start(host)
        self.sessions[session_id] = HostedSession(live, channel)
        return live.describe(), {"host": host, "port": port, "secret": channel.secret}

    def _chunk_batcher(self) -> ChunkBatcher:
        if self._batcher is None:
            writer = get_or_create_writer(self.settings)
            self._batcher = ChunkBatcher(lambda chunks: writer.write_chunks.remote(chunks))
        return self._batcher

    async def drain(self, timeout_s: float = 60.0) -> bool:
        """Wait until the writer acknowledged every recorded chunk (before this process retires)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.recorders = [r for r in self.recorders if r.unacked or r.episode_id]
            if not any(r.unacked for r in self.recorders):
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)

    async def unacked_chunks(self) -> int:
        return sum(len(r.unacked) for r in self.recorders)

    async def prepare(self, env_ids: list[str]) -> None:
        """Build a spare environment of each game that has none, in the background."""
        for env_id in env_ids:
            if env_id not in self.spares:
                self.spares[env_id] = asyncio.get_running_loop().create_task(asyncio.to_thread(make_adapter, get_env(env_id)))

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
