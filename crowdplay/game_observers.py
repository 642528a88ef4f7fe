"""What a running game tells those who keep track of it, tick by tick.

A ``LiveEnv`` steps the environment; everything that keeps a record of the play observes it
through one small protocol, ``GameObserver``, as Gymnasium layers wrappers around an env: the
recording (``crowdplay.game_recording``), each participant's statistics (``GameStatistics``) and the
input log (``InputLog``). The game calls them in that order, with plain values, and none of them
can change what the game does.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from crowdplay import codec
from crowdplay.engagement import Attention
from crowdplay.inputs import AppliedInput
from crowdplay.recording.episode_document import closing_fields
from crowdplay.recording.step import Observed, Stepped
from crowdplay.statistics import StatisticsTracker
from crowdplay.timing import observe_input_latency

#: Applied inputs kept per game for the dashboard's delay histogram and for tests: the newest
#: 500, two to three minutes of presses (10,000 entries grew an EnvActor hosting 15 games by
#: ~3 MB a minute for the best part of an hour in the soak).
INPUT_LOG_LENGTH = 500

@dataclass(frozen=True)
class EpisodeBegun:
    """An episode was reset and shows its first screen."""

    episode: int
    seed: int
    #: the emulator state right after the reset (None when the env cannot snapshot)
    start_state: bytes | None
    reset_options: dict[str, Any] | None
    screen: codec.Screen
    observed: Observed
    #: the keys each participant already holds as it begins (held over from the episode before)
    keys_held: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class EpisodeEnded:
    """The episode ended: ``status`` "complete" (the environment ended it), "finished" (a
    participant's Finish) or "interrupted" (``crowdplay.recording.status``)."""

    status: str
    steps: int
    returns: Mapping[str, float]
    terminated: bool
    truncated: bool
    #: each seated participant's statistics for the episode
    statistics: Mapping[str, Mapping[str, float]]
    #: why the game stopped (None: the environment ended the episode)
    reason: str | None = None

    def fields(self) -> dict[str, Any]:
        """The episode document's closing fields (``Recorder.end_episode``)."""
        return closing_fields(self.steps, self.returns, self.terminated, self.truncated, self.statistics, self.reason)


class GameObserver(Protocol):
    """Someone who keeps track of a game's play (see the module docstring)."""

    def episode_began(self, begun: EpisodeBegun) -> None:
        """A new episode shows its first screen."""

    def input_applied(self, applied: AppliedInput, received_at: float) -> None:
        """A participant's input takes effect at the coming step (``received_at``: wall-clock time)."""

    def stepped(self, step: Stepped) -> None:
        """The environment stepped."""

    def episode_ended(self, ended: EpisodeEnded) -> None:
        """The episode is over."""


class InputLog:
    """The newest applied inputs, with the delay each waited for its tick (the dashboard's delay
    histogram, the EnvActor's input log, and the input-latency metric), and the wall-clock times
    of its path through the game: arrived, applied, and its frame sent (``frames_sent``)."""

    def __init__(self) -> None:
        """An empty log of at most ``INPUT_LOG_LENGTH`` inputs."""
        self.entries: deque[AppliedInput] = deque(maxlen=INPUT_LOG_LENGTH)
        #: per entry (same positions): [arrived, applied, frame sent], wall clock
        self.stamps: deque[list[float]] = deque(maxlen=INPUT_LOG_LENGTH)
        self._unsent: list[list[float]] = []

    def __iter__(self) -> Iterator[AppliedInput]:
        """The kept inputs, oldest first."""
        return iter(self.entries)

    def __len__(self) -> int:
        """How many inputs are kept."""
        return len(self.entries)

    def episode_began(self, begun: EpisodeBegun) -> None:
        """(``GameObserver``) nothing to keep."""

    def input_applied(self, applied: AppliedInput, received_at: float) -> None:
        """(``GameObserver``) keep it, and time it."""
        self.entries.append(applied)
        stamps = [received_at, received_at + applied.apply_delay_s, 0.0]
        self.stamps.append(stamps)
        self._unsent.append(stamps)
        observe_input_latency(applied.apply_delay_s * 1000)

    def frames_sent(self) -> None:
        """A tick has handed its frames to the subscribers' channels: the first frames that show
        the inputs applied since the last one."""
        if self._unsent:
            wall = time.time()
            for stamps in self._unsent:
                stamps[2] = wall
            self._unsent.clear()

    def as_dicts(self) -> list[dict[str, Any]]:
        """The kept inputs (``AppliedInput.as_dict``) with the wall-clock times of their path:
        ``ingress_at``, ``arrived_at`` (in this process), ``applied_at``, ``frame_sent_at``."""
        return [
            {**entry.as_dict(), "ingress_at": entry.input.ingress_at, "arrived_at": stamps[0], "applied_at": stamps[1], "frame_sent_at": stamps[2]}
            for entry, stamps in zip(self.entries, self.stamps)
        ]

    def stepped(self, step: Stepped) -> None:
        """(``GameObserver``) nothing to keep."""

    def episode_ended(self, ended: EpisodeEnded) -> None:
        """(``GameObserver``) nothing to keep."""


@dataclass
class GameStatistics:
    """Each seated participant's play statistics (``crowdplay.statistics``), by agent."""

    trackers: dict[str, StatisticsTracker] = field(default_factory=dict)
    #: each seated participant's page: hidden or unfocused, for how long, the pauses it caused
    attentions: dict[str, Attention] = field(default_factory=dict)
    #: the episode values of participants who left during the episode under way (Finish, or gone
    #: for good): the episode's record keeps their part of it
    left_this_episode: dict[str, dict[str, float]] = field(default_factory=dict)

    def track(self, agent: str, tracker: StatisticsTracker) -> None:
        """A participant sits at ``agent``: ``tracker`` keeps their statistics from now on."""
        self.trackers[agent] = tracker
        self.attentions[agent] = Attention()

    def attention(self, agent: str) -> Attention:
        """The page of the participant at ``agent`` (one is started for an agent not tracked)."""
        return self.attentions.setdefault(agent, Attention())

    def summary(self, agent: str, forget: bool = False) -> dict[str, Any]:
        """The participant at ``agent``'s statistics so far, their engagement among the values
        (empty if nobody is tracked there); ``forget``: they left, and are tracked no longer."""
        tracker = self.trackers.pop(agent, None) if forget else self.trackers.get(agent)
        attention = self.attentions.pop(agent, None) if forget else self.attentions.get(agent)
        if tracker is None:
            return {}
        if forget:
            self.left_this_episode[agent] = tracker.episode_values()
        values = tracker.values()
        if "time_played" in values and "active_time" in values:
            values["idle_time"] = round(values["time_played"] - values["active_time"], 3)
        if attention is not None:
            values.update(attention.values())
        return {"values": values, "episode": tracker.episode_values(), "episodes": tracker.episodes}

    def episode_so_far(self) -> dict[str, dict[str, float]]:
        """Every agent's values for the episode under way, those of participants who left during
        it included."""
        return {**self.left_this_episode, **{agent: tracker.episode_values() for agent, tracker in self.trackers.items()}}

    def end_episode(self) -> dict[str, dict[str, float]]:
        """Every agent's values for the episode that just ended, those of participants who left
        during it included; the next one starts fresh."""
        ended = {**self.left_this_episode, **{agent: tracker.end_episode() for agent, tracker in self.trackers.items()}}
        self.left_this_episode = {}
        return ended

    def episode_began(self, begun: EpisodeBegun) -> None:
        """(``GameObserver``) episodes are counted at their end."""

    def input_applied(self, applied: AppliedInput, received_at: float) -> None:
        """(``GameObserver``) inputs count through the step that applies them."""

    def stepped(self, step: Stepped) -> None:
        """(``GameObserver``) every tracked statistic takes the step."""
        if not self.trackers:
            return
        ram = np.frombuffer(step.ram, np.uint8) if step.ram is not None else None
        for agent, tracker in self.trackers.items():
            tracker.step(step.actions[agent], step.rewards.get(agent, 0.0), ram, agent in step.human_inputs)

    def episode_ended(self, ended: EpisodeEnded) -> None:
        """(``GameObserver``) the game asked ``end_episode`` for the values the ending carries."""
