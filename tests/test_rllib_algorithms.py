"""Checkpoints of several RLlib algorithms load through the one-liner and answer exactly what
their modules answer: DQN (double, dueling; it answers actions), PPO, APPO, IMPALA and SAC (they
answer distribution inputs), on CartPole (the env's own observations) and Atari Pong (AtariFB),
through each checkpoint's connector pipelines; and BC and MARWIL trained offline on this
project's own RLlib export of a recorded MountainCar game (no connectors: the module directly)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from crowdplay.ai import make_policy, register_rllib_checkpoint
from crowdplay.ai.atari import normalize
from tests.rllib_checkpoints import checkpoint, module_greedy
from tests.test_policy_actors import atari_observations


def cartpole_observations(count: int) -> list[np.ndarray]:
    env = gym.make("CartPole-v1")
    observation, _ = env.reset(seed=3)
    observations, rng = [], np.random.default_rng(3)
    while len(observations) < count:
        observations.append(observation)
        observation, _, terminated, truncated, _ = env.step(int(rng.integers(2)))
        if terminated or truncated:
            observation, _ = env.reset()
    return observations


@pytest.mark.parametrize("algorithm", ["dqn", "ppo", "appo", "impala", "sac"])
def test_a_cartpole_checkpoint_answers_what_its_module_answers(ray_session, algorithm):
    path = checkpoint(algorithm, "CartPole-v1")
    policy_id = f"test-{algorithm}-cartpole"
    register_rllib_checkpoint(policy_id, path, framebuffer=None, observation="env")
    policy = make_policy(policy_id, gym.spaces.Discrete(2))
    assert policy.observation == "env" and policy.env_to_module is not None  # an Algorithm checkpoint: its pipelines run
    observations = cartpole_observations(64)
    streams = [f"game-{index % 8}" for index in range(len(observations))]  # eight games' agents, eight steps each
    answers = []
    for start in range(0, len(observations), 8):
        answers += policy.compute_actions(observations[start : start + 8], streams[start : start + 8])
    assert answers == module_greedy(policy.module, np.stack(observations).astype(np.float32))
    assert len(policy.streams) == 8
    assert policy.compute_action(observations[0]) == answers[0]  # without a stream: an episode of its own


def test_an_atari_dqn_checkpoint_answers_its_greedy_actions(ray_session):
    path = checkpoint("dqn", "Pong")
    register_rllib_checkpoint("test-dqn-pong-direct", path)
    policy = make_policy("test-dqn-pong-direct", gym.spaces.Discrete(6))
    stacks = atari_observations(24)
    expected = module_greedy(policy.module, normalize(np.stack(stacks)))
    assert policy.compute_actions(stacks, [f"s{index}" for index in range(len(stacks))]) == expected
    register_rllib_checkpoint("test-dqn-pong-no-connectors", path, connectors=False)
    assert make_policy("test-dqn-pong-no-connectors", gym.spaces.Discrete(6)).compute_actions(stacks) == expected


def test_explore_samples_from_the_modules_exploration_distribution(ray_session):
    register_rllib_checkpoint("test-ppo-cartpole-explore", checkpoint("ppo", "CartPole-v1"), framebuffer=None, observation="env", explore=True)
    policy = make_policy("test-ppo-cartpole-explore", gym.spaces.Discrete(2))
    observation = cartpole_observations(1)[0]
    answers = {policy.compute_action(observation) for _ in range(60)}
    assert answers == {0, 1}  # an untrained policy's distribution is near uniform: both come up


@pytest.mark.parametrize("algorithm", ["bc", "marwil"])
def test_an_offline_checkpoint_trained_on_an_export_answers_what_its_module_answers(ray_session, mountain_car_export, algorithm):
    data, observations = mountain_car_export
    path = checkpoint(algorithm, "MountainCar-v0", offline_data=data)
    policy_id = f"test-{algorithm}-car-direct"
    register_rllib_checkpoint(policy_id, path, framebuffer=None, observation="env")
    policy = make_policy(policy_id, gym.spaces.Discrete(3))
    assert policy.env_to_module is None  # an offline algorithm's checkpoint has no env runner pipelines
    observations = observations[:: max(1, len(observations) // 64)]
    answers = policy.compute_actions(observations, [f"game-{index % 4}" for index in range(len(observations))])
    assert answers == module_greedy(policy.module, np.stack(observations).astype(np.float32))
