"""The Recorder and the ChunkBatcher without Ray: chunks cut on the clock's grid, the episode's
fields on its first and last chunk only, retries until the writer acknowledges, and the bound on
writer calls out."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from crowdplay import codec
from crowdplay.controllers import Human
from crowdplay.inputs import AppliedInput, ParticipantInput
from crowdplay.recording import writer_calls
from crowdplay.recording.batcher import ChunkBatcher
from crowdplay.recording.chunk import unpack_chunk
from crowdplay.recording.recorder import Recorder
from crowdplay.recording.spool import Chunk
from crowdplay.recording.step import Stepped
from crowdplay.recording.writer_calls import WriterBusy
from tests.polling import settle

HUMAN = Human("p-1")


def screen(value: int) -> codec.Screen:
    return codec.Screen(np.full((4, 4, 3), value, dtype=np.uint8))


def play(recorder: Recorder, steps: int, first_frame: int = 0) -> None:
    """``steps`` steps of one episode, each screen a shade lighter than the one before."""
    recorder.begin_episode(0, screen(0), {"env_id": "Fake"})
    for step in range(steps):
        frame_id = first_frame + step
        delta = codec.delta_payload(screen(step + 1), screen(step))
        recorder.input(AppliedInput("agent_0", ParticipantInput.holding(["UP"], frame_id, step), None, 0, 0, 0, 0, 0, 0.0), 1.0)
        recorder.step(Stepped(frame_id, {"agent_0": step % 3}, {"agent_0": 1.0}, False, False, {"agent_0": frame_id}, screen(step + 1), screen(step), None), delta)
    recorder.end_episode("complete", {"steps": steps})


def test_chunks_end_on_the_grid_and_only_the_first_and_last_carry_the_episode() -> None:
    delivered: list[tuple[str, int, dict[str, Any], dict[str, Any]]] = []

    async def deliver(episode_id: str, seq: int, blob: bytes, steps: int, fields: dict[str, Any]) -> None:
        delivered.append((episode_id, seq, unpack_chunk(blob), fields))

    async def scenario() -> Recorder:
        recorder = Recorder("g", ("agent_0",), deliver, 4, {"agent_0": HUMAN}, episode_fields={"task_id": "t"})
        play(recorder, 7, first_frame=2)
        for _ in range(20):
            await asyncio.sleep(0)
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.idle and recorder.delivery_failures == 0
    delivered.sort(key=lambda chunk: chunk[1])  # the last chunk is sealed at once, those cut before it behind their tick
    assert [(episode, seq) for episode, seq, _, _ in delivered] == [("g-0", 0), ("g-0", 1), ("g-0", 2)]
    columns = [chunk for _, _, chunk, _ in delivered]
    assert [list(chunk["frame_id"]) for chunk in columns] == [[2, 3], [4, 5, 6, 7], [8]]  # frame ids 3 and 7 end a chunk
    assert [chunk["first_step"] for chunk in columns] == [0, 2, 6]
    assert [len(chunk["frames"]) for chunk in columns] == [3, 5, 2]
    assert columns[1]["inputs"][0] == [0, "agent_0", ["UP"], 2, 4, 1.0, "keyboard"]
    first, middle, last = (fields for _, _, _, fields in delivered)
    assert first["task_id"] == "t" and "status" not in first and middle == {}
    assert last["status"] == "complete" and last["steps"] == 7 and last["chunks"] == 3


def test_an_episode_without_a_step_stores_nothing() -> None:
    async def deliver(*chunk: object) -> None:
        raise AssertionError("nothing to deliver")

    async def scenario() -> bool:
        recorder = Recorder("g", ("agent_0",), deliver, 60, {"agent_0": HUMAN})
        recorder.begin_episode(0, screen(0), {})
        recorder.end_episode("interrupted", {"reason": "left"})
        await asyncio.sleep(0)
        return recorder.idle

    assert asyncio.run(scenario())


def test_a_failed_delivery_is_retried_until_the_writer_acknowledges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_calls, "RETRY_DELAYS_S", (0.01,))
    attempts: list[int] = []

    async def deliver(episode_id: str, seq: int, blob: bytes, steps: int, fields: dict[str, Any]) -> None:
        attempts.append(seq)
        if len(attempts) < 3:
            raise ConnectionError("writer restarting")

    async def scenario() -> Recorder:
        recorder = Recorder("g", ("agent_0",), deliver, 60, {"agent_0": HUMAN})
        play(recorder, 3)
        await settle(lambda: recorder.idle, 100, 0.01)
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.idle and recorder.delivery_failures == 2 and attempts == [0, 0, 0]


def test_a_batch_is_refused_while_too_many_writer_calls_are_unanswered() -> None:
    answer = asyncio.Event()
    calls: list[list[Chunk]] = []

    async def send_batch(chunks: list[Chunk]) -> None:
        calls.append(chunks)
        await answer.wait()

    async def scenario() -> tuple[int, bool]:
        batcher = ChunkBatcher(send_batch, max_calls_out=1)
        first = asyncio.ensure_future(batcher.deliver("e", 0, b"x", 1, {}))
        await asyncio.sleep(0.15)
        with pytest.raises(WriterBusy):
            await batcher.deliver("e", 1, b"y", 1, {})
        out = batcher.sending()["calls_out"]
        answer.set()
        await first
        return out, batcher.sending()["calls_out"] == 0

    assert asyncio.run(scenario()) == (1, True)
    assert [[seq for _, seq, *_ in call] for call in calls] == [[0]]


def test_queued_chunks_go_back_to_the_front_after_a_failed_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_calls, "RETRY_DELAYS_S", (0.01,))
    calls: list[list[int]] = []

    async def send_batch(chunks: list[Chunk]) -> None:
        calls.append([seq for _, seq, *_ in chunks])
        if len(calls) == 1:
            raise ConnectionError("writer restarting")

    acknowledged: list[tuple[str, int]] = []

    async def scenario() -> ChunkBatcher:
        batcher = ChunkBatcher(send_batch)
        for seq in range(3):
            batcher.unacked.put(("e", seq), bytes([seq]), 1, {})
            batcher.submit(("e", seq), lambda key, delivered: acknowledged.append(key))
        await settle(lambda: not len(batcher.unacked), 100, 0.01)
        return batcher

    batcher = asyncio.run(scenario())
    assert calls == [[0, 1, 2], [0, 1, 2]]
    assert acknowledged == [("e", 0), ("e", 1), ("e", 2)]
    assert batcher.sending() == {"calls_out": 0, "queued": 0, "delivery_failures": 1, "chunks_lost": 0}
