"""Episode: one recorded episode as numpy arrays, the unit every export and analysis works on.

Arrays follow Gymnasium/Minari conventions: an episode of ``T`` steps has ``T + 1`` observations
(the first before any action, the last after the final step) and ``T`` actions, rewards,
terminations and truncations. Multi-agent episodes hold one ``AgentTrajectory`` per agent; the
agents share the observations of the screen they all saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class AgentTrajectory:
    """One agent's side of an episode."""

    observations: np.ndarray  # (T + 1, ...) uint8: RGB (H, W, 3), palette indices (H, W) or processed (84, 84, 4)
    actions: np.ndarray  # (T,) int64
    rewards: np.ndarray  # (T,) float64
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool
    #: Size of the agent's Discrete action space.
    action_count: int = 0
    #: Per-step extras, each (T, ...): ``ram``, ``frame_id``, ``tick_time``, ``client_frame``, ``human``.
    infos: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.actions)


@dataclass
class Episode:
    """A recorded episode: its store document (``meta``) and the trajectory of every agent."""

    episode_id: str
    env_id: str
    meta: dict[str, Any]
    agents: dict[str, AgentTrajectory]
    #: ``rgb``, ``palette`` or ``atari84`` (AtariFB: 84x84 gray, max over 2 frames, stack of 4).
    observation_format: str = "rgb"
    #: Emulator states recorded mid-episode: step -> state before that step (replays start there).
    snapshots: dict[int, bytes] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return next(iter(self.agents.values())).steps if self.agents else 0
