"""Who plays an agent: a participant (``Human``) or a policy (``PolicyControl``).

A controller travels from where a seat is given (arrivals, the AI players) through the matchmaker,
the EnvActor and the game to the recording, across Ray calls (pickled). Typed, every step of that
way says which kind it holds instead of reading keys out of a dict; the stored form, what
``document`` gives, stays the dict docs/recording.md describes (a chunk's and an episode's
``controllers``), and ``from_document`` reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Human:
    """A participant plays the agent (``participant``: their pseudonym, None before anyone sits).
    ``away``: their connection dropped and the seat waits for them (the reconnect grace); what the
    agent plays meanwhile is nobody's choice."""

    participant: str | None = None
    away: bool = False

    def document(self) -> dict[str, Any]:
        """As stored: ``{"human": true, "participant": ...}``, with ``"away": true`` while away."""
        stored: dict[str, Any] = {"human": True, "participant": self.participant}
        if self.away:
            stored["away"] = True
        return stored


@dataclass(frozen=True)
class PolicyControl:
    """A policy plays the agent (``policy``: its registered id)."""

    policy: str

    def document(self) -> dict[str, Any]:
        """As stored: ``{"human": false, "policy": ...}``."""
        return {"human": False, "policy": self.policy}


Controller = Human | PolicyControl


def from_document(document: Mapping[str, Any]) -> Controller:
    """A stored controller as its type (``document``'s inverse)."""
    if document.get("human"):
        return Human(document.get("participant"), bool(document.get("away")))
    return PolicyControl(str(document.get("policy") or ""))


def documents(controllers: Mapping[str, Controller]) -> dict[str, dict[str, Any]]:
    """Each agent's controller as stored."""
    return {agent: controller.document() for agent, controller in controllers.items()}
