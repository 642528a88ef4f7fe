"""Request bodies read as they arrive (``crowdplay.web.bodies.read_body``), over a fake ASGI receive:
a body is refused as soon as it is announced or read past its limit, without reading the rest; a
body that stops arriving is refused at its deadline; the routes take the limits of the one table,
which docs/protocol.md lists as it is."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from crowdplay.config import Settings
from crowdplay.web.app import create_app
from crowdplay.web.bodies import BadBody, read_body
from crowdplay.web.limits import BODY_LIMITS, LARGEST_BODY

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


class FakeReceive:
    """An ASGI receive that hands out ``chunks`` one message each, and counts what was taken. Then:
    ``end``: that was the whole body, and the client waits for its answer (nothing more comes);
    ``hang``: the body stops arriving; ``disconnect``: the client goes away before finishing it."""

    def __init__(self, chunks: list[bytes], then: str = "end") -> None:
        self.chunks, self.then, self.taken = chunks, then, 0

    async def __call__(self) -> dict[str, Any]:
        if self.taken < len(self.chunks):
            self.taken += 1
            more = self.taken < len(self.chunks) or self.then != "end"
            return {"type": "http.request", "body": self.chunks[self.taken - 1], "more_body": more}
        if self.then == "disconnect":
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def http_scope(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("203.0.113.7", 5000), "server": ("testserver", 80),
    }


def read(receive: FakeReceive, limit: int, timeout_s: float = 5.0, headers: dict[str, str] | None = None) -> bytes:
    request = Request(http_scope("POST", "/", headers or {}), receive)
    return asyncio.run(read_body(request, limit, timeout_s))


def refusal(receive: FakeReceive, limit: int, timeout_s: float = 5.0, headers: dict[str, str] | None = None) -> BadBody:
    with pytest.raises(BadBody) as refused:
        read(receive, limit, timeout_s, headers)
    return refused.value


def test_a_body_within_its_limit_is_read_whole_across_chunks() -> None:
    assert read(FakeReceive([b"ab", b"", b"cd"]), 4) == b"abcd"
    assert read(FakeReceive([b"x" * 100]), 100, headers={"content-length": "100"}) == b"x" * 100


def test_an_announced_length_over_the_limit_is_refused_before_any_of_the_body_is_read() -> None:
    receive = FakeReceive([b"x" * 1000] * 100)
    refused = refusal(receive, 100, headers={"content-length": str(100 * 1000)})
    assert (refused.status, refused.kind, receive.taken) == (413, "body_too_large", 0)
    assert refused.headers == {"Connection": "close"}


def test_a_streamed_body_is_refused_with_the_chunk_that_passes_the_limit_and_the_rest_is_never_read() -> None:
    receive = FakeReceive([b"x" * 60] * 1000)  # chunked: no length announced
    refused = refusal(receive, 100)
    assert (refused.status, refused.kind, receive.taken) == (413, "body_too_large", 2)
    assert refused.headers == {"Connection": "close"}


def test_the_limit_itself_is_accepted_and_one_byte_more_refused() -> None:
    assert read(FakeReceive([b"x" * 99, b"y"]), 100) == b"x" * 99 + b"y"
    assert refusal(FakeReceive([b"x" * 100, b"y"]), 100).kind == "body_too_large"
    assert refusal(FakeReceive([b"x"]), 100, headers={"content-length": "101"}).kind == "body_too_large"


def test_a_body_that_stops_arriving_is_refused_at_its_deadline() -> None:
    started = time.monotonic()
    refused = refusal(FakeReceive([b"{"], then="hang"), 100, timeout_s=0.2)
    waited = time.monotonic() - started
    assert (refused.status, refused.kind) == (408, "request_timeout") and 0.2 <= waited < 1.0, waited
    assert refused.headers == {"Connection": "close"}


def test_a_deadline_of_zero_is_none() -> None:
    assert read(FakeReceive([b"{}"]), 100, timeout_s=0) == b"{}"


def test_a_client_that_goes_away_mid_body_is_an_incomplete_body() -> None:
    refused = refusal(FakeReceive([b"{"], then="disconnect"), 100)
    assert (refused.status, refused.kind, refused.headers) == (400, "body_incomplete", None)


class Backend:
    """The calls of the three routes that read a body, recorded and answered."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def create_session(self, *args: Any) -> dict[str, Any]:
        self.calls.append(("create_session", args))
        return {"session_id": "s", "token": "t"}

    async def note(self, *args: Any) -> None:
        self.calls.append(("note", args))

    async def start_ai_game(self, *args: Any) -> dict[str, Any]:
        self.calls.append(("start_ai_game", args))
        return {"game_id": "g", "env_id": "e"}


def post(path: str, raw: bytes, chunks: int = 1, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict[str, Any], Backend]:
    """``raw`` posted to the app in ``chunks`` pieces: the status, headers and JSON answer, and the backend."""
    backend = Backend()
    app = create_app(backend, Settings(admin_token="secret"))  # type: ignore[arg-type]  # only the routes above are asked
    size = -(-len(raw) // chunks)
    receive = FakeReceive([raw[at:at + size] for at in range(0, len(raw), size)] or [b""])
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(http_scope("POST", path, {"authorization": "Bearer secret", **(headers or {})}), receive, send))
    answer = json.loads(b"".join(message.get("body", b"") for message in sent[1:]) or b"null")
    return sent[0]["status"], {k.decode(): v.decode() for k, v in sent[0]["headers"]}, answer, backend


def padded(fields: dict[str, Any], size: int) -> bytes:
    """``fields`` as JSON of exactly ``size`` bytes, padded with a field no route reads."""
    bare = len(json.dumps({**fields, "pad": ""}).encode())
    return json.dumps({**fields, "pad": "x" * (size - bare)}).encode()


#: A body each route takes, besides its size: the route reaches its backend with it.
TAKEN = {
    "POST /api/sessions": {"task_id": "SpaceInvaders"},
    "POST /api/feedback": {"session_id": "s", "token": "t", "text": "thanks"},
    "POST /api/report": {"text": "the game froze"},
    "POST /api/admin/games": {"env_id": "SpaceInvaders"},
}


@pytest.mark.parametrize("route", sorted(BODY_LIMITS))
def test_every_route_takes_a_body_of_its_limit_and_refuses_one_byte_more(route: str) -> None:
    path, limit = route.split(" ", 1)[1], BODY_LIMITS[route]
    status, _, answer, backend = post(path, padded(TAKEN[route], limit), chunks=3)
    assert status in (200, 201) and backend.calls, (status, answer)
    status, headers, answer, backend = post(path, padded(TAKEN[route], limit + 1), chunks=3)
    assert (status, answer["error"], headers.get("connection"), backend.calls) == (413, "body_too_large", "close", [])
    status, _, answer, _ = post(path, b"{}", headers={"content-length": str(limit + 1)})
    assert (status, answer["error"]) == (413, "body_too_large")


def test_a_note_is_limited_by_its_body_alone() -> None:
    text = "x" * (BODY_LIMITS["POST /api/report"] - 100)  # longer than any limit of the text's own
    status, _, _, backend = post("/api/report", json.dumps({"text": text}).encode())
    assert status == 201 and backend.calls[0][1][1] == text
    status, _, answer, _ = post("/api/report", json.dumps({"text": " "}).encode())
    assert (status, answer["error"]) == (400, "invalid_note")


def test_the_documented_table_is_the_table_the_routes_use() -> None:
    section = PROTOCOL.read_text().split("#### Request bodies", 1)[1].split("\n#### ", 1)[0]
    documented = {route: int(limit) for route, limit in re.findall(r"^\| `(\w+ /\S+)` \| (\d+) \|$", section, re.MULTILINE)}
    assert documented == BODY_LIMITS
    assert LARGEST_BODY == max(documented.values())
