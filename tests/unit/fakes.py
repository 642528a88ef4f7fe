"""Fake hosts and a fake clock for the manager's Ray-free parts."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from crowdplay.controllers import Controller
from crowdplay.hosts import Host, NoCapacity
from crowdplay.matchmaking import HostDied, SeatGone
from crowdplay.session_table import Game


class FakeClock:
    """Monotonic time that moves only when a sleep moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class FakeLauncher:
    """Boots hosts on the nodes named in turn; ``capacity`` processes at most (then NoCapacity)."""

    def __init__(self, nodes: list[str], capacity: int = 100) -> None:
        self._nodes = itertools.cycle(nodes)
        self.capacity = capacity
        self.booted = 0
        self.retired: list[Host] = []
        #: set: boots wait until it is (a process slow to start)
        self.gate: asyncio.Event | None = None

    async def boot(self) -> Host:
        await asyncio.sleep(0)
        if self.gate is not None:
            await self.gate.wait()
        if self.booted >= self.capacity:
            raise NoCapacity("no node had room for a game server")
        self.booted += 1
        return Host(actor=f"process-{self.booted}", node_id=next(self._nodes))

    async def retire(self, host: Host) -> None:
        self.retired.append(host)


class FakeGameHosts:
    """Game processes (``HostCalls``) that open any game with the agents given, can be told to
    fail or die, and note every call made to them."""

    def __init__(self, humans: list[str]) -> None:
        self.humans = humans
        self.seated: list[tuple[str, str, str]] = []
        self.dead: set[str] = set()
        self.seats_gone = 0
        self.tokens: dict[str, str] = {}
        self.unwatched: list[str] = []
        self.stopped: list[tuple[str, str]] = []
        self.asked: list[tuple[str, bool]] = []
        self.drained: list[Any] = []
        self.died = asyncio.Event()
        self.stop_statuses: dict[str, str] = {}
        #: every machine's frame channel stays silent to probes (a partition)
        self.silent = False
        self.withdrawn: list[str] = []
        #: games opened with leave to build behind games playing in their process
        self.behind_play: list[str] = []
        #: every game whose environment was built (or taken from spares)
        self.opened: list[str] = []

    async def open_game(self, host: Host, game_id: str, env_id: str, seed: int, behind_play: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        await asyncio.sleep(0)
        self.opened.append(game_id)
        if behind_play:
            self.behind_play.append(game_id)
        if host.actor in self.dead:
            raise HostDied(f"{host.actor} died")
        return {"humans": list(self.humans), "env_id": env_id}, {"host": "127.0.0.1", "port": 1}

    async def take_seat(self, host: Host, game: Game, agent: str, session_id: str, controller: Controller, details: dict, token: str) -> None:
        await asyncio.sleep(0)
        if host.actor in self.dead:
            raise HostDied(f"{host.actor} died")
        if self.seats_gone:
            self.seats_gone -= 1
            raise SeatGone("the game began")
        self.seated.append((game.game_id, agent, session_id))

    def retoken(self, host: Host, session_id: str, token: str) -> None:
        self.tokens[session_id] = token

    async def begin_unwatched(self, host: Host, game_id: str) -> None:
        self.unwatched.append(game_id)

    async def stop(self, host: Host, game_id: str, reason: str, status: str = "interrupted") -> None:
        await asyncio.sleep(0)
        if host.actor in self.dead:
            raise HostDied(f"{host.actor} died")
        self.stopped.append((game_id, reason))
        self.stop_statuses[game_id] = status

    async def channel_answers(self, channel: dict[str, Any]) -> bool:
        await asyncio.sleep(0)
        return not self.silent

    async def participant_statistics(self, host: Host, game_id: str, session_id: str, finish: bool) -> dict[str, Any]:
        self.asked.append((session_id, finish))
        return {"values": {"score": 1.0}}

    async def withdraw(self, host: Host, game_id: str, session_id: str) -> bool:
        await asyncio.sleep(0)
        self.withdrawn.append(session_id)
        return True

    async def drain(self, host: Host, timeout_s: float) -> bool:
        self.drained.append(host.actor)
        return True

    async def until_dead(self, host: Host) -> bool:
        while host.actor not in self.dead:
            await self.died.wait()
            self.died.clear()
        return True

    def kill(self, actor: str) -> None:
        """The process dies now: its watchers hear of it."""
        self.dead.add(actor)
        self.died.set()
