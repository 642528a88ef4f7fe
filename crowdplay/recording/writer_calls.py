"""WriterCalls: the calls a process has out to the TrajectoryWriter, counted until answered.

Ray holds a call's chunks until the writer answers it, also after the caller gave up waiting (a
stopped writer answers nothing), so each resend of a call that timed out would hold the same
chunks once more (measured: an EnvActor grew 30 KB per playing session a second with the writer
stopped, ~4x the chunks' own ~7 KB). A call therefore counts as out until the writer answers it,
and a process keeps at most ``MAX_CALLS_OUT`` out; beyond that, chunks wait in ``UnackedChunks``
(bounded). Both ways a ``ChunkBatcher`` sends (a boundary's batch, the process's queue) share one
``WriterCalls``, so the bound holds for the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from crowdplay.recording.spool import Chunk

#: One writer call for a list of chunks (``TrajectoryWriter.write_chunks``).
SendBatch = Callable[[list[Chunk]], Awaitable[object]]

#: Seconds between tries of a failed delivery, the last one repeated.
RETRY_DELAYS_S: tuple[float, ...] = (0.5, 1, 2, 5, 10)
#: Chunks sealed within this window (all sessions of a process cut on the same tick) travel together.
BATCH_INTERVAL_S = 0.1
#: A writer call unanswered this long counts as failed and is resent (writes are idempotent); the
#: writer answers within its store timeout plus a spool write. A call to a writer that cannot be
#: reached hangs rather than fails (a partition drops packets), so this bound is what turns it into
#: a failure. ``Settings.writer_call_timeout_s`` sets it per process.
WRITER_CALL_TIMEOUT_S = 30.0
#: Writer calls a process keeps unanswered at most. Two are enough for a chunk sealed during one
#: slow call not to wait for it.
MAX_CALLS_OUT = 4
#: Packed chunk bytes in one writer call at most (a batch is ~7 KB per session; after an outage,
#: the resends of every waiting chunk go out in calls of at most this size).
MAX_BATCH_BYTES = 4 * 2**20


class WriterBusy(RuntimeError):
    """``MAX_CALLS_OUT`` writer calls are unanswered: the batch was not sent (its chunks are
    tried again later, as after any failed delivery)."""


def retry_delay(attempt: int) -> float:
    """How long to wait before try ``attempt + 1`` after ``attempt`` failed ones in a row: a
    writer that restarts is back within seconds, one that is down is not asked more than every
    ``RETRY_DELAYS_S[-1]``."""
    return RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]


class WriterCalls:
    """Starts writer calls and counts them until the writer answers, whoever still waits."""

    def __init__(self, send_batch: SendBatch, limit: int, timeout_s: float | None = None) -> None:
        """``send_batch``: one writer call for a list of chunks; ``limit``: calls out at most;
        ``timeout_s``: how long a caller waits for an answer (None: ``WRITER_CALL_TIMEOUT_S``)."""
        self.send_batch = send_batch
        self.limit = limit
        self.timeout_s = timeout_s
        self._out: set[asyncio.Future[object]] = set()

    @property
    def out(self) -> int:
        """Writer calls not answered yet, including those whose callers gave up waiting."""
        return len(self._out)

    @property
    def full(self) -> bool:
        """No call may start until one is answered."""
        return len(self._out) >= self.limit

    def start(self, chunks: list[Chunk]) -> asyncio.Future[object]:
        """Send ``chunks`` in one call; the call counts as out until it is answered."""
        call = asyncio.ensure_future(self.send_batch(chunks))
        self._out.add(call)
        call.add_done_callback(self._answered)
        return call

    def _answered(self, call: asyncio.Future[object]) -> None:
        self._out.discard(call)
        if not call.cancelled():
            call.exception()  # retrieved: a late failure of a call nobody waits for is not an error to log


async def answer_of(call: asyncio.Future[object], timeout_s: float | None = None) -> object:
    """The call's answer, or ``TimeoutError`` after ``timeout_s`` (None: ``WRITER_CALL_TIMEOUT_S``;
    the call stays out: the writer may still answer it)."""
    return await asyncio.wait_for(asyncio.shield(call), timeout_s or WRITER_CALL_TIMEOUT_S)
