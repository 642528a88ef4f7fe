"""`crowdplay serve` (what `make run` starts): prints the URL, serves the app and records play into the
embedded store, and on Ctrl-C (or SIGTERM) ends the sessions, keeps what they recorded, and stops
everything within seconds."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from crowdplay.client import Participant, http_json
from crowdplay.config import free_port
from crowdplay.data import Dataset
from crowdplay.shutdown import RECORDINGS_TIMEOUT_S, Saved, haproxies_running_in, kill_leftovers

#: `crowdplay serve` must stop within 5 s of Ctrl-C (~2.5 s measured on 2 cores); asserted with
#: room for a machine twice as slow and a test running beside this one.
STOP_BOUND_S = 10.0


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:``port`` any more (an HAProxy left behind would)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_prints_the_url_records_and_stops_within_seconds(tmp_path, signum):
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

        async def play_until_stopped() -> float:
            player = await Participant.join(url, "Pong")
            for _ in range(90):
                await player.next_frame()
            signalled_at = time.monotonic()
            process.send_signal(signum)  # while the participant is still playing
            await player.wait_closed(60)
            return signalled_at

        signalled_at = asyncio.run(play_until_stopped())
        assert process.wait(timeout=90) == 0
        stop_s = time.monotonic() - signalled_at
        output = process.stdout.read()
        print(f"crowdplay serve stopped {stop_s:.2f} s after {signal.Signals(signum).name}")
        assert stop_s < STOP_BOUND_S, f"stopping took {stop_s:.1f} s:\n{output}"
        assert "Ended 1 session and saved their recordings:" in output and "Stopped in" in output, output
        assert "Controller failed to shut down" not in output
        assert port_is_free(port), "something still listens on the port after crowdplay serve exited"

        [episode] = Dataset.open(str(store)).episodes()
        assert episode["status"] == "interrupted" and episode["reason"] == "the server is shutting down"
        assert episode["steps"] >= 89 and sum(c["steps"] for c in Dataset.open(str(store)).chunks(episode["_id"])) == episode["steps"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_stop_says_what_was_saved_and_warns_when_it_cannot_confirm_it():
    stats = {"chunks_written": 12, "spooled_batches": 2}
    saved = Saved(3, True, stats, record=True)
    assert saved.summary() == "Ended 3 sessions and saved their recordings: 12 chunks stored this run; 2 batches wait in the spool for the store."
    assert not saved.warning
    late = Saved(1, False, stats, record=True)
    assert late.warning and f"within {RECORDINGS_TIMEOUT_S:.0f} s" in late.summary() and "lost" in late.summary()
    silent = Saved(None, False, None, record=True, error="GetTimeoutError: timed out")
    assert silent.warning and "GetTimeoutError" in silent.summary()
    assert Saved(0, True, None, record=False).summary() == "Ended 0 sessions (recording is off)."


def test_an_haproxy_running_this_instances_configuration_is_found_and_no_other(tmp_path):
    """Serve may start a new HAProxy (a reload) while Ray shuts down, after this process listed
    its children; the stop finds it by its configuration's directory."""
    binary = tmp_path / "haproxy"  # a process by that name, as the real one is
    shutil.copy(os.path.realpath(sys.executable), binary)
    mine = tmp_path / "cp-mine"
    asleep = "import time; time.sleep(60)"
    processes = [
        subprocess.Popen([str(binary), "-c", asleep, "-db", "-f", f"{mine}/node/haproxy.cfg"]),
        subprocess.Popen([str(binary), "-c", asleep, "-db", "-f", f"{tmp_path}/cp-other/node/haproxy.cfg"]),
        subprocess.Popen([sys.executable, "-c", asleep, f"{mine}/node/haproxy.cfg"]),  # not an HAProxy
    ]
    try:
        time.sleep(0.2)
        assert [process.pid for process in haproxies_running_in(str(mine))] == [processes[0].pid]
    finally:
        for process in processes:
            process.kill()
            process.wait()


def test_processes_that_outlive_the_shutdown_are_killed_and_exited_ones_left_alone():
    import psutil

    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
    try:
        started = time.monotonic()
        assert kill_leftovers([psutil.Process(quick.pid), psutil.Process(stubborn.pid)], timeout_s=1.5) == 1
        assert quick.wait(timeout=5) == 0  # exited on its own within the time: not killed
        assert stubborn.wait(timeout=5) == -signal.SIGKILL and time.monotonic() - started < 5
        assert kill_leftovers([], timeout_s=0.3) == 0
    finally:
        for process in (quick, stubborn):
            if process.poll() is None:
                process.kill()
