"""The EnvsManager's link to the writer, without Ray: nothing a participant or the dashboard asks
waits on a writer that does not answer, and no save is lost for it."""

from __future__ import annotations

import asyncio
import time

import pytest

from crowdplay.assignments import AssignmentBook
from crowdplay.recording.store_link import StoreLink, WriterLate, matches, recording_overview
from crowdplay.study_service import StudyStore


class FakeWriter:
    """The writer's study calls over a dict; ``stop()`` makes every call wait (SIGSTOP) and
    ``resume()`` answers them in order; ``fail`` makes calls raise (a writer restarting)."""

    def __init__(self) -> None:
        self.assignments: dict[str, dict] = {}
        self.notes: dict[str, dict] = {}
        self.calls: list[str] = []
        self.running = asyncio.Event()
        self.running.set()
        self.fail = 0

    def stop(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    async def call(self, method: str, *args):
        self.calls.append(method)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the writer is restarting")
        await self.running.wait()
        if method == "save_assignment":
            self.assignments[args[0]["_id"]] = dict(args[0])
        elif method == "save_note":
            self.notes[args[0]["_id"]] = dict(args[0])
        elif method == "assignments":
            return [dict(doc) for doc in self.assignments.values() if matches(doc, args[0])]
        elif method == "stats":
            return {"store_state": "healthy", "spooled_batches": 0, "pid": 42}
        elif method == "data_volume":
            return {"bytes": 1000, "episodes": 2}
        return None


def link_for(writer: FakeWriter, **options) -> StoreLink:
    return StoreLink(writer.call, **{"save_wait_s": 0.2, "read_wait_s": 0.2, "probe_wait_s": 0.2, "late_after_s": 0.3, "retry_delays_s": (0.05,), **options})


def document(session_id: str, task_id: str = "invaders", score: float = 0.0, finished: bool = True) -> dict:
    return {"_id": session_id, "task_id": task_id, "finished_at": 1.0 if finished else None, "statistics": {"values": {"score": score}}}


def test_a_save_waits_briefly_then_goes_on_and_the_latest_version_lands_once_the_writer_answers():
    writer = FakeWriter()

    async def scenario():
        link = link_for(writer)
        assert await link.save(("assignment", "s1"), "save_assignment", document("s1", score=1))  # healthy: stored before it returns
        writer.stop()
        started = time.monotonic()
        assert not await link.save(("assignment", "s1"), "save_assignment", document("s1", score=2))
        waited = time.monotonic() - started
        await asyncio.sleep(0.4)  # the save has been out longer than late_after_s: the writer is late
        assert link.late()
        started = time.monotonic()
        assert not await link.save(("assignment", "s1"), "save_assignment", document("s1", score=3))
        late_wait = time.monotonic() - started
        pending = link.pending()
        writer.resume()
        for _ in range(100):
            if not link.pending()["saves"]:
                break
            await asyncio.sleep(0.02)
        return waited, late_wait, pending, link.pending()

    waited, late_wait, pending, after = asyncio.run(scenario())
    assert 0.15 < waited < 0.5 and late_wait < 0.05
    assert pending["saves"] == 1 and pending["oldest_age_s"] >= 0.4
    assert after["saves"] == 0
    assert writer.assignments["s1"]["statistics"]["values"]["score"] == 3  # the latest version won
    # One call per key was out at a time: the stopped writer got the first and the latest only.
    assert writer.calls.count("save_assignment") == 3


def test_a_failed_save_is_retried_until_the_writer_takes_it():
    writer = FakeWriter()
    writer.fail = 3

    async def scenario():
        link = link_for(writer)
        await link.save(("note", "n1"), "save_note", {"_id": "n1", "text": "hello"})
        for _ in range(100):
            if not link.pending()["saves"]:
                break
            await asyncio.sleep(0.02)
        return link

    link = asyncio.run(scenario())
    assert writer.notes["n1"]["text"] == "hello" and link.saves_failed == 3
    assert "restarting" in link.pending()["last_error"]


def test_a_read_is_bounded_shared_and_raises_writer_late():
    writer = FakeWriter()

    async def scenario():
        link = link_for(writer)
        writer.stop()
        started = time.monotonic()
        results = await asyncio.gather(*(link.read("pseudonym_key") for _ in range(5)), return_exceptions=True)
        return time.monotonic() - started, results

    elapsed, results = asyncio.run(scenario())
    assert elapsed < 0.5 and all(isinstance(result, WriterLate) for result in results)
    assert writer.calls == ["pseudonym_key"]  # five readers, one call out


def test_a_probe_answers_with_the_last_known_figures_and_their_age():
    writer = FakeWriter()

    async def scenario():
        link = link_for(writer)
        writer.stop()
        never = await link.probe("stats")
        writer.resume()
        fresh = await link.probe("stats")
        writer.stop()
        await asyncio.sleep(0.25)
        started = time.monotonic()
        late = await link.probe("stats")
        first_wait = time.monotonic() - started
        await asyncio.sleep(0.35)
        started = time.monotonic()
        again = await link.probe("stats")
        known_late_wait = time.monotonic() - started
        return never, fresh, late, again, first_wait, known_late_wait

    never, fresh, late, again, first_wait, known_late_wait = asyncio.run(scenario())
    assert never.state == "unknown" and never.value is None
    assert fresh.state == "ok" and fresh.value["pid"] == 42
    assert late.state == "late" and late.value["pid"] == 42 and late.as_dict()["age_s"] >= 0.4
    assert again.state == "late" and first_wait < 0.3 and known_late_wait < 0.1


def test_reads_of_assignments_are_overlaid_with_the_saves_not_stored_yet():
    writer = FakeWriter()
    writer.assignments = {"a": document("a", score=5), "b": document("b", score=7)}

    async def scenario():
        link = link_for(writer)
        healthy = await link.assignments({"task_id": "invaders"})  # remembers the task's scores
        writer.stop()
        await link.save(("assignment", "c"), "save_assignment", document("c", score=9))
        await link.save(("assignment", "a"), "save_assignment", document("a", score=6))
        ranking = await link.assignments({"task_id": "invaders"}, held=[document("d", score=1), document("x", task_id="pong")])
        one = await link.assignments({"_id": "c"})
        unknown = await link.assignments({"_id": "zzz"})
        with pytest.raises(WriterLate):
            await link.assignments({}, wait_s=0.1)  # the whole book: only from the writer
        writer.resume()
        await asyncio.sleep(0.1)
        return healthy, ranking, one, unknown

    healthy, ranking, one, unknown = asyncio.run(scenario())
    assert {doc["_id"] for doc in healthy} == {"a", "b"}
    scores = {doc["_id"]: doc["statistics"]["values"]["score"] for doc in ranking}
    assert scores == {"a": 6, "b": 7, "c": 9, "d": 1}  # remembered, unsaved (the newer a) and held
    assert [doc["_id"] for doc in one] == ["c"] and unknown == []


def test_a_read_sent_before_a_save_does_not_undo_it():
    """The writer runs calls in the order they were sent: a load sent before a save answers
    without it, after the save was acknowledged."""
    writer = FakeWriter()
    writer.assignments = {"a": document("a", score=1)}

    async def scenario():
        link = link_for(writer)
        writer.stop()
        load = asyncio.ensure_future(link.assignments({}, wait_s=float("inf")))
        await asyncio.sleep(0.05)
        save = asyncio.ensure_future(link.save(("assignment", "b"), "save_assignment", document("b", score=2)))
        await asyncio.sleep(0.05)
        writer.resume()  # the load is answered from before the save; the save lands after it
        await save
        return await load

    documents = asyncio.run(scenario())
    assert {doc["_id"] for doc in documents} == {"a", "b"}


def test_the_assignment_book_keeps_working_through_the_link_while_the_writer_is_stopped():
    writer = FakeWriter()

    async def scenario():
        link = link_for(writer)
        book = AssignmentBook(StudyStore(writer.call, link), kept=1)
        first = book.open("s1", "invaders", "p-1", {}, "token-1")
        first.statistics = {"values": {"score": 3.0}}
        first.finished_at = time.time()
        await book.save(first)
        await book.ranking(first, 1)  # s1's own score page, while the writer answers
        writer.stop()
        second = book.open("s2", "invaders", "p-2", {}, "token-2")  # forgets s1 (kept=1)
        second.statistics = {"values": {"score": 5.0}}
        second.finished_at = time.time()
        started = time.monotonic()
        await book.save(second)
        ranking = await book.ranking(second, 1)
        elapsed = time.monotonic() - started
        writer.resume()
        await asyncio.sleep(0.2)
        return ranking, elapsed

    ranking, elapsed = asyncio.run(scenario())
    assert elapsed < 0.6
    assert ranking["participants"] == 2 and ranking["percentile"] == 100.0  # s1 (3.0) from the remembered scores
    assert writer.assignments["s2"]["statistics"]["values"]["score"] == 5.0


def test_the_recording_overview_marks_what_a_late_writer_said_as_stale():
    writer = FakeWriter()

    async def scenario():
        link = link_for(writer)
        fresh = await link.probe("stats")
        writer.stop()
        await asyncio.sleep(0.1)
        late = await link.probe("stats")
        volume = await link.probe("data_volume", counts_as_late=False)
        return fresh, late, volume, link.pending()

    fresh, late, volume, pending = asyncio.run(scenario())
    processes = [{"actor_id": "a1", "chunks": 3, "memory_bytes": 300, "disk_bytes": 700, "oldest_age_s": 4.0},
                 {"actor_id": "a2", "chunks": 1, "memory_bytes": 100, "disk_bytes": 0, "oldest_age_s": 1.0}]
    overview = recording_overview(late, volume, processes, pending, time.time())
    assert overview["writer"]["state"] == "late" and overview["writer"]["pid"] == 42
    assert overview["store"]["state"] == "healthy" and overview["store"]["stale"]
    assert overview["unacked"]["chunks"] == 4 and overview["unacked"]["disk_bytes"] == 700 and overview["unacked"]["oldest_age_s"] == 4.0
    assert overview["data_volume"] == {}  # never answered
    assert recording_overview(fresh, volume, [], pending, time.time())["store"]["stale"] is False
    off = recording_overview(None, None, [], {}, time.time())
    assert off["writer"]["state"] == off["store"]["state"] == "off"
