"""An episode's stored document: every field the recording side writes into it, built here only.

The document reaches the store in pieces, merged into one (``TrajectoryStore.put_chunks``): the
episode's first chunk carries its description (who, what, when it started), its last chunk the
outcome (``status``, ``ended_at``, ``chunks`` and the game's closing fields), and when the process
that played it died, the writer marks it interrupted instead (``interrupted_fields``). Keeping the
fields in one module keeps those pieces agreeing with each other and with docs/recording.md, which
describes each field.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from crowdplay.controllers import Controller, Human, documents
from crowdplay.engagement import MAX_EVENTS_KEPT
from crowdplay.recording.status import INTERRUPTED
from crowdplay.round_trips import MAX_SAMPLES_KEPT

#: Distinct substitute reasons counted per agent in an episode's ``ai_answers`` (the rest: "other").
MAX_SUBSTITUTE_REASONS = 8


def closing_fields(
    steps: int,
    returns: Mapping[str, float],
    terminated: bool,
    truncated: bool,
    statistics: Mapping[str, Mapping[str, Any]],
    reason: str | None = None,
) -> dict[str, Any]:
    """What the game says of an episode it ends (``Recorder.end_episode``'s ``fields``): its steps,
    each agent's return, how the environment left it, each seated participant's statistics, and
    ``reason``, why the game stopped (None: the environment ended the episode)."""
    closing: dict[str, Any] = {"steps": steps, "returns": dict(returns), "terminated": terminated, "truncated": truncated}
    if reason is not None:
        closing["reason"] = reason
    closing["statistics"] = {agent: dict(values) for agent, values in statistics.items()}
    return closing


def interrupted_fields(reason: str, now: float, status: str = INTERRUPTED) -> dict[str, Any]:
    """The fields that end an episode whose process died before it could seal it: its last chunk,
    up to a second of play, died with the process. ``status``: ``interrupted``, or
    ``server_unreachable`` for a process whose machine had stopped answering before it died."""
    return {"status": status, "reason": reason, "ended_at": now, "lost_last_chunk": True}


class EpisodeDocument:
    """The document of the episode a Recorder records, kept up to date as the game goes on."""

    def __init__(self, game_id: str, shared: Mapping[str, Any] | None = None, clock: Callable[[], float] = time.time) -> None:
        """``shared``: fields stored with every episode of the game (task, session and participant
        details); ``clock``: wall-clock seconds, for ``started_at``, ``ended_at`` and ``watched``."""
        self.game_id = game_id
        self.shared = dict(shared or {})
        self.clock = clock
        #: the episode's fields so far (a new dict for each episode)
        self.fields: dict[str, Any] = {}
        #: who watches the game now (``note_watcher``), carried into every episode that follows
        self._watching: list[dict[str, Any]] = []

    def begin(self, episode: int, described: Mapping[str, Any], controllers: Mapping[str, Controller]) -> None:
        """A new episode, described by the game (environment, seed, spaces...), played by ``controllers``."""
        self.fields = {"game_id": self.game_id, "episode": episode, "started_at": self.clock(), **self.shared, **described}
        if self._watching:
            self.fields["watched"] = [dict(entry) for entry in self._watching]
        self.note_controllers(controllers)

    def restamp_start(self) -> None:
        """Play begins now (the episode was opened while the game waited for its players)."""
        self.fields["started_at"] = self.clock()

    def describe_agent(self, agent: str, details: Mapping[str, Any]) -> None:
        """Who plays ``agent`` (their session's details), under ``sessions`` in this and every later episode."""
        sessions = {**self.shared.get("sessions", {}), agent: details}
        self.shared["sessions"] = sessions
        self.fields["sessions"] = sessions

    def note_controllers(self, controllers: Mapping[str, Controller]) -> None:
        """Who plays now (stored as ``controllers``), and the searchable summary of who played:
        every participant and policy so far."""
        humans = set(self.fields.get("participants", ()))
        policies = set(self.fields.get("policies", ()))
        for controller in controllers.values():
            if isinstance(controller, Human):
                if controller.participant:
                    humans.add(controller.participant)
            else:
                policies.add(controller.policy)
        self.fields.update(
            controllers=documents(controllers), participants=sorted(humans), policies=sorted(policies), human_only=not policies
        )

    def count_ai_answer(self, agent: str, substitute: str | None) -> None:
        """Count a policy's answer for ``agent`` under ``ai_answers``, or the substitute played in
        its place by reason (at most ``MAX_SUBSTITUTE_REASONS`` reasons, the rest as "other")."""
        counts = self.fields.setdefault("ai_answers", {}).setdefault(agent, {"policy": 0, "substituted": 0, "reasons": {}})
        if substitute is None:
            counts["policy"] += 1
        else:
            counts["substituted"] += 1
            reason = substitute if len(counts["reasons"]) < MAX_SUBSTITUTE_REASONS or substitute in counts["reasons"] else "other"
            counts["reasons"][reason] = counts["reasons"].get(reason, 0) + 1

    def note_watcher(self, who: str, watching: bool) -> None:
        """Someone started (or stopped) watching the game read-only: ``watched`` lists
        ``{"who", "from", "until"}`` (seconds since the epoch; ``until`` None while they watch, or
        for those still watching when the episode ended)."""
        now = self.clock()
        watched = [dict(entry) for entry in self.fields.get("watched", ())]  # a new list: a sealed chunk's copy keeps its own
        if watching:
            self._watching.append({"who": who, "from": now, "until": None})
            watched.append({"who": who, "from": now, "until": None})
        else:
            self._watching = _without_first(self._watching, who)
            for entry in reversed(watched):
                if entry["who"] == who and entry["until"] is None:
                    entry["until"] = now
                    break
        self.fields["watched"] = watched

    def note_page_event(self, agent: str, event: str, page_frame: int, frame: int) -> None:
        """``page_events`` lists ``{"agent", "event", "page_frame", "frame", "at"}``: the frame the
        page showed, the game's frame when it arrived, seconds since the epoch. Past
        ``MAX_EVENTS_KEPT`` an episode counts them in ``page_events_dropped`` instead."""
        events = self.fields.get("page_events", [])
        if len(events) >= MAX_EVENTS_KEPT:
            self.fields["page_events_dropped"] = self.fields.get("page_events_dropped", 0) + 1
            return
        entry = {"agent": agent, "event": event, "page_frame": page_frame, "frame": frame, "at": self.clock()}
        self.fields["page_events"] = [*events, entry]  # a new list: a sealed chunk's copy keeps its own

    def note_round_trip(self, agent: str, rtt_ms: float, page_frame: int, frame: int) -> None:
        """``rtt_samples`` lists ``{"agent", "rtt_ms", "page_frame", "frame", "at"}``: the round
        trip, the frame the page showed when it was measured, the game's frame when its report
        arrived, seconds since the epoch. Past ``MAX_SAMPLES_KEPT`` an episode counts them in
        ``rtt_samples_dropped`` instead."""
        samples = self.fields.get("rtt_samples", [])
        if len(samples) >= MAX_SAMPLES_KEPT:
            self.fields["rtt_samples_dropped"] = self.fields.get("rtt_samples_dropped", 0) + 1
            return
        entry = {"agent": agent, "rtt_ms": rtt_ms, "page_frame": page_frame, "frame": frame, "at": self.clock()}
        self.fields["rtt_samples"] = [*samples, entry]  # a new list: a sealed chunk's copy keeps its own

    def first_chunk_fields(self) -> dict[str, Any]:
        """What the episode's first chunk stores: the description so far. Later chunks store
        nothing of it, so a first chunk resent late cannot undo the last one's outcome."""
        return dict(self.fields)

    def close(self, status: str, closing: Mapping[str, Any], chunks: int) -> dict[str, Any]:
        """What the episode's last chunk stores: everything, with its outcome (``status``, see
        ``crowdplay.recording.status``; ``closing``, see ``closing_fields``) and how many chunks it has."""
        self.fields.update(closing, status=status, ended_at=self.clock())
        return {**self.fields, "chunks": chunks}


def _without_first(watchers: list[dict[str, Any]], who: str) -> list[dict[str, Any]]:
    """``watchers`` without the first entry of ``who``."""
    index = next((index for index, entry in enumerate(watchers) if entry["who"] == who), None)
    return watchers if index is None else watchers[:index] + watchers[index + 1 :]
