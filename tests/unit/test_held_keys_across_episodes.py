"""A key held when an episode ends is still held as the next begins: the recording says so
(``keys_at_start``), so ``Dataset.held_keys`` agrees with the actions from the new episode's first
step on. Before, its first steps showed no key held while the key's action was played."""

from __future__ import annotations

import asyncio

from crowdplay.data import Dataset
from crowdplay.inputs import ParticipantInput
from crowdplay.recording.store import TrajectoryStore
from tests import study_envs  # noqa: F401  (registers TestCartPole)
from tests.recorded_games import recorded_game


def test_a_key_held_across_episodes_is_held_at_the_next_episodes_first_step(tmp_path):
    uri = str(tmp_path / "recordings.db")
    store = TrajectoryStore.open(uri)

    async def scenario() -> None:
        game = recorded_game("TestCartPole", store, chunk_steps=10)
        game.live.submit("agent_0", ParticipantInput.holding(["ArrowRight"], game.live.frame_id, 1))  # pushed right until it falls, and again
        for _ in range(100):
            if game.live.episodes.number >= 2:
                break
            await asyncio.sleep(0.05)
        await game.end()

    asyncio.run(scenario())
    store.close()
    data = Dataset.open(uri)
    episodes = sorted(data.episodes(), key=lambda document: document["episode"])
    assert len(episodes) >= 2 and episodes[0]["status"] == "complete"
    for document in episodes[1:]:
        held = data.held_keys(document["_id"], "agent_0")
        actions = data.load(document["_id"], observations=None).agents["agent_0"].actions
        assert held[0] == ("ArrowRight",) and document["keys_at_start"] == {"agent_0": ["ArrowRight"]}
        assert held == [("ArrowRight",)] * len(actions) and list(actions) == [1] * len(actions)  # ArrowRight: push right (1)
    data.close()
