"""The participant app's HTTP routes over a fake backend (no Ray, no server): each failure the
backend raises becomes its JSON answer, and requests reach the backend as they were sent."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from starlette.applications import Starlette

from crowdplay.admission import TooManyStarts
from crowdplay.config import Settings
from crowdplay.hosts import NoCapacity
from crowdplay.note_limits import NoteCapReached, TooManyNotes
from crowdplay.study_service import TaskClosed
from crowdplay.web.app import create_app
from crowdplay.web.backend import Attachment


class FakeBackend:
    """Answers every call from ``answers`` (raising it when it is an exception) and records the call."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        #: how long ``create_session`` takes
        self.slow_start_s = 0.0

    def _answer(self, name: str, *args: Any) -> Any:
        self.calls.append((name, args))
        answer = self.answers.get(name)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def create_session(self, env_id: str, participant: dict[str, Any] | None = None, client: str = "", start_id: str = "") -> dict[str, Any]:
        if self.slow_start_s:
            await asyncio.sleep(self.slow_start_s)
        return self._answer("create_session", env_id, participant, client)  # type: ignore[no-any-return]

    def withdraw_start(self, start_id: str) -> None:
        self._answer("withdraw_start")

    async def attach(self, session_id: str, token: str) -> Attachment:
        raise AssertionError("no websocket in these tests")

    async def watch(self, game_id: str) -> Attachment:
        raise AssertionError("no websocket in these tests")

    async def task_counts(self) -> dict[str, int]:
        return {}

    async def summary(self, session_id: str, token: str) -> dict[str, Any]:
        return self._answer("summary", session_id, token)  # type: ignore[no-any-return]

    async def finish(self, session_id: str, token: str) -> dict[str, Any]:
        return self._answer("finish", session_id, token)  # type: ignore[no-any-return]

    async def completion(self, session_id: str, token: str) -> dict[str, Any]:
        return self._answer("completion", session_id, token)  # type: ignore[no-any-return]

    async def note(self, kind: str, text: str, page: str, session_id: str | None, token: str | None, client: str = "") -> None:
        self._answer("note", kind, text, page, session_id, token, client)

    async def overview(self) -> dict[str, Any]:
        return self._answer("overview")  # type: ignore[no-any-return]

    async def start_ai_game(self, env_id: str) -> dict[str, Any]:
        return self._answer("start_ai_game", env_id)  # type: ignore[no-any-return]

    async def end_participant_session(self, session_id: str) -> dict[str, Any]:
        return self._answer("end_participant_session", session_id)  # type: ignore[no-any-return]


def request(
    app: Starlette, method: str, target: str, body: object = None, headers: dict[str, str] | None = None, leaves_after_s: float | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request straight into the ASGI app: the status, headers and decoded JSON body
    (``leaves_after_s``: the client disconnects that long after sending its body)."""
    path, _, query = target.partition("?")
    raw = b"" if body is None else json.dumps(body).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()],
        "client": ("203.0.113.7", 5000), "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        if received == 1:
            return {"type": "http.request", "body": raw, "more_body": False}
        if leaves_after_s is None:  # as a server does: nothing more until the client disconnects
            await asyncio.Event().wait()
        await asyncio.sleep(leaves_after_s or 0.0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        asyncio.run(app(scope, receive, send))
    except Exception:
        # Starlette answers an unexpected failure with the app's 500, then re-raises it for the server's log.
        if not sent or sent[0]["status"] != 500:
            raise
    start = sent[0]
    content = b"".join(message.get("body", b"") for message in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, json.loads(content)


SESSION = {"session_id": "s1", "token": "t1", "task_id": "SpaceInvaders"}


def test_a_session_answer_gains_its_websocket_address_and_the_backend_gets_the_checked_request() -> None:
    backend = FakeBackend(create_session=dict(SESSION))
    status, _, body = request(create_app(backend, Settings()), "POST", "/api/sessions", {"task_id": "SpaceInvaders", "participant": "p1"}, {"user-agent": "ua"})
    assert status == 201 and body == {**SESSION, "ws": "/ws/s1?token=t1"}
    assert backend.calls == [("create_session", ("SpaceInvaders", {"user_agent": "ua", "id": "p1", "params": {}}, "203.0.113.7"))]


@pytest.mark.parametrize("leaves_after_s", [0.0, 0.2])
def test_a_session_request_whose_client_leaves_before_its_answer_is_withdrawn(leaves_after_s: float) -> None:
    backend = FakeBackend(create_session=dict(SESSION))
    backend.slow_start_s = 0.5
    status, _, body = request(create_app(backend, Settings()), "POST", "/api/sessions", {"task_id": "SpaceInvaders"}, leaves_after_s=leaves_after_s)
    assert (status, body["error"]) == (499, "client_gone")
    assert [name for name, _ in backend.calls] == ["withdraw_start"]  # the start was cancelled before it was answered


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        ({"participant": "p"}, 400, "missing_env_id"),
        ({"task_id": "NoSuchGame"}, 404, "unknown_environment"),
        ({"task_id": "auto", "consented_at": "yesterday"}, 400, "invalid_participant"),
        ([1], 400, "invalid_json"),
    ],
)
def test_a_bad_session_request_is_refused_before_the_backend(body: object, status: int, kind: str) -> None:
    backend = FakeBackend()
    answer_status, _, answer = request(create_app(backend, Settings()), "POST", "/api/sessions", body)
    assert (answer_status, answer["error"]) == (status, kind) and answer["reason"]
    assert backend.calls == []


@pytest.mark.parametrize(
    ("failure", "status", "kind"),
    [
        (TooManyStarts("slow down", 2.2), 429, "too_many_requests"),
        (TaskClosed("the task is closed"), 409, "task_closed"),
        (NoCapacity("every host is full"), 503, "no_capacity"),
        (OSError("the store is down"), 503, "unavailable"),
    ],
)
def test_a_backend_failure_becomes_its_json_answer(failure: Exception, status: int, kind: str) -> None:
    answer_status, headers, answer = request(create_app(FakeBackend(create_session=failure), Settings()), "POST", "/api/sessions", {"task_id": "auto"})
    assert (answer_status, answer["error"]) == (status, kind)
    if status == 429:
        assert headers["retry-after"] == "3" and answer["retry_after_s"] == 3


def test_a_client_over_its_start_bound_is_refused_by_the_app_itself() -> None:
    backend = FakeBackend(create_session=dict(SESSION))
    app = create_app(backend, replace(Settings(), session_starts_per_client_burst=1))
    assert request(app, "POST", "/api/sessions", {"task_id": "auto"})[0] == 201
    assert request(app, "POST", "/api/sessions", {"task_id": "auto"})[0] == 429
    assert len(backend.calls) == 1


def test_session_routes_pass_the_session_and_its_token() -> None:
    backend = FakeBackend(summary={"progress": {}}, finish={"done": True}, completion={"code": "C"})
    app = create_app(backend, Settings())
    assert request(app, "GET", "/api/sessions/s1/summary?token=t1")[:3:2] == (200, {"progress": {}})
    assert request(app, "POST", "/api/sessions/s1/finish?token=t1")[:3:2] == (200, {"done": True})
    assert request(app, "GET", "/api/sessions/s1/completion")[:3:2] == (200, {"code": "C"})
    assert backend.calls == [("summary", ("s1", "t1")), ("finish", ("s1", "t1")), ("completion", ("s1", ""))]


def test_notes_are_checked_then_stored_stripped() -> None:
    backend = FakeBackend()
    app = create_app(backend, Settings())
    status, _, answer = request(app, "POST", "/api/feedback", {"text": "fun"})
    assert (status, answer["reason"]) == (400, "feedback needs the 'session_id' and 'token' of the session it is about")
    assert request(app, "POST", "/api/report", {"text": "  stuck  ", "page": "play"})[0] == 201
    assert backend.calls == [("note", ("report", "stuck", "play", None, None, "203.0.113.7"))]


def test_a_note_over_a_rate_is_answered_429_with_its_wait_and_over_a_sessions_cap_409() -> None:
    over_rate = create_app(FakeBackend(note=TooManyNotes("too many notes from your address; please wait", 7.0)), Settings())
    status, headers, answer = request(over_rate, "POST", "/api/report", {"text": "again"})
    assert (status, headers["retry-after"], answer["error"], answer["retry_after_s"]) == (429, "7", "too_many_requests", 7)
    over_cap = create_app(FakeBackend(note=NoteCapReached("this session has sent the 20 notes one session may send")), Settings())
    status, _, answer = request(over_cap, "POST", "/api/feedback", {"text": "more", "session_id": "s1", "token": "t1"})
    assert (status, answer["error"]) == (409, "note_limit")


def test_admin_routes_need_the_configured_token() -> None:
    backend = FakeBackend(overview={"totals": {}}, end_participant_session={"ended": True})
    assert request(create_app(backend, Settings()), "GET", "/api/admin/overview")[2]["error"] == "admin_disabled"
    app = create_app(backend, replace(Settings(), admin_token="secret"))
    assert request(app, "GET", "/api/admin/overview", headers={"Authorization": "Bearer wrong"})[2]["error"] == "unauthorized"
    status, _, answer = request(app, "GET", "/api/admin/overview", headers={"Authorization": "Bearer secret"})
    assert (status, answer["totals"]) == (200, {}) and "key_to_frame_ms" in answer["histograms"]  # the pages' reports to this replica, added
    assert request(app, "POST", "/api/admin/sessions/s1/end", headers={"Authorization": "Bearer secret"})[:3:2] == (200, {"ended": True})
    assert backend.calls == [("overview", ()), ("end_participant_session", ("s1",))]


def test_starlette_refusals_and_unexpected_failures_are_json_too() -> None:
    app = create_app(FakeBackend(overview=ValueError("broken")), replace(Settings(), admin_token="secret"))
    assert request(app, "GET", "/no/such/path")[:3:2] == (404, {"error": "http_error", "reason": "Not Found"})
    status, _, answer = request(app, "GET", "/metrics", headers={"Authorization": "Bearer secret"})
    assert (status, answer["error"]) == (500, "internal_error")
