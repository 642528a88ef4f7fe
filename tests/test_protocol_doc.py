"""docs/protocol.md checked against a real server: the session request's fields, the order of the
first messages of a game, ``hello``'s fields, and how ``finish``, ``summary`` and ``completion``
answer. The tables of the document are read here, so a field or error kind added to the code but
not to the document (or the other way round) fails."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websockets

from crowdplay import codec, protocol
from crowdplay.client import Participant
from tests.conftest import run

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "protocol.md").read_text()


# ----------------------------------------------------------------- the document's tables
def table(header: str, after: str = "") -> list[list[str]]:
    """The rows (cells stripped) of the first table whose header row starts with ``header``, after
    the first occurrence of ``after``."""
    lines = DOC[DOC.index(after):].splitlines() if after else DOC.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def documented_fields(header: str, after: str = "") -> set[str]:
    return {name for row in table(header, after) for name in names(row[0])}


def documented_errors() -> dict[str, int]:
    """``error`` kind -> HTTP status, from the error table (rows with a numeric status)."""
    return {names(row[1])[0]: int(row[0]) for row in table("| Status | `error` |") if row[0].isdigit()}


HELLO_FIELDS = documented_fields("| Field |", after="### `hello`")
SESSION_ANSWER = documented_fields("| Answer field |")
SUMMARY_FIELDS = documented_fields("| Summary field |")


def test_the_tables_were_found():
    assert {"type", "session_id", "env", "width", "height", "humans", "served_by"} <= HELLO_FIELDS
    assert {"session_id", "token", "ws", "task_id", "env_id", "resume"} <= SESSION_ANSWER
    assert {"finished", "values", "ranking"} <= SUMMARY_FIELDS
    assert {"bad_token", "not_complete", "no_completion", "not_found", "missing_env_id"} <= set(documented_errors())


def test_every_error_kind_of_the_web_layer_is_in_the_error_table_with_its_status():
    raised: dict[str, set[int]] = {}
    for path in (ROOT / "crowdplay" / "web").glob("*.py"):
        for status, kind in re.findall(r'(?:error|BadBody)\((\d+),\s*"(\w+)"', path.read_text()):
            raised.setdefault(kind, set()).add(int(status))
    assert raised, "no error(...) calls found: the pattern is out of date"
    errors = documented_errors()
    for kind, statuses in raised.items():
        assert kind in errors, f"error kind {kind!r} is not in docs/protocol.md's error table"
        assert statuses == {errors[kind]}, f"{kind!r}: the code answers {statuses}, the document says {errors[kind]}"


# ----------------------------------------------------------------- HTTP helpers
def request(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None) -> tuple[int, object]:
    """(status, decoded JSON answer), errors included."""
    sent = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(sent, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"null")


def assert_error(answer: tuple[int, object], kind: str) -> None:
    """The answer is the error ``kind`` with the status the error table gives it."""
    status, body = answer
    assert isinstance(body, dict) and body.get("error") == kind and body.get("reason"), answer
    assert status == documented_errors()[kind], answer


def post_session(base_url: str, body: object) -> tuple[int, object]:
    return request(f"{base_url}/api/sessions", "POST", json.dumps(body).encode())


def study_route(base_url: str, session: dict, route: str, token: str | None = None, method: str | None = None, **options) -> tuple[int, object]:
    token = session["token"] if token is None else token
    query = f"?token={token}" if token else ""
    method = method or ("POST" if route == "finish" else "GET")
    return request(f"{base_url}/api/sessions/{session['session_id']}/{route}{query}", method, b"" if method == "POST" else None, **options)


# ----------------------------------------------------------------- websocket helpers
async def read(ws, frames: int = 1, timeout: float = 20.0) -> list:
    """Messages until ``frames`` frames arrived: dicts for text, FrameHeaders for frames. ``stats``
    events are left out: they come every 120 ticks, at a phase of each game's own."""
    messages: list = []

    async def until_enough() -> None:
        while sum(isinstance(m, codec.FrameHeader) for m in messages) < frames:
            message = await ws.recv()
            decoded = json.loads(message) if isinstance(message, str) else codec.parse_header(message)[0]
            if not (isinstance(decoded, dict) and decoded["type"] == "stats"):
                messages.append(decoded)

    await asyncio.wait_for(until_enough(), timeout)
    return messages


def ws_url(base_url: str, session: dict) -> str:
    return base_url.replace("http", "ws", 1) + session["ws"]


def texts(messages: list) -> list[dict]:
    return [m for m in messages if isinstance(m, dict)]


def frames(messages: list) -> list[codec.FrameHeader]:
    return [m for m in messages if isinstance(m, codec.FrameHeader)]


async def refusal(base_url: str, session: dict) -> tuple[dict, int]:
    """The error message and close code a websocket to the session gets."""
    async with websockets.connect(ws_url(base_url, session)) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 20))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 20)
        return error, ws.close_code


# ----------------------------------------------------------------- POST /api/sessions
def test_a_session_is_requested_with_task_id_or_env_id_and_answers_the_documented_fields(base_url):
    status, by_task = post_session(base_url, {"task_id": "SpaceInvaders"})
    assert status == 201
    assert set(by_task) == SESSION_ANSWER - {"resume"}  # resume: only with a participant id
    assert by_task["task_id"] == by_task["env_id"] == "SpaceInvaders"
    assert by_task["participant"] == f"anonymous-{by_task['session_id']}"
    assert by_task["ws"] == f"/ws/{by_task['session_id']}?token={by_task['token']}"

    status, by_env = post_session(base_url, {"env_id": "SpaceInvaders", "participant": "protocol-doc-worker"})
    assert status == 201
    assert set(by_env) == SESSION_ANSWER
    assert by_env["task_id"] == "SpaceInvaders" and by_env["participant"].startswith("p-")

    assert_error(post_session(base_url, {}), "missing_env_id")
    assert_error(post_session(base_url, {"task_id": 5}), "missing_env_id")
    assert_error(post_session(base_url, {"task_id": None, "env_id": "SpaceInvaders"}), "missing_env_id")  # task_id wins
    assert_error(post_session(base_url, {"task_id": "NoSuchGame"}), "unknown_environment")
    assert_error(post_session(base_url, {"env_id": "NoSuchGame"}), "unknown_environment")
    assert_error(post_session(base_url, {"task_id": "NoSuchGame", "participant": 5}), "unknown_environment")  # the id first
    assert_error(post_session(base_url, {"task_id": "SpaceInvaders", "participant": 5}), "invalid_participant")
    assert_error(request(f"{base_url}/api/sessions", "POST", b""), "invalid_json")

    # A session can finish before it ever connected; its websocket is then refused with 4004.
    for session in (by_task, by_env):
        status, summary = study_route(base_url, session, "finish")
        assert status == 200 and summary["finished"] is True
    error, code = run(refusal(base_url, by_task))
    assert code == error["code"] == protocol.CLOSE_UNKNOWN_SESSION


# ----------------------------------------------------------------- the first messages of a game
def test_hello_has_exactly_the_documented_fields(base_url):
    async def scenario():
        async with await Participant.join(base_url, "SpaceInvaders") as player:
            return player.hello

    hello = run(scenario())
    assert set(hello) == HELLO_FIELDS
    assert set(hello["env"]) == {"id", "title", "description", "fps", "players", "mode"}
    assert hello["env"]["players"] == 1 and hello["env"]["mode"] == "realtime"
    assert hello["humans"] == ["agent_0"] and hello["session_id"] and hello["agent"] == "agent_0"


@pytest.mark.parametrize("env_id", ["SpaceInvaders", "TestDuoWithAI"])  # one person: alone, or with an AI partner
def test_a_game_with_one_person_sends_hello_lobby_lobby_play_then_its_first_frame(base_url, env_id):
    async def scenario():
        status, session = post_session(base_url, {"task_id": env_id})
        assert status == 201
        async with websockets.connect(ws_url(base_url, session)) as ws:
            messages = await read(ws, frames=3)
        study_route(base_url, session, "finish")
        return messages

    messages = run(scenario())
    first_frame = next(i for i, m in enumerate(messages) if isinstance(m, codec.FrameHeader))
    before = messages[:first_frame]
    assert [m["type"] for m in before] == ["hello", "lobby", "lobby", "play"]  # no countdown
    assert [m["phase"] for m in before[1:3]] == ["waiting", "countdown"]
    assert before[1]["awaiting"] == [] and set(before[1]["seats"].values()) <= {"ready", "ai"}
    first, *later = frames(messages)
    assert first.keyframe and first.new_episode
    assert all(not header.new_episode for header in later)
    assert [header.env_step for header in later] == sorted(header.env_step for header in later) and later[0].env_step > first.env_step
    assert not any(m["type"] == "countdown" for m in texts(messages))


def test_a_game_that_waits_for_input_sends_env_step_0_first_and_steps_on_a_key(base_url):
    async def scenario():
        status, session = post_session(base_url, {"task_id": "TestCartPole"})  # no no-op: it waits for a key
        assert status == 201
        async with websockets.connect(ws_url(base_url, session)) as ws:
            messages = await read(ws, frames=1)
            hello = messages[0]
            combination = next(iter(hello["keymaps"][hello["agent"]]))
            await ws.send(json.dumps({"type": "keys", "keys": combination.split("+"), "frame": 0, "seq": 1}))
            after = await read(ws, frames=1)
        study_route(base_url, session, "finish")
        return messages, after

    messages, after = run(scenario())
    assert [m["type"] for m in texts(messages)] == ["hello", "lobby", "lobby", "play"]
    (first,) = frames(messages)
    assert first.keyframe and first.new_episode and first.env_step == 0
    assert frames(after)[0].env_step == 1 and frames(after)[0].input_seq == 1


def test_a_game_with_several_people_sends_the_waiting_screen_then_a_countdown_then_play(base_url, settings):
    async def scenario():
        status, first_session = post_session(base_url, {"task_id": "TestDuoAlone"})
        assert status == 201
        first = await websockets.connect(ws_url(base_url, first_session))
        try:
            alone = await read(first, frames=1)  # before anyone else has even asked for a seat
            status, second_session = post_session(base_url, {"task_id": "TestDuoAlone"})
            assert status == 201 and second_session["game_id"] == first_session["game_id"]
            async with websockets.connect(ws_url(base_url, second_session)) as second:
                first_then = await read(first, frames=2)
                second_sees = await read(second, frames=2)
        finally:
            await first.close()
        return alone, first_then, second_sees

    alone, first_then, second_sees = run(scenario())
    hello, lobby, waiting_screen = alone
    assert hello["type"] == "hello" and hello["env"]["players"] == 2 and set(hello) == HELLO_FIELDS
    assert lobby["type"] == "lobby" and lobby["phase"] == "waiting" and lobby["awaiting"] == ["second_0"]
    assert waiting_screen.flags & 0x03 == 0x03 and waiting_screen.frame_id == 0 and waiting_screen.env_step == 0

    events = texts(first_then)
    assert [m["type"] for m in events] == ["lobby", "lobby", "lobby", "countdown", "play"]
    assert [(m["phase"], m["seats"]["second_0"]) for m in events[:3]] == [("waiting", "joining"), ("waiting", "ready"), ("countdown", "ready")]
    assert events[3]["seconds"] == settings.countdown_s
    assert isinstance(first_then[5], codec.FrameHeader) and not first_then[5].new_episode  # the first frame after play

    assert [m["type"] for m in texts(second_sees)] == ["hello", "lobby", "lobby", "countdown", "play"]
    second_first = frames(second_sees)[0]
    assert second_first.keyframe and second_first.new_episode
    play_at = second_sees.index({"type": "play"})
    if second_sees.index(second_first) < play_at:  # the waiting screen, as the document says
        assert second_first.frame_id == 0 and second_first.env_step == 0


# ----------------------------------------------------------------- finish, summary, completion
def test_finish_summary_and_completion_answer_as_documented(base_url):
    async def scenario():
        player = await Participant.join(base_url, "SpaceInvaders")
        session = player.session
        await player.next_frame()
        answers = {"summary": study_route(base_url, session, "summary")}
        for route in ("summary", "finish", "completion"):
            answers[f"{route} bad"] = study_route(base_url, session, route, token="not-the-token")
            answers[f"{route} none"] = study_route(base_url, session, route, token="")
            answers[f"{route} header"] = study_route(base_url, session, route, token="", headers={"Authorization": f"Bearer {session['token']}"})
            answers[f"{route} unknown"] = study_route(base_url, {**session, "session_id": "nosuchsession"}, route)
        answers["finish body"] = request(f"{base_url}/api/sessions/{session['session_id']}/finish", "POST", json.dumps({"token": session["token"]}).encode())
        answers["finish GET"] = study_route(base_url, session, "finish", method="GET")
        answers["summary POST"] = study_route(base_url, session, "summary", method="POST")
        answers["completion"] = study_route(base_url, session, "completion")
        answers["finish"] = study_route(base_url, session, "finish")
        end = await player.wait_for_event("end", timeout=20)
        await player.wait_closed(timeout=20)
        answers["finish again"] = study_route(base_url, session, "finish")
        answers["summary after"] = study_route(base_url, session, "summary")
        answers["completion after"] = study_route(base_url, session, "completion")
        await player.close()
        return session, answers, end, player.websocket.close_code, await refusal(base_url, session)

    session, answers, end, close_code, (error, refused_code) = run(scenario())
    status, summary = answers["summary"]
    assert status == 200 and set(summary) == SUMMARY_FIELDS - {"ranking"}
    assert summary["finished"] is False and summary["task_id"] == "SpaceInvaders"
    for route in ("summary", "finish", "completion"):
        assert_error(answers[f"{route} bad"], "bad_token")
        assert_error(answers[f"{route} none"], "bad_token")
        assert_error(answers[f"{route} header"], "bad_token")  # the token is read from the query string only
        assert_error(answers[f"{route} unknown"], "not_found")
    assert_error(answers["finish body"], "bad_token")
    assert answers["finish GET"][0] == answers["summary POST"][0] == 405
    assert answers["finish GET"][1]["error"] == "http_error"
    assert_error(answers["completion"], "no_completion")  # a game outside a study: complete, but no code or URL

    status, finished = answers["finish"]
    assert status == 200 and set(finished) == SUMMARY_FIELDS and finished["finished"] is True
    assert set(finished["ranking"]) == {"score", "others", "percentile", "participants", "histogram"}
    assert set(finished["ranking"]["histogram"]) == {"edges", "counts", "own_bin"}
    assert end["reason"] == "you finished playing" and close_code == protocol.CLOSE_SESSION_ENDED
    for later in ("finish again", "summary after"):
        status, answer = answers[later]
        assert status == 200 and answer["finished"] is True and "ranking" in answer
    assert_error(answers["completion after"], "no_completion")
    assert refused_code == error["code"] == protocol.CLOSE_UNKNOWN_SESSION
