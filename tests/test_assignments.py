"""The EnvsManager's assignment book keeps a bounded number of ended sessions' assignments."""

from __future__ import annotations

import pytest

from crowdplay.assignments import ANONYMOUS, AssignmentBook, UnknownSession


async def no_store(method: str, *args: object) -> list:
    return []


def test_the_oldest_ended_sessions_assignments_are_forgotten_beyond_the_bound_never_a_playing_ones():
    playing = {"s0"}
    book = AssignmentBook(no_store, is_playing=lambda session_id: session_id in playing, kept=3)
    participants = ["p-ann", "p-bob", "p-ann", f"{ANONYMOUS}s3", f"{ANONYMOUS}s4", "p-cy"]
    for n, participant in enumerate(participants):
        book.open(f"s{n}", "task-a" if n < 4 else "task-b", participant, {}, f"token-{n}")
    assert list(book.assignments) == ["s0", "s4", "s5"]  # s0 still plays: kept although the oldest
    assert book.get("s0", "token-0").participant == "p-ann"
    assert book.get("s5", "token-5").task_id == "task-b"
    with pytest.raises(UnknownSession):
        book.get("s1", "token-1")
    # participants are counted for every session opened, forgotten or not
    assert book.participants("task-a") == 3  # p-ann, p-bob, one anonymous
    assert book.participants("task-b") == 2
    assert book.participants() == 5


def test_reopening_a_session_does_not_count_its_participant_again():
    book = AssignmentBook(no_store)
    book.open("s0", "task-a", f"{ANONYMOUS}s0", {}, "token")
    book.open("s0", "task-a", f"{ANONYMOUS}s0", {}, "token")  # adopted again after a manager restart
    assert book.participants("task-a") == 1
