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
training does (``normalize_images``). From there inference is the checkpoint's own
(``RLlibPolicy``): its connector pipelines when it has them, the module's ``forward_inference``,
and its action distribution where the module answers distribution inputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from crowdplay.ai.atari import AtariFB, normalize
from crowdplay.ai.registry import Framebuffer, Policy, register_ai_framebuffer, register_policy
from crowdplay.ai.streams import StreamEpisodes

#: Where an Algorithm checkpoint keeps its (Multi)RLModule.
ALGORITHM_MODULES = Path("learner_group", "learner", "rl_module")
#: The module id of a single-agent algorithm.
DEFAULT_MODULE_ID = "default_policy"
#: RLlib ``DefaultModelConfig`` options for Mnih et al.'s Atari encoder ("Nature CNN"): 32 8x8/4,
#: 64 4x4/2, 64 3x3/1 convolutions, then 512 units (``policies/train.py`` and the benchmark use it).
NATURE_CNN: dict[str, Any] = {  # RLlib model-config values of several types, given to DefaultModelConfig by name
    "conv_filters": [[32, 8, 4, "valid"], [64, 4, 2, "valid"], [64, 3, 1, "valid"]],
    "conv_activation": "relu",
    "head_fcnet_hiddens": [512],
    "vf_share_layers": True,
}
#: Every RLlib component checkpoint directory has this file.
COMPONENT_MARKER = "class_and_ctor_args.pkl"


class CheckpointNotFound(FileNotFoundError):
    """The checkpoint, or the module asked for, is not where the registration says."""


def module_checkpoint(path: str | os.PathLike[str], module_id: str | None = None) -> Path:
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


#: Where an Algorithm checkpoint keeps the connector pipelines its env runners used.
ENV_TO_MODULE = Path("env_runner", "env_to_module_connector")
MODULE_TO_ENV = Path("env_runner", "module_to_env_connector")


def connector_checkpoints(path: str | os.PathLike[str]) -> tuple[Path, Path] | None:
    """The env-to-module and module-to-env pipelines of an Algorithm checkpoint (None for a
    module checkpoint, which has none)."""
    root = Path(path).expanduser().resolve()
    pipelines = (root / ENV_TO_MODULE, root / MODULE_TO_ENV)
    return pipelines if all((pipeline / COMPONENT_MARKER).is_file() for pipeline in pipelines) else None


class RLlibPolicy(Policy):
    """A policy that plays an RLModule from a checkpoint; subclass with ``checkpoint`` (and ``module_id``).

    Inference is the checkpoint's own: its env-to-module pipeline prepares the observations (from
    each stream's episode, so pieces that look back see the agent's history), the module's
    ``forward_inference`` answers, and its module-to-env pipeline turns that into the actions the
    environment gets. A module that answers distribution inputs rather than actions (PPO, APPO,
    IMPALA, BC, MARWIL, SAC) is answered through its own inference action distribution: its most
    likely action, or a sample with ``explore = True``. Modules that answer actions themselves
    (the DQN family) are greedy either way. A module checkpoint (no pipelines), or
    ``connectors = False``, feeds the framebuffer's output to the module directly.
    """

    checkpoint: str | os.PathLike[str] = ""
    module_id: str | None = None
    explore: bool = False
    normalize_images: bool = True
    connectors: bool = True
    per_stream = True

    def __init__(self) -> None:
        import ray
        import torch
        from ray.rllib.core.rl_module.rl_module import RLModule

        self._torch = torch
        self.device = torch.device("cuda" if ray.is_initialized() and ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")
        location = module_checkpoint(self.checkpoint, self.module_id)
        self.module: Any = cast(Any, RLModule.from_checkpoint(location.resolve()))  # a TorchRLModule: also a torch.nn.Module
        self.module.to(self.device)
        self.module.eval()
        if self.module.is_stateful():
            raise ValueError(f"{location}: recurrent (stateful) modules are not supported yet")
        #: the module's id: its directory's inside a MultiRLModule, else the single-agent one
        self.loaded_module_id = location.name if (location.parent / COMPONENT_MARKER).is_file() else (self.module_id or DEFAULT_MODULE_ID)
        self.runner_module: Any = self.module
        self.env_to_module: Any = None
        self.module_to_env: Any = None
        self.streams: StreamEpisodes | None = None
        pipelines = connector_checkpoints(self.checkpoint) if self.connectors else None
        if pipelines is not None:
            self._load_pipelines(*pipelines)

    def _load_pipelines(self, env_to_module_path: Path, module_to_env_path: Path) -> None:
        from ray.rllib.connectors.common.agent_to_module_mapping import AgentToModuleMapping
        from ray.rllib.connectors.connector_pipeline_v2 import ConnectorPipelineV2
        from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule
        from ray.rllib.env.multi_agent_episode import MultiAgentEpisode
        from ray.rllib.env.single_agent_episode import SingleAgentEpisode

        self.env_to_module = ConnectorPipelineV2.from_checkpoint(env_to_module_path)
        self.module_to_env = ConnectorPipelineV2.from_checkpoint(module_to_env_path)
        spaces = self.env_to_module.observation_space, self.env_to_module.action_space
        if any(isinstance(piece, AgentToModuleMapping) for piece in self.env_to_module.connectors):
            # A multi-agent pipeline: one agent, mapped to the loaded module, in a MultiRLModule of one.
            agent = self.loaded_module_id if self.loaded_module_id in getattr(spaces[0], "spaces", {}) else next(iter(spaces[0].spaces))
            module_id = self.loaded_module_id
            self.runner_module = MultiRLModule()
            self.runner_module.add_module(module_id, self.module)
            self.streams = StreamEpisodes(
                lambda: MultiAgentEpisode(observation_space=spaces[0], action_space=spaces[1], agent_to_module_mapping_fn=lambda agent_id, episode: module_id),
                agent,
            )
        else:
            self.runner_module = self.module
            self.streams = StreamEpisodes(lambda: SingleAgentEpisode(observation_space=spaces[0], action_space=spaces[1]), None)

    def problems(self) -> list[str]:
        """The module must choose among exactly the agent's actions."""
        count = getattr(self.module.action_space, "n", None)
        if count is None:
            return [f"module {self.loaded_module_id!r} has action space {self.module.action_space}, not a Discrete one"]
        if int(count) != int(self.action_space.n):
            return [f"module {self.loaded_module_id!r} has {int(count)} actions but the agent has {int(self.action_space.n)}"]
        return []

    def input_problem(self, policy_input: Any) -> str | None:
        """The input's shape against what the checkpoint's env-to-module pipeline (or, without
        one, the module) takes."""
        if self.env_to_module is not None:
            space, taker = self.env_to_module.observation_space, "the checkpoint's env-to-module pipeline"
            if self.streams is not None and self.streams.agent is not None:
                space = space[self.streams.agent]
        else:
            space, taker = self.module.observation_space, f"module {self.loaded_module_id!r}"
        expected = getattr(space, "shape", None)
        shape = tuple(np.shape(policy_input))
        if expected is not None and shape != tuple(expected):
            return f"the input has shape {shape} but {taker} takes {tuple(expected)} (observation space {space})"
        return None

    def describe(self) -> dict[str, Any]:
        """The checkpoint's resolved path, the module loaded, its connectors and whether it explores."""
        return {
            "checkpoint": os.fspath(Path(self.checkpoint).expanduser().resolve()),
            "module": self.loaded_module_id,
            "connectors": "the checkpoint's env-to-module and module-to-env pipelines" if self.env_to_module is not None else "none (the module directly)",
            "explore": self.explore,
        }

    def compute_action(self, observation: Any) -> int:
        """One observation answered as a batch of one."""
        return self.compute_actions([observation])[0]

    def compute_actions(self, observations: Sequence[Any], streams: Sequence[str | None] | None = None) -> list[int]:
        """Actions for ``observations``; ``streams`` name whose episode each continues (None: a
        new one; see ``crowdplay.ai.streams``)."""
        with self._torch.inference_mode():
            if self.streams is None:  # the module directly: the batch prepared in one go
                batch = self._prepare(np.stack([np.asarray(observation) for observation in observations]))
                output = self.module.forward_inference({"obs": self._torch.from_numpy(batch).to(self.device)})
                return [int(action) for action in self._actions(self.module, output)]
            prepared = [self._prepare(observation) for observation in observations]
            return self._through_pipelines(prepared, list(streams) if streams is not None else [None] * len(prepared))

    def _prepare(self, observation: Any) -> Any:
        observation = np.asarray(observation)
        if self.normalize_images and observation.dtype == np.uint8:
            return normalize(observation)
        return observation.astype(np.float32) if observation.dtype == np.float64 else observation

    def _through_pipelines(self, observations: list[Any], streams: list[str | None]) -> list[int]:
        from ray.rllib.core.columns import Columns

        assert self.streams is not None
        episodes = self.streams.episodes(streams, observations)
        shared: dict[str, Any] = {}  # the two pipelines share it (the batch's structure, to undo it after)
        batch = self.env_to_module(rl_module=self.runner_module, batch={}, episodes=episodes, explore=self.explore, shared_data=shared)
        for key, value in batch.items():
            if isinstance(value, dict) and Columns.OBS in value:  # a multi-agent batch, by module id
                batch[key] = {**value, Columns.OBS: value[Columns.OBS].to(self.device)}
            elif key == Columns.OBS:
                batch[key] = value.to(self.device)
        output = self.runner_module.forward_inference(batch)
        if self.runner_module is not self.module:
            output = {module_id: self._with_actions(self.module, module_output) for module_id, module_output in output.items()}
        else:
            output = self._with_actions(self.module, output)
        to_env = self.module_to_env(rl_module=self.runner_module, batch=output, episodes=episodes, explore=self.explore, shared_data=shared)
        actions = to_env.get(Columns.ACTIONS_FOR_ENV, to_env[Columns.ACTIONS])
        if self.streams.agent is not None:  # one {agent: action} per episode
            actions = [per_agent[self.streams.agent] for per_agent in actions]
        answered = [int(action) for action in actions]
        self.streams.answered(streams, answered)
        return answered

    def _with_actions(self, module: Any, output: dict[str, Any]) -> dict[str, Any]:
        from ray.rllib.core.columns import Columns

        if Columns.ACTIONS not in output:
            output[Columns.ACTIONS] = self._torch.as_tensor(self._actions(module, output))
        return output

    def _actions(self, module: Any, output: dict[str, Any]) -> np.ndarray:
        """The module's answer: its actions, or its distribution's most likely (or sampled) action."""
        from ray.rllib.core.columns import Columns

        if Columns.ACTIONS in output:
            return np.asarray(output[Columns.ACTIONS].cpu() if hasattr(output[Columns.ACTIONS], "cpu") else output[Columns.ACTIONS])
        if Columns.ACTION_DIST_INPUTS not in output:
            raise ValueError(f"the module's forward_inference gave neither actions nor action distribution inputs (it gave {sorted(output)})")
        cls = module.get_exploration_action_dist_cls() if self.explore else module.get_inference_action_dist_cls()
        distribution = cls.from_logits(output[Columns.ACTION_DIST_INPUTS])
        if not self.explore:
            distribution = distribution.to_deterministic()
        actions: np.ndarray = distribution.sample().cpu().numpy()  # RLlib's distributions are untyped: a torch tensor's numpy()
        return actions


def register_rllib_checkpoint(
    policy_id: str,
    path: str | os.PathLike[str],
    module_id: str | None = None,
    framebuffer: type[Framebuffer] | None = AtariFB,
    explore: bool = False,
    **actor_options: Any,
) -> type[RLlibPolicy]:
    """Register the RLModule at ``path`` (and ``module_id``) as ``policy_id``, with ``framebuffer``
    (default: AtariFB) preparing its observations; ``actor_options`` set the policy's class
    attributes (``replicas``, ``num_cpus``, ``num_gpus``, batching, ``connectors``, and
    ``observation``: "env" for a non-Atari environment's own observations). Returns the new
    policy class."""
    unknown = set(actor_options) - {"replicas", "num_cpus", "num_gpus", "max_batch", "batch_wait_s", "batched", "connectors", "observation"}
    if unknown:
        raise TypeError(f"register_rllib_checkpoint: unknown options {sorted(unknown)}")
    attributes = {"checkpoint": os.fspath(path), "module_id": module_id, "explore": explore, **actor_options}
    name = "".join(part.capitalize() for part in policy_id.replace("_", "-").split("-") if part) or "Checkpoint"
    cls = register_policy(policy_id)(type(f"{name}Policy", (RLlibPolicy,), {**attributes, "__module__": __name__}))
    if framebuffer is not None:
        register_ai_framebuffer(policy_id)(framebuffer)
    return cls
