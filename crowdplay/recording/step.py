"""RecordedStep: one tick's step as the recording keeps it, built once per tick and handed down.

The game's recording layer (``crowdplay.game_recording``) builds it from the game's step and the
frame's delta; the ``Recorder`` decides where the chunk ends from it and the ``OpenChunk`` appends
its values to the chunk's columns. One object carries the step through both, so their signatures
cannot drift apart; it lives only until the chunk has copied its values (nothing per step is kept).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crowdplay import codec

#: A step's (or reset's) observations and infos, per agent; None when not recorded.
Observed = tuple[dict[str, Any], dict[str, Any]] | None


@dataclass(frozen=True, slots=True)
class RecordedStep:
    """One step with every agent's action, as stored in a chunk's columns."""

    frame_id: int
    actions: Mapping[str, int]
    rewards: Mapping[str, float]
    terminated: bool
    truncated: bool
    #: the frame each agent's action was chosen on (the page's, or the one a policy saw)
    client_frames: Mapping[str, int]
    #: the screen after the step (a chunk cut here starts from it)
    screen: codec.Screen
    #: that screen as the codec's delta payload, which the live stream computed anyway
    delta: codec.Payload
    #: the emulator's RAM after the step, when kept
    ram: bytes | None
    #: the observations and infos the step returned, when recorded
    observed: Observed = None
