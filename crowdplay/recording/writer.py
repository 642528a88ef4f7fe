"""TrajectoryWriter: the Ray actor that makes chunks durable and acknowledges them.

EnvActors send batches of chunks (<= 1 s of play each) and keep every chunk until it is
acknowledged; a chunk whose writer died is resent. The writer acknowledges a batch once it is
durable: written to the store or, when the store fails or does not answer within
``store_timeout_s``, fsynced into the local spool. While the store is down every batch goes to
the spool, and a drain task moves the spool into the store when it answers again, oldest first;
writes are idempotent (see ``TrajectoryStore``), so a batch that reached the store and the spool
both is harmless. Store calls run on one dedicated thread (the embedded SQLite store must stay on
the thread that opened it) so a slow database never stalls the event loop.

``stats`` says how the store is doing for the dashboard and /metrics: ``healthy`` (answering, spool
empty), ``draining`` (answering again, spool not yet empty) or ``failing`` (its last operation
failed), the last error's kind and time, and the spool's batches, bytes and oldest batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import ray
from ray.actor import ActorHandle

from crowdplay.config import LONG_LIVED_RUNTIME_ENV, ON_HEAD_NODE, UNRECORDED_CALLS, Settings
from crowdplay.memory import freeze_startup_objects, release_freed_memory_every
from crowdplay.recording.spool import Chunk, Spool
from crowdplay.recording.status import INTERRUPTED
from crowdplay.recording.store import TrajectoryStore

WRITER_NAME = "TrajectoryWriter"
WRITER_NICENESS = 19
log = logging.getLogger(__name__)
R = TypeVar("R")


class ChunkSink:
    """Store-or-spool writing, independent of Ray so it can be tested against any store."""

    def __init__(self, store_uri: str, spool_dir: str, store_timeout_s: float = 5.0, drain_interval_s: float = 1.0) -> None:
        self.store_uri = store_uri
        self.spool = Spool(spool_dir)
        self.store_timeout_s = store_timeout_s
        self.drain_interval_s = drain_interval_s
        self._store_io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._spool_io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self.store: TrajectoryStore | None = None
        self.healthy = False
        self.chunks_written = 0
        self.chunks_spooled = 0
        self.store_errors = 0
        #: the outcome of the store's last operation (a write, a drain, a study call)
        self.store_answering = False
        self.last_ok_at: float | None = None
        #: {"kind", "message", "at"} of the store's last failure (None: none since this process started)
        self.last_error: dict[str, Any] | None = None
        self._drainer: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        """Open the store if it answers (else start spooled) and drain what a previous run spooled."""
        try:
            await self._on_store_thread(self._open_store)
            self._store_answered()
            self.healthy = not self.spool.files()
        except Exception as error:
            log.warning("store unavailable at start (%s: %s); spooling to %s", type(error).__name__, error, self.spool.directory)
            self._store_failed(error)
        self._ensure_drainer()

    async def write(self, chunks: list[Chunk]) -> None:
        """Returns once every chunk is durable (store or spool)."""
        if self.healthy:
            try:
                await self._on_store_thread(self._store_all, chunks)
                self.chunks_written += len(chunks)
                self._store_answered()
                return
            except Exception as error:
                self._store_failed(error)
        await asyncio.get_running_loop().run_in_executor(self._spool_io, self.spool.put, chunks)
        self.chunks_spooled += len(chunks)
        self._ensure_drainer()

    def _store_failed(self, error: BaseException) -> None:
        self._note_error(error)
        if self.healthy:
            log.warning("store unavailable (%s: %s); spooling to %s", type(error).__name__, error, self.spool.directory)
        self.healthy = False

    def _note_error(self, error: BaseException) -> None:
        """Remember the store's failure for the dashboard (a timeout is one too: the store hangs)."""
        self.store_errors += 1
        self.store_answering = False
        kind = "Timeout" if isinstance(error, (asyncio.TimeoutError, TimeoutError)) else type(error).__name__
        self.last_error = {"kind": kind, "message": str(error)[:300], "at": time.time()}

    def _store_answered(self) -> None:
        self.store_answering = True
        self.last_ok_at = time.time()

    @property
    def state(self) -> str:
        """``failing`` (the store's last operation failed, or it never opened), ``draining``
        (answering again, the spool not empty yet) or ``healthy``."""
        if not self.store_answering:
            return "failing"
        return "healthy" if self.healthy else "draining"

    def _ensure_drainer(self) -> None:
        if self.spool.files() and (self._drainer is None or self._drainer.done()):
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Move spooled batches into the store, oldest first; the store counts as healthy again
        only when the spool is empty."""
        while True:
            files = self.spool.files()
            if not files and self.store is not None:
                self.healthy = True
                return
            try:
                await self._on_store_thread(self._open_store)
                for path in files:
                    chunks = self.spool.load(path)
                    await self._on_store_thread(self._store_all, chunks)
                    self.spool.remove(path)
                    self.chunks_written += len(chunks)
                    self._store_answered()
            except Exception as error:
                self._store_failed(error)
                await asyncio.sleep(self.drain_interval_s)

    async def _on_store_thread(self, function: Callable[..., R], *args: Any) -> R:
        """``function(*args)`` on the store's thread, within ``store_timeout_s``."""
        future = self._store_io.submit(function, *args)
        return await asyncio.wait_for(asyncio.wrap_future(future), self.store_timeout_s)

    def _open_store(self) -> TrajectoryStore:
        if self.store is None:
            self.store = TrajectoryStore.open(self.store_uri or None)
        return self.store

    def _store_all(self, chunks: list[Chunk]) -> None:
        self._open_store().put_chunks(chunks)

    def stats(self) -> dict[str, Any]:
        """Counters of this process, the store's health and the spool's size (cheap: the spool
        keeps count; the dashboard asks every two seconds)."""
        spool = self.spool.size()
        now = time.time()
        return {
            "healthy": self.healthy,
            "store_state": self.state,
            "chunks_written": self.chunks_written,
            "chunks_spooled": self.chunks_spooled,
            "spooled_batches": spool["batches"],
            "spool_bytes": spool["bytes"],
            "spool_oldest_at": spool["oldest_at"],
            "spool_oldest_age_s": None if spool["oldest_at"] is None else max(0.0, now - spool["oldest_at"]),
            "store_errors": self.store_errors,
            "last_error": dict(self.last_error) if self.last_error else None,
            "last_ok_at": self.last_ok_at,
            "at": now,
        }

    async def pseudonym_key(self) -> bytes:
        """The store's pseudonym key, read on the store's thread."""
        return await self._on_store_thread(self._read_pseudonym_key)

    async def study_call(self, operation: Callable[[TrajectoryStore], R]) -> R:
        """Run one of the store's study operations (assignments, notes, data volume) on its thread;
        its failure shows on the dashboard but does not send chunks to the spool."""
        def call() -> R:
            return operation(self._open_store())

        try:
            result = await self._on_store_thread(call)
        except Exception as error:
            self._note_error(error)  # the chunks' path decides about spooling; the dashboard hears of it
            raise
        self._store_answered()
        return result

    def _read_pseudonym_key(self) -> bytes:
        return self._open_store().pseudonym_key()

    def close(self) -> None:
        """Stop draining the spool and close the store; for the end of the writer's process and for tests."""
        if self._drainer is not None:
            self._drainer.cancel()
        if self.store is not None:
            self._store_io.submit(self.store.close).result()
        self._store_io.shutdown()
        self._spool_io.shutdown()


@ray.remote(num_cpus=0, max_restarts=-1, **UNRECORDED_CALLS)  # type: ignore[call-overload]  # Ray's remote() overloads do not cover actor options given as **kwargs
class TrajectoryWriter:
    """The cluster's one writer actor (``get_or_create_writer``): makes EnvActors' chunk batches durable and
    answers the EnvsManager's study reads and writes, store-or-spool through a ``ChunkSink``."""

    def __init__(self, store_uri: str, spool_dir: str, store_timeout_s: float = 5.0, memory_release_interval_s: float = 30.0) -> None:
        release_freed_memory_every(memory_release_interval_s)
        # Storing is never urgent (EnvActors keep chunks until acked); on a busy node the real-time
        # EnvActors get the CPU first.
        os.nice(max(0, WRITER_NICENESS - os.nice(0)))
        self.sink = ChunkSink(store_uri, spool_dir, store_timeout_s)
        self.started_at = time.time()
        self._started = False

    async def _ready(self) -> ChunkSink:
        if not self._started:
            self._started = True
            await self.sink.start()
            freeze_startup_objects()  # the store client and its caches, before any chunk arrives
        return self.sink

    async def write_chunks(self, chunks: list[Chunk]) -> list[tuple[str, int]]:
        """Make a batch durable (an EnvActor process sends its sessions' chunks together);
        returns the (episode, seq) keys as acks."""
        sink = await self._ready()
        await sink.write(cast(list[Chunk], [tuple(chunk) for chunk in chunks]))
        return [(episode_id, seq) for episode_id, seq, *_ in chunks]

    async def pseudonym_key(self) -> bytes:
        """The store's pseudonym key (the EnvsManager fetches it once and pseudonymises itself)."""
        sink = await self._ready()
        return await sink.pseudonym_key()

    async def save_assignment(self, document: dict[str, Any]) -> None:
        """Create or replace a participant's assignment document."""
        await (await self._ready()).study_call(lambda store: store.put_assignment(document))

    async def assignments(self, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Assignments matching a MongoDB ``query`` (all when None), oldest first."""
        return await (await self._ready()).study_call(lambda store: store.find_assignments(query))

    async def save_note(self, document: dict[str, Any]) -> None:
        """Store a note (``TrajectoryStore.put_note``: one with an ``_id`` replaces itself)."""
        await (await self._ready()).study_call(lambda store: store.put_note(document))

    async def interrupt_game(self, game_id: str, reason: str, status: str = INTERRUPTED) -> int:
        """Mark the unfinished episodes of a game whose EnvActor died as ``status`` (interrupted,
        or server_unreachable when its machine had stopped answering first)."""
        return await (await self._ready()).study_call(lambda store: store.interrupt_game(game_id, reason, status))

    async def data_volume(self) -> dict[str, Any]:
        """Episodes, chunks and bytes stored, for the dashboard."""
        return await (await self._ready()).study_call(TrajectoryStore.data_volume)

    async def stats(self) -> dict[str, Any]:
        """Counters of this incarnation (a restart starts again at 0), the store's health, the
        spool, and this process's id and start (the dashboard shows them; tests signal the pid)."""
        sink = await self._ready()
        return {**sink.stats(), "pid": os.getpid(), "started_at": self.started_at}


def get_or_create_writer(settings: Settings) -> ActorHandle[Any]:
    """The cluster's writer, created on first use (atomic, like the EnvsManager)."""
    spool_dir = settings.spool_dir or str(Path("data") / "spool")
    return TrajectoryWriter.options(  # type: ignore[attr-defined,no-any-return]  # .options() is added by @ray.remote
        name=WRITER_NAME, namespace=settings.namespace, lifetime="detached", get_if_exists=True, resources=ON_HEAD_NODE,
        runtime_env=LONG_LIVED_RUNTIME_ENV,
    ).remote(settings.store_uri, spool_dir, settings.store_timeout_s, settings.memory_release_interval_s)


class WriterClient:
    """Calls the cluster's TrajectoryWriter: looked up on first use, and again after it stopped for
    good (an operator's kill; a crash only restarts it, behind the same handle)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._handle: ActorHandle[Any] | None = None

    def look_up(self) -> ActorHandle[Any]:
        """The writer's handle, found (or created) on first use and after a call found it dead."""
        if self._handle is None:
            self._handle = get_or_create_writer(self.settings)
        return self._handle

    async def call(self, method: str, *args: Any) -> Any:
        """``method`` of the writer with ``args``; raises ActorDiedError after forgetting a dead writer's handle."""
        try:
            return await getattr(self.look_up(), method).remote(*args)
        except ray.exceptions.ActorDiedError:
            self._handle = None  # the next call finds (or creates) the writer anew
            raise
