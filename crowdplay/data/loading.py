"""From an episode's stored chunks to the arrays of an ``Episode``.

``Dataset`` finds episodes; this module knows the chunk format's columns and which step each
belongs to. Loading reads every chunk once (``StoredSteps.read``), then cuts each agent's
trajectory from the joined columns (``trajectories``), so the steps of a load read top to bottom:
pick the observation format, read the chunks, mark the end, build the trajectories.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crowdplay import codec
from crowdplay.controllers import Controller, Human, PolicyControl, from_document
from crowdplay.data.episode import AgentTrajectory
from crowdplay.data.observations import FORMATS, convert
from crowdplay.environments.spaces import Description, assemble, leaves
from crowdplay.recording.observations import column_name

#: The per-step columns shared by every agent that go into each trajectory's ``infos``.
SHARED_INFOS = ("frame_id", "tick_time", "ram")


def observation_format(requested: str | None, spaces: dict[str, Description] | None) -> str | None:
    """The observation format a load delivers, refusing an unknown one before any chunk is read.

    ``env`` falls back to ``rgb`` for a recording without observations of its own: Atari, whose
    observation is the screen, or one made before observations were kept."""
    if requested == "env" and not spaces:
        return "rgb"
    if requested is not None and requested != "env" and requested not in FORMATS:
        raise ValueError(f"unknown observation format {requested!r}; choose one of env, {', '.join(FORMATS)}")
    return requested


def chunk_screens(chunk: dict[str, Any], shape: list[int], first: bool) -> list[np.ndarray]:
    """The chunk's screens: its keyframe (the screen before its first step) only for the first
    chunk, since every later chunk's keyframe repeats the previous chunk's last screen."""
    decoder = codec.FrameDecoder(tuple(shape))
    screens = [decoder.decode(message)[1].copy() for message in chunk["frames"]]
    return screens if first else screens[1:]


@dataclass
class StoredSteps:
    """Everything ``Dataset.load`` needs from an episode's chunks, gathered in one pass so a
    chunk is decoded once however many agents the episode has."""

    #: Numeric columns per name, one array per chunk until ``read`` joins them.
    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    #: The joined columns, one array per name over every stored step.
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    steps: int = 0
    #: Decoded screens (only when a screen format was asked for): T + 1 of them.
    screens: list[np.ndarray] = field(default_factory=list)
    #: Each step's controllers, ``{agent: controller}``.
    controllers: list[dict[str, Any]] = field(default_factory=list)
    #: Emulator states by the step they precede.
    snapshots: dict[int, bytes] = field(default_factory=dict)
    #: ``[step, agent, info]`` for the steps whose environment info was kept.
    step_infos: list[list[Any]] = field(default_factory=list)
    #: ``[step, agent, substitute reason or None]`` for each new answer of an AI agent.
    ai_rows: list[list[Any]] = field(default_factory=list)

    @classmethod
    def read(cls, chunks: Iterable[dict[str, Any]], screen_shape: list[int] | None) -> StoredSteps:
        """Gather ``chunks`` in order; ``screen_shape`` None skips decoding the screens."""
        stored = cls()
        for chunk in chunks:
            stored.add(chunk, screen_shape)
        stored.columns = {name: np.concatenate(parts) for name, parts in stored.parts.items()}
        stored.steps = sum(len(part) for part in stored.parts.get("frame_id", []))
        return stored

    def add(self, chunk: dict[str, Any], screen_shape: list[int] | None) -> None:
        """Take one chunk's contents, its step numbers made absolute."""
        first_step = chunk["first_step"]
        if chunk["start_state"] is not None:
            self.snapshots[first_step] = chunk["start_state"]
        if screen_shape is not None:
            self.screens.extend(chunk_screens(chunk, screen_shape, first=not self.screens))
        for name, value in chunk.items():
            if isinstance(value, np.ndarray):
                self.parts.setdefault(name, []).append(value)
        self.controllers += [chunk["controllers"]] * chunk["steps"]
        self.step_infos += [[first_step + step, agent, info] for step, agent, info in chunk.get("infos", ())]
        self.ai_rows += [[first_step + row[0], row[1], row[5] if len(row) > 5 else None] for row in chunk.get("ai_actions", ())]

    def endings(self) -> tuple[np.ndarray, np.ndarray]:
        """The terminated and truncated flags, the last step marked truncated when neither is set:
        an episode finished, interrupted or cut short still ends properly for RL code."""
        terminated = self.columns.get("terminated", np.zeros(0, bool)).copy()
        truncated = self.columns.get("truncated", np.zeros(0, bool)).copy()
        if self.steps and not (terminated[-1] or truncated[-1]):
            truncated[-1] = True
        return terminated, truncated

    def screen_array(self, palette: Any, observations: str) -> np.ndarray:
        """The decoded screens converted to the screen format ``observations``."""
        if not self.screens:
            return np.zeros((0,))
        return convert(np.stack(self.screens), palette, observations)

    def infos(self, agent: str) -> dict[str, np.ndarray]:
        """``agent``'s per-step extras (see ``AgentTrajectory.infos``)."""
        infos = {name: self.columns[name] for name in SHARED_INFOS if name in self.columns}
        infos["client_frame"] = self.columns.get(f"client_frame/{agent}", np.zeros(0, np.int64))
        infos["human"] = np.array([played_by_participant(from_document(controllers[agent])) for controllers in self.controllers], dtype=bool)
        own_rows = [row for row in self.ai_rows if row[1] == agent]
        infos["ai_substitute"] = ai_substitutes([controllers[agent] for controllers in self.controllers], own_rows)
        return infos

    def env_infos(self, agent: str) -> list[dict[str, Any]]:
        """``agent``'s environment info per stored step, ``{}`` where none was kept."""
        env_infos: list[dict[str, Any]] = [{} for _ in range(self.steps)]
        for step, owner, info in self.step_infos:
            if owner == agent and step < self.steps:
                env_infos[step] = info
        return env_infos


def trajectories(meta: dict[str, Any], stored: StoredSteps, observations: str | None) -> dict[str, AgentTrajectory]:
    """Every agent's trajectory, in the order of ``meta["agents"]``; ``observations`` is a format
    ``observation_format`` returned."""
    spaces = meta.get("observation_spaces")
    terminated, truncated = stored.endings()
    screens = None
    if observations is not None and observations != "env":
        screens = stored.screen_array(meta.get("palette"), observations)
    found = {}
    for agent in meta["agents"]:
        own = env_observations(spaces[agent], stored.columns, agent) if observations == "env" and spaces else None
        found[agent] = AgentTrajectory(
            observations=own if own is not None else screens,
            actions=stored.columns.get(f"action/{agent}", np.zeros(0, np.int64)),
            rewards=stored.columns.get(f"reward/{agent}", np.zeros(0, np.float64)),
            terminations=terminated,
            truncations=truncated,
            action_count=int(meta.get("action_counts", {}).get(agent, 0)),
            infos=stored.infos(agent),
            env_infos=stored.env_infos(agent),
        )
    return found


def env_observations(space: Description, joined: dict[str, np.ndarray], agent: str) -> Any:
    """An agent's recorded observations in its space's structure, ``T + 1`` of them: the one
    ``reset`` returned (``obs0``), then one after each step."""
    columns = {}
    for leaf in leaves(space):
        first = joined.get(column_name("obs0", agent, leaf.path), np.zeros((0, *leaf.shape), leaf.dtype))
        after = joined.get(column_name("obs", agent, leaf.path), np.zeros((0, *leaf.shape), leaf.dtype))
        columns[leaf.path] = np.concatenate([first, after])
    return assemble(space, columns)


def ai_substitutes(controllers: list[dict[str, Any]], rows: list[list[Any]]) -> np.ndarray:
    """Per step, whether the agent's action was a substitute played in place of its policy's answer.

    ``controllers`` is the agent's controller at each step (as stored) and ``rows`` its ``[step, agent,
    substitute]`` AI answers in order: an answer holds from its step until the next one. A step
    played by its policy before any answer is a substitute too (there was no answer yet); steps
    a person played are not, and neither are those of recordings made before substitutes were
    recorded (their rows carry no reason)."""
    flags = np.zeros(len(controllers), dtype=bool)
    current: str | None = "no answer yet"
    answer = 0
    for step, controller in enumerate(controllers):
        while answer < len(rows) and rows[answer][0] <= step:
            current = rows[answer][2]
            answer += 1
        played = from_document(controller)
        flags[step] = isinstance(played, PolicyControl) and bool(played.policy) and current is not None
    return flags


def played_by_participant(controller: Controller) -> bool:
    """Whether a connected participant chose the step's action (not a policy, and not the no-op
    of a seat whose participant's connection had dropped)."""
    return isinstance(controller, Human) and not controller.away
