"""The TrajectoryWriter actor: acknowledged writes, idempotent resends, and a restart after a kill."""

from __future__ import annotations

import os
import signal
import time

import ray

from crowdplay.config import Settings
from crowdplay.recording.chunk import pack_chunk, unpack_chunk
from crowdplay.recording.store import TrajectoryStore
from crowdplay.recording.writer import get_or_create_writer


def test_chunks_are_acknowledged_survive_a_writer_kill_and_resends_do_not_duplicate(ray_session, tmp_path):
    settings = Settings(namespace=f"crowdplay-writer-{time.monotonic_ns()}", store_uri=str(tmp_path / "rec.db"))
    writer = get_or_create_writer(settings)
    acks = ray.get([writer.write_chunk.remote("ep", seq, pack_chunk({"seq": seq}), 60, {"task_id": "Pong"}) for seq in range(5)])
    assert acks == list(range(5))

    os.kill(ray.get(writer.__ray_call__.remote(lambda self: os.getpid())), signal.SIGKILL)
    # The EnvActor side resends what was not acknowledged; the restarted writer takes it.
    deadline = time.monotonic() + 60
    while True:
        try:
            assert ray.get(writer.write_chunk.remote("ep", 5, pack_chunk({"seq": 5}), 60, {}), timeout=30) == 5
            break
        except ray.exceptions.RayActorError:
            assert time.monotonic() < deadline, "the writer did not restart"
            time.sleep(0.5)
    assert ray.get(writer.chunks_since_start.remote()) == 1  # a new incarnation
    ray.get(writer.write_chunk.remote("ep", 3, pack_chunk({"seq": 3}), 60, {}))  # a duplicate resend

    store = TrajectoryStore.open(settings.store_uri)
    assert [unpack_chunk(c["data"])["seq"] for c in store.iter_chunks("ep")] == [0, 1, 2, 3, 4, 5]
    assert store.episode("ep")["task_id"] == "Pong"
    store.close()
    ray.kill(writer)
