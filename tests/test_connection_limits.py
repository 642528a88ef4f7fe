"""One client cannot use up the server's connections (issue 32): against ``crowdplay serve`` (real
Serve, HAProxy and Ray), a client address holding more idle connections than
``connections_per_client`` has the extra ones closed as soon as they are accepted and its idle ones
closed at their timeouts, while a participant at another address starts a game within 2 s and
``/api/health`` answers throughout."""

from __future__ import annotations

import multiprocessing
import os
import selectors
import socket
import time
import urllib.request
from typing import Any

from crowdplay.client import Participant
from crowdplay.config import free_port
from tests.conftest import crowdplay_serve, fresh_environment, run

LIMIT = 45
#: Short, so the test sees the timeouts strike in seconds (the defaults are 10 s and 15 s).
HEAD_TIMEOUT_S = 3.0
KEEP_ALIVE_TIMEOUT_S = 3.0
ATTACKER = "127.0.0.2"  # a loopback address of its own: to HAProxy, another machine
EXTRA = 2 * LIMIT
#: How an idle connection the attacker holds begins: nothing at all, half a request head
#: (slowloris), or a whole request answered and then nothing (an idle keep-alive connection).
KINDS = ("bare", "half", "kept")


def connect(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def refused(port: int, patience_s: float) -> bool:
    """Whether a new connection from the attacker is closed within ``patience_s``, unanswered (it
    may be reset before the connect call returns)."""
    try:
        with connect(port, ATTACKER) as connection:
            connection.settimeout(patience_s)
            return connection.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def begin(connection: socket.socket, kind: str, port: int) -> tuple[bytes, float]:
    """Start an idle connection of ``kind``; returns what it was answered (a kept one: its
    response, read at once) and when it began to be idle."""
    if kind == "half":
        connection.sendall(f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
    elif kind == "kept":
        connection.sendall(f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += connection.recv(65536)
        return answer, time.monotonic()
    return b"", time.monotonic()


def attack(port: int, results: Any, holding: Any) -> None:
    """An attacker on a machine of its own (at the lowest priority, as test_admission's flood):
    ``LIMIT`` idle connections of every kind, then ``EXTRA`` more, then a new one every 50 ms
    while its idle ones are open; reports when each was closed and what it was told."""
    try:
        results.put(attack_and_report(port, holding))
    except BaseException as error:
        holding.set()
        results.put({"failed": repr(error)})
        raise


def attack_and_report(port: int, holding: Any) -> dict[str, Any]:
    os.nice(19)
    selector = selectors.DefaultSelector()
    received: dict[int, bytes] = {}
    idle_since: dict[int, float] = {}
    first_opened = time.monotonic()
    for index in range(LIMIT):
        kind = KINDS[index % len(KINDS)]
        connection = connect(port, ATTACKER)
        received[connection.fileno()], idle_since[connection.fileno()] = begin(connection, kind, port)
        connection.setblocking(False)
        selector.register(connection, selectors.EVENT_READ, kind)
    time.sleep(0.2)  # every one accepted (and counted) before any extra arrives
    refused_at_once = sum(refused(port, 1.0) for _ in range(EXTRA))
    holding.set()
    closed: list[dict[str, Any]] = []
    retries = refused_retries = 0
    deadline = time.monotonic() + 30
    while len(closed) < LIMIT and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.05):
            connection, fd = key.fileobj, key.fd
            try:
                chunk = connection.recv(65536)  # type: ignore[union-attr]
            except ConnectionResetError:
                chunk = b""
            if chunk:
                received[fd] += chunk
                continue
            closed.append({"kind": key.data, "idle_s": time.monotonic() - idle_since[fd], "answer": received[fd].split(b"\r\n", 1)[0].decode()})
            selector.unregister(connection)
            connection.close()  # type: ignore[union-attr]
        # Again and again while its connections are surely all still open (none has reached its timeout).
        if time.monotonic() - first_opened < min(HEAD_TIMEOUT_S, KEEP_ALIVE_TIMEOUT_S) - 0.5:
            retries += 1
            refused_retries += refused(port, 0.5)
    # Its idle connections gone, the address is served again: refusals never held the limit up.
    with connect(port, ATTACKER) as after:
        answer_after = begin(after, "kept", port)[0].split(b"\r\n", 1)[0].decode()
    return {
        "refused_at_once": refused_at_once, "retries": retries, "refused_retries": refused_retries,
        "closed": closed, "still_open": LIMIT - len(closed), "answer_after": answer_after,
    }


async def newcomer(url: str) -> float:
    """Seconds from asking for a session to the game's first frame, from 127.0.0.1."""
    started = time.monotonic()
    player = await Participant.join(url, "SpaceInvaders")
    async with player:
        await player.next_frame()
    return time.monotonic() - started


def health(url: str) -> int:
    with urllib.request.urlopen(f"{url}/api/health", timeout=5) as response:
        return response.status


def test_one_address_holding_idle_connections_is_cut_off_while_a_newcomer_plays(tmp_path):
    env = fresh_environment(
        CROWDPLAY_NAMESPACE="crowdplay-connections-test", CROWDPLAY_WARM_POOL_SIZE="1",
        CROWDPLAY_STORE_URI=str(tmp_path / "recordings.db"), CROWDPLAY_SPOOL_DIR=str(tmp_path / "spool"),
        RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="0", CROWDPLAY_CONNECTIONS_PER_CLIENT=str(LIMIT),
        CROWDPLAY_REQUEST_HEAD_TIMEOUT_S=str(HEAD_TIMEOUT_S), CROWDPLAY_KEEP_ALIVE_TIMEOUT_S=str(KEEP_ALIVE_TIMEOUT_S),
        CROWDPLAY_SPARE_ENVS_PER_ACTOR="2",  # as the tests' own deployment: each spare built costs ~125 ms of CPU
    )
    port = free_port()
    with crowdplay_serve(port, env) as url:
        assert health(url) == 200
        warm_up_s = run(newcomer(url))  # the deployment's first game (its EnvActor's first emulator) is not the measure
        context = multiprocessing.get_context("spawn")
        results, holding = context.Queue(), context.Event()
        attacker = context.Process(target=attack, args=(port, results, holding))
        attacker.start()
        try:
            assert holding.wait(timeout=60), "the attacker never held its connections"
            health_during = [health(url)]
            seconds = run(newcomer(url))
            health_during.append(health(url))
            report = results.get(timeout=60)
        finally:
            attacker.join(timeout=30)
            attacker.kill()
        health_during.append(health(url))
    assert "failed" not in report, report
    closes = {kind: sorted(round(c["idle_s"], 2) for c in report["closed"] if c["kind"] == kind) for kind in KINDS}
    print(
        f"\nwarm-up game's first frame {warm_up_s:.2f} s, the newcomer's {seconds:.2f} s; health {health_during}; "
        f"refused {report['refused_at_once']} of {EXTRA} at once and {report['refused_retries']} of {report['retries']} retries; "
        f"idle closed after (s): {', '.join(f'{kind} {ts[0]}-{ts[-1]}' for kind, ts in closes.items() if ts)}; "
        f"afterwards {report['answer_after']!r}"
    )
    assert seconds < 2.0, seconds
    assert health_during == [200, 200, 200]
    assert report["refused_at_once"] == EXTRA  # beyond the limit: closed as soon as accepted
    assert report["retries"] > 10 and report["refused_retries"] == report["retries"]  # and again and again while it held them
    assert report["still_open"] == 0
    by_kind = {kind: [closing for closing in report["closed"] if closing["kind"] == kind] for kind in KINDS}
    assert all(len(closings) == LIMIT // len(KINDS) for closings in by_kind.values()), by_kind
    timeouts = {"bare": HEAD_TIMEOUT_S, "half": HEAD_TIMEOUT_S, "kept": KEEP_ALIVE_TIMEOUT_S}
    for kind, closings in by_kind.items():
        # At its timeout: not before, and not much after (a loaded machine may be a little late).
        assert all(timeouts[kind] - 0.2 < closing["idle_s"] < timeouts[kind] + 3 for closing in closings), (kind, closings)
    assert {closing["answer"] for closing in by_kind["bare"]} == {""}  # a probe is closed silently
    assert {closing["answer"] for closing in by_kind["half"]} == {"HTTP/1.1 408 Request Time-out"}
    assert {closing["answer"] for closing in by_kind["kept"]} == {"HTTP/1.1 200 OK"}  # answered, then closed idle
    assert report["answer_after"] == "HTTP/1.1 200 OK"
