"""EnvAdapter: one environment instance seen the way the real-time loop needs it.

The loop steps all agents at once with a dict of actions and sends screens, so this adapter gives
every environment that shape. ALE environments expose their screen as palette indices (one byte per
pixel, lossless with the NTSC table); any other Gymnasium environment must render ``rgb_array``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from crowdplay.environments.keymap import Keymap
from crowdplay.environments.ntsc_palette import NTSC_PALETTE
from crowdplay.environments.spaces import Description, UnrecordableSpace, describe
from crowdplay.environments.spec import EnvSpec

SINGLE_AGENT = "agent_0"


def env_action_meanings(env: Any, action_count: int, agent: str | None = None) -> list[str] | None:
    """The environment's own names for its actions, when it has them: ``get_action_meanings()``
    on the env or its unwrapped env (ALE has it; Gymnasium wrappers do not pass it on), asked for
    ``agent`` first in a multi-agent env. None when there are none, or not one per action."""
    for holder in (env, getattr(env, "unwrapped", None)):
        method = getattr(holder, "get_action_meanings", None)
        if not callable(method):
            continue
        meanings = None
        if agent is not None:
            try:
                meanings = method(agent)
            except TypeError:  # the same names for every agent
                meanings = None
        meanings = meanings if meanings is not None else method()
        if meanings is not None and len(meanings) == action_count:
            return [str(meaning) for meaning in meanings]
    return None


class EnvironmentFailed(RuntimeError):
    """A registered environment could not be built (its ``make_env`` raised, or its options do
    not fit the environment it built): a configuration problem, not a passing one."""

    def __init__(self, env_id: str, problem: str) -> None:
        super().__init__(f"environment {env_id!r} could not be built: {problem}")
        self.env_id = env_id
        self.problem = problem  # not ``cause``: RayTaskError, which wraps it across processes, has one

    def __reduce__(self) -> tuple[type[EnvironmentFailed], tuple[str, str]]:
        """Rebuilt from its two fields when Ray carries it to another process (the default would
        call ``__init__`` with the formatted message alone)."""
        return (type(self), (self.env_id, self.problem))


class InvalidAction(ValueError):
    """An action outside the agent's action space."""


@dataclass(frozen=True)
class StepResult:
    """What one step of every agent produced: each agent's reward, and whether the episode ended
    (``terminated``) or was cut off (``truncated``)."""

    rewards: dict[str, float]
    terminated: bool
    truncated: bool


class EnvAdapter:
    """A single-agent Gymnasium environment presented with per-agent actions and rewards."""

    def __init__(self, spec: EnvSpec, env: gym.Env[Any, Any] | None = None) -> None:
        self.spec = spec
        # Any: a Gymnasium env here, a PettingZoo parallel env in ParallelEnvAdapter; the two share no type
        self.env: Any = env if env is not None else spec.make_env()
        self.agents: tuple[str, ...] = (SINGLE_AGENT,)
        if not isinstance(self.env.action_space, gym.spaces.Discrete):
            raise TypeError(f"environment {spec.id!r}: only Discrete action spaces can be played from a keyboard")
        self.action_count = int(self.env.action_space.n)
        unwrapped = self.env.unwrapped
        self._ale = getattr(unwrapped, "ale", None)
        meanings = env_action_meanings(self.env, self.action_count)
        self.action_meanings: list[str] = meanings or [str(a) for a in range(self.action_count)]
        self._configure_agents()
        self.palette: np.ndarray | None = NTSC_PALETTE if self._ale is not None else None
        self._configure_observations({SINGLE_AGENT: self.env.observation_space})

    def _configure_observations(self, spaces: dict[str, gym.Space[Any]]) -> None:
        """Describe each agent's observation space for the recording, or None for ALE, whose
        observation is the screen (recorded already, losslessly, as the frames). A space that
        cannot be recorded fails here, when the game is built, naming the environment and agent."""
        self.observation_spaces: dict[str, Description] | None = None
        if self._ale is not None:
            return
        described = {}
        for agent, space in spaces.items():
            try:
                described[agent] = describe(space)
            except UnrecordableSpace as error:
                raise UnrecordableSpace(f"environment {self.spec.id!r}, agent {agent!r}: observation space {space}: {error}") from None
        self.observation_spaces = described
        #: each agent's latest observation (from ``reset`` or ``step``) and info
        self.observations: dict[str, Any] = {}
        self.infos: dict[str, Any] = {}

    def origin(self) -> dict[str, Any]:
        """Where the environment comes from, recorded with each episode so that data tools can
        rebuild it without the plugin: its Gymnasium registration (``env.spec.to_json()``, with the
        ``gym.make`` arguments) when it has one whose arguments are JSON-able, else None; the module
        and class of the unwrapped environment; and its ``metadata["name"]`` (PettingZoo's
        environments name their module there, e.g. ``knights_archers_zombies_v11``)."""
        unwrapped = getattr(self.env, "unwrapped", self.env)
        gym_spec = getattr(self.env, "spec", None)
        registration = None
        if isinstance(gym_spec, gym.envs.registration.EnvSpec):
            try:
                registration = gym_spec.to_json()
            except (TypeError, ValueError):  # a callable or object among its arguments
                registration = None
        metadata = getattr(self.env, "metadata", None) or {}
        return {
            "gymnasium_spec": registration,
            "module": type(unwrapped).__module__,
            "class": type(unwrapped).__qualname__,
            "name": metadata.get("name") if isinstance(metadata.get("name"), str) else None,
        }

    def _configure_agents(self) -> None:
        """Check the spec's per-agent options against the real agents and action space, and build
        each agent's labels, keymap, idle choice (``EnvSpec.agent_controls``) and gamepad controls."""
        self.spec.check_agents(self.agents)
        self.keymaps: dict[str, Keymap] = {}
        #: per agent, a label for each action (the spec's, else the environment's meanings)
        self.action_labels: dict[str, list[str]] = {}
        #: per agent, what no held mapped key plays: "noop", "repeat" or "wait" (``EnvSpec.idle``)
        self.idle: dict[str, str] = {}
        #: per agent, which gamepad control holds which key (``EnvSpec.agent_gamepad``), for the page
        self.gamepads: dict[str, dict[str, str]] = {}
        for agent in self.agents:
            labels = self.spec.agent_labels(agent, self._meanings_for(agent), self.action_count)
            self.keymaps[agent], self.idle[agent] = self.spec.agent_controls(agent, labels)
            self.gamepads[agent] = self.spec.agent_gamepad(agent, self.keymaps[agent])
            self.action_labels[agent] = labels

    def _meanings_for(self, agent: str) -> list[str]:
        """The environment's names for ``agent``'s actions (one list for a single agent)."""
        return self.action_meanings

    def action_space(self, agent: str) -> gym.spaces.Discrete[np.int64]:
        """The agent's actions as a Discrete space (every agent of an adapter has ``action_count``)."""
        return gym.spaces.Discrete(self.action_count)

    def reset(self, seed: int, options: dict[str, Any] | None = None) -> None:
        """Start an episode.

        ALE is never re-seeded: seeding reloads the ROM (~90 ms holding the GIL, which would stall
        every session of the process), and with sticky actions off the emulation does not depend on
        the seed. Episodes continue from the emulator's state; ``snapshot`` taken at the start is
        what replays one exactly. Other environments are reset with the seed.
        """
        if self._ale is not None:
            self.env.reset()
            return
        observation, info = self.env.reset(seed=seed, options=options)
        self.observations, self.infos = {SINGLE_AGENT: observation}, {SINGLE_AGENT: info}

    def ram(self) -> bytes | None:
        """The console's RAM (128 bytes) for ALE, recorded with every step; None otherwise."""
        return self._ale.getRAM().tobytes() if self._ale is not None else None

    def snapshot(self) -> bytes | None:
        """The emulator's full state (RNG included) for exact replay, or None for non-ALE envs."""
        return pickle.dumps(self._ale.cloneState(include_rng=True)) if self._ale is not None else None

    def restore(self, state: bytes) -> None:
        """Put the emulator back into a state ``snapshot`` returned (ALE only)."""
        self._emulator().restoreState(pickle.loads(state))

    def _emulator(self) -> Any:
        """The ALE emulator, for what only an emulator can do; a clear error for any other environment."""
        if self._ale is None:
            raise TypeError(f"environment {self.spec.id!r} has no emulator state to restore (only ALE environments do)")
        return self._ale

    def check_action(self, agent: str, action: int) -> int:
        """``action`` if ``agent`` may play it; InvalidAction for an unknown agent or an action outside the space."""
        if agent not in self.agents:
            raise InvalidAction(f"unknown agent {agent!r}")
        if not isinstance(action, int) or isinstance(action, bool) or not 0 <= action < self.action_count:
            raise InvalidAction(f"action {action!r} is outside the action space 0..{self.action_count - 1}")
        return action

    def step(self, actions: dict[str, int]) -> StepResult:
        """Step the environment with the single agent's action."""
        observation, reward, terminated, truncated, info = self.env.step(actions[SINGLE_AGENT])
        if self._ale is None:
            self.observations, self.infos = {SINGLE_AGENT: observation}, {SINGLE_AGENT: info}
        return StepResult({SINGLE_AGENT: float(reward)}, bool(terminated), bool(truncated))

    def screen(self) -> np.ndarray:
        """The current screen: HxW palette indices for ALE, HxWx3 RGB otherwise (a fresh array)."""
        if self._ale is not None:
            indices: np.ndarray = self._ale.getScreen()
            return indices
        frame: Any = self.env.render()
        shape = getattr(frame, "shape", None)
        if shape is None or len(shape) != 3 or shape[2] != 3:
            got = "None" if frame is None else f"{type(frame).__name__}" + (f" of shape {tuple(shape)}" if shape is not None else "")
            raise TypeError(f"environment {self.spec.id!r} must be made with render_mode='rgb_array': its render() returned {got}, not an HxWx3 image")
        return np.array(frame, dtype=np.uint8, copy=True)

    def close(self) -> None:
        """Close the underlying environment."""
        self.env.close()
