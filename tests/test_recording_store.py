"""The chunk format and the embedded trajectory store."""

from __future__ import annotations

import numpy as np
import pytest

from crowdplay.recording.chunk import ChunkFormatError, pack_chunk, unpack_chunk
from crowdplay.recording.store import TrajectoryStore


def test_chunks_round_trip_arrays_bit_exactly_and_compress_screens():
    screens = np.zeros((60, 210, 160), dtype=np.uint8)
    screens[:, 100:110, 20:30] = 14
    columns = {
        "obs": screens,
        "action": np.arange(60, dtype=np.int16),
        "reward": np.linspace(0, 1, 60, dtype=np.float32),
        "keys": [["Space"]] * 60,
        "agent": "agent_0",
        "step0": np.int64(120),
    }
    blob = pack_chunk(columns)
    back = unpack_chunk(blob)
    assert len(blob) < screens.nbytes / 100
    assert back["obs"].dtype == np.uint8 and np.array_equal(back["obs"], screens)
    assert np.array_equal(back["action"], columns["action"]) and back["action"].dtype == np.int16
    assert np.array_equal(back["reward"], columns["reward"])
    assert back["keys"] == columns["keys"] and back["agent"] == "agent_0" and back["step0"] == 120


def test_garbage_is_not_a_chunk():
    with pytest.raises(ChunkFormatError):
        unpack_chunk(b"definitely not lz4")


def test_the_embedded_store_writes_idempotently_and_survives_reopening(tmp_path):
    path = tmp_path / "store.db"
    store = TrajectoryStore.open(str(path))
    store.put_episode("ep1", {"task_id": "SpaceInvaders", "started_at": 1.0, "participant": "p"})
    for seq in range(3):
        store.put_chunk("ep1", seq, pack_chunk({"seq": seq}), steps=60)
    store.put_chunk("ep1", 1, pack_chunk({"seq": 1}), steps=60)  # a resend after a writer restart
    store.put_episode("ep1", {"steps": 180})
    store.close()

    reopened = TrajectoryStore.open(str(path))
    chunks = list(reopened.iter_chunks("ep1"))
    assert [c["seq"] for c in chunks] == [0, 1, 2]
    assert [unpack_chunk(c["data"])["seq"] for c in chunks] == [0, 1, 2]
    episode = reopened.episode("ep1")
    assert episode["task_id"] == "SpaceInvaders" and episode["steps"] == 180
    assert [e["_id"] for e in reopened.find_episodes({"task_id": "SpaceInvaders"})] == ["ep1"]
    reopened.close()


def test_a_lost_games_unfinished_episodes_are_marked_interrupted_and_finished_ones_kept(tmp_path):
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))
    store.put_episode("g1-0", {"game_id": "g1", "status": "complete"})
    store.put_episode("g1-1", {"game_id": "g1"})  # playing when the game's process died
    store.put_episode("g2-0", {"game_id": "g2"})  # another game, still playing
    assert store.interrupt_game("g1", "the game server stopped") == 1
    status = {doc["_id"]: (doc.get("status"), doc.get("reason")) for doc in store.find_episodes()}
    assert status == {"g1-0": ("complete", None), "g1-1": ("interrupted", "the game server stopped"), "g2-0": (None, None)}
    assert store.interrupt_game("g1", "again") == 0  # marking twice changes nothing
    store.close()


def test_the_embedded_store_filters_and_orders_documents_as_mongodb_does(tmp_path):
    """Episodes and assignments sit in SQLite tables of their own, without in-memory indexes;
    queries scan them oldest first and match as MongoDB would, also after reopening."""
    path = tmp_path / "store.db"
    store = TrajectoryStore.open(str(path))
    store.put_episode("old", {"task_id": "t", "env_id": "Pong", "started_at": -1.0, "participants": ["p-1"], "start_state": b"\x00\x01"})
    store.put_assignment({"_id": "s-old", "task_id": "t", "created_at": 5.0, "statistics": {"values": {"score": 3.0}}})
    store.put_assignment({"_id": "s-new", "task_id": "t", "created_at": 1.0, "completed_at": 2.0})
    store.put_assignment({"_id": "s-other", "task_id": "u", "created_at": 9.0})
    assert [doc["_id"] for doc in store.find_assignments({"task_id": "t"})] == ["s-new", "s-old"]  # oldest first
    assert [doc["_id"] for doc in store.find_assignments({"completed_at": {"$exists": True}})] == ["s-new"]
    assert store.find_assignments({"_id": "s-old"})[0]["statistics"]["values"]["score"] == 3.0
    assert store.episode("old")["start_state"] == b"\x00\x01" and store.episode("old")["participants"] == ["p-1"]
    for n in range(4):
        store.put_episode(f"e{n}", {"task_id": "t", "env_id": "Pong" if n % 2 else "Breakout", "started_at": float(n), "status": "complete"})
    assert [doc["_id"] for doc in store.find_episodes({"env_id": "Pong", "started_at": {"$gte": 2.0}})] == ["e3"]
    assert [doc["_id"] for doc in store.find_episodes({"status": {"$ne": "complete"}})] == ["old"]
    assert [doc["_id"] for doc in store.find_episodes({"participants": "p-1"}, {"_id": 1})] == ["old"]
    assert "start_state" not in store.find_episodes({"_id": "old"}, {"start_state": 0})[0]
    store.close()
    reopened = TrajectoryStore.open(str(path))
    assert len(reopened.find_assignments()) == 3
    assert [doc["_id"] for doc in reopened.find_episodes({"task_id": "t"})] == ["old", "e0", "e1", "e2", "e3"]
    volume = reopened.data_volume()  # the bytes: every file of the store's directory
    assert volume["episodes"] == 5 and volume["bytes"] == sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) > 0
    reopened.close()


def test_storing_episodes_in_the_embedded_store_keeps_nothing_per_episode_in_memory(tmp_path):
    """The writer merges fields into an episode with every chunk batch and replaces a session's
    assignment at every change; litemongo answered each through an in-memory index of every stored
    document's id (~0.7 KB per episode and ~0.6 KB per assignment, for the life of the writer).
    The document tables keep them on disk only."""
    import gc
    import tracemalloc

    store = TrajectoryStore.open(str(tmp_path / "store.db"))

    def record(first: int, count: int) -> None:
        for n in range(first, first + count):
            episode = f"episode-{n:06d}"
            store.put_episode(episode, {"task_id": "t", "game_id": f"g{n}", "started_at": float(n), "participants": ["p-1"]})
            store.put_chunks([(episode, 0, b"x" * 64, 60, {"steps": 60, "chunks": 1}), (episode, 1, b"x" * 64, 60, {"steps": 120, "chunks": 2, "status": "complete"})])
            assignment = {"_id": f"session-{n:06d}", "task_id": "t", "participant": "p-1", "created_at": float(n), "statistics": {"values": {}}}
            store.put_assignment(assignment)
            store.put_assignment({**assignment, "statistics": {"values": {"score": 1.0}}, "finished_at": n + 1.0})
        store.interrupt_game(f"g{first}", "a lost game")

    tracemalloc.start()
    try:
        record(0, 300)  # warm: caches, the SQLite connections' pages
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        record(300, 3000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert store.episodes.count() == 3300 and store.episode("episode-003299")["status"] == "complete"
    assert store.assignments.count() == 3300 and store.find_assignments({"_id": "session-003299"})[0]["finished_at"] == 3300.0
    assert grown < 3000 * 50, f"{grown / 3000:.0f} bytes kept per stored episode and assignment"
    store.close()


def test_the_embedded_chunk_table_pages_through_a_long_episode_in_order(tmp_path):
    from crowdplay.recording.chunk_table import TableChunks

    table = TableChunks(tmp_path / "chunks.sqlite")
    table.put_many([("long", seq, bytes([seq % 256]), 50) for seq in reversed(range(700))])
    table.put_many([("other", 0, b"x", 1)])
    assert [doc["seq"] for doc in table.of_episode("long", page=64)] == list(range(700))
    assert table.count() == 701
    table.delete_episode("long")
    assert table.count() == 1 and not list(table.of_episode("long"))
    table.close()


def test_an_assignment_read_back_by_id_is_one_read_by_key_not_a_scan(tmp_path):
    """The manager keeps few finished sessions' assignments and reads the others back by id: in a
    long study's table that must not decode every document."""
    store = TrajectoryStore.open(str(tmp_path / "store.db"))
    for n in range(300):
        store.put_assignment({"_id": f"s{n}", "task_id": "t", "created_at": float(n), "token_sha256": f"{n:064x}"})
    statements: list[str] = []
    store.assignments._connection.set_trace_callback(statements.append)
    assert [doc["token_sha256"] for doc in store.find_assignments({"_id": "s17"})] == [f"{17:064x}"]
    assert store.find_assignments({"_id": "nobody"}) == []
    assert len(statements) == 2 and all("WHERE id = " in statement for statement in statements)
    statements.clear()
    assert len(store.find_assignments({"task_id": "t"})) == 300  # any other query pages through the table
    assert len(statements) > 1 and not any("WHERE id = " in statement for statement in statements)
    store.close()
