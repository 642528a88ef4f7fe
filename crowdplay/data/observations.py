"""Observation formats: the recorded palette screens as RGB, or processed the way Atari agents see them.

``atari84`` is what an Atari policy sees when it plays here, per recorded step (CrowdPlay records
every emulator frame): the ``AtariFB`` framebuffer's output, i.e. RLlib's Atari preprocessing
(84x84 gray, max over two frames, a stack of four images four frames apart), so that a policy
trained offline on it can play on the platform, and one trained with RLlib online reads the data.
"""

from __future__ import annotations

import numpy as np

from crowdplay.ai.atari import AtariFB
from crowdplay.environments.ntsc_palette import NTSC_PALETTE

FORMATS = ("rgb", "palette", "atari84")


def to_rgb(screens: np.ndarray, palette: str | None) -> np.ndarray:
    """(N, H, W) palette indices -> (N, H, W, 3) RGB; RGB screens pass through."""
    if screens.ndim == 4:
        return screens
    if palette != "ntsc":
        raise ValueError(f"unknown palette {palette!r}")
    rgb: np.ndarray = NTSC_PALETTE[screens]
    return rgb


def atari84(rgb: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) RGB -> (N, 84, 84, 4) uint8: each screen as the AtariFB framebuffer shows it to
    a policy during play."""
    framebuffer = AtariFB()
    return np.stack([framebuffer.push(screen) for screen in rgb])


def convert(screens: np.ndarray, palette: str | None, observation_format: str) -> np.ndarray:
    """Recorded ``screens`` in ``observation_format`` (``FORMATS``); ValueError for an unknown format or a
    palette asked of RGB screens."""
    if observation_format == "palette":
        if screens.ndim != 3:
            raise ValueError("this environment's screens are RGB; there is no palette form")
        return screens
    if observation_format == "rgb":
        return to_rgb(screens, palette)
    if observation_format == "atari84":
        return atari84(to_rgb(screens, palette))
    raise ValueError(f"unknown observation format {observation_format!r}; choose one of {', '.join(FORMATS)}")
