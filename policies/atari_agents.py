"""AtariAgentsEnv: a CrowdPlay multi-agent Atari game as RLlib trains on it.

Per agent, the observation is the AtariFB stack the policy will see during play (normalised as
RLlib's Atari training does), and each action is repeated for four frames, as in RLlib's
single-agent Atari setup. The frames come from CrowdPlay's own adapter, so training and play show
the policy the same screens.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from crowdplay.ai.atari import AtariFB, normalize
from crowdplay.environments import get_env, make_adapter

ACTION_REPEAT = 4


class AtariAgentsEnv(MultiAgentEnv):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.adapter = make_adapter(get_env(config["env_id"]))
        self.agents = self.possible_agents = list(self.adapter.agents)
        image = gym.spaces.Box(-1.0, 1.0, (AtariFB.dim, AtariFB.dim, AtariFB.stack), np.float32)
        self.observation_spaces = {agent: image for agent in self.agents}
        self.action_spaces = {agent: self.adapter.action_space(agent) for agent in self.agents}
        self.framebuffers = {agent: AtariFB() for agent in self.agents}
        self._rng = np.random.default_rng()

    def _observe(self) -> dict[str, np.ndarray]:
        rgb = self.adapter.palette[self.adapter.screen()]
        return {agent: normalize(framebuffer.push(rgb)) for agent, framebuffer in self.framebuffers.items()}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.adapter.reset(int(self._rng.integers(2**31)) if seed is None else seed)
        for framebuffer in self.framebuffers.values():
            framebuffer.reset()
        return self._observe(), {}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        rewards = dict.fromkeys(self.agents, 0.0)
        for _ in range(ACTION_REPEAT):
            result = self.adapter.step({agent: int(actions.get(agent, 0)) for agent in self.agents})
            observations = self._observe()  # every frame goes through the framebuffers, as in play
            for agent, reward in result.rewards.items():
                rewards[agent] += reward
            if result.terminated or result.truncated:
                break
        terminated = dict.fromkeys(self.agents, result.terminated) | {"__all__": result.terminated}
        truncated = dict.fromkeys(self.agents, result.truncated) | {"__all__": result.truncated}
        return observations, rewards, terminated, truncated, {}
