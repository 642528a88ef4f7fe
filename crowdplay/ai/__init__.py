"""AI agents: the policy and framebuffer registry, and the built-in policies."""

from crowdplay.ai.registry import (
    Framebuffer,
    Policy,
    UnknownPolicy,
    check_policy,
    make_framebuffer,
    make_policy,
    register_ai_framebuffer,
    register_policy,
    registered_policies,
)
from crowdplay.ai import builtin  # noqa: F401  (registers random and noop)

__all__ = [
    "Framebuffer",
    "Policy",
    "UnknownPolicy",
    "check_policy",
    "make_framebuffer",
    "make_policy",
    "register_ai_framebuffer",
    "register_policy",
    "registered_policies",
]
