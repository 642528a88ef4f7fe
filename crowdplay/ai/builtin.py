"""Built-in policies that need no model: useful as fallbacks and for testing a study's flow."""

from __future__ import annotations

import numpy as np

from crowdplay.ai.registry import Policy, register_policy


@register_policy("noop")
class NoopPolicy(Policy):
    """Always action 0 (ALE's NOOP): an agent that stands still."""

    observation = None
    in_actor = False

    def compute_action(self, observation: object) -> int:
        """Action 0 whatever the observation."""
        return 0


@register_policy("random")
class RandomPolicy(Policy):
    """A uniformly random action every frame."""

    observation = None
    in_actor = False

    def __init__(self) -> None:
        self._rng = np.random.default_rng()

    def compute_action(self, observation: object) -> int:
        """A uniformly random action of the agent's action space."""
        return int(self._rng.integers(int(self.action_space.n)))
