"""The assignment book over its store's typed interface (``AssignmentStore``): what it asks of the
store, and that a store failing is reported rather than passed over in silence (no Ray)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from crowdplay.assignments import AssignmentBook, UnknownSession, token_digest
from crowdplay.background import Background
from crowdplay.study_service import StudyService, StudyStore


class FakeStore:
    """Assignment documents in a dict; records every request, and raises ``failure`` while it is set."""

    def __init__(self, documents: list[dict] | None = None) -> None:
        self.documents = {doc["_id"]: doc for doc in documents or []}
        self.saved: list[dict] = []
        self.reads: list[tuple[dict, list[str]]] = []  # (query, the _ids of the held documents)
        self.failure: Exception | None = None

    async def save_assignment(self, document: dict) -> None:
        await asyncio.sleep(0)
        if self.failure is not None:
            raise self.failure
        self.saved.append(document)
        self.documents[document["_id"]] = dict(document)

    async def assignments(self, query: dict, held) -> list:
        await asyncio.sleep(0)
        self.reads.append((dict(query), [doc["_id"] for doc in held]))
        if self.failure is not None:
            raise self.failure
        return [dict(doc) for doc in self.documents.values() if all(doc.get(k) == v for k, v in query.items())]


def finished(session_id: str, task_id: str, score: float, completed: float | None = None) -> dict:
    return {"_id": session_id, "task_id": task_id, "finished_at": 1.0, "completed_at": completed, "statistics": {"values": {"score": score}}}


def test_the_book_loads_completions_by_asking_the_store_for_every_assignment():
    store = FakeStore([finished("old-1", "task-a", 1.0, completed=20.0), finished("old-2", "task-a", 2.0, completed=10.0), finished("old-3", "task-b", 3.0)])
    book = AssignmentBook(store)
    book.open("s1", "task-a", "p-ann", {}, "token-1")
    asyncio.run(book.load())
    assert store.reads == [({}, ["s1"])]  # the whole collection, with what the book holds
    assert book.completed == {"task-a": 2}
    assert book.completions == [(10.0, "task-a"), (20.0, "task-a")]


def test_a_save_hands_the_store_the_document_with_the_tokens_digest_never_the_token():
    store = FakeStore()
    book = AssignmentBook(store)
    assignment = book.open("s1", "task-a", "p-ann", {"level": 2}, "secret-token")
    asyncio.run(book.save(assignment))
    (document,) = store.saved
    assert document["_id"] == "s1" and document["params"] == {"level": 2}
    assert document["token_sha256"] == token_digest("secret-token") and "secret-token" not in str(document)


def test_a_forgotten_assignment_is_asked_for_by_id_with_the_held_ones_handed_along():
    store = FakeStore()
    book = AssignmentBook(store, kept=1)

    async def journey() -> None:
        await book.save(book.open("s1", "task-a", "p-ann", {}, "token-1"))
        book.open("s2", "task-a", "p-bob", {}, "token-2")  # forgets s1
        again = await book.get("s1", "token-1")
        assert again.participant == "p-ann"

    asyncio.run(journey())
    assert store.reads == [({"_id": "s1"}, ["s2"])]


def test_the_ranking_asks_for_the_tasks_assignments_and_ranks_the_participant_among_them():
    store = FakeStore([finished("old-1", "task-a", 1.0), finished("old-2", "task-a", 9.0), finished("other", "task-b", 100.0)])
    book = AssignmentBook(store)
    assignment = book.open("s1", "task-a", "p-ann", {}, "token-1")
    assignment.statistics = {"values": {"score": 5.0}}
    ranking = asyncio.run(book.ranking(assignment, 1))
    assert store.reads == [({"task_id": "task-a"}, ["s1"])]
    assert (ranking["participants"], ranking["percentile"]) == (3, 50.0)


def test_a_store_failure_reaches_the_caller_of_load_save_and_ranking():
    store = FakeStore()
    store.failure = ConnectionError("the writer is restarting")
    book = AssignmentBook(store)
    assignment = book.open("s1", "task-a", "p-ann", {}, "token-1")
    for request in (book.load(), book.save(assignment), book.ranking(assignment, 1)):
        with pytest.raises(ConnectionError, match="restarting"):
            asyncio.run(request)


def test_a_store_failing_a_read_back_is_logged_and_the_session_answered_as_unknown(caplog):
    store = FakeStore()
    book = AssignmentBook(store, kept=1)
    book.open("s1", "task-a", "p-ann", {}, "token-1")
    book.open("s2", "task-a", "p-bob", {}, "token-2")  # forgets s1
    store.failure = ConnectionError("the writer is restarting")
    with caplog.at_level(logging.WARNING, logger="crowdplay.assignments"), pytest.raises(UnknownSession):
        asyncio.run(book.get("s1", "token-1"))
    assert "s1" in caplog.text and "ConnectionError: the writer is restarting" in caplog.text


def test_a_server_that_stores_nothing_never_asks_the_store_for_a_session():
    store = FakeStore([finished("s1", "task-a", 1.0)])
    book = AssignmentBook(store, kept=None)
    with pytest.raises(UnknownSession):
        asyncio.run(book.get("s1", "token-1"))
    assert store.reads == []


class FakeWriter:
    """The writer's ``assignments`` call over a list, failing its first ``failures`` calls."""

    def __init__(self, documents: list[dict], failures: int) -> None:
        self.documents = documents
        self.failures = failures
        self.calls: list[str] = []

    async def call(self, method: str, *args):
        self.calls.append(method)
        await asyncio.sleep(0)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the store is down")
        assert method == "assignments"
        return [dict(doc) for doc in self.documents if all(doc.get(k) == v for k, v in args[0].items())]


def test_the_study_service_logs_a_failed_load_of_completions_and_tries_again_next_time(caplog):
    writer = FakeWriter([finished("old-1", "task-a", 1.0, completed=5.0)], failures=1)

    async def scenario() -> list[dict[str, int]]:
        service = StudyService(StudyStore(writer.call), ask_game=None, is_playing=lambda session_id: False, record=True, kept=32, background=Background(logging.getLogger("test")))
        counts = [await service.task_counts()]
        counts.append(await service.task_counts())
        counts.append(await service.task_counts())  # loaded: the store is not asked again
        return counts

    with caplog.at_level(logging.WARNING, logger="crowdplay.study_service"):
        counts = asyncio.run(scenario())
    assert counts == [{}, {"task-a": 1}, {"task-a": 1}]
    assert writer.calls == ["assignments", "assignments"]
    assert "could not be read yet (ConnectionError: the store is down)" in caplog.text
