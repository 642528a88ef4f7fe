"""Seats, sessions, tokens and what games report, in the ``SessionTable`` and the ``Matchmaker``
over fake game processes (no Ray)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from crowdplay.assignments import ANONYMOUS, BadToken, SessionLost, UnknownSession
from crowdplay.background import Background
from crowdplay.controllers import Human
from crowdplay.environments import EnvSpec
from crowdplay.hosts import Host, HostPool, PoolLimits
from crowdplay.lineup import SeatUnavailable
from crowdplay.matchmaking import SEAT_ATTEMPTS, Matchmaker
from crowdplay.problem_reports import ProblemReports
from crowdplay.session_table import AI_PLAYED, SessionEntry, SessionTable, resume_secret
from tests.unit.fakes import FakeGameHosts, FakeLauncher

PAIR = EnvSpec(id="UnitPair", title="Pair", description="Two seats.", make_env=lambda: None, agents=("left", "right"))
UNDECLARED = EnvSpec(id="UnitUndeclared", title="Solo", description="Agents learnt when it opens.", make_env=lambda: None)


def matchmaker(humans: list[str], hosts: FakeGameHosts | None = None) -> tuple[Matchmaker, list]:
    table = SessionTable()
    pool = HostPool(FakeLauncher(["a"]), PoolLimits(1, 4, 0, 0.0), Background(logging.getLogger("test")))
    lost: list = []

    def host_lost(host) -> None:  # what the manager does: the pool forgets it (its games end)
        lost.append(host)
        pool.forget(host)

    return Matchmaker(table, pool, hosts or FakeGameHosts(humans), ProblemReports(), host_lost), lost


def details(who: str) -> dict:
    return {"participant": who}


def test_two_joins_share_a_game_and_a_third_opens_another():
    async def scenario():
        maker, _ = matchmaker(["left", "right"])
        entries = [await maker.seat(PAIR, f"s{n}", Human(), details(f"p{n}")) for n in range(3)]
        return [(e.game.game_id, e.agent) for e in entries]

    (g1, a1), (g2, a2), (g3, a3) = asyncio.run(scenario())
    assert g1 == g2 != g3 and {a1, a2} == {"left", "right"} and a3 == "left"


def test_concurrent_joins_never_take_the_same_seat():
    async def scenario():
        maker, _ = matchmaker(["left", "right"])
        entries = await asyncio.gather(*(maker.seat(PAIR, f"s{n}", Human(), details(f"p{n}")) for n in range(10)))
        return maker.table, entries

    table, entries = asyncio.run(scenario())
    seats = [(e.game.game_id, e.agent) for e in entries]
    assert len(set(seats)) == 10 and len(table.games) == 5


def test_an_undeclared_environments_agents_are_learnt_from_its_first_game():
    async def scenario():
        maker, _ = matchmaker(["solo"])
        first = await maker.seat(UNDECLARED, "s1", Human(), details("p1"))
        second = await maker.seat(UNDECLARED, "s2", Human(), details("p2"))
        return first, second

    first, second = asyncio.run(scenario())
    assert first.agent == second.agent == "solo" and first.game is not second.game


def test_an_ai_only_game_is_watched_by_its_joiner():
    async def scenario():
        maker, _ = matchmaker([])
        return await maker.seat(UNDECLARED, "s1", Human(), details("p1"))

    entry = asyncio.run(scenario())
    assert entry.agent == "" and entry.answer()["watching"] and entry.game.watchers == {"s1"}


def test_a_seat_gone_on_the_way_is_freed_and_the_join_tries_another_game():
    async def scenario():
        hosts = FakeGameHosts(["left", "right"])
        hosts.seats_gone = 1
        maker, _ = matchmaker(["left", "right"], hosts)
        entry = await maker.seat(PAIR, "s1", Human(), details("p1"))
        first_game = next(g for g in maker.table.games.values() if g is not entry.game)
        return entry, first_game

    entry, first_game = asyncio.run(scenario())
    assert not first_game.joinable and first_game.seats == {"left": None, "right": None}
    assert entry.game is not first_game and entry.agent == "left"


def test_a_join_gives_up_after_its_seat_attempts():
    async def scenario():
        hosts = FakeGameHosts(["left"])
        hosts.seats_gone = SEAT_ATTEMPTS
        maker, _ = matchmaker(["left"], hosts)
        await maker.seat(PAIR, "s1", Human(), details("p1"))

    with pytest.raises(SeatUnavailable):
        asyncio.run(scenario())


def test_a_game_whose_process_died_opens_elsewhere():
    async def scenario():
        hosts = FakeGameHosts(["left", "right"])
        hosts.dead = {"process-1"}
        maker, lost = matchmaker(["left", "right"], hosts)
        entry = await maker.seat(PAIR, "s1", Human(), details("p1"))
        return entry, lost

    entry, lost = asyncio.run(scenario())
    assert entry.game.host.actor != "process-1" and [host.actor for host in lost] == ["process-1"]


def test_events_close_the_game_release_seats_to_ai_or_reopen_them_and_end_it():
    async def scenario():
        maker, _ = matchmaker(["left", "right"])
        first = await maker.seat(PAIR, "s1", Human(), details("p1"))
        second = await maker.seat(PAIR, "s2", Human(), details("p2"))
        return maker.table, first, second

    table, first, second = asyncio.run(scenario())
    game = first.game
    assert table.apply_event(game.game_id, {"event": "closed"}) == {} and not game.joinable
    departed = table.apply_event(game.game_id, {"event": "seat_released", "agent": first.agent, "session_id": "s1", "reopened": False, "statistics": {"episodes": 2}})
    assert departed == {"s1": {"episodes": 2}} and game.seats[first.agent] == AI_PLAYED and "s1" not in table.sessions
    assert game.seat_states() == {first.agent: "ai", second.agent: "taken"}
    assert table.apply_event(game.game_id, {"event": "ended", "statistics": {"s2": {"episodes": 3}}}) == {"s2": {"episodes": 3}}
    assert game.game_id not in table.games and not table.sessions


def test_tokens_are_checked_and_a_lost_games_sessions_are_told_why():
    table = SessionTable()
    async def scenario():
        maker, _ = matchmaker(["left"])
        return await maker.seat(PAIR, "s1", Human(), details("p1")), maker.table

    entry, table = asyncio.run(scenario())
    assert table.check("s1", entry.token) is entry
    with pytest.raises(BadToken):
        table.check("s1", "not-the-token")
    with pytest.raises(UnknownSession):
        table.check("nobody", entry.token)
    table.lose(entry.game.game_id, "the game server stopped")
    with pytest.raises(SessionLost, match="stopped"):
        table.check("s1", entry.token)
    with pytest.raises(UnknownSession):
        table.check("s1", "a-guess")  # only the session's own token learns why


def test_a_second_tab_finds_its_session_only_with_the_resume_secret():
    async def scenario():
        maker, _ = matchmaker(["left", "right"])
        return await maker.seat(PAIR, "s1", Human(), details("pseudonym-1")), maker.table

    entry, table = asyncio.run(scenario())
    key = b"k" * 32
    assert table.resumable("pseudonym-1", "UnitPair", key, resume_secret(key, "s1")) is entry
    assert table.resumable("pseudonym-1", "UnitPair", key, "guess") is None
    assert table.resumable("pseudonym-2", "UnitPair", key, resume_secret(key, "s1")) is None
    assert table.resumable("pseudonym-1", "UnitPair", key, None) is None


def test_unconnected_sessions_are_counted_since_a_time():
    table = SessionTable()
    game = table.new_game("UnitPair", {"left": None}, lambda g: asyncio.get_event_loop_policy().new_event_loop().create_future())
    table.add(SessionEntry("s1", "t", game, "left", "p", created_at=100.0))
    table.add(SessionEntry("s2", "t", game, "left", "p", created_at=200.0, connected=True))
    assert table.unconnected_since(50.0) == 1 and table.unconnected_since(150.0) == 0


def test_a_restarted_manager_adopts_games_with_their_ai_seats_and_sessions():
    state = {
        "games": {"g1": {
            "env_id": "UnitPair", "phase": "playing", "seats": {"left": "s1", "right": None}, "ai_seats": ["right"],
            "info": {"humans": ["left", "right"]}, "channel": {"port": 1},
        }},
        "sessions": {"s1": {"game_id": "g1", "agent": "left", "token": "t1", "participant": None}, "s9": {"game_id": "gone", "agent": "left", "token": "t", "participant": None}},
    }

    async def scenario():
        table = SessionTable()
        return table, list(table.adopt(Host("process-1", "a"), state))

    table, adopted = asyncio.run(scenario())
    game = table.games["g1"]
    assert game.seats == {"left": "s1", "right": AI_PLAYED} and game.seated() == [("left", "s1")] and not game.joinable
    assert game.seat_listing() == {"left": "s1", "right": "ai"} and game.seat_states() == {"left": "taken", "right": "ai"}
    assert [entry.session_id for entry in adopted] == ["s1"] and adopted[0].participant == f"{ANONYMOUS}s1"
    assert table.connect("s1", "t1") == ("left", {"humans": ["left", "right"]}, {"port": 1}) and table.sessions["s1"].connected
