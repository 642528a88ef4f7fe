"""Every error the public port answers is JSON of a documented kind (issue 33): against ``crowdplay
serve`` (real Serve, HAProxy and Ray, with a study of its own), one request of every malformed or
refused kind, sent as raw bytes, and every answer that is not 2xx has ``Content-Type:
application/json`` and a body ``{"error": str, "reason": str, ...}`` whose status and kind are in
docs/protocol.md's error tables.

HAProxy 2.8 (Ray's) answers a request head it cannot parse (400) or that never completes (408) from
its HTTP/1 parser, with its built-in HTML, before any configuration applies (haproxy/haproxy#3032,
fixed in 3.2): those cases are marked as that known gap when HAProxy answers them so, and checked
like the others once it answers them in JSON."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from crowdplay.config import free_port
from crowdplay.web.errors import MAX_REASON_CHARS
from tests.conftest import crowdplay_serve, researcher_environment

PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
HEAD_TIMEOUT_S = 2.0
NAMESPACE = "crowdplay-error-bodies-test"
HAPROXY_PARSER = "HAProxy 2.8 answers from its HTTP/1 parser with its built-in HTML (haproxy/haproxy#3032, fixed in 3.2)"
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
STUDY = '''
"""A task with a library image (removed for a moment by the test: its route then fails) and a
completion code without requirements (the completion is at once)."""
from crowdplay.study import define_study

define_study({{
    "title": "Errors study",
    "tasks": {{"invaders": {{"environment": "SpaceInvaders", "title": "Space Invaders", "image": {image!r}, "completion_code": "DONE"}}}},
}})
'''


def documented() -> set[tuple[int | None, str]]:
    """(status, kind) of every row of docs/protocol.md's error tables; status None: any status."""
    section = PROTOCOL.read_text().split("#### Errors", 1)[1].split("\n### ", 1)[0]
    rows = set()
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.search(r"`\w+`", cells[1]):
            continue
        statuses: list[int | None] = [int(s) for s in cells[0].split(", ")] if re.fullmatch(r"\d{3}(, \d{3})*", cells[0]) else [None]
        rows |= {(status, kind) for status in statuses for kind in re.findall(r"`(\w+)`", cells[1])}
    return rows


@dataclass(frozen=True)
class Answer:
    """An HTTP answer read off a socket: status, headers (lower-case names) and body; status 0 for
    a connection closed unanswered."""

    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        """The JSON error body, checked for the one shape."""
        assert self.headers.get("content-type", "").split(";")[0] == "application/json", (self.status, self.headers, self.body[:300])
        parsed = json.loads(self.body)
        assert isinstance(parsed, dict) and isinstance(parsed.get("error"), str) and isinstance(parsed.get("reason"), str), parsed
        assert 0 < len(parsed["reason"]) <= MAX_REASON_CHARS, parsed
        return parsed


def exchange(port: int, request: bytes, patience_s: float = 30.0) -> Answer:
    """Send ``request`` as it is on a connection of its own and read the answer until the server
    closes (every request here asks it to, or is one it closes after)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=patience_s) as connection:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(request)
        with contextlib.suppress(ConnectionResetError):
            while chunk := connection.recv(65536):
                received += chunk
                if complete(received):
                    break
    if not received:
        return Answer(0, {}, b"")
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines if ":" in line)}
    return Answer(int(status_line.split()[1]), headers, body)


def complete(received: bytes) -> bool:
    """Whether ``received`` holds a whole answer with a ``Content-Length`` (a websocket upgrade
    refused may leave the connection open after it)."""
    head, found, body = received.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(found and length and len(body) >= int(length[1]))


def request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """A well-formed HTTP/1.1 request that asks the server to close the connection after it."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


START = request("POST", "/api/sessions", {"Content-Type": "application/json"}, b'{"task_id": "invaders"}')


@dataclass(frozen=True)
class Case:
    """One kind of request: what to send (given the deployment), the status it gets (or any of
    several), and why HAProxy cannot answer it in JSON, if it cannot."""

    name: str
    send: Callable[[dict[str, Any]], bytes]
    status: int | tuple[int, ...]
    gap: str = ""
    patience_s: float = 30.0
    around: Callable[[dict[str, Any]], contextlib.AbstractContextManager[None]] = field(default=lambda served: contextlib.nullcontext())


@contextlib.contextmanager
def image_missing(served: dict[str, Any]) -> Iterator[None]:
    """The task's image file gone for the request (the study checked it when it loaded)."""
    image = Path(served["image"])
    kept = image.read_bytes()
    image.unlink()
    try:
        yield
    finally:
        image.write_bytes(kept)


@contextlib.contextmanager
def store_disk_full(served: dict[str, Any]) -> Iterator[None]:
    """The store's file system (a small tmpfs of its own) filled to the last byte."""
    if served["disk"] is None:
        pytest.skip("mounting a small tmpfs for the store needs root")
    filler = Path(served["disk"]) / "filler"
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as file:
        while True:
            file.write(b"\0" * 4096)
    with pytest.raises(OSError):  # full: a page more does not fit
        (Path(served["disk"]) / "probe").write_bytes(b"\0" * 4096)
    try:
        yield
    finally:
        filler.unlink()
        (Path(served["disk"]) / "probe").unlink(missing_ok=True)


def completion(which: int) -> Callable[[dict[str, Any]], bytes]:
    """The completion request of the deployment's session ``which`` (each completes once: the
    first completion saves the assignment)."""

    def send(served: dict[str, Any]) -> bytes:
        session = served["sessions"][which]
        return request("GET", f"/api/sessions/{session['session_id']}/completion?token={session['token']}")

    return send


CASES = [
    Case("a raw 0xff byte in the path", lambda _: b"GET /\xff HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 400, HAPROXY_PARSER),
    Case("1,000 headers", lambda _: request("GET", "/api/health", {f"X-Header-{i}": "x" for i in range(1000)}), 400, HAPROXY_PARSER),
    Case("a 64 KB header", lambda _: request("GET", "/api/health", {"X-Big": "x" * 65536}), 400, HAPROXY_PARSER),
    Case("a 20 KB URI", lambda _: request("GET", "/api/health?" + "x" * 20_000), 400, HAPROXY_PARSER),
    Case("a malformed request line", lambda _: b"HELLO\r\n\r\n", 400, HAPROXY_PARSER),
    Case("a request head that never completes", lambda _: b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n", 408, HAPROXY_PARSER, HEAD_TIMEOUT_S + 10),
    Case("an unknown method", lambda _: request("BREW", "/api/health"), 400),
    Case("a wrong method on a known route", lambda _: request("DELETE", "/api/sessions"), 405),
    Case("an unknown path", lambda _: request("GET", "/no/such/page"), 404),
    Case("a request for no path at all", lambda _: request("OPTIONS", "*"), 404),
    Case("a body on a route that takes none", lambda _: request("POST", "/api/health", {"Content-Type": "application/json"}, b"{}"), 405),
    Case("a body over its route's limit", lambda _: request("POST", "/api/sessions", {"Content-Type": "application/json"}, b" " * 5000), 413),
    Case("a body that is not JSON", lambda _: request("POST", "/api/report", {"Content-Type": "application/json"}, b"not json"), 400),
    Case("a malformed Range", lambda _: request("GET", "/", {"Range": "bytes=x"}), 400),
    Case("a Range past the file's end", lambda _: request("GET", "/", {"Range": "bytes=99999999-"}), 416),
    Case("a websocket upgrade of an HTTP route", lambda _: request("GET", "/api/health", UPGRADE), 403),
    Case("a websocket upgrade without its key", lambda _: request("GET", "/ws/nobody", {k: v for k, v in UPGRADE.items() if k != "Sec-WebSocket-Key"}), 400, HAPROXY_PARSER),
    Case("a websocket upgrade of another version", lambda _: request("GET", "/ws/nobody", {**UPGRADE, "Sec-WebSocket-Version": "99"}), 400),
    Case("an app failure (a task's image file gone)", lambda _: request("GET", "/api/tasks/invaders/image"), 500, around=image_missing),
    Case("completion with the store healthy", completion(0), 200),
    # A store that cannot save the completed assignment: the code (the manager keeps the save and
    # retries it until it lands, crowdplay.recording.store_link), or 503 unavailable when the
    # manager's answer fails; both seen here, neither plain text.
    Case("completion while the store's disk is full", completion(1), (200, 503), around=store_disk_full),
    Case("a session started while the store's disk is full", lambda _: START, (201, 503), around=store_disk_full),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``crowdplay serve`` with the study above, its head timeout short, its store on a 1 MB tmpfs
    of its own (where root may mount one), and two sessions started."""
    directory = tmp_path_factory.mktemp("error-bodies")
    image = directory / "card.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (directory / "error_study.py").write_text(STUDY.format(image=str(image)))
    disk = directory / "store-disk"
    disk.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode == 0
    env = researcher_environment(
        directory, CROWDPLAY_PLUGINS="error_study", CROWDPLAY_STORE_URI=str(disk / "recordings.db"), CROWDPLAY_SPOOL_DIR=str(directory / "spool"),
        CROWDPLAY_NAMESPACE=NAMESPACE, CROWDPLAY_WARM_POOL_SIZE="1", CROWDPLAY_SPARE_ENVS_PER_ACTOR="2",
        RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="0", CROWDPLAY_REQUEST_HEAD_TIMEOUT_S=str(HEAD_TIMEOUT_S),
    )
    port = free_port()
    try:
        with crowdplay_serve(port, env, cwd=directory):
            started = [exchange(port, START) for _ in range(2)]
            assert [answer.status for answer in started] == [201, 201], started
            yield {"port": port, "image": image, "disk": disk if mounted else None, "sessions": [json.loads(answer.body) for answer in started]}
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_answer_that_is_not_2xx_is_json_of_a_documented_kind(served, case):
    with case.around(served):
        started = time.monotonic()
        answer = exchange(served["port"], case.send(served), case.patience_s)
    expected = case.status if isinstance(case.status, tuple) else (case.status,)
    print(f"\n{case.name}: {answer.status} {answer.headers.get('content-type')} {answer.body[:120]!r} after {time.monotonic() - started:.1f} s")
    assert answer.status in expected, (answer.status, answer.headers, answer.body[:300])
    if 200 <= answer.status < 300:
        return
    if case.gap and answer.headers.get("content-type") == "text/html" and b"<html>" in answer.body:
        pytest.xfail(case.gap)  # exactly the known gap: the status expected, in HAProxy's built-in HTML
    kind = answer.error()["error"]
    rows = documented()
    assert (answer.status, kind) in rows or (None, kind) in rows, f"{answer.status} {kind} is not in docs/protocol.md's error tables"


def test_the_documented_table_is_what_the_parser_reads():
    rows = documented()
    assert {(413, "body_too_large"), (500, "internal_error"), (None, "http_error"), (502, "unavailable"), (407, "unauthorized"), (416, "range_not_satisfiable")} <= rows
