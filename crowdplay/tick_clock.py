"""The shared game clock: every game of a process at one frame rate ticks on one grid.

Deadlines sit on the grid ``t0 + n / fps`` so the rate does not drift, and ticks that cannot be met
are skipped, not bunched. A frame's id is its tick's position ``n`` on that grid, so a client knows
when every frame was due and a skipped tick shows as a gap in the ids. All games of one process at
the same fps share one clock: one wake-up per tick for all of them, not one each.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

from crowdplay.environments.spaces import ObservationOutsideSpace
from crowdplay.timing import FRAME_INTERVAL_MS

log = logging.getLogger(__name__)
#: Tick intervals kept per clock for the dashboard (a minute at 60 fps).
TIMING_SAMPLES = 3600


class Ticked(Protocol):
    """A game the clock ticks (``crowdplay.realtime.LiveEnv``)."""

    ticks_late: int

    @property
    def name(self) -> str:
        """The game's environment id, for the log line when it fails."""

    def tick(self, next_frame: int) -> None:
        """One turn of the game, which will show frame ``next_frame``."""

    def stop(self, reason: str) -> None:
        """End the game (its environment failed)."""


class TickClock:
    """Ticks its members on the grid ``t0 + n / fps`` while it has any."""

    def __init__(self, fps: float) -> None:
        """A clock at ``fps``; it runs only while it has members."""
        self.period = 1.0 / fps
        self.n = 0  # the grid position of the latest tick
        self.members: list[Ticked] = []
        self.ticks_late = 0
        #: seconds between the latest ticks (the dashboard's frame-interval histogram)
        self.intervals: deque[float] = deque(maxlen=TIMING_SAMPLES)
        self._task: asyncio.Task[None] | None = None

    def add(self, game: Ticked) -> None:
        """Tick ``game`` with the others from the next tick on; the clock starts with its first member."""
        self.members.append(game)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def remove(self, game: Ticked) -> None:
        """Stop ticking ``game``; the clock stops once it has no members."""
        if game in self.members:
            self.members.remove(game)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time() - self.n * self.period  # a restarted clock continues its grid numbering
        try:
            last = loop.time() - self.period
            while self.members:
                now = loop.time()
                self.intervals.append(now - last)
                FRAME_INTERVAL_MS.observe((now - last) * 1000)
                last = now
                self.n += 1
                for game in list(self.members):
                    self._tick_one(game)
                self._skip_missed(loop.time() - (t0 + self.n * self.period))
                await asyncio.sleep(max(0.0, t0 + self.n * self.period - loop.time()))
        finally:
            self._task = None

    def _tick_one(self, game: Ticked) -> None:
        """Tick one game; a failing environment ends its own game, not the clock."""
        try:
            game.tick(self.n)
        except ObservationOutsideSpace as error:  # the researcher's env broke its own space
            log.error("session stopped: environment %r: %s", game.name, error)
            game.stop(f"the environment failed: environment {game.name!r}, {error}")
        except Exception:
            log.exception("session stopped: its environment failed to step")
            game.stop("the environment failed")

    def _skip_missed(self, behind: float) -> None:
        """Ticks whose deadline already passed are skipped (counted late), so the next is on time."""
        if behind > self.period:
            skipped = int(behind / self.period)
            self.ticks_late += skipped
            for game in self.members:
                game.ticks_late += skipped
            self.n += skipped


class Clocks:
    """One TickClock per frame rate, shared by every LiveEnv of this process."""

    def __init__(self) -> None:
        """No clock yet: each is made on first use."""
        self._clocks: dict[float, TickClock] = {}

    def all(self) -> list[TickClock]:
        """Every clock of this process (their frame intervals feed the timing histograms)."""
        return list(self._clocks.values())

    def at(self, fps: float) -> TickClock:
        """The clock for ``fps``, created on first use."""
        clock = self._clocks.get(fps)
        if clock is None:
            clock = self._clocks[fps] = TickClock(fps)
        return clock
