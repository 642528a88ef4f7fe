"""Spare environments (``crowdplay.spares``): built while the process runs no game, taken at once
when a game opens, never built behind a running game's back; what was built and opened reported."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crowdplay.environments import EnvSpec, register_env
from crowdplay.spares import Built, SpareEnvs, WouldStall

OLD = register_env(EnvSpec(id="UnitSpareOld", title="Old", description="An older game.", make_env=lambda: None))
NEW = register_env(EnvSpec(id="UnitSpareNew", title="New", description="The newest game.", make_env=lambda: None))
BROKEN = register_env(EnvSpec(id="UnitSpareBroken", title="Broken", description="Cannot be built.", make_env=lambda: None))


class Process:
    """What the spares see of their process: builds (counted, each a few loop turns, 0.09 s of CPU),
    its games, and the reports it would send the EnvsManager."""

    def __init__(self, capacity: int) -> None:
        self.built: list[str] = []
        self.games = 0
        self.playing = False
        self.ahead: list[str] = []
        self.reports: list[dict[str, Any]] = []
        self.spares = SpareEnvs(
            self.build, self.build_ahead, capacity, running=lambda: self.games > 0, playing=lambda: self.playing,
            on_change=lambda: self.reports.append(self.spares.report()),
        )

    async def build_ahead(self, spec: EnvSpec) -> Built:
        self.ahead.append(spec.id)
        return await self.build(spec)

    async def build(self, spec: EnvSpec) -> Built:
        for _ in range(3):
            await asyncio.sleep(0)
        if spec.id == BROKEN.id:
            raise RuntimeError("no ROM")
        self.built.append(spec.id)
        return Built(f"{spec.id}-{len(self.built)}", 0.09)  # type: ignore[arg-type]  # a stand-in for an EnvAdapter


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
    assert process.reports[-1] == {"built": {NEW.id: 3, OLD.id: 2}, "opened": {}, "build_cpu_s": {NEW.id: 0.09, OLD.id: 0.09}, "built_behind_play": 0}


def test_an_opening_takes_a_ready_spare_and_a_running_process_builds_nothing_more():
    async def scenario():
        process = Process(capacity=2)
        process.spares.stock([NEW.id])
        await settle()
        built_before = len(process.built)
        adapter = await process.spares.take(NEW)
        process.games = 1
        process.spares.restock()
        await settle()
        return process, adapter, built_before

    process, adapter, built_before = asyncio.run(scenario())
    assert adapter == f"{NEW.id}-1" and built_before == 2
    assert process.spares.count() == 1 and len(process.built) == 2  # one left: none built while a game runs
    assert process.reports[-1]["built"] == {NEW.id: 2} and process.reports[-1]["opened"] == {NEW.id: 1}  # one spare, as the manager counts


def test_an_opening_without_a_spare_builds_its_own_and_no_spare_after_it():
    async def scenario():
        process = Process(capacity=0)
        first = await process.spares.take(OLD)
        await settle()
        return process, first

    process, first = asyncio.run(scenario())
    assert first == f"{OLD.id}-1" and process.built == [OLD.id] and process.spares.count() == 0
    assert process.ahead == []  # its participant waits on it: normal priority
    assert process.reports[-1] == {"built": {OLD.id: 1}, "opened": {OLD.id: 1}, "build_cpu_s": {OLD.id: 0.09}, "built_behind_play": 0}


def test_a_process_where_a_game_plays_refuses_to_build_for_an_opening_but_hands_over_its_spares():
    async def scenario():
        process = Process(capacity=1)
        process.spares.stock([NEW.id])
        await settle()
        process.games, process.playing = 1, True
        spare = await process.spares.take(NEW)
        with pytest.raises(WouldStall):
            await process.spares.take(NEW)
        with pytest.raises(WouldStall):
            await process.spares.take(OLD)  # never built here: its cost is unknown
        return process, spare

    process, spare = asyncio.run(scenario())
    assert spare == f"{NEW.id}-1" and process.built == [NEW.id]


def test_an_opening_the_manager_could_place_nowhere_else_is_built_behind_play_and_counted():
    async def scenario():
        process = Process(capacity=0)
        process.games, process.playing = 1, True
        built = await process.spares.take(NEW, behind_play=True)
        return process, built

    process, built = asyncio.run(scenario())
    assert built == f"{NEW.id}-1" and process.spares.built_behind_play == 1
    assert process.reports[-1]["built_behind_play"] == 1


def test_a_harmless_build_is_made_even_while_a_game_plays():
    async def scenario():
        process = Process(capacity=0)
        await process.spares.take(OLD)
        process.games, process.playing = 1, True
        process.spares.build_cpu_s[OLD.id] = 0.0004
        return await process.spares.take(OLD)

    assert asyncio.run(scenario()) == f"{OLD.id}-2"


def test_games_opened_together_are_settled_only_after_the_last_build_of_the_batch():
    async def scenario():
        process = Process(capacity=0)
        settled_at: list[int] = []

        async def open_one(spec: EnvSpec) -> None:
            await process.spares.take(spec)
            await process.spares.settled()
            settled_at.append(len(process.built))

        await asyncio.gather(open_one(OLD), open_one(NEW), open_one(OLD))
        return settled_at

    assert asyncio.run(scenario()) == [3, 3, 3]  # none started while another build held the process


def test_an_opening_pauses_stocking_until_it_is_done():
    async def scenario():
        process = Process(capacity=4)
        opening = asyncio.ensure_future(process.spares.take(OLD))
        await asyncio.sleep(0)
        process.spares.stock([NEW.id])
        await opening
        process.games = 1  # the opened game plays
        await settle()
        return process

    process = asyncio.run(scenario())
    assert process.built == [OLD.id] and process.spares.count() == 0


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
    assert process.reports[-1]["opened"] == {} and BROKEN.id not in process.reports[-1]["built"]


def test_a_studys_tasks_are_stocked_before_anyone_starts_one_its_first_task_most():
    from crowdplay.config import Settings
    from crowdplay.env_actor_client import RECENT_ENVS, EnvActorLauncher

    launcher = EnvActorLauncher(Settings())
    tasks = [f"task-{index}" for index in range(RECENT_ENVS + 2)]
    launcher.expect(tasks)
    assert list(launcher.recent_envs) == list(reversed(tasks[:RECENT_ENVS]))  # newest last: the first task
    assert launcher.started("task-1") is False and launcher.recent_envs[-1] == "task-1"
    assert launcher.started("other") is True
