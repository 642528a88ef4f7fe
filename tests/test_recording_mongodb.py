"""The MongoDB path: real pymongo over a socket, against a scripted wire-protocol server.

Chunks flow through ``ChunkSink`` (the TrajectoryWriter's logic). With a healthy server every chunk
arrives as an upsert; with hang-ups, command errors and stalls injected mid-episode the sink
spools, drains when the server answers again, and not one chunk is lost.

Set ``CROWDPLAY_TEST_MONGODB_URI`` (e.g. mongodb://localhost:27017/crowdplay_test) to run the
healthy-path test against a real MongoDB as well; fault injection needs the scripted server.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from crowdplay.recording.chunk import pack_chunk
from crowdplay.recording.store import TrajectoryStore
from crowdplay.recording.writer import ChunkSink
from tests.fake_mongo import FakeMongo

REAL_MONGODB = os.environ.get("CROWDPLAY_TEST_MONGODB_URI")
#: The outage the issue names: the database does not answer for a minute.
OUTAGE_S = 60


def episode_chunks(episode_id: str, count: int) -> list[tuple]:
    chunks = []
    for seq in range(count):
        fields = {"env_id": "Pong", "task_id": "t"} if seq == 0 else {}
        if seq == count - 1:
            fields = {"status": "complete", "chunks": count, "steps": 60 * count}
        chunks.append((episode_id, seq, pack_chunk({"seq": seq, "steps": 60}), 60, fields))
    return chunks


async def play_through(sink: ChunkSink, chunks: list[tuple], batch: int = 2) -> None:
    """Write the chunks in batches as an EnvActor would, one batch every few ms, then wait for the drain."""
    await sink.start()
    for start in range(0, len(chunks), batch):
        await sink.write(chunks[start : start + batch])
        await asyncio.sleep(0.05)
    for _ in range(400):
        if sink.healthy and not sink.spool.files():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the spool never drained: {sink.stats()}")


def test_chunks_arrive_as_idempotent_upserts(tmp_path):
    with FakeMongo() as mongo:
        sink = ChunkSink(mongo.uri, str(tmp_path / "spool"), store_timeout_s=3)
        chunks = episode_chunks("s-0", 6)
        asyncio.run(play_through(sink, chunks + chunks[:2]))  # a resend after a writer restart
        sink.close()
        stored = mongo.documents("chunks")
        assert sorted(stored) == [f"s-0:{seq}" for seq in range(6)]
        assert all(doc["data"] == chunk[2] and doc["steps"] == 60 for doc, chunk in zip((stored[f"s-0:{s}"] for s in range(6)), chunks))
        episode = mongo.documents("episodes")["s-0"]
        assert episode["env_id"] == "Pong" and episode["status"] == "complete" and episode["chunks"] == 6
        assert sink.stats()["chunks_spooled"] == 0


@pytest.mark.parametrize("faults", [{3: "hangup"}, {2: "error", 3: "error"}, {4: "stall"}, {2: "hangup", 5: "error", 8: "stall"}])
def test_faults_mid_episode_spool_and_drain_with_nothing_lost(tmp_path, faults):
    with FakeMongo() as mongo:
        mongo.faults = dict(faults)
        sink = ChunkSink(mongo.uri, str(tmp_path / "spool"), store_timeout_s=1.0, drain_interval_s=0.2)
        chunks = episode_chunks("s-1", 20)
        asyncio.run(play_through(sink, chunks))
        stats = sink.stats()
        sink.close()
        assert len(mongo.faults_injected) == len(faults)
        assert stats["store_errors"] >= 1 and stats["chunks_spooled"] >= 2  # the fault really sent chunks to the spool
        assert sorted(mongo.documents("chunks")) == sorted(f"s-1:{seq}" for seq in range(20))  # zero lost
        assert mongo.documents("episodes")["s-1"]["status"] == "complete"
        assert not list((tmp_path / "spool").iterdir())


def test_a_minute_long_outage_mid_episode_is_spooled_and_drained_with_nothing_lost(tmp_path):
    """The database stops answering writes for 60 s while an episode records a batch a second."""
    async def scenario(sink: ChunkSink, mongo: FakeMongo, chunks: list[tuple]) -> float:
        await sink.start()
        for index, start in enumerate(range(0, len(chunks), 2)):
            if index == 3:
                mongo.outage(OUTAGE_S)
                outage_started = time.monotonic()
            await sink.write(chunks[start : start + 2])  # acknowledged: in the store or the spool
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() % 1.0)))
        while not (sink.healthy and not sink.spool.files()):
            assert time.monotonic() - outage_started < OUTAGE_S + 60, f"the spool never drained: {sink.stats()}"
            await asyncio.sleep(0.2)
        return time.monotonic() - outage_started

    with FakeMongo() as mongo:
        sink = ChunkSink(mongo.uri, str(tmp_path / "spool"), store_timeout_s=2.0, drain_interval_s=1.0)
        chunks = episode_chunks("s-3", 2 * (OUTAGE_S + 10))  # a batch of two a second, past the outage's end
        drained_after = asyncio.run(scenario(sink, mongo, chunks))
        stats = sink.stats()
        sink.close()
        assert mongo.updates_stalled_by_outage >= 2 and stats["chunks_spooled"] >= OUTAGE_S  # the outage was real
        assert sorted(mongo.documents("chunks")) == sorted(f"s-3:{seq}" for seq in range(len(chunks)))  # zero lost
        assert mongo.documents("episodes")["s-3"]["status"] == "complete"
        assert not list((tmp_path / "spool").iterdir()) and drained_after >= OUTAGE_S


def test_a_server_down_at_start_gets_the_spooled_chunks_when_it_comes_up(tmp_path):
    # Nothing listens on the URI's port yet: everything spools; a later run of the sink drains it.
    with FakeMongo() as mongo:
        uri = mongo.uri
    down = ChunkSink(uri, str(tmp_path / "spool"), store_timeout_s=0.5)
    asyncio.run(play_through_without_drain(down, episode_chunks("s-2", 4)))
    down.close()
    assert len(list((tmp_path / "spool").glob("*.spool"))) == 2

    # A fresh server (on a new port) stands in for the database coming back.
    with FakeMongo() as mongo:
        sink = ChunkSink(mongo.uri, str(tmp_path / "spool"), store_timeout_s=3, drain_interval_s=0.2)
        asyncio.run(play_through(sink, []))
        sink.close()
        assert sorted(mongo.documents("chunks")) == [f"s-2:{seq}" for seq in range(4)]


async def play_through_without_drain(sink: ChunkSink, chunks: list[tuple]) -> None:
    await sink.start()
    for start in range(0, len(chunks), 2):
        await sink.write(chunks[start : start + 2])
    assert not sink.healthy


@pytest.mark.skipif(not REAL_MONGODB, reason="set CROWDPLAY_TEST_MONGODB_URI to run against a real MongoDB")
def test_real_mongodb_round_trip(tmp_path):
    store = TrajectoryStore.open(REAL_MONGODB)
    store.chunks.delete_episode("real-0")
    sink = ChunkSink(REAL_MONGODB, str(tmp_path / "spool"))
    asyncio.run(play_through(sink, episode_chunks("real-0", 5)))
    sink.close()
    assert [doc["seq"] for doc in store.iter_chunks("real-0")] == list(range(5))
    assert store.episode("real-0")["status"] == "complete"
    store.chunks.delete_episode("real-0")
    store.episodes.delete("real-0")
    store.close()
