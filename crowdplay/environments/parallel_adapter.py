"""ParallelEnvAdapter: a PettingZoo parallel environment presented the way the real-time loop needs.

Same shape as ``EnvAdapter`` (per-agent actions in, per-agent rewards out, one screen for
everyone), so LiveEnv, the recorder and replay do not care how many agents there are. Two-player
Atari comes from PettingZoo's ALE environments on ``multi-agent-ale-py``, loading the ROMs that
ale-py ships (never downloaded): its screen is read as palette indices, its state snapshots are
the emulator's encoded state.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np

from crowdplay.environments.adapter import EnvAdapter, StepResult, env_action_meanings
from crowdplay.environments.ntsc_palette import NTSC_PALETTE
from crowdplay.environments.spec import EnvSpec

#: ale-py's bundled ROMs, which PettingZoo's Atari environments load from here.
ALE_ROMS = os.path.join(os.path.dirname(ale_py.__file__), "roms")


def make_pettingzoo_atari(module: str, **options: Any) -> Any:
    """A two-player Atari parallel env (``module`` like ``space_invaders_v2``), RAM observations,
    no frame skipping (PettingZoo's Atari envs step one emulator frame per step); ``options`` go to
    PettingZoo (``max_cycles=N`` ends each episode after N frames)."""
    game = importlib.import_module(f"pettingzoo.atari.{module}")
    return game.parallel_env(**{"obs_type": "ram", "auto_rom_install_path": ALE_ROMS, "max_cycles": 10**9, **options})


class ParallelEnvAdapter(EnvAdapter):
    """Every agent of a PettingZoo parallel environment; an agent that is done keeps the no-op
    and its last observation.

    Shares ``check_action``, ``ram`` and ``close`` with ``EnvAdapter``; builds, steps, reads the
    screen and snapshots its own way."""

    def __init__(self, spec: EnvSpec, env: Any = None) -> None:
        self.spec = spec
        self.env = env if env is not None else spec.make_env()
        self.agents: tuple[str, ...] = tuple(self.env.possible_agents)
        spaces = {agent: self.env.action_space(agent) for agent in self.agents}
        if not all(isinstance(space, gym.spaces.Discrete) for space in spaces.values()):
            raise TypeError(f"environment {spec.id!r}: only Discrete action spaces can be played from a keyboard")
        counts = {int(space.n) for space in spaces.values()}
        if len(counts) != 1:
            raise TypeError(f"environment {spec.id!r}: every agent needs the same action space")
        self.action_count = counts.pop()
        unwrapped = getattr(self.env, "unwrapped", self.env)  # a parallel env that is not a PettingZoo subclass has none
        self._ale = getattr(unwrapped, "ale", None)
        meanings = self._meanings(unwrapped)
        self.action_meanings: list[str] = meanings
        self._configure_agents()
        self.palette: np.ndarray | None = NTSC_PALETTE if self._ale is not None else None
        self._configure_observations({agent: self.env.observation_space(agent) for agent in self.agents})

    def _meanings(self, unwrapped: Any) -> list[str]:
        """Every agent's action names: ALE's names for its minimal action set, else the env's own."""
        if self._ale is not None:
            from ale_py import Action

            return [Action(int(action)).name for action in self._ale.getMinimalActionSet()][: self.action_count]
        return env_action_meanings(self.env, self.action_count) or [str(action) for action in range(self.action_count)]

    def _meanings_for(self, agent: str) -> list[str]:
        """An agent's own names (``get_action_meanings(agent)``) where the environment has them."""
        if self._ale is None:
            return env_action_meanings(self.env, self.action_count, agent) or self.action_meanings
        return self.action_meanings

    def reset(self, seed: int, options: dict[str, Any] | None = None) -> None:
        """Start an episode (ALE is not re-seeded between episodes; see ``EnvAdapter.reset``)."""
        if self._ale is not None and getattr(self, "_seeded", False):
            self.env.reset()
            return
        observations, infos = self.env.reset(seed=seed, options=options)
        self._seeded = True
        if self._ale is None:
            self.observations = {agent: observations[agent] for agent in self.agents}
            self.infos = {agent: (infos or {}).get(agent, {}) for agent in self.agents}

    def step(self, actions: dict[str, int]) -> StepResult:
        """Step every agent still in the game; the episode terminates when all agents are terminated."""
        live = {agent: int(actions[agent]) for agent in self.env.agents}
        observations, rewards, terminations, truncations, infos = self.env.step(live)
        if self._ale is None:  # an agent that is done keeps its last observation, and has no info
            self.observations = {**self.observations, **{agent: observations[agent] for agent in self.agents if agent in observations}}
            self.infos = {agent: infos.get(agent, {}) for agent in self.agents}
        truncated = any(truncations.get(agent, False) for agent in self.agents)
        # PettingZoo removes the agents of a truncated episode too: only terminations make an ending
        terminated = all(terminations.get(agent, not truncated) for agent in self.agents) or (not self.env.agents and not truncated)
        return StepResult({agent: float(rewards.get(agent, 0.0)) for agent in self.agents}, bool(terminated), bool(truncated))

    def screen(self) -> np.ndarray:
        """The shared screen: 210x160 palette indices for ALE, else the rendered RGB frame."""
        if self._ale is not None:
            flat: np.ndarray = self._ale.getScreen()  # multi-agent-ale-py returns it flat
            return flat.reshape(210, 160)
        return super().screen()

    def snapshot(self) -> bytes | None:
        """The emulator's state for exact replay (ALE), else None."""
        return self._ale.encodeState(self._ale.cloneState()).tobytes() if self._ale is not None else None

    def restore(self, state: bytes) -> None:
        """Put the emulator back into a state ``snapshot`` returned (ALE only)."""
        emulator = self._emulator()
        emulator.restoreState(emulator.decodeState(np.frombuffer(state, dtype=np.uint8).copy()))


def make_adapter(spec: EnvSpec) -> EnvAdapter:
    """The adapter for whatever ``spec`` builds: an environment with a list of agents (PettingZoo's
    ``possible_agents``) is multi-agent with no further configuration."""
    env = spec.make_env()
    if is_aec(env):
        raise TypeError(
            f"environment {spec.id!r} is a PettingZoo AEC environment (agents act in turn, env.last()); CrowdPlay plays "
            "parallel ones: let make_env return the module's parallel_env(...), or pettingzoo.utils.conversions.aec_to_parallel(env)"
        )
    if hasattr(env, "possible_agents"):
        return ParallelEnvAdapter(spec, env)
    return EnvAdapter(spec, env)


def is_aec(env: Any) -> bool:
    """Whether ``env`` is a PettingZoo AEC environment (whose ``reset`` returns nothing)."""
    try:
        pettingzoo = importlib.import_module("pettingzoo")
    except ImportError:  # without PettingZoo nobody can make one
        return False
    return isinstance(env, pettingzoo.AECEnv)
