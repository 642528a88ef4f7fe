"""What the writer tells the dashboard about its store and spool, without Ray: a store that cannot
be opened and one whose disk is full are reported failing with their error, the spool's batches,
bytes and oldest batch are counted, and the store is healthy again once the spool has drained."""

from __future__ import annotations

import asyncio
import errno
import time

from crowdplay.recording.chunk import pack_chunk
from crowdplay.recording.spool import Spool
from crowdplay.recording.store import TrajectoryStore
from crowdplay.recording.writer import ChunkSink


def chunk(seq: int) -> tuple:
    return ("ep", seq, pack_chunk({"seq": seq, "pad": b"x" * 500}), 50, {"task_id": "health"} if seq == 0 else {})


class FullDisk:
    """The store, with every write failing as SQLite does when its disk is full."""

    def __init__(self, store: TrajectoryStore) -> None:
        self.store = store

    def put_chunks(self, chunks) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_full_disk_is_reported_with_the_spool_and_recovery_drains_it(tmp_path):
    async def scenario():
        sink = ChunkSink(str(tmp_path / "rec.db"), str(tmp_path / "spool"), store_timeout_s=2.0, drain_interval_s=0.1)
        await sink.start()
        await sink.write([chunk(0), chunk(1)])
        healthy = sink.stats()
        store = sink.store
        sink.store = FullDisk(store)
        await sink.write([chunk(2)])
        await sink.write([chunk(3), chunk(4)])
        await asyncio.sleep(0.2)  # the drain tries (and fails) too
        failing = sink.stats()
        sink.store = store  # space again
        for _ in range(100):
            if sink.healthy:
                break
            await asyncio.sleep(0.05)
        recovered = sink.stats()
        stored = [c["seq"] for c in store.iter_chunks("ep")]
        sink.close()
        return healthy, failing, recovered, stored

    healthy, failing, recovered, stored = asyncio.run(scenario())
    assert healthy["store_state"] == "healthy" and healthy["spooled_batches"] == 0 and healthy["last_error"] is None
    assert failing["store_state"] == "failing" and not failing["healthy"]
    assert failing["last_error"]["kind"] == "OSError" and "No space left" in failing["last_error"]["message"]
    assert time.time() - failing["last_error"]["at"] < 10 and failing["store_errors"] >= 2
    assert failing["spooled_batches"] == 2 and failing["spool_bytes"] > 100 and failing["chunks_spooled"] == 3
    assert 0 <= failing["spool_oldest_age_s"] < 10
    assert recovered["store_state"] == "healthy" and recovered["spooled_batches"] == recovered["spool_bytes"] == 0
    assert recovered["spool_oldest_age_s"] is None and recovered["last_error"]["kind"] == "OSError"  # kept: when it last failed
    assert stored == [0, 1, 2, 3, 4]


def test_a_store_that_cannot_be_opened_is_failing_from_the_start(tmp_path):
    (tmp_path / "blocked").write_text("not a directory")

    async def scenario():
        sink = ChunkSink(str(tmp_path / "blocked" / "rec.db"), str(tmp_path / "spool"), store_timeout_s=2.0)
        await sink.start()
        await sink.write([chunk(0)])
        stats = sink.stats()
        sink.close()
        return stats

    stats = asyncio.run(scenario())
    assert stats["store_state"] == "failing" and stats["last_error"]["kind"] in ("NotADirectoryError", "FileExistsError")
    assert stats["spooled_batches"] == 1 and stats["spool_bytes"] > 0


def test_the_spool_counts_what_a_previous_run_left(tmp_path):
    first = Spool(tmp_path)
    first.put([chunk(0)])
    first.put([chunk(1), chunk(2)])
    again = Spool(tmp_path)  # a restarted writer
    size = again.size()
    assert size["batches"] == 2 and size["bytes"] == sum(path.stat().st_size for path in tmp_path.glob("*.spool"))
    assert abs(size["oldest_at"] - time.time()) < 60
    for path in again.files():
        again.remove(path)
    assert again.size() == {"batches": 0, "bytes": 0, "oldest_at": None}


def test_a_batch_the_drain_removes_before_put_returns_is_counted_once_and_put_succeeds(tmp_path, monkeypatch):
    """The drain may store and remove a batch the moment it is renamed into place, before the
    spooling thread has finished ``put`` (seen once in CI as a FileNotFoundError)."""
    import os

    from crowdplay.recording import spool as spool_module

    spool = Spool(tmp_path)
    real_replace = os.replace

    def replace_then_drain(source, target):
        real_replace(source, target)
        spool.remove(spool_module.Path(target))  # the drain, on the event loop, got there first

    monkeypatch.setattr(spool_module.os, "replace", replace_then_drain)
    spool.put([("e", 0, b"chunk", 1, {})])
    assert spool.size()["batches"] == 0 and spool.size()["bytes"] == 0 and len(spool) == 0
