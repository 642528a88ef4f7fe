"""The recording of one game, as the game sees it: a ``GameObserver`` over the ``Recorder``.

The game hands over plain events (an episode began, an input applied, a step, an episode ended);
this layer turns them into the recorder's calls: the episode's describing fields, the frame's
delta (made once per tick and shared with the stream), the observations the environment returned.
"""

from __future__ import annotations

from typing import Any

from crowdplay import codec
from crowdplay.ai.agent import PolicyAgent
from crowdplay.controllers import Controller
from crowdplay.environments import EnvAdapter, EnvSpec
from crowdplay.environments.spaces import ObservationOutsideSpace, json_part
from crowdplay.fanout import Fanout
from crowdplay.game_observers import EpisodeBegun, EpisodeEnded
from crowdplay.inputs import AppliedInput
from crowdplay.recording.recorder import Recorder
from crowdplay.recording.step import Stepped


class NoRecording:
    """A game that stores nothing (the in-process baseline, benchmarks of the loop alone): the
    same calls as ``GameRecording``, each doing nothing, so the game never asks which it has."""

    keeps_ram = False

    def episode_began(self, begun: EpisodeBegun) -> None:
        """Nothing is stored."""

    def input_applied(self, applied: AppliedInput, received_at: float) -> None:
        """Nothing is stored."""

    def stepped(self, step: Stepped) -> None:
        """Nothing is stored."""

    def episode_ended(self, ended: EpisodeEnded) -> None:
        """Nothing is stored."""

    def ai_answered(self, agent: str, policy: PolicyAgent) -> None:
        """Nothing is stored."""

    def set_controller(self, agent: str, controller: Controller, screen: codec.Screen) -> None:
        """Nothing is stored."""

    def describe_agent(self, agent: str, details: dict[str, Any]) -> None:
        """Nothing is stored."""

    def note_watcher(self, who: str, watching: bool) -> None:
        """Nothing is stored."""

    def page_event(self, agent: str, event: str, page_frame: int, frame: int) -> None:
        """Nothing is stored."""

    def round_trip(self, agent: str, rtt_ms: float, page_frame: int, frame: int) -> None:
        """Nothing is stored."""

    def restamp_start(self) -> None:
        """Nothing is stored."""

    def close(self) -> None:
        """Nothing is stored."""


class GameRecording(NoRecording):
    """Everything of one game that goes to the store (``GameObserver``), and who played it."""

    #: the recorder stores the emulator's RAM with every step
    keeps_ram = True

    def __init__(self, recorder: Recorder, spec: EnvSpec, adapter: EnvAdapter, fanout: Fanout) -> None:
        """``fanout`` caches the frame's delta, which the stream sends too."""
        self.recorder = recorder
        self._spec = spec
        self._adapter = adapter
        self._fanout = fanout

    # ----------------------------------------------------------------- GameObserver
    def episode_began(self, begun: EpisodeBegun) -> None:
        """Open the episode with what describes it; an observation outside its space fails here,
        named after the environment, before anything of the episode is stored."""
        try:
            self.recorder.begin_episode(begun.episode, begun.screen, self._episode_fields(begun), begun.observed)
        except ObservationOutsideSpace as error:
            raise ObservationOutsideSpace(f"environment {self._spec.id!r}, {error}") from None

    def _episode_fields(self, begun: EpisodeBegun) -> dict[str, Any]:
        adapter, agents = self._adapter, list(self._adapter.agents)
        fields: dict[str, Any] = {
            "env_id": self._spec.base_env or self._spec.id,
            "seed": begun.seed,
            "start_state": begun.start_state,
            "agents": agents,
            "screen_shape": list(begun.screen.pixels.shape),
            "palette": "ntsc" if adapter.palette is not None else None,
            "action_counts": {agent: adapter.action_count for agent in agents},
            "action_meanings": adapter.action_meanings,
            "action_labels": dict(adapter.action_labels),
            "idle": dict(adapter.idle),
            "fps": self._spec.fps,
            "reset_options": begun.reset_options,
            "env_origin": adapter.origin(),
            "keys_at_start": {agent: list(keys) for agent, keys in begun.keys_held.items()},
        }
        observed = adapter.observation_spaces
        if observed is not None:
            fields["observation_spaces"] = observed
            fields["reset_infos"] = {agent: json_part(adapter.infos.get(agent)) or {} for agent in agents}
        return fields

    def input_applied(self, applied: AppliedInput, received_at: float) -> None:
        """The participant's keys, sequence number and frame, with when they arrived."""
        self.recorder.input(applied, received_at)

    def stepped(self, step: Stepped) -> None:
        """The step, with the frame's delta against the previous screen (shared with the stream)."""
        screen, previous = step.screen, step.previous
        delta = self._fanout.cached(("delta", step.frame_id), lambda: codec.delta_payload(screen, previous))
        self.recorder.step(step, delta)

    def episode_ended(self, ended: EpisodeEnded) -> None:
        """Seal the episode with its closing fields."""
        self.recorder.end_episode(ended.status, ended.fields())

    # ----------------------------------------------------------------- who plays
    def ai_answered(self, agent: str, policy: PolicyAgent) -> None:
        """A policy's new answer (or the substitute played in its place), applied at the coming step."""
        if policy.action is not None and (policy.observed_frame >= 0 or policy.substitute is not None):
            self.recorder.ai_action(agent, policy.action, policy.observed_frame, policy.latency_s, policy.substitute)

    def set_controller(self, agent: str, controller: Controller, screen: codec.Screen) -> None:
        """Another controller plays ``agent`` from the next step."""
        self.recorder.set_controller(agent, controller, screen)

    def describe_agent(self, agent: str, details: dict[str, Any]) -> None:
        """Who sits at ``agent``, stored with this and every later episode."""
        self.recorder.describe_agent(agent, details)

    def note_watcher(self, who: str, watching: bool) -> None:
        """Someone began (or stopped) watching read-only."""
        self.recorder.note_watcher(who, watching)

    def page_event(self, agent: str, event: str, page_frame: int, frame: int) -> None:
        """A change on a participant's page, or the game pausing or resuming for it."""
        self.recorder.page_event(agent, event, page_frame, frame)

    def round_trip(self, agent: str, rtt_ms: float, page_frame: int, frame: int) -> None:
        """A round trip a participant's page measured."""
        self.recorder.round_trip(agent, rtt_ms, page_frame, frame)

    def restamp_start(self) -> None:
        """Play begins now: the episode opened while the game waited counts from here."""
        self.recorder.restamp_start()

    def close(self) -> None:
        """No episode follows."""
        self.recorder.close()
