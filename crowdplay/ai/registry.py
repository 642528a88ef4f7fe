"""The AI registry: policies and the framebuffers that prepare their observations, by id.

Environments name policies by id (``ai_agent_map_always``, ``ai_agent_map_fallback``), and an
unknown id fails when the environment is configured, not mid-game. Both decorators return the
class unchanged, so they stack: one class can be registered under several ids, and one
framebuffer can serve several policies::

    @register_policy("tetris-bot")
    @register_policy("tetris-bot-v2")
    class TetrisBot(Policy): ...

    @register_ai_framebuffer("tetris-bot")
    @register_ai_framebuffer("tetris-bot-v2")
    class Downsample(Framebuffer): ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np

T = TypeVar("T", bound=type)


class UnknownPolicy(KeyError):
    """Raised for a policy id that nobody registered."""

    def __init__(self, policy_id: str) -> None:
        super().__init__(policy_id)
        self.policy_id = policy_id

    def __str__(self) -> str:
        known = ", ".join(sorted(_POLICIES)) or "none"
        return f"unknown policy {self.policy_id!r} (registered: {known})"


class Policy:
    """Chooses an agent's action from what it observes.

    The platform constructs a policy without arguments, sets ``action_space`` to the agent's
    (discrete) action space, and asks ``compute_action`` once per frame: repeating an action for
    several frames is the policy's own choice. ``observation`` names what the policy is given
    (before its framebuffer, if one is registered for it): ``"rgb"`` for the screen as an
    ``(H, W, 3)`` uint8 array, ``"ram"`` for the console RAM, ``None`` for nothing at all.
    A policy may also define ``compute_actions(batch)`` (a list of observations in, a list of
    actions out), which is used when several observations are answered at once.

    Policies run in policy actors shared by the games of the whole deployment
    (``crowdplay.ai.actor``); these class attributes configure them: ``replicas`` actors per
    policy, each with ``num_cpus`` and ``num_gpus`` (a GPU is used when given), answering the
    requests that arrive within ``batch_wait_s`` of each other together, up to ``max_batch``
    (``batched = False`` answers them one ``compute_action`` at a time, for comparison).
    ``in_actor = False`` runs the policy inside each game's process instead: only for policies so
    cheap that a remote call would cost more than the answer (the built-in ``noop`` and ``random``).
    """

    observation: str | None = "rgb"
    action_space: gym.spaces.Discrete
    in_actor: bool = True
    replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_batch: int = 64
    batched: bool = True
    batch_wait_s: float = 0.0

    def compute_action(self, observation: Any) -> int:
        raise NotImplementedError


class Framebuffer:
    """Turns the stream of raw observations into what a policy expects (one per agent and game)."""

    def push(self, observation: np.ndarray) -> Any:
        """Take the newest raw observation; return the policy's input for this frame."""
        raise NotImplementedError

    def reset(self) -> None:
        """A new episode starts: forget earlier frames."""


_POLICIES: dict[str, type] = {}
_FRAMEBUFFERS: dict[str, type] = {}


def _registrar(table: dict[str, type], kind: str, key: str) -> Callable[[T], T]:
    if not isinstance(key, str) or not key:
        raise ValueError(f"a {kind} id must be a non-empty string, got {key!r}")

    def register(cls: T) -> T:
        if table.get(key, cls) is not cls:
            raise ValueError(f"{kind} id {key!r} is already registered to {table[key].__qualname__}")
        table[key] = cls
        return cls

    return register


def register_policy(policy_id: str) -> Callable[[T], T]:
    """Register a policy class (constructed without arguments) under ``policy_id``."""
    return _registrar(_POLICIES, "policy", policy_id)


def register_ai_framebuffer(policy_id: str) -> Callable[[T], T]:
    """Register the framebuffer class that prepares observations for the policy ``policy_id``."""
    return _registrar(_FRAMEBUFFERS, "framebuffer", policy_id)


def check_policy(policy_id: str) -> str:
    """The id itself if a policy is registered under it; else UnknownPolicy naming the known ones."""
    if policy_id not in _POLICIES:
        raise UnknownPolicy(policy_id)
    return policy_id


def registered_policies() -> Sequence[str]:
    return sorted(_POLICIES)


def policy_class(policy_id: str) -> type[Policy]:
    return _POLICIES[check_policy(policy_id)]


def make_policy(policy_id: str, action_space: gym.spaces.Discrete) -> Policy:
    policy = policy_class(policy_id)()
    policy.action_space = action_space
    return policy


def make_framebuffer(policy_id: str) -> Framebuffer | None:
    cls = _FRAMEBUFFERS.get(policy_id)
    return cls() if cls is not None else None
