"""Who may do what: a websocket is bound to its session's token and to the study's own origin,
a connection cannot flood the server, and participant ids are stored only as pseudonyms."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import ray
import websockets

from crowdplay import protocol
from crowdplay.client import Participant, http_json
from crowdplay.data import Dataset
from tests.conftest import TEST_SETTINGS, run


async def refusal(url: str, **options) -> tuple[dict, int]:
    async with websockets.connect(url, **options) as ws:
        error = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        return error, ws.close_code


def test_a_token_opens_only_its_own_session_and_a_replaced_token_is_dead(base_url):
    async def scenario():
        first = http_json(f"{base_url}/api/sessions", {"env_id": "Pong", "participant": "SEC-A"})
        second = http_json(f"{base_url}/api/sessions", {"env_id": "Pong", "participant": "SEC-B"})
        ws = base_url.replace("http", "ws")
        crossed = await refusal(f"{ws}/ws/{second['session_id']}?token={first['token']}")  # A's token on B's session
        again = http_json(f"{base_url}/api/sessions", {"env_id": "Pong", "participant": "SEC-A", "resume": first["resume"]})  # a second tab
        replayed = await refusal(f"{ws}/ws/{first['session_id']}?token={first['token']}")  # the first tab's token
        async with await Participant.connect(base_url, again) as player:  # the new token works
            await player.next_frame()
        return first, again, crossed, replayed

    first, again, crossed, replayed = run(scenario())
    assert again["session_id"] == first["session_id"] and again["token"] != first["token"]
    for error, code in (crossed, replayed):
        assert error["code"] == code == protocol.CLOSE_UNAUTHORIZED


def test_websockets_from_other_sites_are_refused_and_the_studys_own_page_is_not(base_url):
    async def scenario():
        session = http_json(f"{base_url}/api/sessions", {"env_id": "Pong"})
        url = f"{base_url.replace('http', 'ws')}{session['ws']}"
        foreign = await refusal(url, origin="https://evil.example")
        host = base_url.split("://", 1)[1]
        async with websockets.connect(url, origin=f"http://{host}") as ws:
            hello = json.loads(await ws.recv())
        return foreign, hello

    (error, code), hello = run(scenario())
    assert code == protocol.CLOSE_UNAUTHORIZED and "origin" in error["reason"]
    assert hello["type"] == "hello"


def test_a_flooding_connection_is_closed_with_a_reason_and_the_game_survives(base_url, manager):
    async def scenario():
        player = await Participant.join(base_url, "Pong")
        for seq in range(400):
            try:
                await player.websocket.send(json.dumps({"type": "ping", "t": seq}))
            except websockets.ConnectionClosed:
                break
        await player.wait_closed(timeout=10)
        return player

    player = run(scenario())
    error = next(event for event in player.events if event["type"] == "error")
    assert error["code"] == protocol.CLOSE_POLICY_VIOLATION and "messages a second" in error["reason"]

    async def back():  # the seat is kept for the grace period: the same session reconnects
        async with await Participant.connect(base_url, {**player.session}) as again:
            await again.next_frame()
            return again.hello["session_id"]

    assert run(back()) == player.session["session_id"]


def test_participant_ids_are_stored_only_as_keyed_pseudonyms(base_url, manager):
    raw = "A1B2C3-WORKER-SECRET"

    async def scenario():
        async with await Participant.join(base_url, "Pong", participant=raw, params={"workerId": raw, "hitId": "H"}) as player:
            for _ in range(70):
                await player.next_frame()
            return player.session

    session = run(scenario())
    assert session["participant"] != raw and raw not in json.dumps(session)
    data = Dataset.open(TEST_SETTINGS.store_uri)
    for _ in range(40):
        documents = [doc for doc in data.episodes() if doc["game_id"] == session["game_id"]]
        if documents:
            break
        asyncio.run(asyncio.sleep(0.25))
    assert documents and raw not in json.dumps(documents, default=str)
    assert documents[0]["participants"] == [session["participant"]] == [data.pseudonym(raw)]
    data.close()


def test_no_token_or_raw_participant_id_reaches_any_log(base_url, manager):
    """Every log of the Ray session (Serve's access logs, the proxy's, every actor's stdout and
    stderr) after a participant played, reconnected and was refused with a wrong token."""
    raw = "LOGCHECK-WORKER-77"

    async def scenario():
        async with await Participant.join(base_url, "Pong", participant=raw, params={"PROLIFIC_PID": raw}) as player:
            for _ in range(30):
                await player.next_frame()
            session = player.session
        async with await Participant.connect(base_url, session) as again:
            await again.next_frame()
        with pytest.raises(Exception):  # noqa: B017 (the refused handshake surfaces as whichever websockets error it hits)
            await Participant.connect(base_url, {**session, "ws": session["ws"].replace(session["token"], "wrong-" + session["token"][:8])})
        return session

    session = run(scenario())
    asyncio.run(asyncio.sleep(2.0))  # log lines reach their files
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    leaked = [
        path.name for path in logs.rglob("*") if path.is_file()
        if any(secret.encode() in path.read_bytes() for secret in (session["token"], raw))
    ]
    assert not leaked, leaked
