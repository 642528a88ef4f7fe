"""Request bodies are read as they arrive, each no further than its route's limit (issue 33): against
``crowdplay serve`` (real Serve, HAProxy and Ray), through HAProxy and straight to the ingress
replica's own port alike (HAProxy refuses at the edge; the replica on its own), eight concurrent
100 MB chunked uploads to each route that reads a body are all answered 413 while the replica's
memory stays within 20 MB of where it was; a body that stops arriving is answered 408 and its
connection closed at ``body_timeout_s``; and every route of the limits table
(``crowdplay.web.limits``, docs/protocol.md) takes a body of its limit and refuses one byte more,
announced or chunked."""

from __future__ import annotations

import concurrent.futures
import json
import select
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from crowdplay.config import Settings, free_port
from crowdplay.web.limits import BODY_LIMITS, LARGEST_BODY
from tests.conftest import crowdplay_serve, fresh_environment

NAMESPACE = "crowdplay-bodies-test"
ADMIN_TOKEN = "bodies-test-token"
UPLOADS = 8
UPLOAD_BYTES = 100 * 2**20
CHUNK = 64 * 2**10
RSS_MARGIN = 20 * 2**20
BODY_TIMEOUT_S = Settings().body_timeout_s
#: A body each route takes, size aside, and how the route then answers: sizes pass, and the route
#: goes on to check the body's content (an unknown game or session is refused after its size).
TAKEN: dict[str, tuple[dict[str, Any], int]] = {
    "POST /api/sessions": ({"task_id": "NoSuchGame"}, 404),
    "POST /api/feedback": ({"session_id": "no-such-session", "token": "t", "text": "thanks"}, 404),
    "POST /api/report": ({"text": "the game froze"}, 201),
    "POST /api/admin/games": ({"env_id": "NoSuchGame"}, 404),
}


@dataclass
class Answer:
    """What a raw HTTP exchange got back: the status, headers and body of the answer (status 0: no
    answer), the body bytes the client sent before it, when the answer began and when the
    connection was closed (seconds after the request's head was sent; None: not seen)."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    sent: int = 0
    answered_s: float | None = None
    closed_s: float | None = None


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """The deployment's two ways in: HAProxy's public port, and the ingress replica's own (Serve's
    direct ingress, which HAProxy sends requests to): what the replica does on its own shows there."""
    data = tmp_path_factory.mktemp("bodies")
    env = fresh_environment(
        CROWDPLAY_NAMESPACE=NAMESPACE, CROWDPLAY_WARM_POOL_SIZE="0", CROWDPLAY_ADMIN_TOKEN=ADMIN_TOKEN,
        CROWDPLAY_STORE_URI=str(data / "recordings.db"), CROWDPLAY_SPOOL_DIR=str(data / "spool"),
        RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="0",
        CROWDPLAY_NOTES_PER_CLIENT_BURST="1000", CROWDPLAY_NOTES_BURST="1000",  # the notes here test sizes, not rates
    )
    port = free_port()
    with crowdplay_serve(port, env):
        yield {"HAProxy": port, "replica": replica_port()}


def request_head(port: int, route: str, headers: dict[str, str]) -> bytes:
    method, path = route.split(" ", 1)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json", f"Authorization: Bearer {ADMIN_TOKEN}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def read_answer(connection: socket.socket, began: float, answer: Answer, patience_s: float, close_patience_s: float = 3.0) -> Answer:
    """The answer read from ``connection`` within ``patience_s`` (its head, then a body of its
    Content-Length), then whether the connection is closed within ``close_patience_s`` more."""
    connection.settimeout(patience_s)
    received = b""
    try:
        while b"\r\n\r\n" not in received:
            data = connection.recv(65536)
            if not data:
                answer.closed_s = time.monotonic() - began
                return answer
            answer.answered_s = answer.answered_s or time.monotonic() - began
            received += data
        head, body = received.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        answer.status = int(status_line.split()[1])
        answer.headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in header_lines)}
        while len(body) < int(answer.headers.get("content-length", "0")):
            data = connection.recv(65536)
            if not data:
                break
            body += data
        answer.body = json_or_text(body)
        if close_patience_s <= 0:
            return answer
        connection.settimeout(close_patience_s)
        while connection.recv(65536):
            pass
        answer.closed_s = time.monotonic() - began
    except (ConnectionResetError, BrokenPipeError):
        answer.closed_s = time.monotonic() - began
    except TimeoutError:
        pass
    return answer


def json_or_text(body: bytes) -> Any:
    """An answer's body decoded: JSON as such, anything else (an HTML error page) as text."""
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body.decode("latin-1")


def exchange(port: int, route: str, headers: dict[str, str], body: bytes, patience_s: float = 10.0, close_patience_s: float = 3.0) -> Answer:
    """``body`` sent after the head as it is (already chunked, when the headers say so), then the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        began = time.monotonic()
        connection.sendall(request_head(port, route, headers) + body)
        return read_answer(connection, began, Answer(sent=len(body)), patience_s, close_patience_s)


def upload(port: int, route: str) -> Answer:
    """A chunked body of ``UPLOAD_BYTES`` sent as fast as the connection takes it, until the
    server answers or stops reading; then the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        began = time.monotonic()
        connection.sendall(request_head(port, route, {"Transfer-Encoding": "chunked"}))
        piece, answer = chunk(b"x" * CHUNK), Answer()
        connection.settimeout(2.0)
        try:
            while answer.sent < UPLOAD_BYTES and not select.select([connection], [], [], 0)[0]:
                connection.sendall(piece)
                answer.sent += CHUNK
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            pass
        return read_answer(connection, began, answer, 30.0)


def resident(process: psutil.Process, samples: int = 10) -> float:
    """The median of ``samples`` readings of a process's resident memory, 50 ms apart."""
    readings = []
    for _ in range(samples):
        readings.append(process.memory_info().rss)
        time.sleep(0.05)
    return statistics.median(readings)


def ingress_replica() -> psutil.Process:
    """The ingress replica of this test's deployment (its environment names the namespace)."""
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "ServeReplica:crowdplay:Ingress" in " ".join(process.info["cmdline"] or []) and process.environ().get("CROWDPLAY_NAMESPACE") == NAMESPACE:
                return process
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise AssertionError("no ingress replica of this deployment found")


def app_servers(config: str) -> list[int]:
    """The ports of the ingress replicas in an HAProxy configuration Serve wrote (its backend's
    ``server SERVE_REPLICA_<app>-<deployment>-<id> <host>:<port>`` lines)."""
    return [int(words[2].rsplit(":", 1)[1]) for words in (line.split() for line in config.splitlines()) if words[:1] == ["server"] and words[1].startswith("SERVE_REPLICA_crowdplay-Ingress")]


def replica_port() -> int:
    """The port the ingress replica of this deployment serves HTTP on itself (Serve's direct
    ingress), as this deployment's HAProxy configuration names it."""
    for process in psutil.process_iter(["cmdline"]):
        try:
            arguments = process.info["cmdline"] or []
            if "-f" in arguments and arguments[0].endswith("haproxy") and process.environ().get("CROWDPLAY_NAMESPACE") == NAMESPACE:
                ports = app_servers(Path(arguments[arguments.index("-f") + 1]).read_text())
                if len(ports) == 1:
                    return ports[0]
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            continue
    raise AssertionError("no HAProxy of this deployment naming one replica found")


class Sampler:
    """A process's resident memory, sampled every 5 ms while in the ``with`` block."""

    def __init__(self, process: psutil.Process) -> None:
        self.process, self.samples, self.stop = process, [], threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while not self.stop.is_set():
            self.samples.append(self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def padded(fields: dict[str, Any], size: int) -> bytes:
    """``fields`` as JSON of exactly ``size`` bytes, padded with a field no route reads."""
    bare = len(json.dumps({**fields, "pad": ""}).encode())
    return json.dumps({**fields, "pad": "x" * (size - bare)}).encode()


def mb(size: float) -> str:
    return f"{size / 2**20:.1f} MB"


def test_concurrent_oversized_uploads_leave_the_ingress_replicas_memory_where_it_was(ports):
    replica = ingress_replica()
    for route, (fields, status) in TAKEN.items():  # every route once, within its limit: the code paths warm
        body = json.dumps(fields).encode()
        assert exchange(ports["replica"], route, {"Content-Length": str(len(body))}, body, close_patience_s=0).status == status
    time.sleep(1.0)
    for way_in, port in ports.items():
        before = resident(replica)
        with Sampler(replica) as sampler, concurrent.futures.ThreadPoolExecutor(UPLOADS) as pool:
            answers = {route: list(pool.map(upload, [port] * UPLOADS, [route] * UPLOADS)) for route in BODY_LIMITS}
        after = replica.memory_info().rss
        peak = max(sampler.samples)
        print(f"\nthrough {way_in}: ingress replica RSS before {mb(before)}, peak during {mb(peak)} ({len(sampler.samples)} samples), after {mb(after)}")
        for route, route_answers in answers.items():
            print(
                f"  {route}: statuses {sorted({a.status for a in route_answers})}, body sent before the answer "
                f"{mb(min(a.sent for a in route_answers))}-{mb(max(a.sent for a in route_answers))}, "
                f"answered within {max(a.answered_s or 0 for a in route_answers):.2f} s, closed within {max(a.closed_s or -1 for a in route_answers):.2f} s"
            )
        for route, route_answers in answers.items():
            assert all(a.status == 413 and a.body["error"] == "body_too_large" for a in route_answers), (way_in, route, route_answers)
            assert all(a.closed_s is not None for a in route_answers), (way_in, route, "a refused upload's connection was left open")
            assert all(a.sent < UPLOAD_BYTES for a in route_answers), (way_in, route, "a whole refused upload was read")
        assert peak - before < RSS_MARGIN and after - before < RSS_MARGIN, (way_in, mb(before), mb(peak), mb(after))


@pytest.mark.parametrize("way_in", ["HAProxy", "replica"])
def test_a_body_that_stops_arriving_is_answered_408_and_closed_at_its_timeout(ports, way_in):
    port, route = ports[way_in], "POST /api/feedback"
    stalled = {  # each sends part of its body, then nothing
        "announced within the limit": ({"Content-Length": "4000"}, b'{"text": "'),
        "chunked": ({"Transfer-Encoding": "chunked"}, chunk(b'{"text": "')),
    }
    with concurrent.futures.ThreadPoolExecutor(len(stalled) + 1) as pool:
        waiting = {name: pool.submit(exchange, port, route, headers, body, BODY_TIMEOUT_S + 10) for name, (headers, body) in stalled.items()}
        announced_huge = pool.submit(exchange, port, route, {"Content-Length": str(10 * 2**20)}, b'{"text": "', BODY_TIMEOUT_S + 10)
        answers = {name: future.result() for name, future in waiting.items()}
        huge = announced_huge.result()
    for name, answer in {**answers, "announced as 10 MB": huge}.items():
        print(f"\n{way_in}, {name}: {answer.status} {answer.body} after {answer.answered_s:.3f} s, closed after {answer.closed_s} s")
    for name, answer in answers.items():
        assert answer.status == 408 and answer.body["error"] == "request_timeout", (name, answer)
        assert BODY_TIMEOUT_S - 0.1 < answer.answered_s < BODY_TIMEOUT_S + 2, (name, answer)
        assert answer.closed_s is not None and answer.closed_s - answer.answered_s < 1.0, (name, answer)
    assert huge.status == 413 and huge.body["error"] == "body_too_large" and huge.answered_s < 2, huge  # refused on its announcement
    assert huge.closed_s is not None and huge.closed_s - huge.answered_s < 1.0, huge


@pytest.mark.parametrize("way_in", ["HAProxy", "replica"])
@pytest.mark.parametrize("route", sorted(BODY_LIMITS))
def test_every_documented_limit_holds_at_its_edge(ports, way_in, route):
    port, limit, (fields, taken_status) = ports[way_in], BODY_LIMITS[route], TAKEN[route]
    at_limit, over = padded(fields, limit), padded(fields, limit + 1)
    pieces = [at_limit[:limit // 2], at_limit[limit // 2:]]
    sent = {
        "at the limit, announced": exchange(port, route, {"Content-Length": str(limit)}, at_limit, close_patience_s=0),
        "at the limit, chunked": exchange(port, route, {"Transfer-Encoding": "chunked"}, b"".join(chunk(p) for p in pieces) + b"0\r\n\r\n", close_patience_s=0),
        "one byte over, announced": exchange(port, route, {"Content-Length": str(limit + 1)}, over, close_patience_s=0),
        "one byte over, chunked": exchange(port, route, {"Transfer-Encoding": "chunked"}, b"".join(chunk(over[at:at + 1000]) for at in range(0, limit + 1, 1000)) + b"0\r\n\r\n", close_patience_s=0),
        "one byte over, announced, not sent": exchange(port, route, {"Content-Length": str(limit + 1)}, b""),
    }
    print(f"\n{way_in}, {route} (limit {limit}): " + "; ".join(f"{name} {a.status} {a.body.get('error') if isinstance(a.body, dict) else a.body}" for name, a in sent.items()))
    unsent = sent.pop("one byte over, announced, not sent")
    for name, answer in sent.items():
        if name.startswith("at the limit"):
            assert answer.status == taken_status, (name, answer)
        else:
            assert answer.status == 413 and answer.body["error"] == "body_too_large", (name, answer)
    if way_in == "HAProxy" and limit < LARGEST_BODY:  # a length some route takes: HAProxy waits for the body, in vain
        assert unsent.status == 408 and unsent.body["error"] == "request_timeout" and unsent.answered_s > BODY_TIMEOUT_S - 0.1, unsent
    else:
        assert unsent.status == 413 and unsent.body["error"] == "body_too_large" and unsent.answered_s < 2, unsent
    assert unsent.closed_s is not None and unsent.closed_s - unsent.answered_s < 1.0, ("a refused body's connection was left open", unsent)
