"""A participant's input, from the websocket to the recording, as one type.

The ingress parses it (``crowdplay.protocol``), the attachment sends it to the game over the frame
channel (``to_wire``/``from_wire``, the channel's JSON), the game queues it for its next tick
(``crowdplay.game_inputs``) and, once applied, the observers receive it with what the game made of
it (``AppliedInput``): the recording and the input log read the same fields the page sent.

Each input says which device made it (``source``): the page merges a keyboard, gamepads and its
on-screen touch controls into one set of held keys, and an analysis that compares participants
needs to know whether a demonstration was played with thumbs on glass or fingers on keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: The devices a ``keys`` message can come from (the page names the one that made the latest
#: change); a message without one comes from a keyboard, as every message did before.
KEY_SOURCES = ("keyboard", "gamepad", "touch")
DEFAULT_SOURCE = "keyboard"
#: The source of an action chosen by number (a program, not a device of the page).
ACTION_SOURCE = "action"

@dataclass(frozen=True, slots=True)
class ParticipantInput:
    """Either the full set of held keys (KeyboardEvent.code names, sent on every change) or an
    action chosen by number (programmatic clients), with the page's frame it was chosen on and
    its sequence number."""

    #: the held keys (empty: nothing held); None for an action chosen by number
    keys: frozenset[str] | None
    #: the action chosen by number (checked against the action space by the game); None for keys
    action: int | None
    frame: int = 0
    seq: int = 0
    #: wall-clock time the ingress received it (0: not known), for timing the key's path
    ingress_at: float = 0.0
    #: the device that made it: one of ``KEY_SOURCES`` for keys, ``ACTION_SOURCE`` for an action
    source: str = DEFAULT_SOURCE

    def __post_init__(self) -> None:
        if (self.keys is None) == (self.action is None):
            raise ValueError("an input holds either keys or an action")
        if self.keys is None and self.source == DEFAULT_SOURCE:  # an action given without a source: a program's
            object.__setattr__(self, "source", ACTION_SOURCE)  # frozen: the dataclass's own way to normalise a field
        allowed = KEY_SOURCES if self.keys is not None else (ACTION_SOURCE,)
        if self.source not in allowed:
            raise ValueError(f"an input's source must be one of {', '.join(allowed)}, got {self.source!r}")

    @classmethod
    def holding(cls, keys: Iterable[str], frame: int = 0, seq: int = 0, ingress_at: float = 0.0, source: str = DEFAULT_SOURCE) -> ParticipantInput:
        """The keys held as of ``frame``, from the device ``source``."""
        return cls(frozenset(keys), None, frame, seq, ingress_at, source)

    @classmethod
    def choosing(cls, action: int, frame: int = 0, seq: int = 0, ingress_at: float = 0.0) -> ParticipantInput:
        """An action chosen by number as of ``frame``."""
        return cls(None, action, frame, seq, ingress_at, ACTION_SOURCE)

    @property
    def held(self) -> tuple[str, ...]:
        """The held keys in order (none for an action), as recorded."""
        return tuple(sorted(self.keys)) if self.keys else ()

    def to_wire(self) -> dict[str, Any]:
        """As the frame channel carries it (JSON)."""
        if self.action is not None:
            return {"kind": "action", "action": self.action, "frame": self.frame, "seq": self.seq, "at": self.ingress_at}
        return {"kind": "keys", "keys": list(self.held), "frame": self.frame, "seq": self.seq, "at": self.ingress_at, "source": self.source}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ParticipantInput:
        """``to_wire``'s inverse (the channel's peer is the ingress, which parsed the input)."""
        if data["kind"] == "keys":
            return cls.holding(data["keys"], data["frame"], data["seq"], data.get("at", 0.0), data.get("source", DEFAULT_SOURCE))
        return cls.choosing(data["action"], data["frame"], data["seq"], data.get("at", 0.0))


@dataclass(frozen=True, slots=True)
class AppliedInput:
    """A participant's input as a tick applied it: the input, the action it put in effect, and
    when (frame, tick) it arrived and took effect."""

    agent: str
    input: ParticipantInput
    #: the action in effect from this input on (None: the agent waits for a mapped key)
    action: int | None
    received_frame: int
    applied_frame: int
    received_tick: int
    applied_tick: int
    env_step: int
    apply_delay_s: float

    def as_dict(self) -> dict[str, Any]:
        """The input as a JSON-able dict (the EnvActor hands out its input log this way)."""
        return {
            "agent": self.agent,
            "action": self.action,
            "keys": list(self.input.held),
            "source": self.input.source,
            "seq": self.input.seq,
            "client_frame": self.input.frame,
            "received_frame": self.received_frame,
            "applied_frame": self.applied_frame,
            "received_tick": self.received_tick,
            "applied_tick": self.applied_tick,
            "env_step": self.env_step,
            "apply_delay_s": self.apply_delay_s,
        }
