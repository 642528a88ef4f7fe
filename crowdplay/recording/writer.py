"""TrajectoryWriter: the Ray actor that stores chunks and acknowledges them.

EnvActors send each chunk (<= 1 s of play) as soon as it is full and keep it until the writer
acknowledges it; a chunk whose write failed or whose writer died is resent. Writes are idempotent
(see ``TrajectoryStore``), so a resend is harmless. Store calls run on one dedicated thread (the
embedded SQLite store must stay on the thread that opened it), so a slow disk or database never
stalls the writer's event loop. The actor restarts after a crash.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping
from typing import Any

import ray
from ray.actor import ActorHandle

from crowdplay.config import Settings
from crowdplay.recording.store import TrajectoryStore

WRITER_NAME = "TrajectoryWriter"


@ray.remote(num_cpus=0, max_restarts=-1)
class TrajectoryWriter:
    def __init__(self, store_uri: str) -> None:
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.store = self._io.submit(TrajectoryStore.open, store_uri or None).result()
        self.chunks_written = 0

    async def write_chunk(self, episode_id: str, seq: int, blob: bytes, steps: int, episode: Mapping[str, Any]) -> int:
        """Store a chunk and merge ``episode`` into the episode's document; returns ``seq`` as the ack."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, self._write, episode_id, seq, blob, steps, dict(episode))
        self.chunks_written += 1
        return seq

    async def write_chunks(self, chunks: list[tuple[str, int, bytes, int, dict]]) -> list[tuple[str, int]]:
        """Store a batch of chunks in one call (an EnvActor process sends its sessions' chunks
        together); returns the (episode, seq) keys as acks."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, self._write_all, chunks)
        self.chunks_written += len(chunks)
        return [(episode_id, seq) for episode_id, seq, *_ in chunks]

    def _write_all(self, chunks: list[tuple[str, int, bytes, int, dict]]) -> None:
        for chunk in chunks:
            self._write(*chunk)

    def _write(self, episode_id: str, seq: int, blob: bytes, steps: int, episode: dict) -> None:
        self.store.put_chunk(episode_id, seq, blob, steps)
        if episode:
            self.store.put_episode(episode_id, episode)

    async def chunks_since_start(self) -> int:
        """Chunks this incarnation wrote (a restart starts again at 0)."""
        return self.chunks_written


def get_or_create_writer(settings: Settings) -> ActorHandle:
    """The cluster's writer, created on first use (atomic, like the EnvsManager)."""
    return TrajectoryWriter.options(
        name=WRITER_NAME, namespace=settings.namespace, lifetime="detached", get_if_exists=True
    ).remote(settings.store_uri)
