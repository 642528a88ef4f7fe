"""Recorder: cuts one game's play into chunks for the TrajectoryWriter.

The tick path pays a few list appends per step: the step's frame id, time, actions, rewards, flags,
the frame ids the participants had displayed, the RAM, and the screen after the step as the
codec's delta payload that the live stream computed anyway. Everything else happens once a
second, after the tick's frames went out: the chunk is sealed (columns built, packed, lz4) in a
callback scheduled behind the tick, and handed to the deliverer.

A chunk holds up to ``chunk_steps`` steps (one second at 60 fps), ending where the frame id reaches a
multiple of ``chunk_steps`` (or the episode ends), and stays in the process's ``UnackedChunks``
(memory up to a limit, files beyond it) until the writer acknowledges it; a failed delivery is
retried with backoff, so a writer restart loses nothing and a crash of the EnvActor loses at most
the chunk being filled. In an EnvActor, the process's ``ChunkBatcher`` sends every Recorder's
chunks from one queue, oldest first, and keeps at most ``MAX_CALLS_OUT`` calls out to the writer
(each at most ``MAX_BATCH_BYTES``): a call Ray could not deliver (a stopped writer) holds its
chunks until the writer answers, so resending every few seconds would hold them again and again
(measured: an EnvActor grew 30 KB per playing session a second with the writer stopped, ~4x the
chunks' own ~7 KB).

Chunk columns (``crowdplay.data`` reads them):

* ``frames``: frame messages (``crowdplay.codec``); ``frames[0]`` is a keyframe of the screen
  before the chunk's first step, ``frames[i + 1]`` the screen after step ``i``, so a chunk decodes
  on its own and holds ``steps + 1`` observations;
* ``frame_id``, ``tick_time``, ``terminated``, ``truncated``, ``ram`` (steps x 128 for ALE);
* per agent ``action/<agent>``, ``reward/<agent>``, ``client_frame/<agent>`` (the frame the
  participant had displayed when the action was applied);
* ``inputs``: every applied input: ``[step, agent, held keys, seq, client_frame, received_at]``
  (wall-clock seconds); the held keys of any step are those of the agent's latest input before it;
* ``ai_actions``: every new answer of an AI agent's policy: ``[step, agent, action,
  observed_frame, latency_s, substitute]``: applied from ``step`` on, computed from the screen of
  frame ``observed_frame`` (``client_frame/<agent>`` then holds that frame too), answered
  ``latency_s`` after it was asked; ``substitute`` is None for the policy's own answer, else the
  reason the action played is a substitute (the policy raised, its actor is down, "no answer
  yet" after a reset with ``observed_frame`` -1...; the action is None when the agent has no
  no-op and keeps its previous action);
* ``controllers``: who played each agent in this chunk (``{"human": true, "participant": ...}``
  or ``{"human": false, "policy": ...}``); a change of controller starts a new chunk;
* ``start_state``: the emulator state before the chunk's first step, in every chunk whose
  ``first_step`` is a multiple of the snapshot interval (so replay can start there), else None;
* ``first_step``: the episode step the chunk starts at;
* for environments whose observation is not the screen (every non-ALE env): ``obs/<agent>[/<path>]``
  (each agent's observation after each step, one column per leaf of its space), ``obs0/...`` (the
  observation ``reset`` returned; first chunk only) and ``infos`` (the JSON-able part of step
  infos, sparse); see ``crowdplay.recording.observations``. The episode's ``observation_spaces``
  (one JSON description per agent) and ``reset_infos`` are stored with its first chunk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crowdplay import codec
from crowdplay.environments.spaces import Leaves
from crowdplay.recording.chunk import pack_chunk
from crowdplay.recording.observations import ObservationColumns
from crowdplay.recording.unacked import UnackedChunks

log = logging.getLogger(__name__)
Key = tuple[str, int]
#: Told when the writer acknowledged a submitted chunk (True), or it cannot be sent (False).
Acknowledged = Callable[[Key, bool], None]
Deliver = Callable[[str, int, bytes, int, dict], Awaitable[object]]
Snapshot = Callable[[], "bytes | None"]
#: A step's (or reset's) observations and infos, per agent; None when not recorded.
Observed = tuple[dict[str, Any], dict[str, Any]] | None
RETRY_DELAYS_S = (0.5, 1, 2, 5, 10)
#: Distinct substitute reasons counted per agent in an episode's ``ai_answers`` (the rest: "other").
MAX_SUBSTITUTE_REASONS = 8
#: Chunks sealed within this window (all sessions of a process cut on the same tick) travel together.
BATCH_INTERVAL_S = 0.1
#: A writer call unanswered this long counts as failed and is resent (writes are idempotent); the
#: writer answers within its store timeout plus a spool write.
WRITER_CALL_TIMEOUT_S = 30.0
#: Time between sealing two chunks of one process.
SEAL_SPACING_S = 0.003
#: Writer calls a process keeps unanswered at most. Ray holds a call's chunks until the writer
#: answers it, also after the caller gave up waiting (a stopped writer answers nothing), so each
#: resend of a call that timed out would hold the same chunks once more; beyond this many, chunks
#: wait in ``UnackedChunks`` (bounded): in the queue (``submit``), or their delivery fails at once
#: and is tried again later (``deliver``). Two are enough for a chunk sealed during one slow call
#: not to wait for it.
MAX_CALLS_OUT = 4
#: Packed chunk bytes in one writer call at most (a batch is ~7 KB per session; after an outage,
#: the resends of every waiting chunk go out in calls of at most this size).
MAX_BATCH_BYTES = 4 * 2**20


class WriterBusy(RuntimeError):
    """``MAX_CALLS_OUT`` writer calls are unanswered: the batch was not sent (its chunks are
    tried again later, as after any failed delivery)."""


class ChunkBatcher:
    """One per EnvActor process: seals its sessions' chunks a few ms apart and sends them in one
    writer call.

    Chunks end on the shared clock's grid, so all sessions of a process cut a chunk on the same
    tick; sealing them all at once (~0.3 ms each) would delay the next tick, so they are sealed
    one per ``SEAL_SPACING_S``. One Ray call costs ~1 ms of CPU at each end; one per chunk per
    session was measured at 0.11 cores of writer CPU for 60 sessions, so the chunks of one
    boundary travel together: ``deliver`` waits up to ``BATCH_INTERVAL_S`` for the others, resolves
    when the batch was acknowledged, and raises when that call failed, so each Recorder keeps its
    own retries. A batch goes out in calls of at most ``max_batch_bytes``, and only while fewer
    than ``max_calls_out`` calls are unanswered (else it fails at once with ``WriterBusy``).

    ``unacked``: the process's buffer of unacknowledged chunks, shared by its Recorders (the
    EnvActor reports it on the dashboard). Recorders given the batcher hand it their chunks with
    ``submit`` instead of ``deliver``: one queue for the process, oldest first, retried with
    backoff as a whole, so a backlog costs no task per chunk and a spilled chunk is read back only
    when it goes out.
    """

    def __init__(
        self,
        send_batch: Callable[[list[tuple]], Awaitable[object]],
        unacked: UnackedChunks | None = None,
        max_calls_out: int | None = None,
        max_batch_bytes: int | None = None,
    ) -> None:
        self.send_batch = send_batch
        self.unacked = unacked if unacked is not None else UnackedChunks()
        self.max_calls_out = max_calls_out or MAX_CALLS_OUT
        self.max_batch_bytes = max_batch_bytes or MAX_BATCH_BYTES
        self._pending: list[tuple[tuple, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None  # the flush that has not taken its batch yet
        self._flushes: set[asyncio.Task] = set()  # every flush still running (strong references)
        #: writer calls not answered yet, including those whose callers gave up waiting
        self._calls_out: set[asyncio.Future] = set()
        self._seals: deque[Callable[[], None]] = deque()
        self._sealer: asyncio.Task | None = None
        # The process's queue (``submit``): keys to send, oldest first, and who waits for each.
        self._queue: dict[Key, None] = {}
        self._waiting: dict[Key, Acknowledged] = {}
        self._sender: asyncio.Task | None = None
        self._sends: set[asyncio.Task] = set()
        self._changed: asyncio.Event | None = None  # a call was answered, or chunks came
        self._attempt = 0  # failed calls in a row: the backoff's step
        self._retry_at = 0.0  # time.monotonic() before which the queue waits after a failure
        #: queued calls that failed or timed out (their chunks went back to the queue's front)
        self.delivery_failures = 0
        #: chunks whose spilled file was gone when they were to be sent (something cleaned the temp dir)
        self.chunks_lost = 0

    def seal_later(self, seal: Callable[[], None]) -> None:
        """Seal a cut chunk after the ones already waiting, ``SEAL_SPACING_S`` apart (the Recorder's ``seal_later``)."""
        self._seals.append(seal)
        if self._sealer is None or self._sealer.done():
            self._sealer = asyncio.get_running_loop().create_task(self._seal_spaced())

    async def _seal_spaced(self) -> None:
        while self._seals:
            await asyncio.sleep(SEAL_SPACING_S)  # the tick that cut the chunks sends its frames first
            self._seals.popleft()()

    async def deliver(self, episode_id: str, seq: int, blob: bytes, steps: int, fields: dict) -> None:
        """Send a sealed chunk with the others of its boundary; returns once the writer acknowledged the
        batch, raises if that call failed (``WriterBusy`` when too many calls are out)."""
        done = asyncio.get_running_loop().create_future()
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

    def _split(self, batch: list[tuple[tuple, asyncio.Future]]) -> list[list[tuple[tuple, asyncio.Future]]]:
        """The batch in parts of at most ``max_batch_bytes`` of packed chunks (at least one chunk each)."""
        parts: list[list[tuple[tuple, asyncio.Future]]] = [[]]
        size = 0
        for item in batch:
            blob_size = len(item[0][2])
            if parts[-1] and size + blob_size > self.max_batch_bytes:
                parts.append([])
                size = 0
            parts[-1].append(item)
            size += blob_size
        return [part for part in parts if part]

    async def _send(self, part: list[tuple[tuple, asyncio.Future]]) -> None:
        """One writer call for ``part``; its chunks' deliveries resolve with its answer. The call
        counts as out until the writer answers it, even after ``WRITER_CALL_TIMEOUT_S`` made its
        chunks' deliveries fail (they are resent; writes are idempotent)."""
        if len(self._calls_out) >= self.max_calls_out:
            error = WriterBusy(f"{len(self._calls_out)} writer calls are unanswered")
            for _, done in part:
                done.set_exception(error)
            return
        call = asyncio.ensure_future(self.send_batch([chunk for chunk, _ in part]))
        self._calls_out.add(call)
        call.add_done_callback(self._call_answered)
        try:
            await asyncio.wait_for(asyncio.shield(call), WRITER_CALL_TIMEOUT_S)
        except (Exception, asyncio.TimeoutError) as error:
            for _, done in part:
                done.set_exception(error)
        else:
            for _, done in part:
                done.set_result(None)

    def _call_answered(self, call: asyncio.Future) -> None:
        self._calls_out.discard(call)
        if not call.cancelled():
            call.exception()  # retrieved: a late failure of a call nobody waits for is not an error to log

    @property
    def calls_out(self) -> int:
        """Writer calls not answered yet."""
        return len(self._calls_out)

    # ----------------------------------------------------------------- the process's queue
    def submit(self, key: Key, acknowledged: Acknowledged) -> None:
        """Send a chunk already held in ``unacked`` until the writer acknowledges it, then let it
        go and call ``acknowledged(key, True)`` (``False``: its spilled file was gone)."""
        self._waiting[key] = acknowledged
        self._queue[key] = None
        self._wake()
        self._ensure_sender()

    def _ensure_sender(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_queue())

    @property
    def queued(self) -> int:
        """Chunks waiting for their next call (not counting those in calls out)."""
        return len(self._queue)

    def _wake(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        self._changed.set()

    async def _send_queue(self) -> None:
        """Send the queue in calls of at most ``max_batch_bytes``, at most ``max_calls_out`` out at
        once; after a failed call, wait out the backoff (or a call answered meanwhile)."""
        loop = asyncio.get_running_loop()
        while self._queue:
            await asyncio.sleep(BATCH_INTERVAL_S)  # the chunks of one boundary go together
            while self._queue and len(self._calls_out) < self.max_calls_out and time.monotonic() >= self._retry_at:
                keys, chunks = self._take()
                if chunks:
                    task = loop.create_task(self._send_queued(keys, chunks))
                    self._sends.add(task)
                    task.add_done_callback(self._sends.discard)
                del chunks  # the call holds them while it is out; nobody else
            if not self._queue:
                break
            self._changed.clear()
            busy = len(self._calls_out) >= self.max_calls_out
            delay = self._retry_at - time.monotonic()
            if busy or delay > 0:
                try:  # until a call is answered, chunks come, or the backoff is over
                    await asyncio.wait_for(self._changed.wait(), None if busy else delay)
                except asyncio.TimeoutError:
                    pass

    def _take(self) -> tuple[list[Key], list[tuple]]:
        """The oldest queued chunks up to ``max_batch_bytes`` (at least one), read back if spilled."""
        keys: list[Key] = []
        size = 0
        for key in self._queue:
            chunk_size = self.unacked.size_of(key)
            if keys and size + chunk_size > self.max_batch_bytes:
                break
            keys.append(key)
            size += chunk_size
        chunks = []
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
        return [chunk[:2] for chunk in chunks], chunks

    async def _send_queued(self, keys: list[Key], chunks: list[tuple]) -> None:
        """One writer call. Its answer acknowledges its chunks whenever it comes (also after
        ``WRITER_CALL_TIMEOUT_S``, when they went back to the queue to be sent again)."""
        call = asyncio.ensure_future(self.send_batch(chunks))
        del chunks
        self._calls_out.add(call)
        call.add_done_callback(self._call_answered)
        call.add_done_callback(lambda answered: self._queued_call_answered(keys, answered))
        try:
            await asyncio.wait_for(asyncio.shield(call), WRITER_CALL_TIMEOUT_S)
        except (Exception, asyncio.TimeoutError):
            self.delivery_failures += 1
            waiting = [key for key in keys if key in self._waiting and key not in self._queue]
            self._queue = {**dict.fromkeys(waiting), **self._queue}  # back to the front, in order
            self._retry_at = time.monotonic() + RETRY_DELAYS_S[min(self._attempt, len(RETRY_DELAYS_S) - 1)]
            self._attempt += 1
            self._ensure_sender()

    def _queued_call_answered(self, keys: list[Key], call: asyncio.Future) -> None:
        if not call.cancelled() and call.exception() is None:
            for key in keys:
                if key in self._waiting:
                    self._queue.pop(key, None)
                    self._let_go(key, delivered=True)
            self._attempt, self._retry_at = 0, 0.0  # the writer answers: no more waiting
        self._wake()

    def _let_go(self, key: Key, delivered: bool) -> None:
        acknowledged = self._waiting.pop(key)
        self.unacked.discard(key)
        acknowledged(key, delivered)


@dataclass
class OpenChunk:
    """The chunk being filled: what it starts from and the steps so far."""

    episode_id: str
    seq: int
    first_step: int
    screen: codec.Screen  # before the first step; keyframe-encoded when sealed, off the tick path
    start_state: bytes | None
    controllers: dict[str, dict]
    agents: tuple[str, ...] = ()
    # One list per column, appended to per step: no object per step for the garbage collector to
    # track (measured: per-step tuples set off collections that paused a process for ~40 ms).
    frame_ids: list[int] = field(default_factory=list)
    tick_times: list[float] = field(default_factory=list)
    terminated: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    deltas: list[bytes] = field(default_factory=list)
    delta_flags: list[int] = field(default_factory=list)
    rams: list[bytes] = field(default_factory=list)
    actions: list[list[int]] = field(default_factory=list)  # [agent index][step]
    rewards: list[list[float]] = field(default_factory=list)
    client_frames: list[list[int]] = field(default_factory=list)
    inputs: list[list] = field(default_factory=list)
    ai_actions: list[list] = field(default_factory=list)
    #: the environment's own observations and step infos (None for ALE: the screen is its observation)
    observations: ObservationColumns | None = None

    def __post_init__(self) -> None:
        self.actions = [[] for _ in self.agents]
        self.rewards = [[] for _ in self.agents]
        self.client_frames = [[] for _ in self.agents]

    @property
    def steps(self) -> int:
        """Steps recorded in the chunk so far."""
        return len(self.frame_ids)


def drop_first(watchers: list[dict[str, Any]], who: str) -> list[dict[str, Any]]:
    """``watchers`` without the first entry of ``who``."""
    index = next((index for index, entry in enumerate(watchers) if entry["who"] == who), None)
    return watchers if index is None else watchers[:index] + watchers[index + 1 :]


class Recorder:
    """Records one game's episodes; see the module docstring for the chunk layout."""

    def __init__(
        self,
        game_id: str,
        agents: tuple[str, ...],
        deliver: Deliver,
        chunk_steps: int,
        controllers: dict[str, dict],
        snapshot: Snapshot | None = None,
        snapshot_interval: int = 600,
        episode_fields: dict[str, Any] | None = None,
        seal_later: Callable[[Callable[[], None]], None] | None = None,
        batcher: ChunkBatcher | None = None,
    ) -> None:
        """``controllers``: who plays each agent at the start; ``snapshot``: the emulator state now,
        taken at the first chunk boundary past every ``snapshot_interval`` steps;
        ``episode_fields``: stored with every episode (task, session and participant details);
        ``seal_later``: schedules sealing a cut chunk (a ChunkBatcher's spaces them out; default: at
        the next turn of the event loop); ``batcher``: the process's, to which sealed chunks are
        submitted (its queue sends and resends them; they wait in its bounded ``unacked``); without
        one, each chunk is delivered with ``deliver`` and retried on its own, from a buffer of this
        Recorder's (unbounded)."""
        self.game_id = game_id
        self.agents = agents
        self.deliver = deliver
        self.chunk_steps = chunk_steps
        self.controllers = {agent: dict(controllers[agent]) for agent in agents}
        self.snapshot = snapshot
        self.snapshot_interval = snapshot_interval
        self.episode_fields = dict(episode_fields or {})
        self.seal_later = seal_later or (lambda seal: asyncio.get_running_loop().call_soon(seal))
        self.batcher = batcher
        self.unacked_chunks = batcher.unacked if batcher is not None else UnackedChunks()
        #: this Recorder's chunks waiting for their acknowledgement: key -> packed bytes (the chunks
        #: themselves are in ``unacked_chunks``)
        self.unacked: dict[tuple[str, int], int] = {}
        self.delivery_failures = 0
        #: spilled chunks whose file disappeared before they were acknowledged (never, unless
        #: something deletes files in the temp dir)
        self.chunks_lost = 0
        self._fields: dict[str, Any] = {}
        #: who watches the game now (``note_watcher``)
        self._watching: list[dict[str, Any]] = []
        self._chunk: OpenChunk | None = None
        self._sealing = 0  # chunks cut but not sealed yet
        self._leaves: dict[str, Leaves] | None = None  # the episode's observation columns, per agent
        self._deliveries: set[asyncio.Task] = set()

    @property
    def episode_id(self) -> str:
        """The current episode's id (empty before the first chunk)."""
        return self._chunk.episode_id if self._chunk else ""

    @property
    def idle(self) -> bool:
        """Nothing left to do: no episode open, no chunk waiting to be sealed or acknowledged (an
        idle recorder of an ended game can be let go, and with it the game's emulator)."""
        return self._chunk is None and not self._sealing and not self.unacked

    # ----------------------------------------------------------------- episodes
    def begin_episode(self, episode: int, screen: codec.Screen, fields: dict[str, Any], observed: Observed = None) -> None:
        """Open the episode's first chunk. ``fields`` describe it (``observation_spaces``: each
        agent's space description when its observations are recorded); ``observed``: the
        observations and infos ``reset`` returned. An observation outside its space raises
        ``ObservationOutsideSpace`` here, before anything of the episode is recorded."""
        spaces = fields.get("observation_spaces")
        self._leaves = {agent: Leaves(description) for agent, description in spaces.items()} if spaces else None
        columns = None
        if self._leaves is not None and observed is not None:
            columns = ObservationColumns(self._leaves)
            columns.start(observed[0])
        self._fields = {
            "game_id": self.game_id,
            "episode": episode,
            "started_at": time.time(),
            **self.episode_fields,
            **fields,
        }
        if self._watching:
            self._fields["watched"] = [dict(entry) for entry in self._watching]
        self._note_controllers()
        self._chunk = self._open(f"{self.game_id}-{episode}", 0, 0, screen, fields.get("start_state"))
        self._chunk.observations = columns

    def end_episode(self, status: str, fields: dict[str, Any]) -> None:
        """Seal the last chunk with the episode's final fields (``status``: complete, finished or
        interrupted; see ``crowdplay.recording.status``)."""
        chunk, self._chunk = self._chunk, None
        if chunk is None or (chunk.seq == 0 and not chunk.steps):
            return  # the episode never took a step: nothing to keep
        self._fields.update(fields, status=status, ended_at=time.time())
        self._seal(chunk, {**self._fields, "chunks": chunk.seq + 1})

    def close(self) -> None:
        """The game is over: no episode will follow. Lets go of the emulator (``snapshot`` is one of
        its methods) while the last chunks are still on their way to the writer."""
        self.snapshot = None

    def describe_agent(self, agent: str, details: dict[str, Any]) -> None:
        """Who plays ``agent`` (their session's details), stored with this and every later episode
        under ``sessions``."""
        sessions = {**self.episode_fields.get("sessions", {}), agent: details}
        self.episode_fields["sessions"] = sessions
        self._fields["sessions"] = sessions

    def note_watcher(self, who: str, watching: bool) -> None:
        """Someone started (or stopped) watching the game read-only: noted in the episode's
        document as ``watched`` ([{"who", "from", "until"}], the times in seconds since the epoch;
        ``until`` None while they watch, or for those still watching when the episode ended).
        Only there: a watched game's chunks are those it would have recorded unwatched."""
        now = time.time()
        watched = [dict(entry) for entry in self._fields.get("watched", ())]  # a new list: a sealed chunk's copy keeps its own
        if watching:
            self._watching.append({"who": who, "from": now, "until": None})
            watched.append({"who": who, "from": now, "until": None})
        else:
            self._watching = drop_first(self._watching, who)
            for entry in reversed(watched):
                if entry["who"] == who and entry["until"] is None:
                    entry["until"] = now
                    break
        self._fields["watched"] = watched

    def restamp_start(self) -> None:
        """Play begins now (the first episode was opened while the game waited for its players)."""
        self._fields["started_at"] = time.time()

    def set_controller(self, agent: str, controller: dict, screen: codec.Screen) -> None:
        """Another controller (a fallback AI, a reconnected human) plays ``agent`` from the next step."""
        self.controllers = {**self.controllers, agent: dict(controller)}
        self._note_controllers()
        if self._chunk is not None:
            if self._chunk.steps:
                self._cut(screen)
            self._chunk.controllers = self.controllers

    def _note_controllers(self) -> None:
        """Keep the episode's searchable summary of who played: every participant and policy so far."""
        humans = set(self._fields.get("participants", ()))
        policies = set(self._fields.get("policies", ()))
        for controller in self.controllers.values():
            if controller.get("human"):
                if controller.get("participant"):
                    humans.add(controller["participant"])
            else:
                policies.add(controller["policy"])
        self._fields.update(
            controllers=self.controllers, participants=sorted(humans), policies=sorted(policies), human_only=not policies
        )

    # ----------------------------------------------------------------- steps (the tick path)
    def step(
        self,
        frame_id: int,
        actions: dict[str, int],
        rewards: dict[str, float],
        terminated: bool,
        truncated: bool,
        client_frames: dict[str, int],
        screen: codec.Screen,
        delta: codec.Payload,
        ram: bytes | None,
        observed: Observed = None,
    ) -> None:
        """One step; ``observed``: the observations and infos it returned (when recorded)."""
        chunk = self._chunk
        if chunk.observations is not None and observed is not None:
            chunk.observations.add(chunk.steps, *observed)  # first: an observation outside its space records nothing
        chunk.frame_ids.append(frame_id)
        chunk.tick_times.append(time.time())
        chunk.terminated.append(terminated)
        chunk.truncated.append(truncated)
        chunk.deltas.append(delta.data)
        chunk.delta_flags.append(delta.flags)
        if ram is not None:
            chunk.rams.append(ram)
        for index, agent in enumerate(self.agents):
            chunk.actions[index].append(actions[agent])
            chunk.rewards[index].append(rewards.get(agent, 0.0))
            chunk.client_frames[index].append(client_frames[agent])
        # Chunks end on the shared clock's grid (every ``chunk_steps`` frame ids), so all sessions
        # of a process seal together and their chunks travel in one writer call.
        if ((frame_id + 1) % self.chunk_steps == 0 or len(chunk.frame_ids) >= self.chunk_steps) and not (terminated or truncated):
            self._cut(screen)

    def input(self, agent: str, keys: tuple[str, ...], seq: int, client_frame: int, received_at: float) -> None:
        """An input applied at the coming step (``received_at`` is wall-clock time)."""
        chunk = self._chunk
        chunk.inputs.append([chunk.steps, agent, list(keys), seq, client_frame, received_at])

    def ai_action(self, agent: str, action: int | None, observed_frame: int, latency_s: float, substitute: str | None = None) -> None:
        """A policy's new answer, applied at the coming step, computed from frame ``observed_frame``;
        or, with ``substitute`` (the reason), the action played in place of one. The episode
        document counts both per agent (``ai_answers``)."""
        chunk = self._chunk
        chunk.ai_actions.append([chunk.steps, agent, action, observed_frame, round(latency_s, 6), substitute])
        counts = self._fields.setdefault("ai_answers", {}).setdefault(agent, {"policy": 0, "substituted": 0, "reasons": {}})
        if substitute is None:
            counts["policy"] += 1
        else:
            counts["substituted"] += 1
            reason = substitute if len(counts["reasons"]) < MAX_SUBSTITUTE_REASONS or substitute in counts["reasons"] else "other"
            counts["reasons"][reason] = counts["reasons"].get(reason, 0) + 1

    # ----------------------------------------------------------------- chunks
    def _open(self, episode_id: str, seq: int, first_step: int, screen: codec.Screen, start_state: bytes | None) -> OpenChunk:
        observations = ObservationColumns(self._leaves) if self._leaves is not None else None
        return OpenChunk(episode_id, seq, first_step, screen, start_state, self.controllers, self.agents, observations=observations)

    def _cut(self, screen: codec.Screen) -> None:
        """Close the chunk being filled and open the next; sealing waits until this tick's frames went out."""
        full = self._chunk
        # Only the last chunk sets ``status`` and ``chunks``: a first chunk resent late must not undo them.
        fields = dict(self._fields) if full.seq == 0 else {}
        self._sealing += 1

        def seal() -> None:
            self._sealing -= 1
            self._seal(full, fields)

        self.seal_later(seal)
        first_step = full.first_step + full.steps
        due = self.snapshot is not None and first_step // self.snapshot_interval > full.first_step // self.snapshot_interval
        self._chunk = self._open(full.episode_id, full.seq + 1, first_step, screen, self.snapshot() if due else None)

    def _seal(self, chunk: OpenChunk, fields: dict) -> None:
        """Build the chunk's columns, pack it, and start its delivery. The first chunk carries the
        episode's description and the last its outcome; those in between write only themselves."""
        count = chunk.steps
        message = codec.frame_message
        # A fast keyframe: ~30 us instead of ~130 us for ~600 more bytes in a ~6 KB chunk.
        frames = [message(codec.keyframe_payload(chunk.screen, level=1), flags=0, frame_id=0, env_step=0, score=0.0, input_seq=0)]
        frames += [
            message(codec.Payload(data, flags), flags=0, frame_id=frame_id, env_step=0, score=0.0, input_seq=0)
            for data, flags, frame_id in zip(chunk.deltas, chunk.delta_flags, chunk.frame_ids)
        ]
        columns: dict[str, Any] = {
            "steps": count,
            "first_step": chunk.first_step,
            "frames": frames,
            "frame_id": np.asarray(chunk.frame_ids, dtype=np.int64),
            "tick_time": np.asarray(chunk.tick_times, dtype=np.float64),
            "terminated": np.asarray(chunk.terminated, dtype=bool),
            "truncated": np.asarray(chunk.truncated, dtype=bool),
            "ram": np.frombuffer(b"".join(chunk.rams), dtype=np.uint8).reshape(count, -1) if chunk.rams else None,
            "inputs": chunk.inputs,
            "ai_actions": chunk.ai_actions,
            "controllers": chunk.controllers,
            "start_state": chunk.start_state,
        }
        if chunk.observations is not None:
            columns.update(chunk.observations.columns())
        for index, agent in enumerate(self.agents):
            columns[f"action/{agent}"] = np.asarray(chunk.actions[index], dtype=np.int64)
            columns[f"reward/{agent}"] = np.asarray(chunk.rewards[index], dtype=np.float64)
            columns[f"client_frame/{agent}"] = np.asarray(chunk.client_frames[index], dtype=np.int64)
        key = (chunk.episode_id, chunk.seq)
        blob = pack_chunk(columns)
        self.unacked_chunks.put(key, blob, count, fields)
        self.unacked[key] = len(blob)
        if self.batcher is not None:
            self.batcher.submit(key, self._acknowledged)
            return
        task = asyncio.get_running_loop().create_task(self._deliver(key))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    def _acknowledged(self, key: Key, delivered: bool) -> None:
        """The batcher let go of a chunk: acknowledged, or (never, unless its spilled file was
        deleted) lost."""
        del self.unacked[key]
        if not delivered:
            self.chunks_lost += 1

    async def _deliver(self, key: tuple[str, int]) -> None:
        """Deliver until acknowledged, backing off to one try every ``RETRY_DELAYS_S[-1]`` seconds
        (a Recorder without a batcher: its own buffer never spills)."""
        attempt = 0
        while True:
            blob, steps, fields = self.unacked_chunks.get(key)
            try:
                await self.deliver(key[0], key[1], blob, steps, fields)
            except Exception:  # writer restarting, or busy: keep the chunk, try again
                self.delivery_failures += 1
                await asyncio.sleep(RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)])
                attempt += 1
                continue
            self.unacked_chunks.discard(key)
            del self.unacked[key]
            return
