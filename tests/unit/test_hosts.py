"""The warm pool and placement rules of ``HostPool``, on fake processes and a fake clock."""

from __future__ import annotations

import asyncio
import logging

import pytest

from crowdplay.background import Background
from crowdplay.hosts import BOOT_WAIT_MAX_S, REFILL_QUIET_S, HostPool, NoCapacity, PoolLimits
from tests.unit.fakes import FakeClock, FakeLauncher


def pool_of(launcher: FakeLauncher, clock: FakeClock | None = None, **limits: float) -> HostPool:
    settings = {"warm_size": 2, "games_per_host": 2, "games_per_life": 0, "linger_s": 0.0, **limits}
    clock = clock or FakeClock()
    return HostPool(launcher, PoolLimits(**settings), Background(logging.getLogger("test")), clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_the_warm_pool_is_refilled_only_once_no_game_has_been_placed_for_a_moment():
    async def scenario():
        clock = FakeClock()
        launcher = FakeLauncher(["a"])
        pool = pool_of(launcher, clock, warm_size=1, games_per_host=1)
        pool.refill()
        await settle()
        await pool.place("g1", "E")
        await asyncio.sleep(0)
        during = launcher.booted
        await settle()
        return during, launcher.booted, clock.now

    during, after, now = asyncio.run(scenario())
    assert during == 1 and after == 2 and now >= REFILL_QUIET_S


def test_the_warm_pool_is_filled_and_refilled_when_a_game_takes_a_host():
    async def scenario():
        pool = pool_of(FakeLauncher(["a"]))
        pool.refill()
        await settle()
        assert len(pool.spare()) == 2
        await pool.place("g1", "E")
        await settle()
        return len(pool.spare()), len(pool.hosts)

    assert asyncio.run(scenario()) == (2, 3)


def test_games_spread_over_nodes_and_fill_a_process_before_the_next_on_a_node():
    async def scenario():
        pool = pool_of(FakeLauncher(["a", "b"]), warm_size=2, games_per_host=3)
        pool.refill()
        await settle()
        placed = [await pool.place(f"g{n}", "E") for n in range(4)]
        return [host.node_id for host in placed], len({id(host) for host in placed})

    nodes, processes = asyncio.run(scenario())
    assert sorted(nodes) == ["a", "a", "b", "b"]  # the least-loaded node each time
    assert processes == 2  # one process per node, filled before another opens


def test_a_placement_waits_for_a_boot_and_fails_with_its_reason():
    async def scenario():
        pool = pool_of(FakeLauncher(["a"], capacity=1), warm_size=0, games_per_host=1)
        first = await pool.place("g1", "E")
        with pytest.raises(NoCapacity):
            await pool.place("g2", "E")
        return first

    assert asyncio.run(scenario()).games == {"g1"}


def test_a_host_that_had_its_lifes_games_retires_once_empty():
    async def scenario():
        launcher = FakeLauncher(["a"])
        pool = pool_of(launcher, warm_size=0, games_per_host=2, games_per_life=2)
        host = await pool.place("g1", "E")
        assert await pool.place("g2", "E") is host
        assert await pool.place("g3", "E") is not host  # worn out: a new process takes the third game
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
        first, second = await pool.place("g1", "E"), await pool.place("g2", "E")
        await settle()
        pool.release(first, "g1")  # spare: two empty, the pool keeps one
        emptied_at = clock.now
        assert first in pool.hosts and first.lingering is not None
        await first.lingering
        return clock.now - emptied_at, first in pool.hosts, launcher.retired, second in pool.hosts

    lingered, kept, retired, second_kept = asyncio.run(scenario())
    assert lingered == pytest.approx(30.0) and not kept and len(retired) == 1 and second_kept


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


# ----------------------------------------------------------------- builds never behind playing games
def report(built: int, opened: int = 0, cpu_s: float = 0.09, built_behind_play: int = 0) -> dict:
    return {"built": {"E": built}, "opened": {"E": opened} if opened else {}, "build_cpu_s": {"E": cpu_s}, "built_behind_play": built_behind_play}


def test_a_process_whose_games_play_takes_a_game_only_from_its_spares_which_are_reserved_at_once():
    async def scenario():
        pool = pool_of(FakeLauncher(["a"]), warm_size=1, games_per_host=16)
        pool.refill()
        await settle()
        playing = await pool.place("g1", "E")
        pool.game_began(playing)  # g1 plays there now
        playing.key = "p1"
        pool.note_builds("p1", report(built=2, opened=1))  # g1's environment and one spare
        await settle()
        second = await pool.place("g2", "E")  # the spare
        third = await pool.place("g3", "E")  # none left: an empty process builds it
        return playing, second, third

    playing, second, third = asyncio.run(scenario())
    assert second is playing and third is not playing


def test_a_harmless_build_may_run_behind_playing_games():
    async def scenario():
        pool = pool_of(FakeLauncher(["a"]), warm_size=1, games_per_host=16)
        first = await pool.place("g1", "E")
        pool.game_began(first)
        first.key = "p1"
        pool.note_builds("p1", report(built=1, opened=1, cpu_s=0.0004))  # a classic-control game, say
        return first, await pool.place("g2", "E")

    first, second = asyncio.run(scenario())
    assert second is first


def test_a_process_whose_games_all_wait_for_their_participants_builds_for_any_of_them():
    async def scenario():
        launcher = FakeLauncher(["a"])
        pool = pool_of(launcher, warm_size=0, games_per_host=16)
        placed = await asyncio.gather(*(pool.place(f"g{n}", "E") for n in range(7)))
        return placed, launcher.booted

    placed, booted = asyncio.run(scenario())
    assert len({id(host) for host in placed}) == 1 and booted == 1


def test_a_host_that_refused_a_game_because_one_began_there_takes_no_more_to_build():
    async def scenario():
        pool = pool_of(FakeLauncher(["a"]), warm_size=0, games_per_host=16)
        host = await pool.place("g1", "E")
        await pool.place("g2", "E")
        pool.unplace(host, "g2", "E")  # g1 began before the pool heard: the process said no
        return host, await pool.place("g2", "E")

    host, second = asyncio.run(scenario())
    assert second is not host and host.games == {"g1"} and host.games_started == 1 and host.placed["E"] == 1


def test_a_placement_waiting_for_a_boot_takes_a_process_that_emptied_first():
    async def scenario():
        launcher = FakeLauncher(["a"], capacity=1)
        pool = pool_of(launcher, warm_size=0, games_per_host=4, linger_s=30.0)
        host = await pool.place("g1", "E")
        pool.game_began(host)
        launcher.capacity = 0  # the next boot fails, but not before the host empties
        waiting = asyncio.ensure_future(pool.place("g2", "E"))
        await asyncio.sleep(0)
        pool.release(host, "g1")
        return host, await waiting

    host, placed = asyncio.run(scenario())
    assert placed is host and host.games == {"g2"}


def test_when_no_process_can_boot_a_game_is_built_behind_playing_games_rather_than_refused(caplog):
    async def scenario():
        pool = pool_of(FakeLauncher(["a"], capacity=1), warm_size=0, games_per_host=4)
        host = await pool.place("g1", "E")
        pool.game_began(host)
        return pool, host, await pool.place("g2", "E")

    with caplog.at_level(logging.WARNING):
        pool, host, second = asyncio.run(scenario())
    assert second is host and "built behind games playing" in caplog.text
    assert pool.may_build_behind_play("g2") and not pool.may_build_behind_play("g1")
    assert pool.builds_behind_play == 0  # until the process says it built one
    host.key = "p1"
    pool.note_builds("p1", report(built=1, opened=2, built_behind_play=1))
    pool.note_builds("p1", report(built=1, opened=1, built_behind_play=0))  # sent earlier, arrived later
    assert pool.builds_behind_play == 1
    pool.release(host, "g2")
    assert not pool.may_build_behind_play("g2")


def test_reports_overtaken_by_newer_ones_change_nothing():
    async def scenario():
        pool = pool_of(FakeLauncher(["a"]), warm_size=1)
        pool.refill()
        await settle()
        host = pool.hosts[0]
        host.key = "p1"
        pool.note_builds("p1", report(built=5, opened=2))
        pool.note_builds("p1", report(built=3, opened=1))  # sent earlier, arrived later
        return host.spares_of("E")

    assert asyncio.run(scenario()) == 3


def test_a_spare_anywhere_is_taken_before_an_empty_process_builds():
    async def scenario():
        pool = pool_of(FakeLauncher(["a"]), warm_size=2, games_per_host=16)
        pool.refill()
        await settle()
        stocked, empty = pool.hosts
        stocked.key = "p1"
        pool.note_builds("p1", report(built=1))
        return stocked, await pool.place("g1", "E")

    stocked, placed = asyncio.run(scenario())
    assert placed is stocked  # the empty one would have built it, its stocking thread's lock held meanwhile


def test_under_a_steady_stream_of_starts_the_warm_pool_still_refills():
    async def scenario():
        clock = FakeClock()
        launcher = FakeLauncher(["a"])
        pool = pool_of(launcher, clock, warm_size=1, games_per_host=100)
        pool.refill()
        await settle()
        for n in range(10):  # a start every 0.25 s: never quiet for REFILL_QUIET_S
            await pool.place(f"g{n}", "E")
            await asyncio.sleep(0)
            clock.now += 0.25
        await settle()
        return launcher.booted

    assert asyncio.run(scenario()) >= 2


def test_a_game_waits_for_a_slow_boot_only_so_long_then_is_built_where_there_is_room(caplog):
    class SlowLauncher(FakeLauncher):
        async def boot(self):
            await asyncio.sleep(60)
            return await super().boot()

    async def scenario():
        launcher = FakeLauncher(["a"])
        pool = pool_of(launcher, warm_size=0, games_per_host=4)
        host = await pool.place("g1", "E")
        pool.game_began(host)
        pool.launcher = SlowLauncher(["a"])
        started = asyncio.get_running_loop().time()
        placed = await pool.place("g2", "E")
        return host, placed, asyncio.get_running_loop().time() - started

    with caplog.at_level(logging.WARNING):
        host, placed, waited = asyncio.run(scenario())
    assert placed is host and BOOT_WAIT_MAX_S <= waited < BOOT_WAIT_MAX_S + 1 and "in time" in caplog.text
