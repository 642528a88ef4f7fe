"""The agents of one game that AI plays: each policy is shown every tick's screen and the agent
plays its newest answer, which may come from a policy actor a moment later. The clock never waits
for a policy; a new answer is recorded with the frame it was computed from."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import numpy as np

from crowdplay import codec
from crowdplay.ai.agent import PolicyAgent, policy_observation
from crowdplay.environments import EnvAdapter
from crowdplay.game_inputs import AgentInputs


class AISeats:
    """The game's AI-played agents and the answers of theirs already applied."""

    def __init__(self) -> None:
        """No agent is played by AI until ``seat``."""
        self.policies: dict[str, PolicyAgent] = {}
        self._answers_applied: dict[str, int] = {}  # per agent, the count of answers applied so far

    def __contains__(self, agent: object) -> bool:
        """Whether AI plays ``agent``."""
        return agent in self.policies

    def seat(self, agent: str, policy: PolicyAgent | None) -> None:
        """``policy`` plays ``agent`` from the next tick (None: a participant does)."""
        if policy is None:
            self.policies.pop(agent, None)
        else:
            self.policies[agent] = policy

    def has_answer(self, agent: str) -> bool:
        """Whether AI plays ``agent`` and its policy has an action to play."""
        policy = self.policies.get(agent)
        return policy is not None and policy.action is not None

    def apply_answers(self, inputs: AgentInputs, answered: Callable[[str, PolicyAgent], None]) -> None:
        """Each AI-played agent plays its policy's newest answer; ``answered`` hears of each new one."""
        for agent, policy in self.policies.items():
            if policy.action is None:  # no answer (yet) and no no-op: the agent's last action goes on
                continue
            inputs.action[agent] = policy.action
            if policy.answers != self._answers_applied.get(agent):
                self._answers_applied[agent] = policy.answers
                inputs.client_frame[agent] = policy.observed_frame
                answered(agent, policy)

    def show(self, frame_id: int, screen: codec.Screen, adapter: EnvAdapter, policies: Iterable[PolicyAgent] | None = None) -> None:
        """Show the policies (all by default) the newest screen, RAM or their agent's own
        observation ("env"); their answers are applied when they arrive."""
        pixels, palette = screen.pixels, adapter.palette

        @functools.cache
        def rgb() -> np.ndarray:  # computed once per tick, for the policies that look at the screen
            return palette[pixels] if palette is not None else pixels

        for policy in self.policies.values() if policies is None else policies:
            policy.observe(frame_id, policy_observation(adapter, policy.observation, policy.agent, rgb))

    def reset(self) -> None:
        """A new episode: every policy forgets the last one's frames."""
        for policy in self.policies.values():
            policy.reset()
