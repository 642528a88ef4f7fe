"""Per-agent play statistics: numbers about one participant's play, updated every step.

A statistic sees every step of the game it is configured for, at the game's frame rate and for
every participant, so ``step`` has to stay at a few integer operations: RAM bytes are read with
``ram.item(i)`` (a Python int, no numpy scalar), counters are Python ints, and anything that needs
the previous step keeps just the bytes it compares against. Statistics are registered by name, and
a task names the ones it tracks. ``Score`` below is the smallest complete one: a ``label``, state
set up in ``__init__``, ``step`` and ``value``; ``@register_statistic("name")`` registers a class
and returns it unchanged, so it stacks with other decorators.

Space Invaders RAM
------------------
The ``si_*`` statistics read ALE's 128-byte RAM (``ale.getRAM()``; the console address is the index
plus 0x80) after each step. They are meaningful for ``SpaceInvaders`` (ALE ``SpaceInvaders-v5``)
and its two-player versions ``SpaceInvaders2P`` and ``SpaceInvadersDuel`` only; configure them
for nothing else. Without RAM (non-ALE environments) they stay 0.

=====  =====  ====================================================================================
index  addr   meaning
=====  =====  ====================================================================================
17     0x91   aliens alive in the current wave (36 at its start)
18-23  0x92-  one byte per alien row, one bit per alien: 23 is the top row (row 1, 30 points), 18
       0x97   the bottom row (row 6, 5 points). Bits are positions in the formation, not fixed
              aliens: when the formation moves sideways every row byte shifts by one bit (60 -> 30).
24     0x98   bit 2 (0x04) set: the first missile slot belongs to the second player and the second
              slot to the first (clear: the other way round; always clear in the one-player game)
28     0x9C   first player's cannon x, 35 (left end) .. 117 (right end)
29     0x9D   second player's cannon x (two-player games)
85, 86 0xD5,  the two missile slots: a player's missile height, 246 while no missile is in flight
       0xD6
=====  =====  ====================================================================================

How they were found and checked (ale-py 0.12.1, frameskip 1, sticky actions off, input is ignored
for the first ~127 frames after reset):

* Cannon x: holding RIGHT / LEFT moves byte 28 by 1 every 2 frames between 35 and 117. On the screen
  (``getScreenRGB``) the green cannon, rows 185-194, covers the columns x-1 .. x+5 (one column off
  while moving) in 4000 frames of random play, so its centre column is x + 2, and it is in the left
  half of the 160-column screen when x + 2 < 80. In PettingZoo's ``space_invaders_v2`` byte 29 moves
  with ``second_0``'s LEFT / RIGHT, and the yellow cannon sits at the same columns relative to it.
* Alien rows: in 100,000 frames of random play every drop in a row byte's count of set bits came
  on the step of a reward of 5 (byte 18), 10, 15, 20, 25 or 30 (byte 23) points, one row per
  reward, and every such reward came with one; the 200-point mothership changes no row. On every
  frame byte 17 equals the set bits of bytes 18-23 together. Hits are therefore counted as drops in
  a row's set-bit count (bits also move when the formation shifts, so counting bits going from 1 to
  0 would count shifts as hits), and byte 17 going down says cheaply when to look.
* Missiles: after FIRE, byte 85 goes from 246 to 85 (the cannon's height) and decreases by 2 every
  2 frames; it turns 246 on the step an alien is hit. A missile striking a shield jumps to 127 and
  counts down to 121 before it clears (all 197 such jumps in 40,000 frames were under a shield's
  pixels on screen); one fired right into a shield starts at 127. A launch is a slot going from
  246 to a height, or to 85 on the very step its previous missile ended (seen in the two-player
  games only); in the one-player game every launch came on a step whose action fires. In the two-player games the slots are shared: the player who owns a
  slot follows bit 2 of byte 24 at launch, checked against the missile's x (bytes 87 / 88), which
  starts at the firing cannon's x + 5, on all 2,670 launches of 80,000 random two-player frames.
  A hit goes to the player whose missile ended on that step; when both missiles hit on one step the
  lower missile is paired with the lower row. Against PettingZoo's per-agent rewards this credited
  894 of 894 alien hits (100,000 frames, ``SpaceInvaders2P``) and 502 of 502 (``SpaceInvadersDuel``)
  to the right player and row.

So the ``si_*`` statistics work for ``agent_index`` 0 (one-player game or ``first_0``) and 1
(``second_0``); for any other agent they stay 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from crowdplay.registry import Registry, UnknownName

T = TypeVar("T", bound="type[Statistic]")


class Statistic:
    """One number about one agent's play, updated every step.

    ``step`` gets the action applied, the agent's reward, the console RAM after the step (None
    outside ALE) and whether an input from the participant was applied on this step. A statistic
    that needs transitions keeps the previous step's bytes itself: the tracker only ever passes
    the newest RAM.
    """

    label: str = ""
    unit: str = ""

    def __init__(self, fps: float, agent_index: int) -> None:
        self.fps = float(fps)
        self.agent_index = int(agent_index)

    def step(self, action: int, reward: float, ram: np.ndarray | None, human_input: bool) -> None:
        """Account for one step: the action applied, the agent's reward, the RAM after the step (None
        outside ALE) and whether the participant's input was applied on it. Runs every frame: keep it cheap."""
        raise NotImplementedError

    def value(self) -> float:
        """The statistic's current value, in ``unit``."""
        raise NotImplementedError


# --------------------------------------------------------------------- registry
class UnknownStatistic(UnknownName):
    """Raised for a statistic name that nobody registered."""

    kind = "statistic"


_STATISTICS: Registry[type[Statistic]] = Registry("statistic", UnknownStatistic)


def register_statistic(name: str) -> Callable[[T], T]:
    """Register a statistic class under ``name`` (see ``crowdplay.registry``), handing back the
    class as its own type so that a subclass stays itself for the checker too."""
    return _STATISTICS.register(name)


def registered_statistics() -> list[str]:
    """Every registered statistic's name, in registration order."""
    return _STATISTICS.names()


def check_statistic(name: str) -> str:
    """The name itself if a statistic is registered under it; else UnknownStatistic naming the known ones."""
    return _STATISTICS.check(name)


def statistic_class(name: str) -> type[Statistic]:
    """The class registered under ``name``; raises naming the known statistics if there is none."""
    return _STATISTICS.get(name)


# --------------------------------------------------------------------- tracker
class StatisticsTracker:
    """The statistics of one participant's agent across a session: the current episode's values and the session totals.

    Each statistic runs twice, once for the session and once for the episode (rebuilt at
    ``end_episode``), so that a statistic needs no way to add up or reset. A session total is
    measured over the steps of all episodes in a row: it equals the sum of the episode values
    except where a statistic looks back across an episode's start (``active_time``'s window).
    """

    def __init__(self, names: Sequence[str], fps: float, agent_index: int = 0) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        names = tuple(names)
        if len(set(names)) != len(names):
            raise ValueError(f"statistics named twice in {list(names)}")
        self._classes = {name: statistic_class(name) for name in names}
        self.fps = float(fps)
        self.agent_index = int(agent_index)
        self.episodes = 0
        self._session = self._build()
        self._episode = self._build()
        self._bind()

    def _build(self) -> dict[str, Statistic]:
        return {name: cls(self.fps, self.agent_index) for name, cls in self._classes.items()}

    def _bind(self) -> None:
        # bound methods, looked up once: ``step`` runs every frame
        self._steps = [statistic.step for statistic in (*self._session.values(), *self._episode.values())]

    def step(self, action: int, reward: float, ram: np.ndarray | None, human_input: bool) -> None:
        """Step every statistic, the session's and the episode's."""
        for step in self._steps:
            step(action, reward, ram, human_input)

    def end_episode(self) -> dict[str, float]:
        """The finished episode's values; the next step starts a fresh episode."""
        finished = self.episode_values()
        self.episodes += 1
        self._episode = self._build()
        self._bind()
        return finished

    def episode_values(self) -> dict[str, float]:
        """The current episode's values so far, by name."""
        return {name: statistic.value() for name, statistic in self._episode.items()}

    def values(self) -> dict[str, float]:
        """Session totals over all episodes so far, the current one included."""
        return {name: statistic.value() for name, statistic in self._session.items()}

    def describe(self) -> dict[str, dict[str, str]]:
        """Label and unit of each tracked statistic, for display."""
        return {name: {"label": cls.label, "unit": cls.unit} for name, cls in self._classes.items()}


# --------------------------------------------------------------------- generic statistics
#: A step counts as active when the participant gave an input or scored within this many seconds.
ACTIVITY_WINDOW_S = 5.0


class _Seconds(Statistic):
    """Counts steps and reports them as seconds of play."""

    unit = "s"

    def __init__(self, fps: float, agent_index: int) -> None:
        super().__init__(fps, agent_index)
        self.steps = 0

    def value(self) -> float:
        """The steps counted, in seconds at the game's frame rate."""
        return self.steps / self.fps


@register_statistic("time_played")
class TimePlayed(_Seconds):
    """Seconds of play: steps / fps."""

    label = "Time played"

    def step(self, action: int, reward: float, ram: np.ndarray | None, human_input: bool) -> None:
        """One more step played."""
        self.steps += 1


@register_statistic("active_time")
class ActiveTime(_Seconds):
    """Seconds in which the participant was playing rather than away.

    A step is active when an input was applied or a nonzero reward came on it or on one of the
    steps before it within the window: with ``window = round(5 * fps)`` steps, an event on step
    ``e`` makes the steps ``e .. e + window - 1`` active, exactly 5 seconds.
    """

    label = "Active time"

    def __init__(self, fps: float, agent_index: int) -> None:
        super().__init__(fps, agent_index)
        self._window = max(1, round(ACTIVITY_WINDOW_S * self.fps))
        self._now = -1
        self._active_until = -1  # the last step inside the latest event's window

    def step(self, action: int, reward: float, ram: np.ndarray | None, human_input: bool) -> None:
        """Count the step if the participant gave input or scored within the activity window."""
        self._now += 1
        if human_input or reward:
            self._active_until = self._now + self._window - 1
        if self._now <= self._active_until:
            self.steps += 1


@register_statistic("score")
class Score(Statistic):
    """The sum of the agent's rewards."""

    label = "Score"

    def __init__(self, fps: float, agent_index: int) -> None:
        super().__init__(fps, agent_index)
        self.total = 0.0

    def step(self, action: int, reward: float, ram: np.ndarray | None, human_input: bool) -> None:
        """Add the reward."""
        if reward:
            self.total += float(reward)  # a numpy float32 reward must not turn the sum into float32

    def value(self) -> float:
        """The score so far."""
        return self.total


# --------------------------------------------------------------------- Space Invaders
# RAM indices (see the module docstring for how they were found).
SI_ALIENS_ALIVE = 17
SI_ROWS = (23, 22, 21, 20, 19, 18)  # row 1 (top) .. row 6 (bottom)
SI_SLOT_OWNERS = 24
SI_SECOND_PLAYER_HAS_FIRST_SLOT = 0x04
SI_CANNON_X = (28, 29)  # by player (agent_index)
SI_MISSILE = (85, 86)  # the two missile slots
SI_NO_MISSILE = 246
SI_LAUNCH_HEIGHT = 85
#: Cannon x from which its centre column (x + 2) is in the right half of the 160-column screen.
SI_SCREEN_MIDDLE_X = 78


class _CannonSide(_Seconds):
    """Seconds with the agent's cannon on one side of the screen (every step with RAM counts,
    whichever side the cannon waits on while the game starts or after a lost life)."""

    left: bool

    def __init__(self, fps: float, agent_index: int) -> None:
        super().__init__(fps, agent_index)
        self._cannon = SI_CANNON_X[agent_index] if agent_index in (0, 1) else None

    def step(self, action: int, reward: float, ram: np.ndarray | None, human_input: bool) -> None:
        """Count the step if the cannon is on this statistic's side."""
        if ram is not None and self._cannon is not None and (ram.item(self._cannon) < SI_SCREEN_MIDDLE_X) == self.left:
            self.steps += 1


@register_statistic("si_time_left")
class InvadersTimeLeft(_CannonSide):
    """Seconds the cannon spent on the left half of the screen."""

    label = "Time on the left"
    left = True


@register_statistic("si_time_right")
class InvadersTimeRight(_CannonSide):
    """Seconds the cannon spent on the right half of the screen."""

    label = "Time on the right"
    left = False


class _Invaders(Statistic):
    """Follows the missiles and the alien rows to count the agent's shots and its hits per row;
    the ``si_*`` shot and hit statistics report parts of this."""

    def __init__(self, fps: float, agent_index: int) -> None:
        super().__init__(fps, agent_index)
        self._player = agent_index if agent_index in (0, 1) else None
        self._heights = [SI_NO_MISSILE, SI_NO_MISSILE]
        self._owners: list[int | None] = [None, None]
        self._alive = -1  # -1: the first step with RAM sets the baseline
        self._row_counts: tuple[int, ...] = ()
        self.shots = 0
        self.hits_by_row = [0] * len(SI_ROWS)  # index 0 is row 1 (the top)

    def step(self, action: int, reward: float, ram: np.ndarray | None, human_input: bool) -> None:
        """Follow the missiles when a slot changed and credit hits when aliens went: most steps
        change neither, so they read three RAM bytes and stop."""
        if ram is None or self._player is None:
            return
        first, second = ram.item(SI_MISSILE[0]), ram.item(SI_MISSILE[1])
        ended: list[tuple[int, int | None]] = []
        if first != self._heights[0] or second != self._heights[1]:
            ended = self._follow_missiles(ram, (first, second))
        alive = ram.item(SI_ALIENS_ALIVE)
        if alive != self._alive:
            counts = tuple(ram.item(index).bit_count() for index in SI_ROWS)
            if alive < self._alive:
                self._credit(self._row_counts, counts, ended)
            self._alive, self._row_counts = alive, counts

    def _follow_missiles(self, ram: np.ndarray, heights: tuple[int, int]) -> list[tuple[int, int | None]]:
        """Count the agent's launches; return the (last height, owner) of each missile that ended."""
        ended = []
        for slot, height in enumerate(heights):
            before = self._heights[slot]
            if height == before:
                continue
            launched = height != SI_NO_MISSILE and (before == SI_NO_MISSILE or height == SI_LAUNCH_HEIGHT)
            if before != SI_NO_MISSILE and (launched or height == SI_NO_MISSILE):
                ended.append((before, self._owners[slot]))
            if launched:
                swapped = bool(ram.item(SI_SLOT_OWNERS) & SI_SECOND_PLAYER_HAS_FIRST_SLOT)
                owner = 1 if (slot == 0) == swapped else 0
                self._owners[slot] = owner
                self.shots += owner == self._player
            elif height == SI_NO_MISSILE:
                self._owners[slot] = None
            self._heights[slot] = height
        return ended

    def _credit(self, before: tuple[int, ...], after: tuple[int, ...], ended: list[tuple[int, int | None]]) -> None:
        """Credit the aliens gone since the last step to whoever's missiles ended on it: the lowest
        missile hit the lowest row (heights grow down the screen)."""
        rows_hit = [row for row in reversed(range(len(SI_ROWS))) for _ in range(before[row] - after[row])]
        for row, (_, owner) in zip(rows_hit, sorted(ended, key=lambda missile: -missile[0])):
            if owner == self._player:
                self.hits_by_row[row] += 1

    @property
    def hits(self) -> int:
        """Aliens the agent hit, over all rows."""
        return sum(self.hits_by_row)


def _invaders_statistic(name: str, class_name: str, label: str, doc: str, part: Callable[[_Invaders], float]) -> type[Statistic]:
    """The ``_Invaders`` tracking reporting ``part`` of what it counted, as class ``class_name``
    registered under ``name``: the ``si_*`` shot and hit statistics differ in nothing else."""

    class Part(_Invaders):
        def value(self) -> float:
            """The part of the tracking this statistic reports."""
            return part(self)

    Part.label = label
    Part.__name__ = Part.__qualname__ = class_name
    Part.__doc__ = doc
    return register_statistic(name)(Part)


def _hits_in_row(row: int) -> Callable[[_Invaders], float]:
    """Hits in row ``row`` (1 the top), made apart so that each row's statistic keeps its own row."""
    return lambda invaders: float(invaders.hits_by_row[row - 1])


InvadersShots = _invaders_statistic("si_shots", "InvadersShots", "Shots fired", "Shots the agent fired.", lambda invaders: float(invaders.shots))
InvadersHits = _invaders_statistic(
    "si_hits", "InvadersHits", "Aliens hit", "Aliens hit (the mothership is not an alien of a row and does not count).", lambda invaders: float(invaders.hits)
)
InvadersAccuracy = _invaders_statistic(
    "si_accuracy", "InvadersAccuracy", "Accuracy", "Aliens hit per shot fired, as a fraction from 0 to 1 (0 before the first shot).",
    lambda invaders: invaders.hits / invaders.shots if invaders.shots else 0.0,
)
SI_ROW_STATISTICS = tuple(
    _invaders_statistic(
        f"si_aliens_hit_row_{row}", f"InvadersRow{row}Hits", f"Aliens hit in row {row}",
        f"Aliens hit in row {row} (row 1 is the top row, worth 30 points; row 6 the bottom, worth 5).", _hits_in_row(row),
    )
    for row in range(1, len(SI_ROWS) + 1)
)
