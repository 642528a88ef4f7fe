"""PolicyAgent: one registered policy playing one agent of one game.

Every frame the game shows the agent its observation (``observe``); the framebuffer turns it into
the policy's input, and the policy answers, in its shared policy actor or, for ``in_actor = False``
policies or without a PolicyClient, right here. The game applies whatever answer is newest at
each tick (``action``) and never waits for one; ``observed_frame`` says which frame that answer
was computed from, so the recording can tell when each AI action was computed and applied.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import gymnasium as gym

from crowdplay.ai.registry import make_framebuffer, make_policy, policy_class
from crowdplay.ai.remote import PolicyClient

log = logging.getLogger(__name__)


class PolicyAgent:
    """A policy and its framebuffer for one agent. A policy that fails or answers outside the
    action space plays the no-op for that frame (logged once): a broken model must not stop the
    participants' game."""

    def __init__(self, policy_id: str, action_space: gym.spaces.Discrete, noop: int = 0, client: PolicyClient | None = None) -> None:
        cls = policy_class(policy_id)
        self.policy_id = policy_id
        self.observation = cls.observation
        self.framebuffer = make_framebuffer(policy_id)
        self.noop = noop
        self.action_count = int(action_space.n)
        self.client = client if cls.in_actor else None
        self.local = make_policy(policy_id, action_space) if self.client is None else None
        self.replica = self.client.assign_replica(policy_id) if self.client is not None else 0
        #: the newest answer and the frame it was computed from (-1: none yet, the no-op plays)
        self.action = noop
        self.observed_frame = -1
        #: seconds between sending an observation and its answer, for the newest answer
        self.latency_s = 0.0
        #: answers so far (the game applies and records each new one once)
        self.answers = 0
        self.in_flight = False
        self.skipped = 0
        self._episode = 0
        self._warned = False

    @property
    def controller(self) -> dict:
        """How the recording names this controller."""
        return {"human": False, "policy": self.policy_id}

    def observe(self, frame_id: int, observation: Any) -> None:
        """The screen (or RAM) of ``frame_id``: ask the policy what to play next."""
        try:
            policy_input = observation if self.framebuffer is None else self.framebuffer.push(observation)
        except Exception:
            self._failed("framebuffer")
            return
        if self.local is not None:
            try:
                action = self.local.compute_action(policy_input)
            except Exception:
                self._failed("policy")
                action = None
            self._answer(frame_id, self._episode, action, 0.0)
        elif self.in_flight:
            self.skipped += 1  # the next frame's observation goes out once the answer is back
        else:
            self.in_flight = True
            episode = self._episode
            self.client.request(
                self.policy_id, self.action_count, self.replica, policy_input,
                lambda action, latency: self._answer(frame_id, episode, action, latency),
            )

    def _answer(self, frame_id: int, episode: int, action: Any, latency_s: float) -> None:
        if self.local is None:
            self.in_flight = False
        if episode != self._episode:
            return  # computed from the previous episode's screen
        if action is None or isinstance(action, bool) or not 0 <= int(action) < self.action_count:
            if action is not None:
                self._failed(f"answer {action!r} outside 0..{self.action_count - 1}")
            action = self.noop
        self.action = int(action)
        self.observed_frame = frame_id
        self.latency_s = latency_s
        self.answers += 1

    def _failed(self, what: str) -> None:
        if not self._warned:
            log.error(
                "policy %r: %s failed; it plays the no-op until it answers again", self.policy_id, what,
                exc_info=sys.exc_info()[0] is not None,
            )
            self._warned = True

    def reset(self) -> None:
        """A new episode: forget earlier frames; answers still out for the old one are dropped."""
        self._episode += 1
        self.action = self.noop
        self.observed_frame = -1
        self.answers += 1
        if self.framebuffer is not None:
            self.framebuffer.reset()
