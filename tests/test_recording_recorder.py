"""A LiveEnv with a Recorder: played steps become chunks in the store that replay frame for frame.

(The EnvActor does not attach recorders yet: measured at 60 sessions, recording on the tick path
cost ~0.003 cores per session and took on-time from 0.997 to 0.98-0.99; issue 4 continues.)
"""

from __future__ import annotations

import asyncio

import numpy as np

from crowdplay import codec
from crowdplay.config import Settings
from crowdplay.environments import get_env
from crowdplay.environments.replay import replay_screens
from crowdplay.realtime import LiveEnv
from crowdplay.recording.chunk import unpack_chunk
from crowdplay.recording.recorder import ChunkBatcher, Recorder
from crowdplay.recording.store import TrajectoryStore


def test_recorded_chunks_are_acknowledged_stored_and_replay_exactly(tmp_path):
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))
    batches: list[int] = []

    async def send_batch(chunks):
        batches.append(len(chunks))
        for chunk in chunks:
            store.put_chunk(*chunk[:4])
            if chunk[4]:
                store.put_episode(chunk[0], chunk[4])

    async def scenario():
        recorder = Recorder("s1", ("agent_0",), ChunkBatcher(send_batch).deliver, chunk_steps=30)
        live = LiveEnv(get_env("SpaceInvaders"), 0, Settings(), recorder=recorder)
        steps = 0
        async for message in live.stream("agent_0"):
            steps += isinstance(message, bytes)
            if steps == 40:
                live.submit_keys("agent_0", ["Space"], 0, 1)
            if steps == 100:
                break
        live.stop("test over")
        await asyncio.sleep(1.5)
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.unacked == {}
    episode = store.episode("s1-0")
    assert episode["status"] == "interrupted" and episode["env_id"] == "SpaceInvaders"
    columns = [unpack_chunk(c["data"]) for c in store.iter_chunks("s1-0")]
    assert len(columns) == episode["chunks"] >= 3 and sum(batches) == len(columns)
    actions = np.concatenate([c["action/agent_0"] for c in columns])
    assert len(actions) == episode["steps"] and 1 in actions
    replayed = list(replay_screens("SpaceInvaders", episode["seed"], actions, episode["start_state"]))
    step = 0
    for chunk in columns:
        decoder = codec.FrameDecoder((210, 160))
        for i, message in enumerate(chunk["frames"]):
            assert np.array_equal(decoder.decode(message)[1], replayed[step + i])
        step += chunk["steps"]
    store.close()
