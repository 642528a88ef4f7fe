"""Episode: one recorded episode as numpy arrays, the unit every export and analysis works on.

Arrays follow Gymnasium/Minari conventions: an episode of ``T`` steps has ``T + 1`` observations
and ``T`` actions, rewards, terminations and truncations. ``observations[0]`` is what ``reset``
returned (and the screen shown before the first step); action ``k`` was applied to
``observations[k]`` and produced ``rewards[k]``, ``terminations[k]``, ``truncations[k]`` and
``observations[k + 1]``; ``infos["frame_id"][k]`` is the id of the frame that showed
``observations[k + 1]`` (the frame id a participant's ``client_frame`` refers to), and
``env_infos[k]`` is the JSON-able part of the info step ``k`` returned.

Multi-agent episodes hold one ``AgentTrajectory`` per agent: each agent's own observations (its
space's), or with screen formats the screen they all saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class AgentTrajectory:
    """One agent's side of an episode."""

    #: (T + 1, ...): the environment's own (``env``: an array, or a dict/tuple of arrays for a
    #: Dict/Tuple space), or screens as uint8 RGB (H, W, 3), palette indices (H, W) or (84, 84, 4)
    observations: Any
    actions: np.ndarray  # (T,) int64
    rewards: np.ndarray  # (T,) float64
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool
    #: Size of the agent's Discrete action space.
    action_count: int = 0
    #: Per-step extras, each (T, ...): ``ram``, ``frame_id``, ``tick_time``, ``client_frame``,
    #: ``human`` (a person played the step) and ``ai_substitute`` (an AI agent's step whose action
    #: was a substitute, not its policy's answer: ``Dataset.ai_actions`` gives the reasons).
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    #: Per step, the JSON-able part of the environment's info for this agent ({} where nothing);
    #: the info ``reset`` returned is in ``Episode.meta["reset_infos"]``.
    env_infos: list[dict[str, Any]] = field(default_factory=list)

    @property
    def steps(self) -> int:
        """The number of steps (``T``)."""
        return len(self.actions)


@dataclass
class Episode:
    """A recorded episode: its store document (``meta``) and the trajectory of every agent."""

    episode_id: str
    env_id: str
    meta: dict[str, Any]
    agents: dict[str, AgentTrajectory]
    #: ``env`` (the environment's own observations), ``rgb``, ``palette`` or ``atari84`` (AtariFB:
    #: 84x84 gray, max over 2 frames, stack of 4), or ``none``.
    observation_format: str = "env"
    #: Emulator states recorded mid-episode: step -> state before that step (replays start there).
    snapshots: dict[int, bytes] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """The number of steps (``T``; 0 for an episode without agents)."""
        return next(iter(self.agents.values())).steps if self.agents else 0

    def observation_space(self, agent: str) -> Any:
        """The Gymnasium space of ``agent``'s observations as loaded: the environment's own space
        for ``env`` (rebuilt from the recording: no plugin needed), a uint8 Box for screens."""
        import gymnasium as gym

        from crowdplay.environments.spaces import rebuild

        if self.observation_format == "env":
            return rebuild(self.meta["observation_spaces"][agent])
        shape = np.asarray(self.agents[agent].observations).shape[1:]
        return gym.spaces.Box(0, 255, shape, np.uint8)
