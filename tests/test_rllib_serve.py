"""Non-Atari RLlib checkpoints played through Serve, each answer checked against the module's own
greedy action for the recorded observation it was computed from: IMPALA and SAC playing CartPole,
and BC, trained offline on this project's own export of a recorded MountainCar game, driving the
car; each alone, in an AI-only game a participant watches."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from crowdplay.ai import make_policy
from crowdplay.ai.actor import policy_actor
from crowdplay.client import Participant
from crowdplay.data import Dataset
from tests.conftest import TEST_SETTINGS, episodes_of, run
from tests.rllib_checkpoints import checkpoint, module_greedy


def answers_match_the_module(data: Dataset, documents: list[dict], agent: str, policy_id: str, action_count: int) -> tuple[int, int]:
    """(matching, real) answers over the game's episodes: each real answer against the module's
    greedy action for the observation of the step it was computed from."""
    import gymnasium as gym

    module = make_policy(policy_id, gym.spaces.Discrete(action_count)).module
    matching = real = 0
    for document in documents:
        observations = data.load(document["_id"]).agents[agent].observations  # observation k: before step k
        answers = [answer for answer in data.ai_actions(document["_id"]) if answer["agent"] == agent and answer["real"]]
        if not answers:
            continue
        inputs = np.stack([observations[answer["observed_step"] + 1] for answer in answers]).astype(np.float32)
        expected = module_greedy(module, inputs)
        real += len(answers)
        matching += sum(int(answer["action"]) == action for answer, action in zip(answers, expected))
    return matching, real


@pytest.mark.parametrize("algorithm", ["impala", "sac"])
def test_an_ai_only_cartpole_plays_its_checkpoints_own_answers(base_url, manager, algorithm):
    checkpoint(algorithm, "CartPole-v1")
    ray.get(policy_actor(TEST_SETTINGS, f"test-{algorithm}-cart", 2).ready.remote())

    async def scenario():
        async with await Participant.join(base_url, f"TestCartPole{algorithm.upper()}") as viewer:
            await viewer.wait_for_event("play", timeout=20)
            for _ in range(150):  # five seconds at 30 fps: several CartPole episodes
                await viewer.next_frame()
            return viewer.session

    session = run(scenario())
    documents = episodes_of(session["game_id"], manager)
    data = Dataset.open(TEST_SETTINGS.store_uri)
    matching, real = answers_match_the_module(data, documents, "agent_0", f"test-{algorithm}-cart", 2)
    data.close()
    assert real >= 60 and matching >= 0.99 * real, (matching, real)


def test_a_bc_checkpoint_trained_on_an_export_drives_mountain_car(base_url, manager, mountain_car_export):
    checkpoint("bc", "MountainCar-v0", offline_data=mountain_car_export[0])
    ray.get(policy_actor(TEST_SETTINGS, "test-bc-car", 3).ready.remote())

    async def scenario():
        async with await Participant.join(base_url, "TestCarBC") as viewer:
            await viewer.wait_for_event("play", timeout=20)
            for _ in range(150):
                await viewer.next_frame()
            return viewer.session

    session = run(scenario())
    documents = episodes_of(session["game_id"], manager)
    data = Dataset.open(TEST_SETTINGS.store_uri)
    matching, real = answers_match_the_module(data, documents, "agent_0", "test-bc-car", 3)
    data.close()
    assert real >= 60 and matching >= 0.99 * real, (matching, real)


def test_a_cartpole_checkpoint_takes_over_a_non_atari_game_when_a_participant_leaves(base_url, manager):
    checkpoint("impala", "CartPole-v1")
    ray.get(policy_actor(TEST_SETTINGS, "test-impala-cart", 2).ready.remote())

    async def scenario():
        stayer = await Participant.join(base_url, "TestCartPair")
        leaver = await Participant.join(base_url, "TestCartPair")
        await stayer.wait_for_event("play")
        await stayer.press({"ArrowLeft"})
        await leaver.press({"ArrowRight"})
        for _ in range(20):
            await stayer.next_frame()
        await leaver.close()
        took_over = await stayer.wait_for_event("player", status="ai")
        for index in range(150):
            if index % 10 == 0:
                await stayer.press({"ArrowLeft"} if index % 20 else {"ArrowRight"})
            await stayer.next_frame()
        await stayer.close()
        return stayer.session, leaver.hello["agent"], took_over

    session, left_agent, took_over = run(scenario())
    assert took_over["agent"] == left_agent and took_over["policy"] == "test-impala-cart"
    documents = episodes_of(session["game_id"], manager)
    data = Dataset.open(TEST_SETTINGS.store_uri)
    matching, real = answers_match_the_module(data, documents, left_agent, "test-impala-cart", 2)
    data.close()
    assert real >= 40 and matching >= 0.99 * real, (matching, real)
