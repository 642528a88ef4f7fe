"""Recorder: cuts one session's play into chunks for the TrajectoryWriter.

Every step adds one row (actions, rewards, flags, the frame ids the participants had seen, tick
time, RAM) and the screen after the step, as the codec's lossless frame message, usually a
delta of ~70 bytes that the live stream computed anyway. A chunk is sent as soon as it holds
``chunk_steps`` steps (one second at 60 fps) or its episode ends, and kept until the writer
acknowledges it; a failed delivery is retried with backoff, so a writer restart loses nothing and
a crash of the EnvActor loses at most the chunk being filled.

A chunk's ``frames`` start with a keyframe of the screen before its first step, so every chunk
decodes on its own: frames[i] is the observation for step i, frames[-1] the screen after the last.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from crowdplay import codec
from crowdplay.recording.chunk import pack_chunk

Deliver = Callable[[str, int, bytes, int, dict], Awaitable[object]]
RETRY_DELAYS_S = (0.5, 1, 2, 5, 10)
#: Chunks of all sessions of a process travel to the writer together, at most this often.
BATCH_INTERVAL_S = 0.5


class ChunkBatcher:
    """Collects the chunks of every session in a process and sends them in one writer call.

    One Ray call costs ~1 ms of CPU at each end; one per chunk per session was measured at 0.11
    cores of writer CPU for 60 sessions. ``deliver`` resolves when the batch holding the chunk
    was acknowledged, and raises when that call failed, so each Recorder keeps its own retries.
    """

    def __init__(self, send_batch: Callable[[list[tuple]], Awaitable[object]]) -> None:
        self.send_batch = send_batch
        self._pending: list[tuple[tuple, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    async def deliver(self, episode_id: str, seq: int, blob: bytes, steps: int, fields: dict) -> None:
        done = asyncio.get_running_loop().create_future()
        self._pending.append(((episode_id, seq, blob, steps, fields), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())
        await done

    async def _flush_later(self) -> None:
        await asyncio.sleep(BATCH_INTERVAL_S)
        batch, self._pending = self._pending, []
        try:
            await self.send_batch([chunk for chunk, _ in batch])
        except Exception as error:
            for _, done in batch:
                done.set_exception(error)
        else:
            for _, done in batch:
                done.set_result(None)


class Recorder:
    def __init__(self, session_id: str, agents: tuple[str, ...], deliver: Deliver, chunk_steps: int) -> None:
        self.session_id = session_id
        self.agents = agents
        self.deliver = deliver
        self.chunk_steps = chunk_steps
        self.unacked: dict[tuple[str, int], tuple[bytes, int, dict]] = {}
        self.episode_id = ""
        self._seq = 0
        self._fields: dict[str, Any] = {}
        self._rows: dict[str, list] = {}
        self._frames: list[bytes] = []
        self._previous: codec.Screen | None = None

    # ----------------------------------------------------------------- episodes
    def begin_episode(self, episode: int, screen: codec.Screen, fields: dict[str, Any]) -> None:
        self.episode_id = f"{self.session_id}-{episode}"
        self._seq = 0
        self._fields = {"session_id": self.session_id, "episode": episode, "started_at": time.time(), "status": "running", **fields}
        self._start_chunk(screen)

    def end_episode(self, status: str, fields: dict[str, Any]) -> None:
        """Send the last chunk with the episode's final fields (``status``: complete or interrupted)."""
        if self._seq == 0 and not self._rows["frame_id"]:
            return  # the episode never took a step: nothing to keep
        self._fields.update(fields, status=status, ended_at=time.time())
        self._send_chunk()

    # ----------------------------------------------------------------- steps
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
    ) -> None:
        rows = self._rows
        rows["frame_id"].append(frame_id)
        rows["tick_time"].append(time.time())
        rows["terminated"].append(terminated)
        rows["truncated"].append(truncated)
        for agent in self.agents:
            rows[f"action/{agent}"].append(actions[agent])
            rows[f"reward/{agent}"].append(rewards.get(agent, 0.0))
            rows[f"client_frame/{agent}"].append(client_frames[agent])
        if ram is not None:
            rows["ram"].append(ram)
        self._frames.append(codec.frame_message(delta, flags=0, frame_id=frame_id, env_step=0, score=0.0, input_seq=0))
        self._previous = screen
        if len(rows["frame_id"]) >= self.chunk_steps and not (terminated or truncated):
            self._send_chunk()
            self._start_chunk(screen)

    # ----------------------------------------------------------------- chunks
    def _start_chunk(self, screen: codec.Screen) -> None:
        names = ["frame_id", "tick_time", "terminated", "truncated", "ram"]
        names += [f"{column}/{agent}" for agent in self.agents for column in ("action", "reward", "client_frame")]
        self._rows = {name: [] for name in names}
        key = codec.keyframe_payload(screen)
        self._frames = [codec.frame_message(key, flags=0, frame_id=0, env_step=0, score=0.0, input_seq=0)]
        self._previous = screen

    def _send_chunk(self) -> None:
        rows = self._rows
        steps = len(rows["frame_id"])
        columns: dict[str, Any] = {"frames": self._frames, "steps": steps}
        for name, values in rows.items():
            if name == "ram":
                columns[name] = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(steps, -1) if values else None
            elif name.startswith(("action/", "client_frame/", "frame_id")):
                columns[name] = np.asarray(values, dtype=np.int64)
            elif name.startswith("reward/") or name == "tick_time":
                columns[name] = np.asarray(values, dtype=np.float64)
            else:
                columns[name] = np.asarray(values, dtype=bool)
        key = (self.episode_id, self._seq)
        # The first chunk carries the episode's description and the last its outcome; the chunks in
        # between touch only their own documents (half the writes).
        final = self._fields.get("status") != "running"
        fields = {**self._fields, "chunks": self._seq + 1} if self._seq == 0 or final else {}
        self.unacked[key] = (pack_chunk(columns), steps, fields)
        self._seq += 1
        asyncio.get_running_loop().create_task(self._deliver(key))

    async def _deliver(self, key: tuple[str, int]) -> None:
        for delay in (0, *RETRY_DELAYS_S, *([RETRY_DELAYS_S[-1]] * 1000)):
            await asyncio.sleep(delay)
            blob, steps, fields = self.unacked[key]
            try:
                await self.deliver(key[0], key[1], blob, steps, fields)
            except Exception:  # writer restarting or store unreachable: keep the chunk, try again
                continue
            del self.unacked[key]
            return
