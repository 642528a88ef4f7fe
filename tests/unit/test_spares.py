"""Spare environments (``crowdplay.spares``): built while the process runs no game, taken at once
when a game opens, never built behind a running game's back except for an opening."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crowdplay.environments import EnvSpec, register_env
from crowdplay.spares import SpareEnvs

OLD = register_env(EnvSpec(id="UnitSpareOld", title="Old", description="An older game.", make_env=lambda: None))
NEW = register_env(EnvSpec(id="UnitSpareNew", title="New", description="The newest game.", make_env=lambda: None))
BROKEN = register_env(EnvSpec(id="UnitSpareBroken", title="Broken", description="Cannot be built.", make_env=lambda: None))


class Process:
    """What the spares see of their process: builds (counted, each a few loop turns), its games."""

    def __init__(self, capacity: int, room: int = 10) -> None:
        self.built: list[str] = []
        self.games = 0
        self.room = room
        self.ahead: list[str] = []
        self.spares = SpareEnvs(self.build, self.build_ahead, capacity, running=lambda: self.games > 0, room=lambda: self.games + 1 < self.room)

    async def build_ahead(self, spec: EnvSpec) -> Any:
        self.ahead.append(spec.id)
        return await self.build(spec)

    async def build(self, spec: EnvSpec) -> Any:
        for _ in range(3):
            await asyncio.sleep(0)
        if spec.id == BROKEN.id:
            raise RuntimeError("no ROM")
        self.built.append(spec.id)
        return f"{spec.id}-{len(self.built)}"


async def settle() -> None:
    for _ in range(100):
        await asyncio.sleep(0)


def test_an_empty_process_stocks_its_capacity_spread_over_the_recent_games_newest_first():
    async def scenario():
        process = Process(capacity=5)
        process.spares.stock([OLD.id, NEW.id])
        await settle()
        return process

    process = asyncio.run(scenario())
    assert process.built == [NEW.id, OLD.id, NEW.id, OLD.id, NEW.id]
    assert process.ahead == process.built  # all at the lowest priority: nothing here waits on them
    assert process.spares.count() == 5


def test_an_opening_takes_a_ready_spare_and_a_running_process_builds_only_one_back():
    async def scenario():
        process = Process(capacity=2)
        process.spares.stock([NEW.id])
        await settle()
        built_before = len(process.built)
        adapter = await process.spares.take(NEW)
        process.games = 1
        await settle()
        return process, adapter, built_before

    process, adapter, built_before = asyncio.run(scenario())
    assert adapter == f"{NEW.id}-1" and built_before == 2
    assert process.spares.count() == 1 and len(process.built) == 2  # one left: none built while a game runs


def test_an_opening_without_a_spare_builds_its_own_and_one_spare_only_while_there_is_room():
    async def scenario():
        roomy, full = Process(capacity=0), Process(capacity=0, room=1)
        first = await roomy.spares.take(OLD)
        await settle()
        await full.spares.take(OLD)
        await settle()
        return roomy, full, first

    roomy, full, first = asyncio.run(scenario())
    assert first == f"{OLD.id}-1" and roomy.built == [OLD.id, OLD.id] and roomy.spares.count() == 1
    assert roomy.ahead == []  # the process runs a game now: its builds hold the interpreter lock it waits on
    assert full.built == [OLD.id] and full.spares.count() == 0  # its last slot: a spare would never be used


def test_stocking_pauses_once_a_game_runs_and_resumes_when_the_process_is_empty_again():
    async def scenario():
        process = Process(capacity=4)
        process.games = 1
        process.spares.stock([OLD.id])
        await settle()
        while_running = len(process.built)
        process.games = 0
        process.spares.restock()
        await settle()
        return while_running, process

    while_running, process = asyncio.run(scenario())
    assert while_running == 0 and process.spares.count() == 4


def test_a_game_that_cannot_be_built_is_no_longer_stocked_and_its_opening_gets_the_error():
    async def scenario():
        process = Process(capacity=3)
        process.spares.stock([BROKEN.id, OLD.id])
        await settle()
        with pytest.raises(RuntimeError, match="no ROM"):
            await process.spares.take(BROKEN)
        return process

    process = asyncio.run(scenario())
    assert process.spares.stocked == [OLD.id] and process.built == [OLD.id] * 3


def test_a_studys_tasks_are_stocked_before_anyone_starts_one_its_first_task_most():
    from crowdplay.config import Settings
    from crowdplay.env_actor_client import RECENT_ENVS, EnvActorLauncher

    launcher = EnvActorLauncher(Settings())
    tasks = [f"task-{index}" for index in range(RECENT_ENVS + 2)]
    launcher.expect(tasks)
    assert list(launcher.recent_envs) == list(reversed(tasks[:RECENT_ENVS]))  # newest last: the first task
    assert launcher.started("task-1") is False and launcher.recent_envs[-1] == "task-1"
    assert launcher.started("other") is True
