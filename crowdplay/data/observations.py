"""Observation formats: the recorded palette screens as RGB, or processed the way Atari agents see them.

``atari84`` follows the usual DQN preprocessing, applied per recorded step (CrowdPlay records
every emulator frame, frameskip 1): grayscale (ITU-R 601 luma), the max of each frame and the one
before it (Atari sprites flicker between frames), area-resized to 84x84, and the last 4 such
frames stacked on the last axis; the first frames of an episode repeat the first one.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from crowdplay.environments.ntsc_palette import NTSC_PALETTE

FORMATS = ("rgb", "palette", "atari84")
ATARI_SIZE = 84
ATARI_STACK = 4
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_rgb(screens: np.ndarray, palette: str | None) -> np.ndarray:
    """(N, H, W) palette indices -> (N, H, W, 3) RGB; RGB screens pass through."""
    if screens.ndim == 4:
        return screens
    if palette != "ntsc":
        raise ValueError(f"unknown palette {palette!r}")
    return NTSC_PALETTE[screens]


@lru_cache(maxsize=8)
def _area_weights(source: int, target: int) -> np.ndarray:
    """(target, source) matrix averaging the source cells each target cell covers (box filter,
    fractional at the edges): exact area resampling for any ratio."""
    weights = np.zeros((target, source), dtype=np.float32)
    scale = source / target
    for row in range(target):
        start, end = row * scale, (row + 1) * scale
        for cell in range(int(np.floor(start)), int(np.ceil(end))):
            weights[row, cell] = min(end, cell + 1) - max(start, cell)
        weights[row] /= weights[row].sum()
    return weights


def atari84(rgb: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) RGB -> (N, 84, 84, 4) uint8 as described in the module docstring."""
    gray = rgb.astype(np.float32) @ LUMA
    pooled = np.maximum(gray, np.concatenate([gray[:1], gray[:-1]]))
    rows = _area_weights(rgb.shape[1], ATARI_SIZE)
    cols = _area_weights(rgb.shape[2], ATARI_SIZE)
    small = np.rint(rows @ pooled @ cols.T).clip(0, 255).astype(np.uint8)
    stacked = [np.concatenate([np.repeat(small[:1], lag, axis=0), small[: len(small) - lag]]) for lag in range(ATARI_STACK - 1, -1, -1)]
    return np.stack(stacked, axis=-1)


def convert(screens: np.ndarray, palette: str | None, observation_format: str) -> np.ndarray:
    if observation_format == "palette":
        if screens.ndim != 3:
            raise ValueError("this environment's screens are RGB; there is no palette form")
        return screens
    if observation_format == "rgb":
        return to_rgb(screens, palette)
    if observation_format == "atari84":
        return atari84(to_rgb(screens, palette))
    raise ValueError(f"unknown observation format {observation_format!r}; choose one of {', '.join(FORMATS)}")
