"""The warm pool and placement rules of ``HostPool``, on fake processes and a fake clock."""

from __future__ import annotations

import asyncio
import logging

import pytest

from crowdplay.background import Background
from crowdplay.hosts import HostPool, NoCapacity, PoolLimits
from tests.unit.fakes import FakeClock, FakeLauncher


def pool_of(launcher: FakeLauncher, clock: FakeClock | None = None, **limits: float) -> HostPool:
    settings = {"warm_size": 2, "games_per_host": 2, "games_per_life": 0, "linger_s": 0.0, **limits}
    clock = clock or FakeClock()
    return HostPool(launcher, PoolLimits(**settings), Background(logging.getLogger("test")), clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_the_warm_pool_is_filled_and_refilled_when_a_game_takes_a_host():
    async def scenario():
        pool = pool_of(FakeLauncher(["a"]))
        pool.refill()
        await settle()
        assert len(pool.spare()) == 2
        await pool.place("g1")
        await settle()
        return len(pool.spare()), len(pool.hosts)

    assert asyncio.run(scenario()) == (2, 3)


def test_games_spread_over_nodes_and_fill_a_process_before_the_next_on_a_node():
    async def scenario():
        pool = pool_of(FakeLauncher(["a", "b"]), warm_size=2, games_per_host=3)
        pool.refill()
        await settle()
        placed = [await pool.place(f"g{n}") for n in range(4)]
        return [host.node_id for host in placed], len({id(host) for host in placed})

    nodes, processes = asyncio.run(scenario())
    assert sorted(nodes) == ["a", "a", "b", "b"]  # the least-loaded node each time
    assert processes == 2  # one process per node, filled before another opens


def test_a_placement_waits_for_a_boot_and_fails_with_its_reason():
    async def scenario():
        pool = pool_of(FakeLauncher(["a"], capacity=1), warm_size=0, games_per_host=1)
        first = await pool.place("g1")
        with pytest.raises(NoCapacity):
            await pool.place("g2")
        return first

    assert asyncio.run(scenario()).games == {"g1"}


def test_a_host_that_had_its_lifes_games_retires_once_empty():
    async def scenario():
        launcher = FakeLauncher(["a"])
        pool = pool_of(launcher, warm_size=0, games_per_host=2, games_per_life=2)
        host = await pool.place("g1")
        assert await pool.place("g2") is host
        assert await pool.place("g3") is not host  # worn out: a new process takes the third game
        pool.release(host, "g1")
        assert host in pool.hosts
        pool.release(host, "g2")
        await settle()
        return host in pool.hosts, launcher.retired

    still_there, retired = asyncio.run(scenario())
    assert not still_there and len(retired) == 1


def test_an_emptied_host_beyond_the_warm_pool_lingers_then_retires_unless_a_game_came():
    async def scenario():
        clock = FakeClock()
        launcher = FakeLauncher(["a"])
        pool = pool_of(launcher, clock, warm_size=1, games_per_host=1, linger_s=30.0)
        pool.refill()
        await settle()
        first, second = await pool.place("g1"), await pool.place("g2")
        await settle()
        pool.release(first, "g1")  # spare: two empty, the pool keeps one
        assert first in pool.hosts and first.lingering is not None
        await first.lingering
        return clock.now, first in pool.hosts, launcher.retired, second in pool.hosts

    now, kept, retired, second_kept = asyncio.run(scenario())
    assert now == pytest.approx(30.0) and not kept and len(retired) == 1 and second_kept


def test_a_dead_host_is_forgotten_and_replaced():
    async def scenario():
        pool = pool_of(FakeLauncher(["a"]), warm_size=1)
        pool.refill()
        await settle()
        host = pool.hosts[0]
        pool.forget(host)
        await settle()
        return host in pool.hosts, len(pool.spare())

    assert asyncio.run(scenario()) == (False, 1)
