"""A writer that cannot be reached hangs its callers rather than failing them (a partition drops
packets, nothing is refused). An EnvActor of its own (own namespace, writer and store) plays while
its writer's ``write_chunks`` blocks: every call is given up after ``writer_call_timeout_s`` and
counted as a failed delivery, at most 4 stay out, the chunks wait in the process, and once the
writer answers again every one of them is stored: 0 lost."""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import replace

import ray

from crowdplay.channel import ChannelClient
from tests.conftest import TEST_SETTINGS, run, spawn_seated_game, stored_episode_and_seqs


def hang_writes(self) -> None:
    """(Run in the writer.) Every chunk write blocks until ``release_writes``; other calls answer."""
    self.hung = threading.Event()
    self.hung.set()
    write = self.sink.write

    async def blocked(chunks):
        while self.hung.is_set():
            await asyncio.sleep(0.05)
        await write(chunks)

    self.sink.write = blocked


def release_writes(self) -> None:
    self.hung.clear()


def test_an_env_actor_whose_writer_calls_hang_times_them_out_holds_its_chunks_and_loses_none(ray_session, tmp_path):
    settings = replace(
        TEST_SETTINGS, namespace=f"crowdplay-hang-{uuid.uuid4().hex[:8]}", store_uri=str(tmp_path / "rec.db"),
        spool_dir=str(tmp_path / "spool"), writer_call_timeout_s=1.0,
    )
    actor, writer, game_id, channel = spawn_seated_game(settings, "p-hang")
    try:

        async def play() -> dict:
            client = await ChannelClient.connect(channel["host"], channel["port"], channel["secret"], "agent_0", "s1")
            frames = 0
            held: dict = {}
            async for message in client.messages():
                if isinstance(message, str):
                    continue
                frames += 1
                if frames == 60:
                    await asyncio.to_thread(ray.get, writer.__ray_call__.remote(hang_writes))
                if frames == 60 + 480:  # eight seconds of play against a hanging writer
                    held = await asyncio.to_thread(ray.get, actor.recording.remote())
                    break
            await client.close()
            return held

        held = run(play())
        stats_while_hung = ray.get(writer.stats.remote(), timeout=30)  # the writer itself answers
        assert held["calls_out"] <= 4 and held["delivery_failures"] >= 1, held
        assert held["chunks"] >= 5 and held["oldest_age_s"] >= 4, held
        assert stats_while_hung["chunks_written"] <= 2  # what arrived before the hang

        ray.get(writer.__ray_call__.remote(release_writes), timeout=30)  # the link returns
        ray.get(actor.stop.remote(game_id, "test over"), timeout=30)
        assert ray.get(actor.drain.remote(60), timeout=90), "chunks were never acknowledged"
        after = ray.get(actor.recording.remote(), timeout=30)
        assert after["chunks"] == 0 and after["chunks_lost"] == 0
        episode, seqs = stored_episode_and_seqs(settings.store_uri, game_id)
        assert episode["status"] and seqs == list(range(episode["chunks"])) and episode["steps"] >= 540
    finally:
        ray.kill(actor)
        ray.kill(writer)
