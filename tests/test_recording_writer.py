"""The TrajectoryWriter actor: acknowledged writes, idempotent resends, a restart after a kill, and
the spool when its store is unreachable."""

from __future__ import annotations

import os
import signal
import time

import ray

from crowdplay.config import Settings
from crowdplay.recording.chunk import pack_chunk, unpack_chunk
from crowdplay.recording.store import TrajectoryStore
from crowdplay.recording.writer import get_or_create_writer


def writer_settings(tmp_path, **overrides) -> Settings:
    values = dict(namespace=f"crowdplay-writer-{time.monotonic_ns()}", store_uri=str(tmp_path / "rec.db"), spool_dir=str(tmp_path / "spool"))
    return Settings(**{**values, **overrides})


def chunk(seq: int, fields: dict | None = None) -> tuple:
    return ("ep", seq, pack_chunk({"seq": seq}), 60, fields or {})


def test_chunks_are_acknowledged_survive_a_writer_kill_and_resends_do_not_duplicate(ray_session, tmp_path):
    settings = writer_settings(tmp_path)
    writer = get_or_create_writer(settings)
    acks = ray.get(writer.write_chunks.remote([chunk(seq, {"task_id": "Pong"} if seq == 0 else None) for seq in range(5)]))
    assert acks == [("ep", seq) for seq in range(5)]

    os.kill(ray.get(writer.__ray_call__.remote(lambda self: os.getpid())), signal.SIGKILL)
    # The EnvActor side resends what was not acknowledged; the restarted writer takes it.
    deadline = time.monotonic() + 60
    while True:
        try:
            assert ray.get(writer.write_chunks.remote([chunk(5)]), timeout=30) == [("ep", 5)]
            break
        except ray.exceptions.RayActorError:
            assert time.monotonic() < deadline, "the writer did not restart"
            time.sleep(0.5)
    assert ray.get(writer.stats.remote())["chunks_written"] == 1  # a new incarnation
    ray.get(writer.write_chunks.remote([chunk(3)]))  # a duplicate resend

    store = TrajectoryStore.open(settings.store_uri)
    assert [unpack_chunk(c["data"])["seq"] for c in store.iter_chunks("ep")] == [0, 1, 2, 3, 4, 5]
    assert store.episode("ep")["task_id"] == "Pong"
    store.close()
    ray.kill(writer)


def test_an_unreachable_store_spools_and_a_restarted_writer_drains_it(ray_session, tmp_path):
    # The store's path is under a regular file, so it cannot be opened: every batch spools.
    (tmp_path / "blocked").write_text("not a directory")
    settings = writer_settings(tmp_path, store_uri=str(tmp_path / "blocked" / "rec.db"), store_timeout_s=2.0)
    writer = get_or_create_writer(settings)
    assert ray.get(writer.write_chunks.remote([chunk(0, {"task_id": "Pong"}), chunk(1)])) == [("ep", 0), ("ep", 1)]
    stats = ray.get(writer.stats.remote())
    assert stats["chunks_spooled"] == 2 and not stats["healthy"]
    ray.kill(writer)

    # The store comes back (here: a writer configured with a reachable store and the same spool).
    good = writer_settings(tmp_path, namespace=settings.namespace + "-b")
    writer = get_or_create_writer(good)
    deadline = time.monotonic() + 30
    while not ray.get(writer.stats.remote())["healthy"]:
        assert time.monotonic() < deadline, "the spool did not drain"
        time.sleep(0.2)
    store = TrajectoryStore.open(good.store_uri)
    assert [c["seq"] for c in store.iter_chunks("ep")] == [0, 1] and store.episode("ep")["task_id"] == "Pong"
    assert not list((tmp_path / "spool").glob("*.spool"))
    store.close()
    ray.kill(writer)
