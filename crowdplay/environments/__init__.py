"""Environment specs, the registry, keymaps and the built-in Atari games."""

from crowdplay.environments import atari, atari_multiplayer  # noqa: F401  (register the built-in games)
from crowdplay.environments.adapter import EnvAdapter, EnvironmentFailed, InvalidAction, StepResult
from crowdplay.environments.gamepad import GamepadMap
from crowdplay.environments.keymap import Keymap, arrow_keymap, atari_keymap, named_keymap, number_keymap, wasd_keymap
from crowdplay.environments.parallel_adapter import ParallelEnvAdapter, make_adapter
from crowdplay.environments.registry import UnknownEnvironment, get_env, list_envs, register_env
from crowdplay.environments.spec import EnvSpec

__all__ = [
    "EnvAdapter",
    "ParallelEnvAdapter",
    "make_adapter",
    "EnvSpec",
    "EnvironmentFailed",
    "InvalidAction",
    "GamepadMap",
    "Keymap",
    "StepResult",
    "UnknownEnvironment",
    "arrow_keymap",
    "atari_keymap",
    "named_keymap",
    "number_keymap",
    "wasd_keymap",
    "get_env",
    "list_envs",
    "register_env",
]
