"""`crowdplay serve` (what `make run` starts): prints the URL, serves the app and records play into the
embedded store, and on Ctrl-C ends the sessions, keeps what they recorded, and stops cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from crowdplay.client import Participant, http_json
from crowdplay.config import free_port
from crowdplay.data import Dataset


def test_serve_prints_the_url_records_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    store = tmp_path / "recordings.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "crowdplay", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A fresh machine's environment: not the HAProxy ports and files of the tests' own Ray instance.
        env={**{k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}, "CROWDPLAY_NAMESPACE": "crowdplay-cli-test",
             "CROWDPLAY_STORE_URI": str(store), "CROWDPLAY_SPOOL_DIR": str(tmp_path / "spool")},
    )
    try:
        url = None
        deadline = time.monotonic() + 120
        lines = []
        while time.monotonic() < deadline and url is None:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if f"http://127.0.0.1:{port}" in line:
                url = f"http://127.0.0.1:{port}"
        assert url, "no URL printed:\n" + "".join(lines[-30:])
        assert any(env["id"] == "Pong" for env in http_json(f"{url}/api/environments")["environments"])
        recording = next((line for line in iter(process.stdout.readline, "") if line.startswith("Recording to")), "")
        assert f"Recording to the embedded store {store}" in recording

        async def play_until_stopped() -> int:
            player = await Participant.join(url, "Pong")
            for _ in range(90):
                await player.next_frame()
            process.send_signal(signal.SIGINT)  # while the participant is still playing
            await player.wait_closed(60)
            return player.last_frame_id

        asyncio.run(play_until_stopped())
        assert process.wait(timeout=90) == 0
        [episode] = Dataset.open(str(store)).episodes()
        assert episode["status"] == "interrupted" and episode["reason"] == "the server is shutting down"
        assert episode["steps"] >= 89 and sum(c["steps"] for c in Dataset.open(str(store)).chunks(episode["_id"])) == episode["steps"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
