"""What a stranger can do with what is not secret: a participant's id does not give them the seat,
errors say what to do and nothing about the servers, and no body shape gets past the parser."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest
import ray
from starlette.datastructures import Headers

from crowdplay.assignments import UnknownSession
from crowdplay.client import Participant, http_json
from crowdplay.web.bodies import MAX_DEPTH, BadBody, nesting_depth, parse_json
from crowdplay.web.clients import client_address
from crowdplay.web.errors import MAX_REASON_CHARS, message_of
from tests.conftest import run

LEAKS = ("Traceback", "File \"", "pid=", "ip=", "\x1b[", "ray::", "actor", ".py")


def answer(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, dict, str]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), response.headers.get("content-type", "")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers.get("content-type", "")


def test_a_known_participant_id_without_the_browsers_resume_secret_gets_a_session_of_its_own(base_url):
    async def scenario():
        victim = await Participant.join(base_url, "SpaceInvaders", participant="VICTIM-WORKER-1")
        await victim.next_frame()
        stolen = http_json(f"{base_url}/api/sessions", {"env_id": "SpaceInvaders", "participant": "VICTIM-WORKER-1"})
        wrong = http_json(f"{base_url}/api/sessions", {"env_id": "SpaceInvaders", "participant": "VICTIM-WORKER-1", "resume": "0" * 32})
        async with await Participant.connect(base_url, stolen) as attacker:
            await attacker.next_frame()
        for _ in range(30):  # the victim plays on, undisturbed
            await victim.next_frame()
        finish = answer(f"{base_url}/api/sessions/{victim.session['session_id']}/finish?token={stolen['token']}", "POST")
        await victim.close()
        return victim, stolen, wrong, finish

    victim, stolen, wrong, finish = run(scenario())
    assert stolen["session_id"] != victim.session["session_id"] and wrong["session_id"] != victim.session["session_id"]
    assert stolen["resume"] != victim.session["resume"]
    assert not any(event["type"] == "error" for event in victim.events)
    assert finish[0] == 403 and finish[1]["error"] == "bad_token"  # the new session's token is no key to the victim's


@pytest.mark.parametrize("path, method", [("completion", "GET"), ("summary", "GET"), ("finish", "POST")])
def test_an_unknown_session_is_answered_with_a_short_reason_and_no_internals(base_url, path, method):
    status, body, kind = answer(f"{base_url}/api/sessions/{uuid.uuid4().hex}/{path}?token=x", method)
    assert status == 404 and "json" in kind and body["error"] == "not_found"
    assert len(body["reason"]) <= MAX_REASON_CHARS and not any(leak in body["reason"] for leak in LEAKS), body


@pytest.mark.parametrize("route", ["/api/sessions", "/api/feedback", "/api/report"])
@pytest.mark.parametrize("body", ["[" * 2000 + "]" * 2000, '{"a":' * 1000 + "1" + "}" * 1000, '{"params": {"a": [[[[[[[[[["x"]]]]]]]]]]}}'])
def test_deeply_nested_json_is_refused_with_a_reason(base_url, route, body):
    status, answer_body, kind = answer(base_url + route, "POST", body.encode()[:4096])
    assert status == 400 and "json" in kind and answer_body["error"] in ("too_deep", "invalid_json"), answer_body


def test_nesting_is_counted_outside_strings_only():
    assert nesting_depth('{"a": [1, {"b": "[[[[\\"{{"}]}', 8) == 3
    assert nesting_depth("[" * 5000, MAX_DEPTH) == MAX_DEPTH + 1  # stops counting past the limit
    assert parse_json(b'{"env_id": "Pong", "params": {"x": "y"}}', 4096) == {"env_id": "Pong", "params": {"x": "y"}}
    assert parse_json(b"", 10, empty={}) == {}
    for raw, kind in ((b"[" * 20 + b"]" * 20, "too_deep"), (b"\xff", "invalid_json"), (b"{", "invalid_json"), (b"x" * 11, "body_too_large")):
        with pytest.raises(BadBody) as refused:
            parse_json(raw, 10 if kind == "body_too_large" else 4096)
        assert refused.value.kind == kind


def test_an_exception_that_crossed_ray_shows_only_its_own_first_line():
    wrapped = ray.exceptions.RayTaskError("method", "Traceback (most recent call last):\n  File \"/x.py\"", UnknownSession("no session 'x'\nmore")).as_instanceof_cause()
    assert isinstance(wrapped, UnknownSession) and "pid=" in str(wrapped)
    assert message_of(wrapped) == "no session 'x'"
    assert message_of(ValueError("y" * 500)) == "y" * MAX_REASON_CHARS


def test_the_client_is_the_address_the_trusted_proxy_appended_not_what_the_client_wrote():
    headers = Headers(raw=[(b"x-forwarded-for", b"6.6.6.6, 10.0.0.7"), (b"x-forwarded-for", b"192.0.2.1")])
    assert client_address(headers, "127.0.0.1", 1) == "192.0.2.1"
    assert client_address(headers, "127.0.0.1", 2) == "10.0.0.7"
    assert client_address(headers, "127.0.0.1", 0) == "127.0.0.1"
    assert client_address(Headers(), "127.0.0.1", 1) == "127.0.0.1"
