"""AtariFB: Atari observations prepared the way RLlib's Atari training prepares them.

RLlib's ``wrap_atari_for_new_api_stack(env, dim=84, frameskip=4, framestack=4)`` turns each
emulator frame into an 84x84 grayscale image (OpenCV's RGB-to-gray, then an area resize), takes the
pixel-wise maximum of the last two frames of each four-frame step, and stacks the last four such
images. A policy trained that way therefore decides every fourth frame, looking at frames four apart.

Here the policy is asked every frame, so the framebuffer keeps the recent history and offers, at
every frame ``t``, exactly the stack a training step ending at ``t`` would have produced:
``[P(t-12), P(t-8), P(t-4), P(t)]`` with ``P(k) = max(gray(k-1), gray(k))``. Right after a reset the
missing older images are copies of the oldest one, as RLlib's frame stack does. Repeating an action
for four frames, as in training, is the policy's choice, not the framebuffer's.

The output is uint8 ``(dim, dim, stack)``, a quarter of the bytes of the float images RLlib's
``NormalizedImageEnv`` makes; ``normalize`` does that last step (``x / 128 - 1``) where the model runs.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from crowdplay.ai.registry import Framebuffer


class AtariFB(Framebuffer):
    """Gray, resized, max-pooled, stacked Atari screens (see the module docstring).

    Subclass to change ``dim`` (RLlib's own default is 64), ``stack`` or ``skip``."""

    dim: int = 84
    stack: int = 4
    #: frames between two stacked images: the action repeat the policy was trained with
    skip: int = 4

    def __init__(self) -> None:
        import cv2  # here, not at import: only processes that run an Atari policy pay for OpenCV

        self._cv2 = cv2
        self._images: deque[np.ndarray] = deque(maxlen=(self.stack - 1) * self.skip + 1)
        self._previous_gray: np.ndarray | None = None

    def push(self, observation: np.ndarray) -> np.ndarray:
        """The policy's input for this frame: the last ``stack`` max-pooled gray images, ``skip`` frames apart."""
        cv2 = self._cv2
        gray = cv2.resize(cv2.cvtColor(observation, cv2.COLOR_RGB2GRAY), (self.dim, self.dim), interpolation=cv2.INTER_AREA)
        image = gray if self._previous_gray is None else np.maximum(gray, self._previous_gray)
        self._previous_gray = gray
        self._images.append(image)
        newest = len(self._images) - 1
        picks = [self._images[max(0, newest - back * self.skip)] for back in range(self.stack - 1, -1, -1)]
        return np.stack(picks, axis=-1)

    def reset(self) -> None:
        """Forget the history; the next frame's stack repeats its image."""
        self._images.clear()
        self._previous_gray = None


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 images as RLlib's ``NormalizedImageEnv`` gives them to a model: float32 in [-1, 1)."""
    return images.astype(np.float32) / 128.0 - 1.0
