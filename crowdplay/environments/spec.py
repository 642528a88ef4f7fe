"""EnvSpec: everything the platform needs to know to run one environment for participants."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym

from crowdplay.environments.keymap import Keymap, atari_keymap

KeymapFactory = Callable[[Sequence[str]], Keymap]


@dataclass(frozen=True)
class EnvSpec:
    """A playable environment.

    ``make_env`` builds a fresh Gymnasium environment (called inside the EnvActor, never in the
    ingress). ``keymap`` is a Keymap, or a factory that receives the environment's action meanings
    (for ALE games, whose action sets differ per game); its no-op is the action before any key.
    ``instructions`` is the researcher's HTML shown with the game.
    """

    id: str
    title: str
    description: str
    make_env: Callable[[], gym.Env]
    fps: float = 60.0
    keymap: Keymap | KeymapFactory = atari_keymap
    instructions: str = ""

    def __post_init__(self) -> None:
        if not self.id or not self.id.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"environment id {self.id!r} must be non-empty letters, digits, '-' or '_'")
        if not 1 <= self.fps <= 240:
            raise ValueError(f"environment {self.id!r}: fps must be within 1..240, got {self.fps}")

    def public(self) -> dict[str, object]:
        """What the game library shows (no callables)."""
        return {"id": self.id, "title": self.title, "description": self.description, "fps": self.fps}
