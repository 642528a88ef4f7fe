"""Stepped: one tick's step of a game, as its observers and its recording receive it.

The game (``crowdplay.realtime``) builds it once per tick and hands it to every observer
(``crowdplay.game_observers``); the recording passes it down with the frame's delta, the
``Recorder`` decides where the chunk ends from it and the ``OpenChunk`` appends its values to the
chunk's columns. One object carries the step through all of them, so their signatures cannot
drift apart; it lives only until the chunk has copied its values (nothing per step is kept).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crowdplay import codec

#: The observations and infos per agent an environment returned (None: not recorded, e.g. ALE).
Observed = tuple[dict[str, Any], dict[str, Any]] | None


@dataclass(frozen=True, slots=True)
class Stepped:
    """One step of the environment with every agent's action."""

    frame_id: int
    #: every agent has an action when the game steps (it waits otherwise)
    actions: Mapping[str, int]
    rewards: Mapping[str, float]
    terminated: bool
    truncated: bool
    #: the frame each agent's action was chosen on (the page's, or the one a policy saw)
    client_frames: Mapping[str, int]
    #: the screen after the step (a chunk cut here starts from it)
    screen: codec.Screen
    previous: codec.Screen
    #: the emulator's RAM after the step, when anyone keeps it
    ram: bytes | None
    #: the observations and infos the step returned, when recorded
    observed: Observed = None
    #: the agents whose participant sent an input this tick
    human_inputs: frozenset[str] = frozenset()
