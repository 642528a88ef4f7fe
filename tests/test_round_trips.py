"""The connection's round trips end to end: measured by the reference client and by a real
Chromium over real Serve, reported with the next ping, recorded with the episode and summarised
with the session, and read back by a researcher (the docs' example, run as written)."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from crowdplay.client import Participant, http_json
from crowdplay.data import Dataset
from crowdplay.round_trips import CONNECTION_VALUES, summary
from tests.conftest import TEST_SETTINGS, episodes_of, run
from tests.test_browser import start_game
from tests.test_docs import code_blocks

ROOT = Path(__file__).resolve().parent.parent
PINGS = 8
ADDED_LATENCY_MS = 200


class DelayedLink:
    """A TCP relay to the server that holds every byte ``delay_s`` in each direction before passing
    it on, in order: a longer link between the browser and the server, websocket included
    (Chromium's own emulation, ``Network.emulateNetworkConditions``, delays HTTP requests but not
    a websocket's messages, which it only throttles)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.delay_s = 0.0
        self.loop = asyncio.new_event_loop()
        self._listening = threading.Event()
        self.listen_port = 0
        self._connections: set[asyncio.Task[None]] = set()
        threading.Thread(target=self._run, daemon=True).start()
        self._listening.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.listen_port = self._server.sockets[0].getsockname()[1]
        self._listening.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = asyncio.current_task()
        assert connection is not None
        self._connections.add(connection)
        upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        try:
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer), return_exceptions=True)
        finally:
            writer.close()
            upstream_writer.close()
            self._connections.discard(connection)

    def close(self) -> None:
        """Stop relaying: every connection closed, then the relay's loop stopped."""

        async def shut() -> None:
            self._server.close()
            for connection in list(self._connections):
                connection.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await held.get()
                await asyncio.sleep(max(0.0, due - self.loop.time()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                held.put_nowait((self.loop.time() + self.delay_s, data))
            held.put_nowait((self.loop.time() + self.delay_s, b""))
            await delivering
        finally:
            delivering.cancel()


def connection_example() -> str:
    """docs/recording.md's example of filtering sessions by their connection, as written."""
    [block] = [block for block in code_blocks(ROOT / "docs" / "recording.md") if block.runs and "rtt_p95_ms" in block.text]
    return block.text


def stored_session(pseudonym: str, timeout_s: float = 30) -> dict:
    """The session's row once the EnvsManager has stored its final statistics."""
    with Dataset.open(TEST_SETTINGS.store_uri) as data:
        deadline = time.monotonic() + timeout_s
        while not (rows := [row for row in data.sessions(participant=pseudonym) if row["finished_at"] and row["rtt_count"]]):
            assert time.monotonic() < deadline, f"the session of {pseudonym} was not stored with its round trips"
            time.sleep(0.3)
    return rows[-1]


def test_the_clients_round_trips_are_recorded_with_the_episode_and_summarised_with_the_session(base_url, manager, tmp_path) -> None:
    async def play() -> tuple[dict, list[float], dict]:
        async with await Participant.join(base_url, "SpaceInvaders", decode=False, participant="rtt-worker", ping_every_s=None) as player:
            for _ in range(PINGS):
                await player.ping()  # each ping reports the round trip of the one before
                await asyncio.sleep(0.3)
            measured = list(player.rtt_samples)
            await player.ping()  # reports the last of them
            await asyncio.sleep(0.3)
            session = player.session
            finished = await asyncio.to_thread(http_json, f"{base_url}/api/sessions/{session['session_id']}/finish?token={session['token']}", {})
        return session, measured, finished

    session, measured, finished = run(play())
    assert len(measured) >= PINGS - 1 and all(0 < ms < 1000 for ms in measured)

    [episode] = episodes_of(session["game_id"], manager)
    with Dataset.open(TEST_SETTINGS.store_uri) as data:
        samples = data.rtt_samples(episode["_id"])
        steps = data.load(episode["_id"], observations=None).agents["agent_0"].actions.shape[0]
    recorded = [sample["rtt_ms"] for sample in samples]
    assert len(recorded) >= PINGS - 1 and set(recorded) <= set(measured)  # each measurement reported once, exactly
    assert all(sample["agent"] == "agent_0" and 0 <= sample["page_frame"] <= sample["frame"] for sample in samples)
    assert samples[-1]["page_frame"] > 0  # the first may have been measured before the first frame came
    assert [sample["step"] for sample in samples] == sorted(sample["step"] for sample in samples) and samples[-1]["step"] <= steps
    assert {name: finished["values"][name] for name in CONNECTION_VALUES} == summary(recorded)  # the Finish answer's values

    row = stored_session(session["participant"])
    assert {name: row[name] for name in CONNECTION_VALUES} == summary(recorded)

    table = subprocess.run(
        [sys.executable, "-m", "crowdplay", "data", "--store", TEST_SETTINGS.store_uri, "sessions", "--csv", "--participant", session["participant"]],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    [csv_row] = [entry for entry in csv.DictReader(io.StringIO(table)) if entry["session_id"] == row["session_id"]]
    assert float(csv_row["rtt_p95_ms"]) == row["rtt_p95_ms"] and int(csv_row["rtt_count"]) == len(recorded)

    # The researcher's example, as written, in a directory whose data/crowdplay.db is the store.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "crowdplay.db").symlink_to(TEST_SETTINGS.store_uri)
    (tmp_path / "example.py").write_text(connection_example())
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^\d+ of \d+ sessions had 95% of their round trips within 150 ms$", done.stdout, re.MULTILINE), done.stdout
    steady = row["rtt_p95_ms"] <= 150
    assert (f"{row['session_id']} {row['participant']} {row['rtt_p50_ms']} {row['rtt_p95_ms']}" in done.stdout) == steady, done.stdout


def test_the_page_shows_its_round_trip_and_a_slower_link_is_recorded_as_slower(browser, base_url, manager) -> None:
    host, port = base_url.split("://", 1)[1].split(":")
    link = DelayedLink(host, int(port))
    page = start_game(browser, f"http://127.0.0.1:{link.listen_port}", "Pong")
    game_id = page.evaluate("window.crowdplay.gameId")
    page.wait_for_selector("#round-trip:not([hidden])", timeout=10_000)
    shown = page.inner_text("#round-trip")
    assert re.fullmatch(r"Connection: \d+ ms", shown), shown
    assert "come back" in (page.get_attribute("#round-trip", "title") or "")
    fast = page.evaluate("window.crowdplay.rttMs.length")

    link.delay_s = ADDED_LATENCY_MS / 2000  # half of it each way
    page.wait_for_function(f"window.crowdplay.rttMs.slice({fast}).filter((ms) => ms > 150).length >= 3", timeout=20_000)
    slow_shown = int(re.fullmatch(r"Connection: (\d+) ms", page.inner_text("#round-trip")).group(1))  # type: ignore[union-attr]
    assert slow_shown > 150
    link.delay_s = 0.0
    page.wait_for_function("window.crowdplay.rttMs.at(-1) < 150", timeout=20_000)
    measured = page.evaluate("window.crowdplay.rttMs")
    page.click("#finish")
    page.wait_for_selector("#score-page:not([hidden])")
    values = page.evaluate("window.crowdplay.summary.values")
    page.close()
    link.close()

    [episode] = episodes_of(game_id, manager)
    with Dataset.open(TEST_SETTINGS.store_uri) as data:
        recorded = [sample["rtt_ms"] for sample in data.rtt_samples(episode["_id"])]
    slow = [ms for ms in recorded if ms > 150]
    assert len(slow) >= 2 and max(slow) >= ADDED_LATENCY_MS * 0.9, recorded  # the added latency (one measured across the change may fall short)
    assert any(ms < 150 for ms in recorded)  # before and after it
    assert len(recorded) >= len(measured) - 2 and all(any(abs(ms - page_ms) <= 0.05 for page_ms in measured) for ms in recorded)
    assert values["rtt_max_ms"] == max(recorded) > 150 and values["rtt_count"] == len(recorded)



def test_a_bad_round_trip_closes_the_connection_with_a_reason(base_url, manager) -> None:
    async def report(value: str) -> dict:
        async with await Participant.join(base_url, "Pong", decode=False, ping_every_s=None) as player:
            await player.send_raw(f'{{"type":"ping","t":1,"rtt_ms":{value}}}')
            await player.wait_closed()
            return next(event for event in player.events if event["type"] == "error")

    for value in ('"fast"', "-3", "60001"):
        error = run(report(value))
        assert error["code"] == 1008 and "'rtt_ms' must be a number in 0..60000" in error["reason"], error
