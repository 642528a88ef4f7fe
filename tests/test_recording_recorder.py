"""A LiveEnv with a Recorder, in one process: played steps become chunks in the embedded store that
load through the dataset API and replay frame for frame."""

from __future__ import annotations

import asyncio

import numpy as np

from crowdplay.config import Settings
from crowdplay.controllers import Human
from crowdplay.data import Dataset, replay_check
from crowdplay.environments import EnvAdapter, get_env
from crowdplay.inputs import ParticipantInput
from crowdplay.realtime import LiveEnv, TickClock
from crowdplay.recording.recorder import ChunkBatcher, Recorder
from crowdplay.recording.store import TrajectoryStore

HUMAN = Human("p-test")


def record(store: TrajectoryStore, steps_wanted: int, chunk_steps: int, snapshot_interval: int, presses: dict[int, list[str]]):
    batches: list[int] = []

    async def send_batch(chunks):
        batches.append(len(chunks))
        store.put_chunks(chunks)

    async def scenario():
        adapter = EnvAdapter(get_env("SpaceInvaders"))
        batcher = ChunkBatcher(send_batch)
        recorder = Recorder(
            "s1", adapter.agents, batcher.deliver, chunk_steps, {"agent_0": HUMAN},
            adapter.snapshot, snapshot_interval, {"task_id": "invaders-study"}, batcher.seal_later,
        )
        live = LiveEnv(get_env("SpaceInvaders"), 0, Settings(), adapter=adapter, recorder=recorder)
        shown = []
        live.start()
        async for message in live.stream("agent_0"):
            if isinstance(message, bytes):
                shown.append(message)
                if len(shown) in presses:
                    live.submit("agent_0", ParticipantInput.holding(presses[len(shown)], len(shown), len(shown)))
                if len(shown) == steps_wanted:
                    break
        live.stop("test over")
        await asyncio.sleep(1.2)
        return recorder, live

    recorder, live = asyncio.run(scenario())
    return recorder, live, batches


def test_recorded_episode_loads_as_arrays_and_replays_exactly(tmp_path):
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))
    presses = {40: ["Space"], 70: ["ArrowLeft", "Space"], 95: []}
    recorder, live, batches = record(store, 170, chunk_steps=30, snapshot_interval=60, presses=presses)
    assert recorder.unacked == {} and recorder.delivery_failures == 0

    data = Dataset(store)
    [info] = data.episodes(task="invaders-study")
    assert info["status"] == "interrupted" and info["env_id"] == "SpaceInvaders"
    assert info["participants"] == ["p-test"] and info["human_only"] is True
    assert info["chunks"] >= 4 and sum(batches) == info["chunks"]
    episode = data.load(info["_id"], observations="palette")
    trajectory = episode.agents["agent_0"]
    record_ = live.episodes[0]
    assert trajectory.steps == info["steps"] == len(record_.actions["agent_0"])
    assert trajectory.actions.tolist() == record_.actions["agent_0"].tolist()
    assert trajectory.infos["client_frame"].tolist() == record_.client_frames["agent_0"].tolist()
    assert trajectory.observations.shape == (trajectory.steps + 1, 210, 160)
    assert trajectory.truncations[-1] and not trajectory.terminations.any()  # interrupted: truncated at the end
    assert trajectory.infos["ram"].shape == (trajectory.steps, 128) and trajectory.infos["human"].all()
    assert np.all(np.diff(trajectory.infos["frame_id"]) >= 1)

    # The participant's keys and receive times, step by step.
    inputs = data.inputs(info["_id"])
    assert [event["keys"] for event in inputs] == [["Space"], ["ArrowLeft", "Space"], []]
    assert all(event["received_at"] > info["started_at"] for event in inputs)
    held = data.held_keys(info["_id"], "agent_0")
    assert held[inputs[0]["step"]] == ("Space",) and held[inputs[0]["step"] - 1] == ()

    # Emulator snapshots every 60 steps let a replay start mid-episode.
    starts = [chunk["first_step"] for chunk in data.chunks(info["_id"]) if chunk["start_state"] is not None]
    assert starts[0] == 0 and [start // 60 for start in starts] == [0, 1, 2]  # the first boundary past each 60
    for from_step in (0, starts[1] + 5):
        report = replay_check(data, info["_id"], from_step)
        assert report.ok, report.summary()
        assert report.from_step == max(start for start in starts if start <= from_step)
    # Chunks end on the clock grid: every chunk but the episode's last ends at a frame id one short of
    # a multiple of 30, or, where a late tick skipped that frame id (a loaded machine), at 30 steps.
    cuts = [(chunk["frame_id"][-1], len(chunk["frame_id"])) for chunk in data.chunks(info["_id"])]
    assert all((end + 1) % 30 == 0 or steps == 30 for end, steps in cuts[:-1]), cuts
    assert all(steps <= 30 for _, steps in cuts)

    rgb = data.load(info["_id"], observations="rgb").agents["agent_0"].observations
    assert rgb.shape == (trajectory.steps + 1, 210, 160, 3)
    processed = data.load(info["_id"], observations="atari84").agents["agent_0"].observations
    assert processed.shape == (trajectory.steps + 1, 84, 84, 4) and processed.dtype == np.uint8
    assert np.array_equal(processed[14, :, :, 2], processed[10, :, :, 3])  # stacked four frames apart, as AtariFB
    store.close()


def test_a_tampered_recording_fails_the_replay_check(tmp_path):
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))
    record(store, 180, chunk_steps=60, snapshot_interval=600, presses={20: ["Space"]})
    data = Dataset(store)
    [info] = data.episodes()
    assert replay_check(data, info["_id"]).ok
    # Rewrite the episode's actions: the replay no longer reproduces the stored frames (the
    # cannon moves from step ~130, when Space Invaders starts taking input).
    from crowdplay.recording.chunk import pack_chunk, unpack_chunk

    for document in store.iter_chunks(info["_id"]):
        columns = unpack_chunk(document["data"])
        columns["action/agent_0"] = np.full_like(columns["action/agent_0"], 2)  # RIGHT the whole time
        store.put_chunk(info["_id"], document["seq"], pack_chunk(columns), columns["steps"])
    report = replay_check(data, info["_id"])
    assert not report.ok and report.frame_mismatches
    store.close()


def test_sessions_sharing_a_clock_send_their_chunks_in_one_writer_call(tmp_path):
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))
    batches: list[list[str]] = []

    async def send_batch(chunks):
        batches.append([chunk[0] for chunk in chunks])
        store.put_chunks(chunks)

    async def scenario():
        batcher, clock = ChunkBatcher(send_batch), TickClock(60)
        lives = []
        for name in ("a", "b", "c"):
            adapter = EnvAdapter(get_env("Pong"))
            recorder = Recorder(
                name, adapter.agents, batcher.deliver, 30, {"agent_0": HUMAN}, adapter.snapshot, seal_later=batcher.seal_later
            )
            lives.append(LiveEnv(get_env("Pong"), 0, Settings(), clock=clock, adapter=adapter, recorder=recorder))
        for live in lives:
            live.start()
        await asyncio.sleep(2.2)
        for live in lives:
            live.stop("over")
        await asyncio.sleep(0.5)

    asyncio.run(scenario())
    full = [batch for batch in batches if len(batch) == 3]
    assert len(full) >= 3 and sorted(full[0]) == ["a-0", "b-0", "c-0"]
    store.close()


def test_a_chunk_sealed_while_a_writer_call_is_out_goes_out_at_once_and_a_hung_call_is_retried(monkeypatch):
    """The last chunk of an episode must not wait for an earlier, slow call (a writer restarting):
    no later chunk may come to carry it along."""
    from crowdplay.recording import writer_calls

    monkeypatch.setattr(writer_calls, "WRITER_CALL_TIMEOUT_S", 0.5)
    calls: list[list[int]] = []
    first_call_hangs = asyncio.Event()

    async def send_batch(chunks):
        calls.append([seq for _, seq, *_ in chunks])
        if len(calls) == 1:
            await first_call_hangs.wait()  # never answered: the writer died with it

    async def scenario():
        batcher = ChunkBatcher(send_batch)
        first = asyncio.ensure_future(batcher.deliver("e", 0, b"", 1, {}))
        await asyncio.sleep(0.15)  # its call is out
        await asyncio.wait_for(batcher.deliver("e", 1, b"", 1, {"status": "complete"}), 0.4)
        try:
            await first
        except TimeoutError:
            return "timed out"
        return "answered"

    assert asyncio.run(scenario()) == "timed out"  # the Recorder resends it (writes are idempotent)
    assert calls == [[0], [1]]
