"""Spare environments of one game process: built while it runs no game, taken when a game opens.

Building an Atari environment (ALE's ``loadROM``) takes ~125 ms and holds the interpreter lock the
whole time, even in a builder thread: every game of the process misses ~7 frames while one is
built. So a process builds ahead, while it is empty (booted into the warm pool, or emptied again):
up to ``capacity`` spares, spread over the environments it was told to stock, newest first. Once it
runs a game it builds only what a game opening there needs and does not find ready, and one spare
after an opening while it has room for more games (what the next opening would otherwise build on
the participant's Start).

Stocking builds run at the lowest CPU priority (``build_ahead``): on a busy machine they must not
take CPU from the games running in other processes, and in an empty process nothing waits on
them. A build for an opening, or after one, runs at normal priority: a game of this process
waits on its interpreter lock.

Ray-free: the build functions, and whether the process runs games and has room, are parameters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from crowdplay.environments import EnvAdapter, EnvSpec, get_env

log = logging.getLogger(__name__)


class SpareEnvs:
    """The process's spare environments by environment id (each a build under way or done)."""

    def __init__(
        self,
        build: Callable[[EnvSpec], Awaitable[EnvAdapter]],
        build_ahead: Callable[[EnvSpec], Awaitable[EnvAdapter]],
        capacity: int,
        running: Callable[[], bool],
        room: Callable[[], bool],
    ) -> None:
        """``build(spec)``: one environment, now; ``build_ahead(spec)``: one at the lowest
        priority; ``capacity``: spares stocked while empty; ``running()``: the process runs a game
        (stocking pauses); ``room()``: it may take another game."""
        self._build = build
        self._build_ahead = build_ahead
        self.capacity = capacity
        self._running = running
        self._room = room
        self.spares: dict[str, list[asyncio.Task[EnvAdapter]]] = {}
        #: what to stock, newest first (``stock``)
        self.stocked: list[str] = []
        self._stocking: asyncio.Task[None] | None = None

    def count(self) -> int:
        """Spares built or being built."""
        return sum(len(tasks) for tasks in self.spares.values())

    def stock(self, env_ids: list[str]) -> None:
        """Keep spares of ``env_ids`` (oldest first, as the launcher lists recent games) while empty."""
        self.stocked = list(reversed(env_ids))
        self.restock()

    def restock(self) -> None:
        """Build towards ``capacity`` in the background, unless games run here or it is under way."""
        if self._stocking is None or self._stocking.done():
            self._stocking = asyncio.get_running_loop().create_task(self._fill())

    async def _fill(self) -> None:
        while self.stocked and not self._running() and self.count() < self.capacity:
            env_id = min(self.stocked, key=lambda candidate: len(self.spares.get(candidate, [])))  # ties: the newest
            task = self._start(env_id, self._build_ahead)
            await asyncio.wait([task])
            if task.cancelled() or task.exception() is not None:  # read here; an opening builds it anew and reports it
                self._discard(env_id, task)
                self.stocked.remove(env_id)
                log.warning("stopped keeping spares of %s: building one failed", env_id)

    def _start(self, env_id: str, build: Callable[[EnvSpec], Awaitable[EnvAdapter]]) -> asyncio.Task[EnvAdapter]:
        task = asyncio.get_running_loop().create_task(_built(build, get_env(env_id)))
        self.spares.setdefault(env_id, []).append(task)
        return task

    def _discard(self, env_id: str, task: asyncio.Task[EnvAdapter]) -> None:
        tasks = self.spares.get(env_id, [])
        if task in tasks:
            tasks.remove(task)
        if not tasks:
            self.spares.pop(env_id, None)

    async def take(self, spec: EnvSpec) -> EnvAdapter:
        """An environment for a game opening now: the oldest spare (waiting for it if still being
        built), else one built now; then one spare of it again while the process has room."""
        tasks = self.spares.get(spec.id)
        if tasks:
            task = tasks.pop(0)
            if not tasks:
                del self.spares[spec.id]
            adapter = await task
        else:
            adapter = await self._build(spec)
        if spec.id not in self.spares and self._room():
            self._start(spec.id, self._build)
        return adapter


async def _built(build: Callable[[EnvSpec], Awaitable[EnvAdapter]], spec: EnvSpec) -> EnvAdapter:
    """``build(spec)`` as a coroutine (a task needs one; the build functions return awaitables)."""
    return await build(spec)
