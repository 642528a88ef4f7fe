"""What an episode's record keeps across its edges: the keys a participant holds into the next
episode (``keys_at_start``, so ``Dataset.held_keys`` agrees with the actions from its first step),
and the statistics of a participant who ended it with Finish."""

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


def test_an_episode_a_participant_finished_keeps_their_statistics(tmp_path):
    """Before, Finish took the participant's statistics with them, and the episode they ended was
    stored with ``statistics: {}``."""
    uri = str(tmp_path / "recordings.db")
    store = TrajectoryStore.open(uri)

    async def scenario() -> None:
        game = recorded_game("TestCartPole", store, chunk_steps=10)
        game.live.submit("agent_0", ParticipantInput.holding(["ArrowLeft"], game.live.frame_id, 1))
        await asyncio.sleep(0.2)
        game.lineup.finish("session-agent_0")
        await asyncio.sleep(1.0)

    asyncio.run(scenario())
    store.close()
    data = Dataset.open(uri)
    finished = [document for document in data.episodes() if document["status"] == "finished"]
    assert finished and all(document["statistics"]["agent_0"]["time_played"] > 0 for document in finished)
    data.close()
