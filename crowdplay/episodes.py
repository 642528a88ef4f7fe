"""A game's episodes, one after another: each reset with its own seed, stepped with every agent's
action, and remembered (the newest few) with enough to replay it exactly."""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from crowdplay.environments import EnvAdapter, EnvSpec
from crowdplay.environments.adapter import StepResult

#: Episodes remembered per game (the EnvActor hands them out for replay checks and tests).
EPISODES_KEPT = 4


@dataclass
class EpisodeRecord:
    """The seed or start state and the actions applied: enough to replay an episode exactly.

    One action and one client frame per step and agent, in typed arrays (10 bytes a step, not the
    ~50 of a list of ints): the record grows for as long as its episode runs.
    """

    episode: int
    seed: int
    start_state: bytes | None
    actions: dict[str, array[int]]
    client_frames: dict[str, array[int]]

    @classmethod
    def begin(cls, episode: int, seed: int, start_state: bytes | None, agents: Iterable[str]) -> EpisodeRecord:
        """A new record for ``agents``, with no action applied yet."""
        agents = list(agents)
        return cls(episode, seed, start_state, {a: array("H") for a in agents}, {a: array("q") for a in agents})

    def as_dict(self) -> dict[str, Any]:
        """Plain lists, for callers outside the process."""
        return {
            "episode": self.episode,
            "seed": self.seed,
            "start_state": self.start_state,
            "actions": {agent: values.tolist() for agent, values in self.actions.items()},
            "client_frames": {agent: values.tolist() for agent, values in self.client_frames.items()},
        }


class Episodes:
    """The environment's current episode (its number, steps and returns) and the newest records."""

    def __init__(self, spec: EnvSpec, adapter: EnvAdapter, base_seed: int) -> None:
        """Episode ``n`` is reset with seed ``base_seed + n`` and ``spec.reset_options``."""
        self._spec = spec
        self._adapter = adapter
        self._base_seed = base_seed
        self.number = 0
        self.steps = 0
        self.returns = {agent: 0.0 for agent in adapter.agents}
        self.records: deque[EpisodeRecord] = deque(maxlen=EPISODES_KEPT)

    def __iter__(self) -> Iterator[EpisodeRecord]:
        """The remembered episodes' records, oldest first."""
        return iter(self.records)

    def __getitem__(self, index: int) -> EpisodeRecord:
        """One remembered episode's record (``[-1]``: the one under way)."""
        return self.records[index]

    def reset(self) -> EpisodeRecord:
        """Reset the environment for episode ``number``; returns its record (seed, start state)."""
        seed = self._base_seed + self.number
        self._adapter.reset(seed, self.reset_options())
        self.steps = 0
        self.returns = {agent: 0.0 for agent in self._adapter.agents}
        record = EpisodeRecord.begin(self.number, seed, self._adapter.snapshot(), self._adapter.agents)
        self.records.append(record)
        return record

    def reset_options(self) -> dict[str, Any] | None:
        """The options every reset is given (a copy: the environment may change what it gets)."""
        return dict(self._spec.reset_options) if self._spec.reset_options is not None else None

    def step(self, actions: Mapping[str, int], client_frames: Mapping[str, int]) -> StepResult:
        """Step the environment with every agent's action, remembered with the frame it was chosen on."""
        record = self.records[-1]
        for agent in self._adapter.agents:
            record.actions[agent].append(actions[agent])
            record.client_frames[agent].append(client_frames[agent])
        result = self._adapter.step(dict(actions))
        for agent, reward in result.rewards.items():
            self.returns[agent] += reward
        self.steps += 1
        return result

    def advance(self) -> None:
        """The episode is over; the next reset begins the next one."""
        self.number += 1
