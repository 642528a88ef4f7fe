"""The recording path's troubles, on the real deployment (Ray, Serve, the writer process): a stopped
writer holds up neither the dashboard nor a participant's Finish and loses nothing; an EnvActor
whose writer does not answer spills its unacknowledged chunks to disk past its limit and delivers
every one of them later; and a store that fails shows on the dashboard and /metrics, with its
spool, until it has recovered.

The main suite shares one deployment: every test here puts the writer and its store back in a
``finally``. The deployment has no admin token, so a second Serve application (same manager and
writer, an admin token of its own) serves the dashboard's endpoints under ``/outage-admin``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import ray
from ray import serve

from crowdplay.channel import ChannelClient
from crowdplay.client import Participant
from crowdplay.recording.store import TrajectoryStore
from crowdplay.recording.writer import get_or_create_writer
from crowdplay.web.ingress import build_app
from tests.conftest import TEST_SETTINGS, run, spawn_seated_game, stored_episode_and_seqs, wait_until
from tests.test_admin_page import parse_exposition, value

ADMIN_TOKEN = "outage-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: Neither the dashboard nor Finish may take longer than this while the writer is stopped.
ANSWER_WITHIN_S = 1.0


@pytest.fixture(scope="module")
def admin_url(base_url: str) -> Iterator[str]:
    """The deployment's dashboard endpoints, with an admin token (a second ingress application on
    the same manager)."""
    serve.run(build_app(replace(TEST_SETTINGS, admin_token=ADMIN_TOKEN)), name="crowdplay-outage-admin", route_prefix="/outage-admin")
    yield f"{base_url}/outage-admin"
    serve.delete("crowdplay-outage-admin")


def timed(url: str, method: str = "GET", headers: dict | None = None) -> tuple[float, int, object]:
    """(seconds, status, body as JSON or text) of one HTTP request."""
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method, headers=headers or {})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode()
    elapsed = time.perf_counter() - started
    try:
        return elapsed, status, json.loads(body)
    except ValueError:
        return elapsed, status, body


def writer_pid() -> int:
    return ray.get(get_or_create_writer(TEST_SETTINGS).stats.remote(), timeout=60)["pid"]


def stored_assignment(session_id: str) -> dict | None:
    store = TrajectoryStore.open(TEST_SETTINGS.store_uri)
    try:
        found = store.find_assignments({"_id": session_id})
        return found[0] if found else None
    finally:
        store.close()


def stored_episode(game_id: str) -> tuple[dict | None, list[int]]:
    """The game's episode document and the seqs of its stored chunks."""
    store = TrajectoryStore.open(TEST_SETTINGS.store_uri)
    try:
        found = store.find_episodes({"game_id": game_id})
        if not found:
            return None, []
        return found[0], [chunk["seq"] for chunk in store.iter_chunks(found[0]["_id"])]
    finally:
        store.close()


def test_a_stopped_writer_holds_up_neither_the_dashboard_nor_finish_and_loses_nothing(base_url, admin_url, manager):
    pid = writer_pid()

    async def scenario() -> dict:
        seen: dict = {}
        async with await Participant.join(base_url, "SpaceInvaders", decode=False) as player:
            deadline = time.monotonic() + 30
            while player.last_frame_id < 120:  # two seconds of play recorded
                assert time.monotonic() < deadline, "no frames"
                await asyncio.sleep(0.05)
            session = player.session
            os.kill(pid, signal.SIGSTOP)
            try:
                before = player.last_frame_id
                await asyncio.sleep(2.5)  # chunks sealed now wait for the writer
                seen["frames_while_stopped"] = player.last_frame_id - before
                seen["overview"] = await asyncio.to_thread(timed, f"{admin_url}/api/admin/overview", "GET", ADMIN)
                seen["metrics"] = await asyncio.to_thread(timed, f"{admin_url}/metrics", "GET", ADMIN)
                finish_url = f"{base_url}/api/sessions/{session['session_id']}/finish?token={session['token']}"
                seen["finish"] = await asyncio.to_thread(timed, finish_url, "POST")
                seen["saved_while_stopped"] = stored_assignment(session["session_id"])
            finally:
                os.kill(pid, signal.SIGCONT)
        seen["session"] = session
        return seen

    seen = run(scenario())
    assert seen["frames_while_stopped"] > 100  # play went on

    elapsed, status, overview = seen["overview"]
    assert status == 200 and elapsed < ANSWER_WITHIN_S, f"the overview took {elapsed:.2f} s"
    recording = overview["recording"]
    assert recording["writer"]["state"] in ("late", "unknown") and recording["writer"]["pid"] in (pid, None)
    assert recording["store"]["stale"]
    assert recording["unacked"]["chunks"] >= 1 and recording["unacked"]["memory_bytes"] > 0
    assert recording["unacked"]["oldest_age_s"] >= 1.0  # sealed since the writer stopped

    elapsed, status, body = seen["metrics"]
    assert status == 200 and elapsed < ANSWER_WITHIN_S, f"/metrics took {elapsed:.2f} s"
    _, samples = parse_exposition(body)
    assert value(samples, "crowdplay_writer_state", state="late") + value(samples, "crowdplay_writer_state", state="unknown") == 1
    assert value(samples, "crowdplay_writer_state", state="ok") == 0
    held = [key for key in samples if key[0] == "crowdplay_unacked_chunks"]
    assert held and sum(samples[key] for key in held) >= 1

    elapsed, status, summary = seen["finish"]
    assert status == 200 and elapsed < ANSWER_WITHIN_S, f"Finish took {elapsed:.2f} s"
    assert summary["finished"] is True

    # After SIGCONT the finished assignment and every chunk of the episode reach the store.
    session = seen["session"]
    wait_until(lambda: (stored_assignment(session["session_id"]) or {}).get("finished_at"), "the finished assignment never reached the store", 60)
    wait_until(lambda: (stored_episode(session["game_id"])[0] or {}).get("status"), "the episode never ended in the store", 60)
    episode, seqs = stored_episode(session["game_id"])
    assert seqs == list(range(episode["chunks"]))
    wait_until(lambda: overview_now(admin_url)["recording"]["writer"]["state"] == "ok", "the writer was never ok again", 30)
    wait_until(lambda: overview_now(admin_url)["recording"]["unacked"]["chunks"] == 0, "chunks stayed unacknowledged", 60)
    assert overview_now(admin_url)["recording"]["pending_saves"]["saves"] == 0


def overview_now(admin_url: str) -> dict:
    _, status, overview = timed(f"{admin_url}/api/admin/overview", "GET", ADMIN)
    assert status == 200
    return overview


def swap_store(writer, uri: str) -> str:
    """Point the live writer's store at ``uri`` (closing the one it has open, on its store thread);
    returns the URI it had. The writer's next store call opens ``uri``, or fails to."""

    def swap(self, new_uri: str) -> str:
        sink = self.sink
        if sink.store is not None:
            sink._store_io.submit(sink.store.close).result()
            sink.store = None
        old, sink.store_uri = sink.store_uri, new_uri
        return old

    return ray.get(writer.__ray_call__.remote(swap, uri), timeout=60)


def test_a_failing_store_shows_on_the_dashboard_and_metrics_with_its_spool_until_it_recovers(base_url, admin_url, manager, tmp_path):
    writer = get_or_create_writer(TEST_SETTINGS)
    writer_pid()  # started
    (tmp_path / "read-only").write_text("a file where the store's directory should be")
    good = swap_store(writer, str(tmp_path / "read-only" / "recordings.db"))
    try:

        async def play() -> dict:
            async with await Participant.join(base_url, "SpaceInvaders", decode=False) as player:
                deadline = time.monotonic() + 30
                while player.last_frame_id < 240:  # four seconds: chunks written while the store fails
                    assert time.monotonic() < deadline, "no frames"
                    await asyncio.sleep(0.05)
                return player.session

        session = run(play())

        def spooled() -> bool:
            recording = overview_now(admin_url)["recording"]
            return recording["store"]["state"] == "failing" and recording["spool"]["batches"] > 0

        wait_until(spooled, "the overview never showed the failing store's spool", 30)
        recording = overview_now(admin_url)["recording"]
        store, spool = recording["store"], recording["spool"]
        assert recording["writer"]["state"] == "ok" and not store["stale"]
        assert store["last_error"]["kind"] in ("NotADirectoryError", "FileExistsError") and store["last_error"]["age_s"] < 60
        assert store["errors"] >= 1 and spool["bytes"] > 0 and spool["oldest_age_s"] > 0
        _, status, body = timed(f"{admin_url}/metrics", "GET", ADMIN)
        assert status == 200
        _, samples = parse_exposition(body)
        assert value(samples, "crowdplay_store_state", state="failing") == 1 and value(samples, "crowdplay_store_state", state="healthy") == 0
        assert value(samples, "crowdplay_spool_batches") >= 1 and value(samples, "crowdplay_spool_bytes") > 0
        assert value(samples, "crowdplay_spool_oldest_age_seconds") > 0
        assert value(samples, "crowdplay_store_last_error_timestamp_seconds", kind=store["last_error"]["kind"]) > 0
    finally:
        swap_store(writer, good)  # the store answers again; the spool drains into it

    def recovered() -> bool:
        recording = overview_now(admin_url)["recording"]
        return recording["store"]["state"] == "healthy" and recording["spool"]["batches"] == 0

    wait_until(recovered, "the store never became healthy again", 60)
    recording = overview_now(admin_url)["recording"]
    assert recording["spool"]["bytes"] == 0 and recording["spool"]["oldest_age_s"] is None
    _, _, body = timed(f"{admin_url}/metrics", "GET", ADMIN)
    _, samples = parse_exposition(body)
    assert value(samples, "crowdplay_store_state", state="healthy") == 1 and value(samples, "crowdplay_spool_batches") == 0
    # Nothing was lost: the episode played during the outage is whole in the store.
    wait_until(lambda: (stored_episode(session["game_id"])[0] or {}).get("status"), "the episode never ended in the store", 60)
    episode, seqs = stored_episode(session["game_id"])
    assert seqs == list(range(episode["chunks"])) and episode["steps"] >= 240


def test_an_env_actor_spills_past_its_limit_while_its_writer_is_stopped_and_delivers_everything(ray_session, tmp_path):
    """An EnvActor of its own (own namespace, writer and store: the shared deployment is not
    touched) with a 40 KB limit, played through its frame channel while its writer is stopped."""
    settings = replace(
        TEST_SETTINGS, namespace=f"crowdplay-spill-{uuid.uuid4().hex[:8]}", store_uri=str(tmp_path / "rec.db"),
        spool_dir=str(tmp_path / "spool"), unacked_memory_mb=0.04, unacked_spill_dir=str(tmp_path / "unacked"),
    )
    actor, writer, game_id, channel = spawn_seated_game(settings, "p-spill")
    pid = ray.get(writer.stats.remote(), timeout=60)["pid"]
    try:

        async def play() -> dict:
            client = await ChannelClient.connect(channel["host"], channel["port"], channel["secret"], "agent_0", "s1")
            frames = 0
            stopped_at = None
            held = {}
            async for message in client.messages():
                if isinstance(message, str):
                    continue
                frames += 1
                if frames == 60:
                    os.kill(pid, signal.SIGSTOP)
                    stopped_at = frames
                if stopped_at and frames == stopped_at + 600:  # ten seconds, ~60 KB of chunks
                    held = await asyncio.to_thread(ray.get, actor.recording.remote())
                    break
            await client.close()
            return held

        try:
            held = run(play())
            spilled_files = list(Path(settings.unacked_spill_dir).glob("crowdplay-unacked-*/*.chunk"))
        finally:
            os.kill(pid, signal.SIGCONT)
        assert held["memory_bytes"] <= 40 * 1024 < held["memory_bytes"] + held["disk_bytes"]
        assert held["disk_chunks"] >= 1 and len(spilled_files) == held["disk_chunks"]
        assert held["calls_out"] <= 4 and held["oldest_age_s"] >= 5

        ray.get(actor.stop.remote(game_id, "test over"), timeout=30)
        assert ray.get(actor.drain.remote(60), timeout=90), "chunks were never acknowledged"
        after = ray.get(actor.recording.remote(), timeout=30)
        assert after["chunks"] == after["disk_bytes"] == 0 and after["chunks_lost"] == 0
        assert not list(Path(settings.unacked_spill_dir).glob("crowdplay-unacked-*/*"))  # the files went with the acks
        episode, seqs = stored_episode_and_seqs(settings.store_uri, game_id)
        assert episode["status"] and seqs == list(range(episode["chunks"])) and episode["steps"] >= 600
    finally:
        ray.kill(actor)
        ray.kill(writer)
