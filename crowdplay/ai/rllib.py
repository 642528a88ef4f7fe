"""RLlib checkpoints as policies (Ray's new API stack: RLModules).

A checkpoint may be an Algorithm checkpoint directory (``algo.save_to_path()``; its modules live
under ``learner_group/learner/rl_module``), a MultiRLModule checkpoint, or a single RLModule
checkpoint (``module.save_to_path()``). Multi-agent checkpoints hold one module per module id;
``module_id`` picks one (single-agent algorithms name theirs ``default_policy``).

Registering a trained agent is one line::

    register_rllib_checkpoint("pong-ppo", "policies/checkpoints/pong-ppo")

or a subclass, for more control::

    @register_policy("invaders-left")
    @register_ai_framebuffer("invaders-left")   # on an AtariFB subclass, usually
    class InvadersLeft(RLlibPolicy):
        checkpoint = "policies/checkpoints/invaders"
        module_id = "first_0"

The module is loaded in the policy actor (torch and RLlib are imported there, not in every
process that merely looks a policy id up), on a GPU when the actor was given one. Observations
arrive as the framebuffer made them; uint8 images are normalised to [-1, 1) as RLlib's Atari
training does (``normalize_images``). Actions are the most likely one, or sampled from the
module's action distribution with ``explore = True``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crowdplay.ai.atari import AtariFB, normalize
from crowdplay.ai.registry import Framebuffer, Policy, register_ai_framebuffer, register_policy

#: Where an Algorithm checkpoint keeps its (Multi)RLModule.
ALGORITHM_MODULES = Path("learner_group", "learner", "rl_module")
#: The module id of a single-agent algorithm.
DEFAULT_MODULE_ID = "default_policy"
#: RLlib ``DefaultModelConfig`` options for Mnih et al.'s Atari encoder ("Nature CNN"): 32 8x8/4,
#: 64 4x4/2, 64 3x3/1 convolutions, then 512 units (``policies/train.py`` and the benchmark use it).
NATURE_CNN = {
    "conv_filters": [[32, 8, 4, "valid"], [64, 4, 2, "valid"], [64, 3, 1, "valid"]],
    "conv_activation": "relu",
    "head_fcnet_hiddens": [512],
    "vf_share_layers": True,
}
#: Every RLlib component checkpoint directory has this file.
COMPONENT_MARKER = "class_and_ctor_args.pkl"


class CheckpointNotFound(FileNotFoundError):
    """The checkpoint, or the module asked for, is not where the registration says."""


def module_checkpoint(path: str | os.PathLike, module_id: str | None = None) -> Path:
    """The directory of the one RLModule to load from an Algorithm, MultiRLModule or RLModule checkpoint."""
    root = Path(path).expanduser()
    if not (root / COMPONENT_MARKER).is_file():
        raise CheckpointNotFound(f"{root} is not an RLlib checkpoint (no {COMPONENT_MARKER}); train one first, e.g. python -m policies.train")
    if (root / ALGORITHM_MODULES / COMPONENT_MARKER).is_file():
        root = root / ALGORITHM_MODULES
    modules = sorted(child.name for child in root.iterdir() if (child / COMPONENT_MARKER).is_file())
    if not modules:  # a single RLModule
        if module_id not in (None, DEFAULT_MODULE_ID):
            raise CheckpointNotFound(f"{root} holds a single RLModule, not module {module_id!r}")
        return root
    wanted = module_id or (DEFAULT_MODULE_ID if DEFAULT_MODULE_ID in modules or len(modules) > 1 else modules[0])
    if wanted not in modules:
        raise CheckpointNotFound(f"{root} has no module {wanted!r} (modules: {', '.join(modules)}); pass module_id")
    return root / wanted


class RLlibPolicy(Policy):
    """A policy that plays an RLModule from a checkpoint; subclass with ``checkpoint`` (and ``module_id``)."""

    checkpoint: str | os.PathLike = ""
    module_id: str | None = None
    explore: bool = False
    normalize_images: bool = True

    def __init__(self) -> None:
        import ray
        import torch
        from ray.rllib.core.rl_module.rl_module import RLModule

        self._torch = torch
        self.device = torch.device("cuda" if ray.is_initialized() and ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")
        self.module = RLModule.from_checkpoint(module_checkpoint(self.checkpoint, self.module_id))
        self.module.to(self.device)
        self.module.eval()
        self._rng = np.random.default_rng()

    def compute_action(self, observation: Any) -> int:
        return self.compute_actions([observation])[0]

    def compute_actions(self, observations: Sequence[Any]) -> list[int]:
        batch = np.stack(observations)
        if self.normalize_images and batch.dtype == np.uint8:
            batch = normalize(batch)
        torch = self._torch
        with torch.inference_mode():
            output = self.module.forward_inference({"obs": torch.from_numpy(batch).to(self.device)})
        logits = output["action_dist_inputs"].float().cpu().numpy()
        if not self.explore:
            return logits.argmax(axis=1).tolist()
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return [int(self._rng.choice(len(row), p=row)) for row in probabilities]


def register_rllib_checkpoint(
    policy_id: str,
    path: str | os.PathLike,
    module_id: str | None = None,
    framebuffer: type[Framebuffer] | None = AtariFB,
    explore: bool = False,
    **actor_options: Any,
) -> type[RLlibPolicy]:
    """Register the RLModule at ``path`` (and ``module_id``) as ``policy_id``, with ``framebuffer``
    (default: AtariFB) preparing its observations; ``actor_options`` set the policy's actor
    class attributes (``replicas``, ``num_cpus``, ``num_gpus``). Returns the new policy class."""
    unknown = set(actor_options) - {"replicas", "num_cpus", "num_gpus", "max_batch", "batch_wait_s", "batched"}
    if unknown:
        raise TypeError(f"register_rllib_checkpoint: unknown options {sorted(unknown)}")
    attributes = {"checkpoint": os.fspath(path), "module_id": module_id, "explore": explore, **actor_options}
    name = "".join(part.capitalize() for part in policy_id.replace("_", "-").split("-") if part) or "Checkpoint"
    cls = register_policy(policy_id)(type(f"{name}Policy", (RLlibPolicy,), {**attributes, "__module__": __name__}))
    if framebuffer is not None:
        register_ai_framebuffer(policy_id)(framebuffer)
    return cls
