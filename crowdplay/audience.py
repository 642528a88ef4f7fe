"""Who watches a game read-only (a researcher on the dashboard, a participant shown a
demonstration), and when an AI-only game nobody watches any more ends.

An AI-only game (every agent in ``ai_agent_map_always``) is a demonstration: it begins when it is
first watched (or is begun unwatched from the dashboard) and ends once nobody has watched it for
the reconnect grace. Watchers see its frames and events, never send inputs; the recording notes
who watched when.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from crowdplay.fanout import Subscriber
from crowdplay.realtime import LiveEnv


class Audience:
    """A game's read-only viewers, by subscription."""

    def __init__(self, live: LiveEnv, ai_only: bool, grace_s: float) -> None:
        """``ai_only``: the game ends once unwatched for ``grace_s``."""
        self.live = live
        self.ai_only = ai_only
        self.grace_s = grace_s
        #: each viewer's subscription -> who they are
        self.watchers: dict[Subscriber, str] = {}
        self._unwatched: asyncio.TimerHandle | None = None

    def watch(self, who: str, first_message: str) -> Subscriber:
        """``who`` watches from now on, shown ``first_message`` (the lobby) before anything else."""
        subscriber = self.live.subscribe(self.live.agents[0])
        self.watchers[subscriber] = who
        self.cancel()
        self.live.note_watcher(who, True)
        self.live.tell(subscriber, first_message)
        return subscriber

    def unwatch(self, subscriber: Subscriber, end: Callable[[str], None] | None) -> None:
        """The viewer on ``subscriber`` left (noted, unless the game is already over: ``end`` None)."""
        self.live.unsubscribe(subscriber)
        who = self.watchers.pop(subscriber, None)
        if who is not None and end is not None:
            self.live.note_watcher(who, False)
            self.end_when_unwatched(end)

    def end_when_unwatched(self, end: Callable[[str], None]) -> None:
        """An AI-only game with nobody watching ends (``end`` with the reason) after the grace,
        unless someone comes. Only the timer holds ``end`` (the lineup), so an ended game's
        lineup and audience hold no cycle and are freed at once."""
        if self.ai_only and not self.watchers and self._unwatched is None:
            self._unwatched = asyncio.get_running_loop().call_later(self.grace_s, self._end_unwatched, end)

    def _end_unwatched(self, end: Callable[[str], None]) -> None:
        self._unwatched = None
        if not self.watchers:
            end("nobody is watching this AI-only game any more")

    def cancel(self) -> None:
        """No end for want of viewers is pending any more (someone watches, or the game ended)."""
        if self._unwatched is not None:
            self._unwatched.cancel()
            self._unwatched = None
