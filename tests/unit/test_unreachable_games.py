"""A game whose machine stopped answering (``GameControl.channel_stalled``), over fake processes:
its node takes no new game at once, and the game ends exactly once, stored as
``server_unreachable``: stopped there when the node answers again, or marked in the store when its
process is declared dead; its slot is given back once, and its session is told why."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from crowdplay.assignments import SessionLost
from crowdplay.background import Background
from crowdplay.controllers import Human
from crowdplay.environments import EnvSpec, register_env
from crowdplay.game_control import SERVER_UNREACHABLE, GameControl
from crowdplay.hosts import HostPool, PoolLimits
from crowdplay.matchmaking import Matchmaker
from crowdplay.problem_reports import ProblemReports
from crowdplay.session_table import SessionTable
from crowdplay.vocabulary import GameEvent
from tests.unit.fakes import FakeGameHosts, FakeLauncher

SOLO = register_env(EnvSpec(id="UnitUnreachableSolo", title="Solo", description="One seat.", make_env=lambda: None, agents=("agent_0",)))


class Parts:
    def __init__(self) -> None:
        background = Background(logging.getLogger("test"))
        self.hosts = FakeGameHosts(["agent_0"])
        self.table = SessionTable()
        self.pool = HostPool(FakeLauncher(["a", "b"]), PoolLimits(2, 4, 0, 0.0), background, on_added=lambda host: self.games.watch_host(host))
        self.marked: list[tuple[str, str, str]] = []
        self.games = GameControl(self.table, self.pool, self.hosts, background, lambda env_id: self.matchmaker.new_game(env_id), self.mark, probe_interval_s=0.01)
        self.matchmaker = Matchmaker(self.table, self.pool, self.hosts, ProblemReports(), self.games.host_lost)

    async def mark(self, game_id: str, reason: str, status: str) -> None:
        self.marked.append((game_id, reason, status))

    async def seat(self, session_id: str) -> Any:
        return await self.matchmaker.seat(SOLO, session_id, Human(), {"participant": f"p-{session_id}"})


async def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def stalled_game(parts: Parts) -> Any:
    parts.pool.refill()
    await settle()
    entry = await parts.seat("s1")
    parts.hosts.silent = True
    parts.games.channel_stalled("s1")
    parts.games.channel_stalled("s1")  # the second replica's report changes nothing
    return entry


def test_a_silent_node_takes_no_game_and_its_game_is_stopped_once_as_server_unreachable_when_it_answers():
    async def scenario():
        parts = Parts()
        entry = await stalled_game(parts)
        host = entry.game.host
        newcomer = await parts.seat("s2")
        await asyncio.sleep(0.1)  # probes go unanswered
        still_suspect = host.node_id in parts.pool.suspect_nodes
        slot_kept = entry.game.game_id in host.games
        parts.hosts.silent = False
        await asyncio.sleep(0.1)
        again = await parts.seat("s3")
        return parts, entry, host, newcomer, still_suspect, slot_kept, again

    parts, entry, host, newcomer, still_suspect, slot_kept, again = asyncio.run(scenario())
    game_id = entry.game.game_id
    assert newcomer.game.host.node_id != host.node_id  # placed elsewhere at once
    assert still_suspect and slot_kept
    with pytest.raises(SessionLost, match="stopped answering"):
        parts.table.check("s1", entry.token)
    assert parts.hosts.stopped == [(game_id, SERVER_UNREACHABLE)] and parts.hosts.stop_statuses[game_id] == "server_unreachable"
    assert game_id not in host.games and host.node_id not in parts.pool.suspect_nodes
    assert parts.marked == []  # ended in its process, which stores the status itself
    assert again.game.host.node_id in {"a", "b"}


def test_a_silent_node_declared_dead_marks_its_lost_game_server_unreachable_once():
    async def scenario():
        parts = Parts()
        entry = await stalled_game(parts)
        host = entry.game.host
        parts.hosts.kill(host.actor)
        await settle(50)
        await asyncio.sleep(0.05)
        return parts, entry, host

    parts, entry, host = asyncio.run(scenario())
    assert parts.marked == [(entry.game.game_id, SERVER_UNREACHABLE, "server_unreachable")]
    assert parts.hosts.stopped == [] and host not in parts.pool.hosts
    assert not parts.games.unreachable


def test_a_lost_game_that_ends_in_its_process_gives_its_slot_back_once_and_is_not_stopped_again():
    async def scenario():
        parts = Parts()
        entry = await stalled_game(parts)
        host = entry.game.host
        parts.games.event(entry.game.game_id, {"event": GameEvent.ENDED, "reason": "you did not come back in time", "statistics": {}})
        parts.hosts.silent = False
        await asyncio.sleep(0.1)
        return parts, entry, host

    parts, entry, host = asyncio.run(scenario())
    assert entry.game.game_id not in host.games and parts.hosts.stopped == [] and parts.marked == []
    assert host.node_id not in parts.pool.suspect_nodes
