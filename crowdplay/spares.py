"""Spare environments of one game process: built while it runs no game, taken when a game opens.

Building an Atari environment (ALE's ``loadROM``) takes ~90 ms of CPU and holds the interpreter
lock the whole time, even in a builder thread: every game of the process would miss ~5 frames
while one is built. So a process never builds while its games play. It builds ahead, while it is
empty (booted into the warm pool, or emptied again): up to ``capacity`` spares, spread over the
environments it was told to stock, newest first. Once a game plays here, new ones open only from
what it stocked: the EnvsManager sends it no other game (``crowdplay.hosts``), except one whose
builds are too short to stall a frame (``HARMLESS_BUILD_CPU_S``), and ``take`` refuses one that
comes anyway (``WouldStall``: the manager had not heard yet that a game began). While its games
all wait for their participants it builds for them, one at a time, and they begin only once no
build is under way (``settled``).

Stocking builds run at the lowest CPU priority (``build_ahead``): on a busy machine they must not
take CPU from the games running in other processes, and in an empty process nothing waits on
them. A build for an opening runs at normal priority: its participant waits on it.

Ray-free: the build functions, and whether the process runs games, are parameters.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from crowdplay.environments import EnvAdapter, EnvSpec, get_env

log = logging.getLogger(__name__)

#: A build shorter than this (CPU seconds, as measured the last time) may run in a process whose
#: games are playing: a third of a 60 fps frame, so no frame is late for it.
HARMLESS_BUILD_CPU_S = 0.005


def harmless(build_cpu_s: dict[str, float], env_id: str) -> bool:
    """Building ``env_id`` took so little CPU last time (``build_cpu_s``, by environment id) that it
    may run beside playing games; never built yet: not known to be."""
    return build_cpu_s.get(env_id, float("inf")) <= HARMLESS_BUILD_CPU_S


class WouldStall(RuntimeError):
    """Opening this game here would build its environment behind games playing in the process."""


class Built(NamedTuple):
    """A built environment and the CPU seconds its build took in the building thread (what it
    held the interpreter lock for, near enough)."""

    adapter: EnvAdapter
    cpu_s: float


Build = Callable[[EnvSpec], Awaitable[Built]]


class SpareEnvs:
    """The process's spare environments by environment id (each a build under way or done), and
    what it has built and opened so far (``report``: the EnvsManager places by it)."""

    def __init__(
        self, build: Build, build_ahead: Build, capacity: int, running: Callable[[], bool],
        playing: Callable[[], bool] = lambda: False, on_change: Callable[[], None] = lambda: None,
    ) -> None:
        """``build(spec)``: one environment, now; ``build_ahead(spec)``: one at the lowest
        priority; ``capacity``: spares stocked while empty; ``running()``: the process hosts a game
        (stocking pauses); ``playing()``: a game here plays (nothing but harmless builds);
        ``on_change()``: called when ``report`` changed."""
        self._build = build
        self._build_ahead = build_ahead
        self.capacity = capacity
        self._running = running
        self._playing = playing
        self._on_change = on_change
        self.spares: dict[str, list[asyncio.Task[Built]]] = {}
        #: what to stock, newest first (``stock``)
        self.stocked: list[str] = []
        self._stocking: asyncio.Task[None] | None = None
        #: builds not finished yet, of spares and of openings
        self._under_way: set[asyncio.Task[Built]] = set()
        self._openings = 0
        #: environments built here (spares and openings' own), games opened, by environment id
        self.built: Counter[str] = Counter()
        self.opened: Counter[str] = Counter()
        #: the latest build's CPU seconds, by environment id
        self.build_cpu_s: dict[str, float] = {}
        #: openings built while a game played here (``take``'s ``behind_play``): each stalled it
        self.built_behind_play = 0

    def count(self) -> int:
        """Spares built or being built."""
        return sum(len(tasks) for tasks in self.spares.values())

    def report(self) -> dict[str, Any]:
        """Environments built and games opened here so far (their difference: the spares ready),
        and what a build of each costs: ``crowdplay.hosts.HostPool.note_builds`` reads it."""
        return {"built": dict(self.built), "opened": dict(self.opened), "build_cpu_s": dict(self.build_cpu_s), "built_behind_play": self.built_behind_play}

    def stock(self, env_ids: list[str]) -> None:
        """Keep spares of ``env_ids`` (oldest first, as the launcher lists recent games) while empty."""
        self.stocked = list(reversed(env_ids))
        self.restock()

    def restock(self) -> None:
        """Build towards ``capacity`` in the background, unless games run here or it is under way."""
        if self._stocking is None or self._stocking.done():
            self._stocking = asyncio.get_running_loop().create_task(self._fill())

    def _busy(self) -> bool:
        return self._running() or self._openings > 0

    async def _fill(self) -> None:
        while self.stocked and not self._busy() and self.count() < self.capacity:
            env_id = min(self.stocked, key=lambda candidate: len(self.spares.get(candidate, [])))  # ties: the newest
            task = self._start(env_id, self._build_ahead)
            self.spares.setdefault(env_id, []).append(task)
            await asyncio.wait([task])
            if task.cancelled() or task.exception() is not None:  # read here; an opening builds it anew and reports it
                self._discard(env_id, task)
                self.stocked.remove(env_id)
                log.warning("stopped keeping spares of %s: building one failed", env_id)

    def _start(self, env_id: str, build: Build) -> asyncio.Task[Built]:
        task = asyncio.get_running_loop().create_task(_built(build, get_env(env_id)))
        self._under_way.add(task)
        task.add_done_callback(lambda done: self._finished(env_id, done))
        return task

    def _finished(self, env_id: str, task: asyncio.Task[Built]) -> None:
        self._under_way.discard(task)
        if not task.cancelled() and task.exception() is None:
            self.built[env_id] += 1
            self.build_cpu_s[env_id] = task.result().cpu_s
            self._on_change()

    def _discard(self, env_id: str, task: asyncio.Task[Built]) -> None:
        tasks = self.spares.get(env_id, [])
        if task in tasks:
            tasks.remove(task)
        if not tasks:
            self.spares.pop(env_id, None)

    async def take(self, spec: EnvSpec, behind_play: bool = False) -> EnvAdapter:
        """An environment for a game opening now: the oldest spare (waiting for it if still being
        built), else one built now (its failure raised here). A build that would run behind games
        playing here raises ``WouldStall``, unless ``behind_play`` (the EnvsManager found no
        process that could open the game without one): then it is built, and counted."""
        tasks = self.spares.get(spec.id)
        if not tasks and self._playing() and not harmless(self.build_cpu_s, spec.id):
            if not behind_play:
                raise WouldStall(f"a game plays in this process and it has no spare {spec.id}")
            self.built_behind_play += 1
        self._openings += 1
        try:
            if tasks:
                task = tasks.pop(0)
                if not tasks:
                    del self.spares[spec.id]
            else:
                task = self._start(spec.id, self._build)
            built = await task
        finally:
            self._openings -= 1
        self.opened[spec.id] += 1
        self._on_change()
        return built.adapter

    def building(self) -> bool:
        """A build is under way here (it holds the interpreter lock for most of its time)."""
        return bool(self._under_way)

    async def settled(self) -> None:
        """Returns once no build is under way here: a game begins after the builds of the games
        opened with it, not while one holds the interpreter lock."""
        while self._under_way:
            await asyncio.wait(set(self._under_way))


async def _built(build: Build, spec: EnvSpec) -> Built:
    """``build(spec)`` as a coroutine (a task needs one; the build functions return awaitables)."""
    return await build(spec)
