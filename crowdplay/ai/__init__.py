"""AI agents: the policy and framebuffer registry, the built-in policies, Atari preprocessing and
RLlib checkpoints as policies. (The policy actors live in ``crowdplay.ai.actor``.)"""

from crowdplay.ai import builtin  # noqa: F401  (registers random and noop)
from crowdplay.ai.atari import AtariFB
from crowdplay.ai.registry import (
    Framebuffer,
    Policy,
    UnknownPolicy,
    check_policy,
    make_framebuffer,
    make_policy,
    policy_class,
    register_ai_framebuffer,
    register_policy,
    registered_policies,
)
from crowdplay.ai.rllib import RLlibPolicy, register_rllib_checkpoint

__all__ = [
    "AtariFB",
    "Framebuffer",
    "Policy",
    "RLlibPolicy",
    "UnknownPolicy",
    "check_policy",
    "make_framebuffer",
    "make_policy",
    "policy_class",
    "register_ai_framebuffer",
    "register_policy",
    "register_rllib_checkpoint",
    "registered_policies",
]
