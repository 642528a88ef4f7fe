"""The built-in Atari games: Gymnasium's ALE v5 with frameskip 1 and sticky actions off.

The platform runs at the game's native 60 Hz and applies the participant's latest action every
frame, so neither ALE's frame skipping nor its random action repeats may stand between the key and
the screen. Observations are the RAM (cheap); the screen is read as palette indices by the adapter.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import ale_py
import gymnasium as gym

from crowdplay.environments.keymap import atari_keymap
from crowdplay.environments.registry import register_env
from crowdplay.environments.spec import EnvSpec

gym.register_envs(ale_py)

ARROWS_AND_SPACE = "Arrow keys move, Space fires."


def make_ale(game: str, **kwargs: object) -> gym.Env[Any, Any]:
    """A real-time ALE environment: one emulator frame per step, deterministic given the seed."""
    options: dict[str, Any] = {"frameskip": 1, "repeat_action_probability": 0.0, "obs_type": "ram", **kwargs}
    return gym.make(f"ALE/{game}-v5", **options)


def _atari(game: str, title: str, description: str, instructions: str = ARROWS_AND_SPACE, **spec_options: Any) -> EnvSpec:
    """Register one built-in game: the ALE env of that name with the shared defaults."""
    return register_env(
        EnvSpec(
            id=game,
            title=title,
            description=description,
            make_env=partial(make_ale, game),
            instructions=instructions,
            **spec_options,
        )
    )


SPACE_INVADERS = _atari("SpaceInvaders", "Space Invaders", "Shoot the descending aliens before they land.")
BREAKOUT = _atari("Breakout", "Breakout", "Bounce the ball to knock out the bricks.", "Space serves, Left/Right move the paddle.")
PONG = _atari(
    "Pong",
    "Pong",
    "Beat the computer at table tennis.",
    "Up/Down move your paddle (right side).",
    keymap=partial(atari_keymap, renames={"RIGHT": "ArrowUp", "LEFT": "ArrowDown"}),
)
MONTEZUMA = _atari("MontezumaRevenge", "Montezuma's Revenge", "Explore the pyramid, collect keys, avoid the skulls.", "Arrows move and climb, Space jumps.")
RIVERRAID = _atari("Riverraid", "River Raid", "Fly up the river, refuel, and destroy bridges.", "Left/Right steer, Up/Down change speed, Space fires.")
QBERT = _atari("Qbert", "Q*bert", "Hop on every cube to change its colour.", "Arrow keys hop diagonally (Up = up-right, Right = down-right, Left = up-left, Down = down-left).")
BEAM_RIDER = _atari("BeamRider", "Beam Rider", "Clear each sector of enemy saucers.", "Left/Right move between beams, Space fires, Up fires a torpedo.")
