"""A participant plays through the real path; the episode lands in the store and replays exactly."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from crowdplay import codec
from crowdplay.client import Participant
from crowdplay.environments.replay import replay_screens
from crowdplay.recording.chunk import unpack_chunk
from crowdplay.recording.store import TrajectoryStore
from tests.conftest import run


def wait_for_episode(store_uri: str, episode_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        store = TrajectoryStore.open(store_uri)
        try:
            episode = store.episode(episode_id)
            if episode and episode.get("status") != "running":
                chunks = list(store.iter_chunks(episode_id))
                if len(chunks) == episode["chunks"]:
                    return {"episode": episode, "chunks": chunks}
        finally:
            store.close()
        time.sleep(0.5)
    pytest.fail(f"episode {episode_id} was not stored completely")


def test_a_played_episode_is_stored_in_chunks_and_replays_frame_for_frame(base_url, settings):
    async def scenario():
        async with await Participant.join(base_url, "SpaceInvaders", decode=False) as player:
            await asyncio.sleep(1.0)
            await player.press({"Space"})
            await asyncio.sleep(0.5)
            await player.press({"ArrowLeft"})
            await asyncio.sleep(1.0)
            return player.session["session_id"]

    session_id = run(scenario())
    stored = wait_for_episode(settings.store_uri, f"{session_id}-0")
    episode, chunks = stored["episode"], stored["chunks"]
    assert episode["env_id"] == "SpaceInvaders" and episode["status"] == "interrupted"
    assert episode["steps"] >= 120 and len(chunks) == episode["chunks"] >= 2

    columns = [unpack_chunk(chunk["data"]) for chunk in chunks]
    actions = np.concatenate([c["action/agent_0"] for c in columns])
    assert len(actions) == episode["steps"] == sum(c["steps"] for c in columns)
    assert 1 in actions and 3 in actions  # FIRE and LEFT, from the keys pressed
    assert all(c["ram"].shape == (c["steps"], 128) for c in columns)

    # Each chunk decodes on its own; frames[i] is the screen the step i acted on.
    replayed = list(replay_screens("SpaceInvaders", episode["seed"], actions, episode["start_state"]))
    step = 0
    for chunk in columns:
        decoder = codec.FrameDecoder((210, 160))
        for i, message in enumerate(chunk["frames"]):
            _, screen = decoder.decode(message)
            assert np.array_equal(screen, replayed[step + i])
        step += chunk["steps"]
