"""An EnvActor process's unacknowledged chunks, without Ray: bounded in memory, spilled to files
beyond the limit and read back when resent; and the process's send queue, which keeps a bounded
number of calls out to a writer that does not answer and loses nothing when it answers again."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from crowdplay.config import Settings
from crowdplay.controllers import Human
from crowdplay.data import Dataset, replay_check
from crowdplay.environments import EnvAdapter, get_env
from crowdplay.realtime import LiveEnv
from crowdplay.recording import writer_calls
from crowdplay.recording.recorder import ChunkBatcher, Recorder
from crowdplay.recording.store import TrajectoryStore
from crowdplay.recording.unacked import DIRECTORY_PREFIX, UnackedChunks
from tests.polling import settle

KB = 1024


def blob(seq: int, size: int = KB) -> bytes:
    return bytes([seq % 256]) * size


def spill_files(root: Path) -> list[Path]:
    return sorted(root.glob(f"{DIRECTORY_PREFIX}{os.getpid()}-*/*.chunk"))


def test_chunks_stay_in_memory_up_to_the_limit_and_go_to_files_beyond_it(tmp_path):
    unacked = UnackedChunks(memory_limit_bytes=3 * KB, spill_root=tmp_path)
    for seq in range(5):
        unacked.put(("ep", seq), blob(seq), 50, {"seq": seq} if seq == 0 else {})
    stats = unacked.stats()
    assert stats["chunks"] == 5 and stats["memory_chunks"] == 3 and stats["memory_bytes"] == 3 * KB
    assert stats["disk_chunks"] == 2 and stats["disk_bytes"] == 2 * KB and len(spill_files(tmp_path)) == 2
    assert stats["oldest_age_s"] is not None and stats["oldest_age_s"] >= 0

    # Read back exactly as put, from memory and from a file alike.
    for seq in range(5):
        assert unacked.get(("ep", seq)) == (blob(seq), 50, {"seq": seq} if seq == 0 else {})
        assert unacked.size_of(("ep", seq)) == KB

    # Acknowledged memory makes room for later chunks; the spilled ones stay in their files.
    unacked.discard(("ep", 0))
    unacked.put(("ep", 5), blob(5), 50, {})
    assert unacked.stats()["memory_bytes"] == 3 * KB and unacked.stats()["disk_chunks"] == 2

    # The directory goes with the last file: a drained process leaves nothing behind.
    unacked.discard(("ep", 3))
    unacked.discard(("ep", 4))
    assert not list(tmp_path.iterdir())
    assert unacked.stats()["disk_bytes"] == 0 and len(unacked) == 3
    unacked.discard(("ep", 99))  # never held: nothing happens
    assert ("ep", 1) in unacked and ("ep", 3) not in unacked


def test_no_limit_never_spills_and_a_failed_spill_keeps_the_chunk_in_memory(tmp_path):
    unlimited = UnackedChunks(None, tmp_path)
    for seq in range(100):
        unlimited.put(("ep", seq), blob(seq), 1, {})
    assert unlimited.stats()["disk_chunks"] == 0 and not list(tmp_path.iterdir())

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a full or broken disk")
    unacked = UnackedChunks(KB, blocked)
    unacked.put(("ep", 0), blob(0), 1, {})
    unacked.put(("ep", 1), blob(1), 1, {})  # cannot be spilled: kept, never dropped
    assert unacked.get(("ep", 1)) == (blob(1), 1, {})
    assert unacked.stats()["spill_failures"] == 1 and unacked.stats()["memory_bytes"] == 2 * KB


def test_close_removes_the_process_directory(tmp_path):
    unacked = UnackedChunks(0, tmp_path)
    unacked.put(("ep", 0), blob(0), 1, {})
    directory = Path(unacked.stats()["spill_directory"])
    assert directory.parent == tmp_path and directory.name.startswith(f"{DIRECTORY_PREFIX}{os.getpid()}-")
    assert oct(directory.stat().st_mode & 0o777) == oct(0o700)  # private to this user
    unacked.close()
    assert not directory.exists()


class StoppedWriter:
    """A writer whose process is stopped until ``resume``: calls are taken but not answered (as
    Ray holds them), then every one of them is answered, in order."""

    def __init__(self) -> None:
        self.calls: list[list[tuple]] = []
        self.stored: dict[tuple[str, int], bytes] = {}
        self.running = asyncio.Event()

    async def send_batch(self, chunks: list[tuple]) -> None:
        self.calls.append(chunks)
        await self.running.wait()
        for episode_id, seq, data, _, _ in chunks:
            self.stored[(episode_id, seq)] = data


def test_a_stopped_writer_gets_a_bounded_number_of_calls_and_every_chunk_once_it_answers(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_calls, "WRITER_CALL_TIMEOUT_S", 0.3)
    monkeypatch.setattr(writer_calls, "RETRY_DELAYS_S", (0.1,))
    writer = StoppedWriter()
    acknowledged: list[tuple[str, int]] = []

    async def scenario() -> dict:
        unacked = UnackedChunks(memory_limit_bytes=8 * KB, spill_root=tmp_path)
        batcher = ChunkBatcher(writer.send_batch, unacked, max_calls_out=2, max_batch_bytes=4 * KB)
        for seq in range(60):  # ~2 chunks every batching window, like sessions cutting chunks
            key = ("ep", seq)
            unacked.put(key, blob(seq), 50, {})
            batcher.submit(key, lambda key, delivered: acknowledged.append(key) if delivered else None)
            await asyncio.sleep(0.05)
        stopped = {**unacked.stats(), "calls": len(writer.calls), "calls_out": batcher.sending()["calls_out"]}
        writer.running.set()  # SIGCONT
        await settle(lambda: not len(unacked), 200, 0.05)
        return stopped

    stopped = asyncio.run(scenario())
    # While stopped: two calls out (their chunks held as Ray would hold them), the rest waiting,
    # 8 KB in memory and everything beyond it in files.
    assert stopped["calls"] == stopped["calls_out"] == 2
    assert stopped["memory_bytes"] <= 8 * KB and stopped["disk_bytes"] >= 40 * KB
    # Answered: every chunk stored, each acknowledged once, the spill files gone.
    assert sorted(writer.stored) == [("ep", seq) for seq in range(60)]
    assert all(writer.stored[("ep", seq)] == blob(seq) for seq in range(60))
    assert sorted(acknowledged) == sorted(set(acknowledged)) == [("ep", seq) for seq in range(60)]
    assert not list(tmp_path.iterdir())
    # Oldest first: the calls after the stop carried the chunks in the order they were sealed.
    resent = [seq for call in writer.calls[2:] for _, seq, *_ in call]
    assert resent == sorted(resent)


def test_a_recorder_spills_past_its_process_limit_and_the_episode_arrives_whole(tmp_path, monkeypatch):
    """Real play into a Recorder whose writer stops answering for a while: the process holds at
    most its limit in memory, and the stored episode is complete and replays exactly."""
    monkeypatch.setattr(writer_calls, "WRITER_CALL_TIMEOUT_S", 0.5)
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))
    running = asyncio.Event()
    peaks = {"memory": 0, "disk": 0}

    async def send_batch(chunks):
        await running.wait()
        store.put_chunks(chunks)

    async def scenario():
        adapter = EnvAdapter(get_env("SpaceInvaders"))
        unacked = UnackedChunks(memory_limit_bytes=12 * KB, spill_root=tmp_path / "spill")
        batcher = ChunkBatcher(send_batch, unacked)
        recorder = Recorder(
            "spill", adapter.agents, batcher.deliver, 20, {"agent_0": Human("p-spill")},
            adapter.snapshot, 600, {"task_id": "spill"}, batcher.seal_later, batcher,
        )
        live = LiveEnv(get_env("SpaceInvaders"), 0, Settings(), adapter=adapter, recorder=recorder)
        live.start()
        frames = 0
        async for message in live.stream("agent_0"):
            if isinstance(message, bytes):
                frames += 1
                stats = unacked.stats()
                peaks["memory"] = max(peaks["memory"], stats["memory_bytes"])
                peaks["disk"] = max(peaks["disk"], stats["disk_bytes"])
                if frames == 300:
                    break
        live.stop("test over")
        await asyncio.sleep(0.3)
        running.set()
        await settle(lambda: recorder.idle, 100, 0.1)
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.idle and recorder.chunks_lost == 0
    assert peaks["memory"] <= 12 * KB and peaks["disk"] > 12 * KB
    data = Dataset(store)
    [info] = data.episodes(task="spill")
    assert info["status"] == "interrupted" and len(list(data.chunks(info["_id"]))) == info["chunks"]
    assert replay_check(data, info["_id"]).ok
    assert not (tmp_path / "spill").exists() or not list((tmp_path / "spill").iterdir())
    store.close()


def test_the_limit_is_a_setting_of_64_mb_by_default(monkeypatch):
    assert Settings().unacked_memory_mb == 64.0 and Settings().unacked_spill_dir == ""
    monkeypatch.setenv("CROWDPLAY_UNACKED_MEMORY_MB", "0.5")
    assert Settings.from_env().unacked_memory_mb == 0.5
