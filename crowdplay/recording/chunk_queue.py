"""ChunkQueue: every sealed chunk of an EnvActor process, sent to the writer oldest first.

One queue for the process, retried with backoff as a whole, so a backlog (a writer stopped for a
minute holds a minute of every game's chunks) costs no task per chunk, and a chunk spilled to a
file by ``UnackedChunks`` is read back only when it goes out. The queue sends in calls of at most
``max_batch_bytes`` while ``WriterCalls`` allows; a call's answer acknowledges its chunks whenever
it comes, also after ``WRITER_CALL_TIMEOUT_S`` sent them back to the queue's front.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from crowdplay.recording.spool import Chunk
from crowdplay.recording.unacked import Key, UnackedChunks
from crowdplay.recording.writer_calls import BATCH_INTERVAL_S, WriterCalls, answer_of, retry_delay

log = logging.getLogger(__name__)
#: Told when the writer acknowledged a submitted chunk (True), or it cannot be sent (False).
Acknowledged = Callable[[Key, bool], None]


class ChunkQueue:
    """The process's chunks waiting for their writer call, and who waits for each."""

    def __init__(self, calls: WriterCalls, unacked: UnackedChunks, max_batch_bytes: int) -> None:
        """``calls``: the process's writer calls; ``unacked``: where the chunks are held meanwhile."""
        self.calls = calls
        self.unacked = unacked
        self.max_batch_bytes = max_batch_bytes
        self._queue: dict[Key, None] = {}  # keys to send, oldest first
        self._waiting: dict[Key, Acknowledged] = {}
        self._sender: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()  # a call was answered, or chunks came
        self._attempt = 0  # failed calls in a row: the backoff's step
        self._retry_at = 0.0  # time.monotonic() before which the queue waits after a failure
        #: calls that failed or timed out (their chunks went back to the queue's front)
        self.delivery_failures = 0
        #: chunks whose spilled file was gone when they were to be sent (something cleaned the temp dir)
        self.chunks_lost = 0

    def submit(self, key: Key, acknowledged: Acknowledged) -> None:
        """Send a chunk already held in ``unacked`` until the writer acknowledges it, then let it
        go and call ``acknowledged(key, True)`` (``False``: its spilled file was gone)."""
        self._waiting[key] = acknowledged
        self._queue[key] = None
        self._changed.set()
        self._ensure_sender()

    @property
    def queued(self) -> int:
        """Chunks waiting for their next call (not counting those in calls out)."""
        return len(self._queue)

    def _ensure_sender(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_queue())

    async def _send_queue(self) -> None:
        """Send the queue while calls may go out; after a failed call, wait out the backoff (or a
        call answered meanwhile)."""
        while self._queue:
            await asyncio.sleep(BATCH_INTERVAL_S)  # the chunks of one boundary go together
            self._send_what_may_go()
            if not self._queue:
                break
            self._changed.clear()
            busy = self.calls.full
            delay = self._retry_at - time.monotonic()
            if busy or delay > 0:
                try:  # until a call is answered, chunks come, or the backoff is over
                    await asyncio.wait_for(self._changed.wait(), None if busy else delay)
                except TimeoutError:
                    pass

    def _send_what_may_go(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue and not self.calls.full and time.monotonic() >= self._retry_at:
            keys, chunks = self._take()
            if chunks:
                task = loop.create_task(self._send(keys, chunks))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
            del chunks  # the call holds them while it is out; nobody else

    def _take(self) -> tuple[list[Key], list[Chunk]]:
        """The oldest queued chunks up to ``max_batch_bytes`` (at least one), read back if spilled."""
        keys: list[Key] = []
        size = 0
        for key in self._queue:
            chunk_size = self.unacked.size_of(key)
            if keys and size + chunk_size > self.max_batch_bytes:
                break
            keys.append(key)
            size += chunk_size
        chunks: list[Chunk] = []
        for key in keys:
            del self._queue[key]
            try:
                blob, steps, fields = self.unacked.get(key)
            except FileNotFoundError:
                log.error("chunk %s:%s was spilled and its file is gone; it cannot be delivered", *key)
                self.chunks_lost += 1
                self._let_go(key, delivered=False)
                continue
            chunks.append((key[0], key[1], blob, steps, fields))
        return [(chunk[0], chunk[1]) for chunk in chunks], chunks

    async def _send(self, keys: list[Key], chunks: list[Chunk]) -> None:
        """One writer call; on failure or timeout its chunks go back to the queue's front, in order."""
        call = self.calls.start(chunks)
        del chunks
        call.add_done_callback(lambda answered: self._answered(keys, answered))
        try:
            await answer_of(call, self.calls.timeout_s)
        except Exception:  # the writer failed, is restarting, or is stopped (TimeoutError)
            self.delivery_failures += 1
            waiting = [key for key in keys if key in self._waiting and key not in self._queue]
            self._queue = {**dict.fromkeys(waiting), **self._queue}
            self._retry_at = time.monotonic() + retry_delay(self._attempt)
            self._attempt += 1
            self._ensure_sender()

    def _answered(self, keys: list[Key], call: asyncio.Future[object]) -> None:
        if not call.cancelled() and call.exception() is None:
            for key in keys:
                if key in self._waiting:
                    self._queue.pop(key, None)
                    self._let_go(key, delivered=True)
            self._attempt, self._retry_at = 0, 0.0  # the writer answers: no more waiting
        self._changed.set()

    def _let_go(self, key: Key, delivered: bool) -> None:
        acknowledged = self._waiting.pop(key)
        self.unacked.discard(key)
        acknowledged(key, delivered)
