"""EnvAdapter: one environment instance seen the way the real-time loop needs it.

The loop steps all agents at once with a dict of actions and sends screens, so this adapter gives
every environment that shape. ALE environments expose their screen as palette indices (one byte per
pixel, lossless with the NTSC table); any other Gymnasium environment must render ``rgb_array``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from crowdplay.environments.keymap import Keymap
from crowdplay.environments.ntsc_palette import NTSC_PALETTE
from crowdplay.environments.spec import EnvSpec, for_agent

SINGLE_AGENT = "agent_0"


class InvalidAction(ValueError):
    """An action outside the agent's action space."""


@dataclass(frozen=True)
class StepResult:
    rewards: dict[str, float]
    terminated: bool
    truncated: bool


class EnvAdapter:
    """A single-agent Gymnasium environment presented with per-agent actions and rewards."""

    def __init__(self, spec: EnvSpec, env: gym.Env | None = None) -> None:
        self.spec = spec
        self.env = env if env is not None else spec.make_env()
        self.agents: tuple[str, ...] = (SINGLE_AGENT,)
        if not isinstance(self.env.action_space, gym.spaces.Discrete):
            raise TypeError(f"environment {spec.id!r}: only Discrete action spaces can be played from a keyboard")
        self.action_count = int(self.env.action_space.n)
        unwrapped = self.env.unwrapped
        self._ale = getattr(unwrapped, "ale", None)
        meanings_of = getattr(unwrapped, "get_action_meanings", None)
        self.action_meanings: list[str] = list(meanings_of()) if meanings_of else [str(a) for a in range(self.action_count)]
        self._configure_agents()
        self.palette: np.ndarray | None = NTSC_PALETTE if self._ale is not None else None

    def _configure_agents(self) -> None:
        """Check the spec's per-agent options against the real agents and build each keymap."""
        self.spec.check_agents(self.agents)
        self.keymaps: dict[str, Keymap] = {}
        for agent in self.agents:
            keymap = for_agent(self.spec.keymap, agent)
            if keymap is None:
                raise ValueError(f"environment {self.spec.id!r}: the keymap option has no entry for agent {agent!r}")
            self.keymaps[agent] = keymap if isinstance(keymap, Keymap) else keymap(self.action_meanings)

    def action_space(self, agent: str) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(self.action_count)

    def reset(self, seed: int) -> None:
        """Start an episode.

        ALE is never re-seeded: seeding reloads the ROM (~90 ms holding the GIL, which would stall
        every session of the process), and with sticky actions off the emulation does not depend on
        the seed. Episodes continue from the emulator's state; ``snapshot`` taken at the start is
        what replays one exactly. Other environments are reset with the seed.
        """
        if self._ale is not None:
            self.env.reset()
        else:
            self.env.reset(seed=seed)

    def ram(self) -> bytes | None:
        """The console's RAM (128 bytes) for ALE, recorded with every step; None otherwise."""
        return self._ale.getRAM().tobytes() if self._ale is not None else None

    def snapshot(self) -> bytes | None:
        """The emulator's full state (RNG included) for exact replay, or None for non-ALE envs."""
        return pickle.dumps(self._ale.cloneState(include_rng=True)) if self._ale is not None else None

    def restore(self, state: bytes) -> None:
        self._ale.restoreState(pickle.loads(state))

    def check_action(self, agent: str, action: int) -> int:
        if agent not in self.agents:
            raise InvalidAction(f"unknown agent {agent!r}")
        if not isinstance(action, int) or isinstance(action, bool) or not 0 <= action < self.action_count:
            raise InvalidAction(f"action {action!r} is outside the action space 0..{self.action_count - 1}")
        return action

    def step(self, actions: dict[str, int]) -> StepResult:
        _, reward, terminated, truncated, _ = self.env.step(actions[SINGLE_AGENT])
        return StepResult({SINGLE_AGENT: float(reward)}, bool(terminated), bool(truncated))

    def screen(self) -> np.ndarray:
        """The current screen: HxW palette indices for ALE, HxWx3 RGB otherwise (a fresh array)."""
        if self._ale is not None:
            return self._ale.getScreen()
        frame = self.env.render()
        if frame is None:
            raise TypeError(f"environment {self.spec.id!r} must be made with render_mode='rgb_array'")
        return np.array(frame, dtype=np.uint8, copy=True)

    def close(self) -> None:
        self.env.close()
