"""Fake hosts and a fake clock for the manager's Ray-free parts."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

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

    async def boot(self) -> Host:
        await asyncio.sleep(0)
        if self.booted >= self.capacity:
            raise NoCapacity("no node had room for a game server")
        self.booted += 1
        return Host(actor=f"process-{self.booted}", node_id=next(self._nodes))

    async def retire(self, host: Host) -> None:
        self.retired.append(host)


class FakeGameHosts:
    """Game processes that open any game with the agents given, and can be told to fail."""

    def __init__(self, humans: list[str]) -> None:
        self.humans = humans
        self.seated: list[tuple[str, str, str]] = []
        self.dead: set[str] = set()
        self.seats_gone = 0

    async def open_game(self, host: Host, game_id: str, env_id: str, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        await asyncio.sleep(0)
        if host.actor in self.dead:
            raise HostDied(f"{host.actor} died")
        return {"humans": list(self.humans), "env_id": env_id}, {"host": "127.0.0.1", "port": 1}

    async def take_seat(self, host: Host, game: Game, agent: str, session_id: str, controller: dict, details: dict, token: str) -> None:
        await asyncio.sleep(0)
        if host.actor in self.dead:
            raise HostDied(f"{host.actor} died")
        if self.seats_gone:
            self.seats_gone -= 1
            raise SeatGone("the game began")
        self.seated.append((game.game_id, agent, session_id))
