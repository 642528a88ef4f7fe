"""Recorder: cuts one game's play into chunks for the TrajectoryWriter.

The tick path pays a few list appends per step (``OpenChunk``): the step's frame id, time,
actions, rewards, flags, the frame ids the participants had displayed, the RAM, and the screen
after the step as the codec's delta payload that the live stream computed anyway. Everything else
happens once a second, after the tick's frames went out: the chunk is sealed (columns built,
packed, lz4) in a callback scheduled behind the tick, and handed on.

A chunk holds up to ``chunk_steps`` steps (one second at 60 fps), ending where the frame id reaches a
multiple of ``chunk_steps`` (or the episode ends), and stays in the process's ``UnackedChunks``
(memory up to a limit, files beyond it) until the writer acknowledges it; a failed delivery is
retried with backoff, so a writer restart loses nothing and a crash of the EnvActor loses at most
the chunk being filled. In an EnvActor, the process's ``ChunkBatcher`` sends every Recorder's
chunks (``crowdplay.recording.batcher``).

The chunk's columns are described in ``crowdplay.recording.open_chunk``, the episode's document in
``crowdplay.recording.episode_document``. The episode's ``observation_spaces`` (one JSON
description per agent) and ``reset_infos`` are stored with its first chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from crowdplay import codec
from crowdplay.controllers import Controller, documents
from crowdplay.environments.spaces import Leaves
from crowdplay.inputs import AppliedInput
from crowdplay.recording.batcher import ChunkBatcher
from crowdplay.recording.chunk import pack_chunk
from crowdplay.recording.episode_document import EpisodeDocument
from crowdplay.recording.observations import ObservationColumns
from crowdplay.recording.open_chunk import OpenChunk
from crowdplay.recording.step import Observed, Stepped
from crowdplay.recording.unacked import Key, UnackedChunks
from crowdplay.recording.writer_calls import retry_delay

__all__ = ["ChunkBatcher", "Deliver", "Observed", "Recorder", "Stepped", "Snapshot"]

#: Sends one sealed chunk to the writer: (episode_id, seq, packed columns, steps, episode fields).
Deliver = Callable[[str, int, bytes, int, dict[str, Any]], Awaitable[object]]
#: The emulator's state now, for replay to start from; None when the environment has none.
Snapshot = Callable[[], "bytes | None"]


class Recorder:
    """Records one game's episodes as chunks, each delivered until the writer acknowledges it."""

    def __init__(
        self,
        game_id: str,
        agents: tuple[str, ...],
        deliver: Deliver,
        chunk_steps: int,
        controllers: Mapping[str, Controller],
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
        self.controllers = {agent: controllers[agent] for agent in agents}
        #: ``controllers`` as stored with each chunk, made again only when a controller changes
        self._stored_controllers = documents(self.controllers)
        self.snapshot = snapshot
        self.snapshot_interval = snapshot_interval
        self.document = EpisodeDocument(game_id, episode_fields)
        self.seal_later = seal_later or self._seal_soon
        self.batcher = batcher
        self.unacked_chunks = batcher.unacked if batcher is not None else UnackedChunks()
        #: this Recorder's chunks waiting for their acknowledgement: key -> packed bytes (the chunks
        #: themselves are in ``unacked_chunks``)
        self.unacked: dict[Key, int] = {}
        self.delivery_failures = 0
        #: spilled chunks whose file disappeared before they were acknowledged (never, unless
        #: something deletes files in the temp dir)
        self.chunks_lost = 0
        self._chunk: OpenChunk | None = None
        self._sealing = 0  # chunks cut but not sealed yet
        self._leaves: dict[str, Leaves] | None = None  # the episode's observation columns, per agent
        self._deliveries: set[asyncio.Task[None]] = set()

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
        self.document.begin(episode, fields, self.controllers)
        self._chunk = self._open(f"{self.game_id}-{episode}", 0, 0, screen, fields.get("start_state"))
        self._chunk.observations = columns

    def end_episode(self, status: str, fields: dict[str, Any]) -> None:
        """Seal the last chunk with the episode's final fields (``status``: complete, finished or
        interrupted; see ``crowdplay.recording.status``; ``fields``: see
        ``crowdplay.recording.episode_document.closing_fields``)."""
        chunk, self._chunk = self._chunk, None
        if chunk is None or (chunk.seq == 0 and not chunk.steps):
            return  # the episode never took a step: nothing to keep
        self._seal(chunk, self.document.close(status, fields, chunk.seq + 1))

    def close(self) -> None:
        """The game is over: no episode will follow. Lets go of the emulator (``snapshot`` is one of
        its methods) while the last chunks are still on their way to the writer."""
        self.snapshot = None

    def describe_agent(self, agent: str, details: dict[str, Any]) -> None:
        """Who plays ``agent`` (their session's details), stored with this and every later episode
        under ``sessions``."""
        self.document.describe_agent(agent, details)

    def note_watcher(self, who: str, watching: bool) -> None:
        """Someone started (or stopped) watching the game read-only: noted in the episode's
        document as ``watched``. Only there: a watched game's chunks are those it would have
        recorded unwatched."""
        self.document.note_watcher(who, watching)

    def page_event(self, agent: str, event: str, page_frame: int, frame: int) -> None:
        """A change on ``agent``'s participant's page (``crowdplay.engagement``), or the game
        pausing or resuming for it: listed in the episode's document as ``page_events``."""
        self.document.note_page_event(agent, event, page_frame, frame)

    def round_trip(self, agent: str, rtt_ms: float, page_frame: int, frame: int) -> None:
        """A round trip ``agent``'s participant's page measured (``crowdplay.round_trips``):
        listed in the episode's document as ``rtt_samples``."""
        self.document.note_round_trip(agent, rtt_ms, page_frame, frame)

    def restamp_start(self) -> None:
        """Play begins now (the first episode was opened while the game waited for its players)."""
        self.document.restamp_start()

    def set_controller(self, agent: str, controller: Controller, screen: codec.Screen) -> None:
        """Another controller (a fallback AI, a reconnected human) plays ``agent`` from the next step."""
        self.controllers = {**self.controllers, agent: controller}
        self._stored_controllers = documents(self.controllers)
        self.document.note_controllers(self.controllers)
        if self._chunk is not None:
            if self._chunk.steps:
                self._cut(screen)
            self._chunk.controllers = self._stored_controllers

    # ----------------------------------------------------------------- steps (the tick path)
    def step(self, step: Stepped, delta: codec.Payload) -> None:
        """One step, with its screen as ``delta`` (the codec's payload against the step's previous
        screen, which the live stream computed anyway)."""
        chunk = self._open_chunk()
        chunk.add_step(step, delta)
        # Chunks end on the shared clock's grid (every ``chunk_steps`` frame ids), so all sessions
        # of a process seal together and their chunks travel in one writer call.
        if ((step.frame_id + 1) % self.chunk_steps == 0 or chunk.steps >= self.chunk_steps) and not (step.terminated or step.truncated):
            self._cut(step.screen)

    def input(self, applied: AppliedInput, received_at: float) -> None:
        """A participant's input applied at the coming step (``received_at`` is wall-clock time)."""
        self._open_chunk().add_input(applied, received_at)

    def ai_action(self, agent: str, action: int | None, observed_frame: int, latency_s: float, substitute: str | None = None) -> None:
        """A policy's new answer, applied at the coming step, computed from frame ``observed_frame``;
        or, with ``substitute`` (the reason), the action played in place of one. The episode
        document counts both per agent (``ai_answers``)."""
        self._open_chunk().add_ai_action(agent, action, observed_frame, latency_s, substitute)
        self.document.count_ai_answer(agent, substitute)

    # ----------------------------------------------------------------- chunks
    def _open_chunk(self) -> OpenChunk:
        """The chunk being filled; steps, inputs and answers come only while an episode is open."""
        chunk = self._chunk
        assert chunk is not None, "no episode is open"
        return chunk

    def _open(self, episode_id: str, seq: int, first_step: int, screen: codec.Screen, start_state: bytes | None) -> OpenChunk:
        observations = ObservationColumns(self._leaves) if self._leaves is not None else None
        return OpenChunk(episode_id, seq, first_step, screen, start_state, self._stored_controllers, self.agents, observations=observations)

    def _cut(self, screen: codec.Screen) -> None:
        """Close the chunk being filled and open the next; sealing waits until this tick's frames went out."""
        full = self._open_chunk()
        # Only the last chunk sets ``status`` and ``chunks``: a first chunk resent late must not undo them.
        fields = self.document.first_chunk_fields() if full.seq == 0 else {}
        self._sealing += 1

        def seal() -> None:
            self._sealing -= 1
            self._seal(full, fields)

        self.seal_later(seal)
        first_step = full.first_step + full.steps
        due = first_step // self.snapshot_interval > full.first_step // self.snapshot_interval
        start_state = self.snapshot() if self.snapshot is not None and due else None
        self._chunk = self._open(full.episode_id, full.seq + 1, first_step, screen, start_state)

    @staticmethod
    def _seal_soon(seal: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_soon(seal)

    def _seal(self, chunk: OpenChunk, fields: dict[str, Any]) -> None:
        """Pack the chunk and start its delivery. The first chunk carries the episode's description
        and the last its outcome; those in between write only themselves."""
        key = (chunk.episode_id, chunk.seq)
        blob = pack_chunk(chunk.columns())
        self.unacked_chunks.put(key, blob, chunk.steps, fields)
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

    async def _deliver(self, key: Key) -> None:
        """Deliver until acknowledged, backing off to one try every ``RETRY_DELAYS_S[-1]`` seconds
        (a Recorder without a batcher: its own buffer never spills)."""
        attempt = 0
        while True:
            blob, steps, fields = self.unacked_chunks.get(key)
            try:
                await self.deliver(key[0], key[1], blob, steps, fields)
            except Exception:  # writer restarting, or busy: keep the chunk, try again
                self.delivery_failures += 1
                await asyncio.sleep(retry_delay(attempt))
                attempt += 1
                continue
            self.unacked_chunks.discard(key)
            del self.unacked[key]
            return
