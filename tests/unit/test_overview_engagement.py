"""The dashboard overview's engagement: each live session's, as its game process answered (or as
its assignment last noted it), and the latest finished sessions' (no Ray)."""

from __future__ import annotations

import asyncio

from crowdplay.assignments import AssignmentBook
from crowdplay.engagement import ENGAGEMENT_VALUES, engagement
from crowdplay.hosts import Host
from crowdplay.overview import FINISHED_SESSIONS_SHOWN, build_overview, gather
from crowdplay.problem_reports import ProblemReports
from crowdplay.session_table import Game, SessionEntry, SessionTable
from crowdplay.study import current_study

ANSWERED = {"time_hidden": 12.5, "idle_time": 30.0, "pauses": 2, "time_unfocused": 4.0, "time_paused": 12.0, "time_slow_connection": 0.0}


class NoStore:
    """The book's store, never asked here: the overview reads only what the book holds."""

    async def save_assignment(self, document: dict) -> None:
        raise AssertionError("the overview saves nothing")

    async def assignments(self, query: dict, held) -> list:
        raise AssertionError("the overview reads no stored assignment")


def seated(table: SessionTable, book: AssignmentBook, host: Host, session_id: str) -> None:
    """A game of Space Invaders on ``host`` with ``session_id`` at its one seat, and its assignment."""
    game = Game(f"game-{session_id}", "SpaceInvaders", {"agent_0": session_id}, host=host, joinable=False)
    table.games[game.game_id] = game
    table.add(SessionEntry(session_id, "token", game, "agent_0", f"p-{session_id}"))
    book.open(session_id, "SpaceInvaders", f"p-{session_id}", {}, "token")


def overview_of(answers: dict[str, dict], book: AssignmentBook, table: SessionTable, hosts: list[Host]) -> dict:
    """The overview built as the manager builds it, each host answering ``engagement`` from
    ``answers`` by node id (a node missing from it times out) and nothing else."""

    async def ask(host: Host, method: str) -> dict:
        if method != "engagement" or host.node_id not in answers:
            raise TimeoutError(method)
        return answers[host.node_id]

    gathered = asyncio.run(gather(hosts, ask, None, ProblemReports()))
    return build_overview(current_study(), book, table, hosts, gathered, 1000.0)


def test_each_live_session_carries_its_engagement_answered_remembered_or_unknown() -> None:
    table, book = SessionTable(), AssignmentBook(NoStore())
    answering, silent = Host(None, "node-a"), Host(None, "node-b")
    seated(table, book, answering, "s-live")
    seated(table, book, silent, "s-remembered")
    seated(table, book, silent, "s-unknown")
    book.assignments["s-remembered"].statistics = {"values": {"time_played": 40.0, "active_time": 10.0, "idle_time": 30.0, "time_hidden": 3.0}}

    overview = overview_of({"node-a": {"s-live": ANSWERED}}, book, table, [answering, silent])
    shown = {session["session_id"]: session["engagement"] for game in overview["games"] for session in game["sessions"]}
    assert shown["s-live"] == ANSWERED
    assert shown["s-remembered"] == {**dict.fromkeys(ENGAGEMENT_VALUES, 0), "idle_time": 30.0, "time_hidden": 3.0}  # older statistics lack the rest
    assert shown["s-unknown"] is None  # neither answered nor noted: not shown as zeros
    assert overview["finished_sessions"] == []


def test_the_latest_finished_sessions_are_listed_newest_first_with_their_final_engagement() -> None:
    book = AssignmentBook(NoStore(), kept=None)
    for n in range(FINISHED_SESSIONS_SHOWN + 5):
        assignment = book.open(f"s-{n}", "SpaceInvaders", f"p-{n}", {}, "token")
        assignment.statistics = {"values": {"time_played": 60.0, "active_time": 50.0, **ANSWERED, "pauses": n}}
        assignment.finished_at = 100.0 + n
    book.open("s-playing", "SpaceInvaders", "p-playing", {}, "token")  # not finished: not listed

    rows = overview_of({}, book, SessionTable(), [])["finished_sessions"]
    assert len(rows) == FINISHED_SESSIONS_SHOWN and [row["session_id"] for row in rows[:2]] == [f"s-{FINISHED_SESSIONS_SHOWN + 4}", f"s-{FINISHED_SESSIONS_SHOWN + 3}"]
    assert "s-4" not in {row["session_id"] for row in rows}  # beyond the newest FINISHED_SESSIONS_SHOWN
    newest = rows[0]
    assert newest == {
        "session_id": newest["session_id"], "task_id": "SpaceInvaders", "participant": newest["participant"], "finished_at": 100.0 + FINISHED_SESSIONS_SHOWN + 4,
        "completed": False, "time_played": 60.0, "engagement": {**ANSWERED, "pauses": FINISHED_SESSIONS_SHOWN + 4},
    }


def test_a_completed_session_says_so_and_one_stored_before_engagement_reads_as_zero() -> None:
    book = AssignmentBook(NoStore())
    old = book.open("s-old", "SpaceInvaders", "p-old", {}, "token")
    old.statistics = {"values": {"score": 5.0, "time_played": 20.0, "active_time": 15.0}}
    old.finished_at, old.completed_at = 50.0, 51.0

    [row] = overview_of({}, book, SessionTable(), [])["finished_sessions"]
    assert row["completed"] and row["time_played"] == 20.0 and row["engagement"] == engagement({}) == dict.fromkeys(ENGAGEMENT_VALUES, 0)
