"""Names shared between a game's process and the manager: a game's phases and what its lineup
reports. String enums, so they travel as plain strings (JSON, Ray) and compare equal to them,
while code that spells one wrong fails at import, not silently at run time."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Where a game is in its life (``Lineup.phase``, and what an EnvActor reports for adoption)."""

    WAITING = "waiting"
    COUNTDOWN = "countdown"
    PLAYING = "playing"
    ENDED = "ended"


class GameEvent(StrEnum):
    """What a game's lineup tells the manager (the ``event`` field of ``Lineup.on_event``)."""

    #: the game takes no newcomers (it is about to begin)
    CLOSED = "closed"
    #: a participant is gone for good: their seat reopened (waiting room) or AI plays it
    SEAT_RELEASED = "seat_released"
    #: the game is over
    ENDED = "ended"


class Mode(StrEnum):
    """When an environment steps (``EnvSpec.mode``): the real-time loop reads it every tick to
    decide whether this tick plays, so a misspelt mode must fail at registration, not mid-game."""

    #: steps at the spec's ``fps`` whatever the participants do
    REALTIME = "realtime"
    #: one step per key press (turn-based games)
    WAIT_FOR_KEY = "wait_for_key"
    #: steps at ``fps`` while a participant holds a key, paused otherwise
    HOLD_KEYS = "hold_keys"
