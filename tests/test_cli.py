"""`crowdplay serve` (what `make run` starts): prints the URL, serves the app, stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from crowdplay.client import http_json
from crowdplay.config import free_port


def test_serve_prints_the_url_serves_games_and_stops_on_ctrl_c():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "crowdplay", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A fresh machine's environment: not the HAProxy ports and files of the tests' own Ray instance.
        env={**{k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}, "CROWDPLAY_NAMESPACE": "crowdplay-cli-test"},
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
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
