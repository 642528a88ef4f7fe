"""Whether a participant is with their game: the page's visibility and focus, pauses, the connection.

The page reports each change as a ``page`` message (docs/protocol.md); the game keeps one
``Attention`` per participant, stores every event with the frame it came on, and, when the task
says so, pauses a one-player game while its participant is away. What the page cannot show (time
hidden, time unfocused, pauses) becomes part of the participant's statistics, so a study can
require it (``max_hidden_s``) and a dataset can filter on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from crowdplay.round_trips import RoundTrip, RoundTrips

#: What the page reports: the tab hidden or shown again, the window losing or regaining focus,
#: the connection becoming too slow to play well or recovering.
PAGE_EVENTS = ("hidden", "visible", "blur", "focus", "slow_connection", "connection_ok")
#: What the game adds when it pauses for an absent participant and resumes on their return.
GAME_EVENTS = ("pause", "resume")
#: What the game server adds when the participant's ingress falls silent on the frame channel (a
#: partition: their inputs cannot arrive) and when it speaks again; away while it is lost.
LINK_EVENTS = ("link_lost", "link_ok")
#: What a task does when its participant's page is hidden or loses focus (``when_away``).
WhenAway = Literal["pause", "play", "end"]
WHEN_AWAY = ("pause", "play", "end")
#: Page events kept per episode in its document; a page that flips more often is counted, not listed.
MAX_EVENTS_KEPT = 500
#: A session's engagement among its statistics values (``GameStatistics.summary``), in the order the
#: dashboard and the dataset list them: seconds hidden and idle and the pauses first, as the
#: researcher reads them first.
ENGAGEMENT_VALUES = ("time_hidden", "idle_time", "pauses", "time_unfocused", "time_paused", "time_slow_connection")


@dataclass(frozen=True, slots=True)
class PageEvent:
    """One change the page reports, with the frame it was showing."""

    event: str
    frame: int = 0

    def __post_init__(self) -> None:
        if self.event not in PAGE_EVENTS and self.event not in LINK_EVENTS:
            raise ValueError(f"unknown page event {self.event!r}; expected one of {', '.join(PAGE_EVENTS + LINK_EVENTS)}")

    def to_wire(self) -> dict[str, Any]:
        """As the frame channel carries it (JSON)."""
        return {"event": self.event, "frame": self.frame}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> PageEvent:
        """``to_wire``'s inverse."""
        return cls(data["event"], data["frame"])


#: What the page tells the game over the frame channel: a change on the page, or a round trip it measured.
PageReport = PageEvent | RoundTrip


def page_report(data: dict[str, Any]) -> PageReport:
    """A page report from its wire form (``to_wire`` of either kind): a round trip has ``rtt_ms``."""
    return RoundTrip.from_wire(data) if "rtt_ms" in data else PageEvent.from_wire(data)


def when_away_for(when_away: WhenAway | None, humans: int) -> WhenAway:
    """The rule that applies: the task's, or by default "pause" when one person plays and "play"
    when several do; a game several people play never pauses for one of them (their absence
    must not stop the others' game)."""
    if when_away is None or (when_away == "pause" and humans != 1):
        return "pause" if humans == 1 else "play"
    return when_away


class Attention:
    """One participant's page: hidden or shown, focused or not, and how long it has been each way;
    the pauses their absence caused; their connection's round trips."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.hidden = False
        self.unfocused = False
        self.slow = False
        self.link_lost = False
        self.pauses = 0
        self._since: dict[str, float] = {}
        self._total = {"hidden": 0.0, "unfocused": 0.0, "paused": 0.0, "slow": 0.0}
        self.round_trips = RoundTrips()

    @property
    def away(self) -> bool:
        """The participant cannot be watching the game: the tab is hidden, the window unfocused, or
        their link to the game server lost."""
        return self.hidden or self.unfocused or self.link_lost

    def note(self, event: str) -> bool:
        """Take a page event; whether ``away`` changed with it."""
        before = self.away
        if event in ("hidden", "visible"):
            self.hidden = self._switch("hidden", event == "hidden")
        elif event in ("blur", "focus"):
            self.unfocused = self._switch("unfocused", event == "blur")
        elif event in LINK_EVENTS:
            self.link_lost = event == "link_lost"
        else:
            self.slow = self._switch("slow", event == "slow_connection")
        return self.away != before

    def paused(self, paused: bool) -> None:
        """The game paused (or resumed) for this participant's absence."""
        if paused and "paused" not in self._since:
            self.pauses += 1
        self._switch("paused", paused)

    def _switch(self, state: str, on: bool) -> bool:
        """Start or stop timing ``state``; the new state."""
        now = self._clock()
        if on:
            self._since.setdefault(state, now)
        else:
            started = self._since.pop(state, None)
            if started is not None:
                self._total[state] += now - started
        return on

    def values(self) -> dict[str, float]:
        """Seconds hidden, unfocused, paused and on a slow connection so far, the pauses, and the
        round trips' summary once there is one (``crowdplay.round_trips.CONNECTION_VALUES``)."""
        now = self._clock()
        seconds = {state: total + (now - self._since[state] if state in self._since else 0.0) for state, total in self._total.items()}
        return {
            "time_hidden": round(seconds["hidden"], 3),
            "time_unfocused": round(seconds["unfocused"], 3),
            "time_paused": round(seconds["paused"], 3),
            "time_slow_connection": round(seconds["slow"], 3),
            "pauses": self.pauses,
            **self.round_trips.values(),
        }


def engagement(values: Mapping[str, Any] | None) -> dict[str, float]:
    """The ``ENGAGEMENT_VALUES`` out of a session's statistics values, each 0 where it is missing:
    assignments stored before engagement was counted (or a task without ``time_played``) have
    none, and a researcher's table or the dashboard must read them without a special case."""
    values = values or {}
    return {name: values.get(name) or 0 for name in ENGAGEMENT_VALUES}
