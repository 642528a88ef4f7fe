"""The EnvsManager's assignment book keeps a bounded number of ended sessions' assignments."""

from __future__ import annotations

import asyncio

import pytest

from crowdplay.assignments import ANONYMOUS, AssignmentBook, BadToken, UnknownSession


class NoStore:
    """A store that keeps nothing (every read answers no documents)."""

    async def save_assignment(self, document: dict) -> None:
        pass

    async def assignments(self, query: dict, held) -> list:
        return []


no_store = NoStore()


def test_the_oldest_ended_sessions_assignments_are_forgotten_beyond_the_bound_never_a_playing_ones():
    playing = {"s0"}
    book = AssignmentBook(no_store, is_playing=lambda session_id: session_id in playing, kept=3)
    participants = ["p-ann", "p-bob", "p-ann", f"{ANONYMOUS}s3", f"{ANONYMOUS}s4", "p-cy"]
    for n, participant in enumerate(participants):
        book.open(f"s{n}", "task-a" if n < 4 else "task-b", participant, {}, f"token-{n}")
        book.connected(f"s{n}")
    assert list(book.assignments) == ["s0", "s4", "s5"]  # s0 still plays: kept although the oldest
    assert asyncio.run(book.get("s0", "token-0")).participant == "p-ann"
    assert asyncio.run(book.get("s5", "token-5")).task_id == "task-b"
    with pytest.raises(UnknownSession):  # forgotten, and the store (here) has nothing
        asyncio.run(book.get("s1", "token-1"))
    # participants are counted for every session opened, forgotten or not
    assert book.participants("task-a") == 3  # p-ann, p-bob, one anonymous
    assert book.participants("task-b") == 2
    assert book.participants() == 5


def test_reopening_or_reconnecting_a_session_does_not_count_its_participant_again():
    book = AssignmentBook(no_store)
    book.open("s0", "task-a", f"{ANONYMOUS}s0", {}, "token")
    book.connected("s0")
    book.open("s0", "task-a", f"{ANONYMOUS}s0", {}, "token")  # adopted again after a manager restart
    book.connected("s0")
    assert book.participants("task-a") == 1


def test_a_participant_counts_once_connected_and_a_start_nobody_played_counts_apart():
    book = AssignmentBook(no_store)
    for n in range(5):
        book.open(f"s{n}", "task-a", f"{ANONYMOUS}s{n}", {}, "token")
    book.connected("s2")
    assert book.participants("task-a") == 1 and book.participants() == 1
    assert (book.started["task-a"], book.played["task-a"]) == (5, 1)
    assert book.assignments["s2"].connected_at is not None and book.assignments["s0"].connected_at is None


class DictStore:
    """The writer's two assignment calls, over a dict (as the embedded store answers them)."""

    def __init__(self) -> None:
        self.documents: dict[str, dict] = {}

    async def save_assignment(self, document: dict) -> None:
        self.documents[document["_id"]] = dict(document)

    async def assignments(self, query: dict, held) -> list:
        return [dict(doc) for doc in self.documents.values() if all(doc.get(k) == v for k, v in query.items())]


def test_a_forgotten_assignment_is_read_back_from_the_store_with_its_token_checked_against_the_stored_digest():
    store = DictStore()
    book = AssignmentBook(store, kept=1)

    async def journey() -> None:
        first = book.open("s1", "task-a", "p-ann", {"level": 2}, "secret-token-1")
        first.statistics = {"values": {"score": 7.0}, "episodes": 3}
        first.finished_at = 123.0
        await book.save(first)
        await book.save(book.open("s2", "task-a", "p-bob", {}, "secret-token-2"))
        assert "s1" not in book.assignments  # forgotten (kept=1)...
        assert "secret-token-1" not in str(store.documents["s1"])  # ...and the store has no token, only its digest
        with pytest.raises(BadToken):
            await book.get("s1", "secret-token-2")
        again = await book.get("s1", "secret-token-1")  # ...yet its participant still gets it
        assert (again.values, again.statistics["episodes"], again.finished_at, again.params) == ({"score": 7.0}, 3, 123.0, {"level": 2})
        assert again.token == "secret-token-1" and "s1" in book.assignments
        with pytest.raises(UnknownSession):
            await book.get("never-created", "secret-token-1")

    asyncio.run(journey())


def test_a_server_that_stores_nothing_forgets_no_assignment():
    book = AssignmentBook(DictStore(), kept=None)
    for n in range(300):
        book.open(f"s{n}", "task-a", f"{ANONYMOUS}s{n}", {}, "token")
    assert len(book.assignments) == 300
