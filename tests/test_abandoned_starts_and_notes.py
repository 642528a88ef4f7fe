"""What strangers can leave behind (issue 33), against ``crowdplay serve`` (real Serve, HAProxy and
Ray): a flood of notes from one address is throttled while another address's note is stored; a
session stores at most its cap of notes; session requests whose clients gave up before the answer
leave no session and no game behind within seconds (the connect timeout is 15 s), and no game is
built for them; and the dashboard counts the one person who played as its participants, the
abandoned requests apart."""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from crowdplay.client import Participant
from crowdplay.config import free_port
from tests.conftest import crowdplay_serve, fresh_environment, run

ADMIN_TOKEN = "abandoned-starts-test-token"
FLOODER = "127.0.0.2"  # a loopback address of its own: to HAProxy, another machine
PER_CLIENT_BURST = 10
PER_SESSION = 3
ABANDONED = 20
#: Well inside the connect timeout (15 s) after which an unconnected session went anyway.
GONE_WITHIN_S = 12.0


def call(url: str, method: str, path: str, body: object = None, source: str = "127.0.0.1", token: str = "") -> tuple[int, dict[str, str], dict[str, Any]]:
    """One request from ``source``: status, headers (lower-case names) and JSON body."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30, source_address=(source, 0))
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        connection.request(method, path, None if body is None else json.dumps(body), headers)
        response = connection.getresponse()
        return response.status, {name.lower(): value for name, value in response.getheaders()}, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def give_up_on_a_session_request(url: str) -> None:
    """Send a whole session request and go away before any answer (a client that timed out)."""
    parts = urlsplit(url)
    body = json.dumps({"task_id": "SpaceInvaders"}).encode()
    head = f"POST /api/sessions HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=10, source_address=(FLOODER, 0)) as connection:
        connection.sendall(head.encode() + body)


def overview(url: str) -> dict[str, Any]:
    status, _, answer = call(url, "GET", "/api/admin/overview", token=ADMIN_TOKEN)
    assert status == 200, answer
    return answer


def test_notes_floods_and_abandoned_requests_are_bounded_and_counted_apart():
    env = fresh_environment(
        CROWDPLAY_NAMESPACE="crowdplay-abandoned-test", CROWDPLAY_WARM_POOL_SIZE="1", CROWDPLAY_SPARE_ENVS_PER_ACTOR="2",
        RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="0", CROWDPLAY_ADMIN_TOKEN=ADMIN_TOKEN,
        CROWDPLAY_NOTES_PER_CLIENT_BURST=str(PER_CLIENT_BURST), CROWDPLAY_NOTES_PER_SESSION=str(PER_SESSION),
        # the abandoned requests all come from one address: its start limits must not be what stops them
        CROWDPLAY_SESSION_STARTS_PER_CLIENT_BURST="1000", CROWDPLAY_SESSION_STARTS_GUARD_PER_10S="0",
    )
    with crowdplay_serve(free_port(), env) as url:
        # A flood of problem reports from one address: its burst is stored, then it is told to wait.
        flood = [call(url, "POST", "/api/report", {"text": f"report {n}", "page": "start"}, source=FLOODER) for n in range(PER_CLIENT_BURST + 5)]
        assert [status for status, _, _ in flood] == [201] * PER_CLIENT_BURST + [429] * 5
        status, headers, answer = flood[-1]
        assert answer["error"] == "too_many_requests" and int(headers["retry-after"]) >= 1 and answer["retry_after_s"] >= 1
        assert call(url, "POST", "/api/report", {"text": "the game froze", "page": "play"})[0] == 201  # another address

        # One person plays; their session stores at most its cap of feedback.
        async def play() -> dict[str, Any]:
            player = await Participant.join(url, "SpaceInvaders")
            async with player:
                await player.next_frame()
                notes = [call(url, "POST", "/api/feedback", {"text": f"fun {n}", "session_id": player.session["session_id"], "token": player.session["token"]})
                         for n in range(PER_SESSION + 1)]
                await player.next_frame()
            return {"statuses": [status for status, _, _ in notes], "refusal": notes[-1][2], "session_id": player.session["session_id"]}

        played = run(play())
        assert played["statuses"] == [201] * PER_SESSION + [409] and played["refusal"]["error"] == "note_limit"

        # Session requests whose clients went away before the answer: nothing stays.
        before = overview(url)
        for _ in range(ABANDONED):
            give_up_on_a_session_request(url)
        flooded_at = time.monotonic()
        left: dict[str, Any] = {}
        while time.monotonic() - flooded_at < GONE_WITHIN_S:
            left = overview(url)
            strangers = [game for game in left["games"] if not any(seated["session_id"] == played["session_id"] for seated in game["sessions"])]
            withdrawn = left["totals"]["withdrawn_requests"] - before["totals"]["withdrawn_requests"]
            if withdrawn == ABANDONED and left["totals"]["live_sessions"] <= 1 and not strangers:
                break
            time.sleep(0.25)
        gone_s = time.monotonic() - flooded_at
        print(f"abandoned requests gone after {gone_s:.2f} s; before {before['totals']}, after {left['totals']}")
        assert gone_s < GONE_WITHIN_S, f"after {gone_s:.1f} s: {left['totals']}, {len(left['games'])} games"

    totals = left["totals"]
    assert totals["participants"] == 1 == before["totals"]["participants"]  # the one person who played
    assert 0 <= totals["abandoned_starts"] <= ABANDONED
    # each given up while its game waited for room: no game was built for them, none behind play
    assert totals["withdrawn_requests"] == ABANDONED and totals["builds_behind_play"] == before["totals"]["builds_behind_play"]
    task = next(row for row in left["tasks"] if row["task_id"] == "SpaceInvaders")
    assert task["participants"] == 1 and task["abandoned_starts"] == totals["abandoned_starts"]
