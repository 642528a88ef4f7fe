"""PolicyAgent: one registered policy playing one agent of one game.

Every frame the game shows the agent its observation (``observe``); the framebuffer turns it into
the policy's input, and the policy answers, in its shared policy actor or, for ``in_actor = False``
policies or without a PolicyClient, right here. The game applies whatever answer is newest at
each tick (``action``) and never waits for one; ``observed_frame`` says which frame that answer
was computed from, so the recording can tell when each AI action was computed and applied, and
``substitute`` says why the action played is not the policy's answer (None when it is): before
the first answer, when the policy raised or answered outside the action space, when its actor is
down or could not be placed. Substitutes are recorded as such, never as the policy's answers.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from crowdplay.ai.answers import MAX_REASON, NO_ANSWER_YET, checked_action, failure_reason
from crowdplay.ai.registry import make_framebuffer, make_policy, policy_class
from crowdplay.ai.remote import PolicyClient
from crowdplay.controllers import PolicyControl

log = logging.getLogger(__name__)

_streams = itertools.count()


def policy_observation(adapter: Any, kind: str | None, agent: str, screen: Callable[[], Any]) -> Any:
    """What a policy observing ``kind`` (``Policy.observation``) is shown of ``adapter``'s game for
    ``agent``: ``screen()`` (the RGB screen) for "rgb", and for "env" where the environment's own
    observation is the screen (ALE); the console RAM for "ram"; the agent's own observation for
    "env"; nothing for None."""
    if kind == "rgb" or (kind == "env" and adapter.observation_spaces is None):
        return screen()
    if kind == "ram":
        return adapter.ram()
    if kind == "env":
        return adapter.observations.get(agent)
    return None


class PolicyAgent:
    """A policy and its framebuffer for one agent (``agent``, for policies that observe the env's
    own observation). A policy that fails or answers outside the action space plays a substitute
    (the no-op, or the agent's previous action where there is none), recorded with the reason
    and logged once per reason: a broken model must not stop the participants' game."""

    def __init__(
        self, policy_id: str, action_space: gym.spaces.Discrete[Any], noop: int | None = 0, client: PolicyClient | None = None, agent: str = ""
    ) -> None:
        cls = policy_class(policy_id)
        self.policy_id = policy_id
        self.agent = agent
        #: names this agent's episodes for policies that keep per-episode history (``crowdplay.ai.streams``)
        self.stream = f"{os.getpid()}.{next(_streams)}.{agent}"
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
        #: why ``action`` is not the policy's answer (None: it is)
        self.substitute: str | None = NO_ANSWER_YET
        #: seconds between sending an observation and its answer, for the newest answer
        self.latency_s = 0.0
        #: answers so far, substitutes included (the game applies and records each new one once)
        self.answers = 0
        #: the policy's real answers, and the substitutes by reason
        self.real_answers = 0
        self.substitutes: Counter[str] = Counter()
        self.in_flight = False
        self.skipped = 0
        #: since when every action played has been a substitute (None: the newest is a real answer
        #: or nothing has been asked yet), for ``unavailable``
        self._substitutes_since: float | None = None
        self._episode = 0
        self._warned: set[str] = set()

    @property
    def controller(self) -> PolicyControl:
        """This policy as the agent's controller."""
        return PolicyControl(self.policy_id)

    def unavailable(self, after_s: float) -> str | None:
        """Why the policy counts as unavailable (it has played nothing but substitutes for
        ``after_s`` seconds of play), else None."""
        since = self._substitutes_since
        if self.substitute is None or since is None or time.monotonic() - since < after_s:
            return None
        return self.substitute

    def observe(self, frame_id: int, observation: Any) -> None:
        """The screen (or RAM) of ``frame_id``: ask the policy what to play next."""
        if self.substitute is not None and self._substitutes_since is None:
            self._substitutes_since = time.monotonic()
        try:
            policy_input = observation if self.framebuffer is None else self.framebuffer.push(observation)
        except Exception as error:
            self._answer(frame_id, self._episode, f"framebuffer raised {type(error).__name__}: {error}"[:MAX_REASON], 0.0)
            return
        if self.local is not None:
            try:
                action: Any = checked_action(self.local.compute_action(policy_input), self.action_count)
            except Exception as error:
                action = failure_reason(error)
            self._answer(frame_id, self._episode, action, 0.0)
        elif self.in_flight:
            self.skipped += 1  # the next frame's observation goes out once the answer is back
        elif self.client is not None:  # always, without a local policy
            self.in_flight = True
            episode = self._episode
            self.client.request(
                self.policy_id, self.action_count, self.replica, policy_input,
                lambda action, latency: self._answer(frame_id, episode, action, latency),
                f"{self.stream}.{episode}",
            )

    def _answer(self, frame_id: int, episode: int, answer: Any, latency_s: float) -> None:
        if self.local is None:
            self.in_flight = False
        if episode != self._episode:
            return  # computed from the previous episode's screen
        checked = answer if isinstance(answer, str) else checked_action(answer, self.action_count)
        if isinstance(checked, str):
            self._failed(checked)
            if self.noop is not None:
                self.action = self.noop
            self.substitute = checked
            self.substitutes[checked] += 1
        else:
            self.action = checked
            self.substitute = None
            self._substitutes_since = None
            self.real_answers += 1
        self.observed_frame = frame_id
        self.latency_s = latency_s
        self.answers += 1

    def _failed(self, reason: str) -> None:
        if reason not in self._warned and len(self._warned) < 16:
            log.error(
                "policy %r (agent %r): %s; it plays a substitute until it answers again", self.policy_id, self.agent, reason,
                exc_info=sys.exc_info()[0] is not None,
            )
            self._warned.add(reason)

    def reset(self) -> None:
        """A new episode: forget earlier frames; answers still out for the old one are dropped."""
        self._episode += 1
        self.action = self.noop
        self.observed_frame = -1
        self.substitute = NO_ANSWER_YET
        self.answers += 1
        if self.framebuffer is not None:
            self.framebuffer.reset()
