"""ChunkBatcher: one per EnvActor process, between its Recorders and the TrajectoryWriter.

Chunks end on the shared clock's grid, so all sessions of a process cut a chunk on the same tick;
sealing them all at once (~0.3 ms each) would delay the next tick, so they are sealed one per
``SEAL_SPACING_S``. One Ray call costs ~1 ms of CPU at each end; one per chunk per session was
measured at 0.11 cores of writer CPU for 60 sessions, so the chunks of one boundary travel in one
writer call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, TypedDict

from crowdplay.recording.chunk_queue import Acknowledged, ChunkQueue
from crowdplay.recording.spool import Chunk
from crowdplay.recording.unacked import Key, UnackedChunks
from crowdplay.recording.writer_calls import BATCH_INTERVAL_S, MAX_BATCH_BYTES, MAX_CALLS_OUT, SendBatch, WriterBusy, WriterCalls, answer_of

#: Time between sealing two chunks of one process.
SEAL_SPACING_S = 0.003
#: A chunk on its way in a boundary's batch, and the delivery waiting for the call's answer.
Pending = tuple[Chunk, "asyncio.Future[None]"]


class Sending(TypedDict):
    """How a process's sending to the writer stands, as the dashboard shows it (``EnvActor.recording``)."""

    #: writer calls not answered yet
    calls_out: int
    #: chunks waiting for their next call (not counting those in calls out)
    queued: int
    #: queued calls that failed or timed out (their chunks went back to the queue's front)
    delivery_failures: int
    #: chunks whose spilled file was gone when they were to be sent (something cleaned the temp dir)
    chunks_lost: int


#: The figures of a process that records nothing.
NOTHING_SENT = Sending(calls_out=0, queued=0, delivery_failures=0, chunks_lost=0)


class ChunkBatcher:
    """Seals a process's chunks a few ms apart and sends them to the writer together.

    Two ways to send. ``deliver`` waits up to ``BATCH_INTERVAL_S`` for the other chunks of its
    boundary, resolves when their call was acknowledged and raises when it failed, so each
    Recorder keeps its own retries. ``submit`` hands a chunk already held in ``unacked`` to the
    process's ``ChunkQueue``, which sends and resends it until acknowledged. Either way calls
    carry at most ``max_batch_bytes`` and go out only while fewer than ``max_calls_out`` are
    unanswered (else ``deliver`` fails at once with ``WriterBusy``).

    ``unacked``: the process's buffer of unacknowledged chunks, shared by its Recorders (the
    EnvActor reports it on the dashboard).
    """

    def __init__(
        self,
        send_batch: SendBatch,
        unacked: UnackedChunks | None = None,
        max_calls_out: int | None = None,
        max_batch_bytes: int | None = None,
        call_timeout_s: float | None = None,
    ) -> None:
        """``send_batch``: one writer call for a list of chunks; the limits default to
        ``MAX_CALLS_OUT``, ``MAX_BATCH_BYTES`` and ``WRITER_CALL_TIMEOUT_S``."""
        self.unacked = unacked if unacked is not None else UnackedChunks()
        self.max_batch_bytes = max_batch_bytes or MAX_BATCH_BYTES
        self._calls = WriterCalls(send_batch, max_calls_out or MAX_CALLS_OUT, call_timeout_s)
        self._queue = ChunkQueue(self._calls, self.unacked, self.max_batch_bytes)
        self._pending: list[Pending] = []
        self._flusher: asyncio.Task[None] | None = None  # the flush that has not taken its batch yet
        self._flushes: set[asyncio.Task[None]] = set()  # every flush still running (strong references)
        self._seals: deque[Callable[[], None]] = deque()
        self._sealer: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- sealing
    def seal_later(self, seal: Callable[[], None]) -> None:
        """Seal a cut chunk after the ones already waiting, ``SEAL_SPACING_S`` apart (the Recorder's ``seal_later``)."""
        self._seals.append(seal)
        if self._sealer is None or self._sealer.done():
            self._sealer = asyncio.get_running_loop().create_task(self._seal_spaced())

    async def _seal_spaced(self) -> None:
        while self._seals:
            await asyncio.sleep(SEAL_SPACING_S)  # the tick that cut the chunks sends its frames first
            self._seals.popleft()()

    # ----------------------------------------------------------------- a boundary's batch
    async def deliver(self, episode_id: str, seq: int, blob: bytes, steps: int, fields: dict[str, Any]) -> None:
        """Send a sealed chunk with the others of its boundary; returns once the writer acknowledged the
        batch, raises if that call failed (``WriterBusy`` when too many calls are out)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(((episode_id, seq, blob, steps, fields), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())
            self._flushes.add(self._flusher)
            self._flusher.add_done_callback(self._flushes.discard)
        await done

    async def _flush_later(self) -> None:
        await asyncio.sleep(BATCH_INTERVAL_S)
        batch, self._pending = self._pending, []
        self._flusher = None  # later chunks go out in the next call, whatever becomes of this one
        await asyncio.gather(*(self._send(part) for part in self._split(batch)))

    def _split(self, batch: list[Pending]) -> list[list[Pending]]:
        """The batch in parts of at most ``max_batch_bytes`` of packed chunks (at least one chunk each)."""
        parts: list[list[Pending]] = [[]]
        size = 0
        for item in batch:
            blob_size = len(item[0][2])
            if parts[-1] and size + blob_size > self.max_batch_bytes:
                parts.append([])
                size = 0
            parts[-1].append(item)
            size += blob_size
        return [part for part in parts if part]

    async def _send(self, part: list[Pending]) -> None:
        """One writer call for ``part``; its chunks' deliveries resolve with its answer. The call
        counts as out until the writer answers it, even after its chunks' deliveries timed out
        (they are resent; writes are idempotent)."""
        if self._calls.full:
            error = WriterBusy(f"{self._calls.out} writer calls are unanswered")
            for _, done in part:
                done.set_exception(error)
            return
        call = self._calls.start([chunk for chunk, _ in part])
        try:
            await answer_of(call, self._calls.timeout_s)
        except Exception as error:  # the call failed, or timed out (TimeoutError)
            for _, done in part:
                done.set_exception(error)
        else:
            for _, done in part:
                done.set_result(None)

    # ----------------------------------------------------------------- the process's queue
    def submit(self, key: Key, acknowledged: Acknowledged) -> None:
        """Send a chunk already held in ``unacked`` until the writer acknowledges it, then let it
        go and call ``acknowledged(key, True)`` (``False``: its spilled file was gone)."""
        self._queue.submit(key, acknowledged)

    # ----------------------------------------------------------------- for the dashboard
    def sending(self) -> Sending:
        """How sending stands now: the writer calls' and the queue's figures."""
        return Sending(
            calls_out=self._calls.out,
            queued=self._queue.queued,
            delivery_failures=self._queue.delivery_failures,
            chunks_lost=self._queue.chunks_lost,
        )
