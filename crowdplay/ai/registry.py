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

from crowdplay.registry import Registry, UnknownName

PolicyClass = TypeVar("PolicyClass", bound=type["Policy"])
FramebufferClass = TypeVar("FramebufferClass", bound=type["Framebuffer"])


class UnknownPolicy(UnknownName):
    """Raised for a policy id that nobody registered."""

    kind = "policy"


class Policy:
    """Chooses an agent's action from what it observes.

    The platform constructs a policy without arguments, sets ``action_space`` to the agent's
    (discrete) action space, and asks ``compute_action`` once per frame: repeating an action for
    several frames is the policy's own choice. ``observation`` names what the policy is given
    (before its framebuffer, if one is registered for it): ``"rgb"`` for the screen as an
    ``(H, W, 3)`` uint8 array, ``"ram"`` for the console RAM, ``"env"`` for the agent's own
    observation as the environment returned it (the screen for ALE), ``None`` for nothing at all.
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
    action_space: gym.spaces.Discrete[Any]
    in_actor: bool = True
    replicas: int = 1
    #: a fraction of a core by default, so policy actors fit small nodes beside the game servers
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    max_batch: int = 64
    batched: bool = True
    batch_wait_s: float = 0.0

    def compute_action(self, observation: Any) -> int:
        """The action (an index into ``action_space``) for one observation of the kind ``observation`` names."""
        raise NotImplementedError

    def problems(self) -> list[str]:
        """What makes this policy unfit to play an agent with ``action_space`` (a model with
        another number of actions, say), checked when its actor starts and by ``crowdplay
        check``: nothing, unless a subclass knows better."""
        return []

    def input_problem(self, policy_input: Any) -> str | None:
        """Why ``policy_input`` (the framebuffer's output for one frame) cannot be this policy's
        input, if it cannot: ``crowdplay check`` asks before it asks for an action."""
        return None

    def describe(self) -> dict[str, Any]:
        """What ``crowdplay check`` reports about the loaded policy (a checkpoint's path, say)."""
        return {}


def compute_batch(policy: Policy, observations: Sequence[Any], streams: Sequence[str | None] | None = None) -> list[Any]:
    """The policy's answers for ``observations``: one ``compute_actions`` call when it has one and
    is ``batched`` (with ``streams`` for per-stream policies), else ``compute_action`` for each."""
    compute_actions = getattr(policy, "compute_actions", None)
    if not (policy.batched and callable(compute_actions)):
        return [policy.compute_action(observation) for observation in observations]
    if getattr(policy, "per_stream", False):
        answers = list(compute_actions(observations, streams if streams is not None else [None] * len(observations)))
    else:
        answers = list(compute_actions(observations))
    if len(answers) != len(observations):
        raise ValueError(f"compute_actions answered {len(answers)} actions for {len(observations)} observations")
    return answers


class Framebuffer:
    """Turns the stream of raw observations into what a policy expects (one per agent and game)."""

    def push(self, observation: np.ndarray) -> Any:
        """Take the newest raw observation; return the policy's input for this frame."""
        raise NotImplementedError

    def reset(self) -> None:
        """A new episode starts: forget earlier frames."""


_POLICIES: Registry[type[Policy]] = Registry("policy", UnknownPolicy)
_FRAMEBUFFERS: Registry[type[Framebuffer]] = Registry("framebuffer")


def register_policy(policy_id: str) -> Callable[[PolicyClass], PolicyClass]:
    """Register a policy class (constructed without arguments) under ``policy_id``."""
    return _POLICIES.register(policy_id)


def register_ai_framebuffer(policy_id: str) -> Callable[[FramebufferClass], FramebufferClass]:
    """Register the framebuffer class that prepares observations for the policy ``policy_id``."""
    return _FRAMEBUFFERS.register(policy_id)


def check_policy(policy_id: str) -> str:
    """The id itself if a policy is registered under it; else UnknownPolicy naming the known ones."""
    return _POLICIES.check(policy_id)


def registered_policies() -> Sequence[str]:
    """The ids of every registered policy (``crowdplay check`` reports those no environment uses)."""
    return _POLICIES.names()


def policy_class(policy_id: str) -> type[Policy]:
    """The class registered under ``policy_id``; raises UnknownPolicy naming the known ids."""
    return _POLICIES.get(policy_id)


def make_policy(policy_id: str, action_space: gym.spaces.Discrete[Any]) -> Policy:
    """A new instance of the policy ``policy_id``, given the agent's ``action_space``."""
    policy = policy_class(policy_id)()
    policy.action_space = action_space
    return policy


def make_framebuffer(policy_id: str) -> Framebuffer | None:
    """A new framebuffer for ``policy_id``'s observations, or None when the policy takes them raw."""
    cls = _FRAMEBUFFERS.find(policy_id)
    return cls() if cls is not None else None
