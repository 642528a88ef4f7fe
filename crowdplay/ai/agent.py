"""PolicyAgent: one registered policy playing one agent of one game, fed every frame."""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym

from crowdplay.ai.registry import make_framebuffer, make_policy

log = logging.getLogger(__name__)


class PolicyAgent:
    """A policy and its framebuffer for one agent. A policy that raises or answers outside the
    action space plays the no-op for that frame (logged once): a broken model must not stop the
    participants' game."""

    def __init__(self, policy_id: str, action_space: gym.spaces.Discrete, noop: int = 0) -> None:
        self.policy_id = policy_id
        self.policy = make_policy(policy_id, action_space)
        self.framebuffer = make_framebuffer(policy_id)
        self.observation = self.policy.observation
        self.noop = noop
        self._count = int(action_space.n)
        self._warned = False

    @property
    def controller(self) -> dict:
        """How the recording names this controller."""
        return {"human": False, "policy": self.policy_id}

    def act(self, observation: Any) -> int:
        try:
            if self.framebuffer is not None:
                observation = self.framebuffer.push(observation)
            action = self.policy.compute_action(observation)
            if isinstance(action, bool) or not 0 <= int(action) < self._count:
                raise ValueError(f"action {action!r} outside 0..{self._count - 1}")
            return int(action)
        except Exception:
            if not self._warned:
                log.exception("policy %r failed; it plays the no-op until it answers again", self.policy_id)
                self._warned = True
            return self.noop

    def reset(self) -> None:
        if self.framebuffer is not None:
            self.framebuffer.reset()
