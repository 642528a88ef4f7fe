"""Property-based fuzzing (hypothesis) of the HTTP endpoints and the websocket messages against the
real deployment: never a 5xx, never a dead game, always a JSON reason or a documented close code.

``CROWDPLAY_FUZZ_CASES`` sets the cases per property (default 150 in the suite); the full
campaign is a benchmark: ``python -m crowdplay.bench fuzz --cases 10000`` runs this module with
that many cases per property and reports what it saw (``CROWDPLAY_FUZZ_REPORT``: where this module
writes its tallies).
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from collections import Counter

import ray
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crowdplay import protocol
from crowdplay.client import Participant, http_json
from crowdplay.recording.writer import WRITER_NAME
from tests.conftest import TEST_SETTINGS

CASES = int(os.environ.get("CROWDPLAY_FUZZ_CASES", "150"))
#: HTTP status codes the campaign got, for the report.
HTTP_STATUSES: Counter = Counter()
FUZZ = settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
DOCUMENTED_CLOSES = {
    protocol.CLOSE_UNSUPPORTED_DATA, protocol.CLOSE_INVALID_PAYLOAD, protocol.CLOSE_POLICY_VIOLATION, protocol.CLOSE_TOO_BIG,
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
#: Bodies for the JSON endpoints: objects with the real keys holding anything, or anything at all.
bodies = st.one_of(
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {},
        optional={
            "env_id": st.one_of(st.text(max_size=30), json_values), "task_id": json_values, "participant": json_values,
            "params": json_values, "consented_at": json_values, "text": json_values, "page": json_values,
            "session_id": json_values, "token": json_values,
        },
    ).map(json.dumps),
    st.binary(max_size=300).map(lambda raw: raw.decode("latin-1")),
    st.text(min_size=4097, max_size=5000),
    # Deep nesting within the size limit (a recursive parser's stack, not its input size).
    st.integers(min_value=1, max_value=2000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(min_value=1, max_value=1000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
    st.integers(min_value=1, max_value=3000).map(lambda depth: '{"env_id": "Pong", "params": ' + "[" * depth),
)
paths = st.sampled_from(
    ["/api/sessions", "/api/feedback", "/api/report", "/api/sessions/{x}/finish", "/api/sessions/{x}/summary",
     "/api/sessions/{x}/completion", "/api/tasks/{x}/image", "/api/admin/overview", "/api/admin/sessions/{x}/end",
     "/metrics", "/api/study", "/api/environments", "/{x}", "/static/{x}"]
)
url_texts = st.text(alphabet=st.characters(codec="ascii", categories=["L", "N", "P"]), max_size=30)


def request(url: str, method: str, body: str | None, headers: dict[str, str]) -> tuple[int, bytes, str]:
    data = body.encode("utf-8", "surrogatepass") if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("content-type", "")


@FUZZ
@given(path=paths, filler=url_texts, method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]), body=bodies, token=url_texts, bearer=url_texts)
def test_no_http_request_gets_a_5xx_and_every_api_error_says_why(base_url, path, filler, method, body, token, bearer):
    url = base_url + urllib.request.quote(path.replace("{x}", filler)) + f"?token={urllib.request.quote(token)}"
    status, content, kind = request(url, method, body if method in ("POST", "PUT") else None, {"Authorization": f"Bearer {bearer}"})
    HTTP_STATUSES[status] += 1
    assert status < 500, (url, method, body, status, content[:200])
    if status >= 400 and "json" in kind:
        answer = json.loads(content)
        assert answer["error"] and answer["reason"]


websocket_messages = st.one_of(
    st.binary(max_size=100),
    st.text(max_size=300),
    st.text(min_size=2049, max_size=2500),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["keys", "action", "ping", "hello", "", "KEYS"])},
        optional={
            "keys": st.one_of(st.lists(st.sampled_from(["ArrowUp", "ArrowDown", "Space", "KeyQ"]) | st.text(max_size=10), max_size=20), json_values),
            "action": st.one_of(st.integers(min_value=-5, max_value=30), json_values),
            "frame": st.one_of(st.integers(), json_values), "seq": st.one_of(st.integers(), json_values),
            "t": st.one_of(st.floats(allow_nan=False), json_values),
        },
    ).map(json.dumps),
)


class Connection:
    """One fuzzing participant's websocket to the same game, reopened whenever the server closed it."""

    def __init__(self, base_url: str, manager) -> None:
        self.base_url = base_url
        self.manager = manager
        self.loop = asyncio.new_event_loop()
        self.session = http_json(f"{base_url}/api/sessions", {"env_id": "Pong"})
        self.ws = None
        self.closes: dict[int, int] = {}
        self.processes_at_start = self.processes()

    def processes(self) -> dict[str, int]:
        """The process ids of the EnvsManager, the TrajectoryWriter and the game's EnvActor."""
        host = ray.get(self.manager.session_actor.remote(self.session["session_id"]))
        writer = ray.get_actor(WRITER_NAME, namespace=TEST_SETTINGS.namespace)
        return {name: ray.get(actor.__ray_call__.remote(lambda self: os.getpid())) for name, actor in
                (("manager", self.manager), ("writer", writer), ("env_actor", host))}

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    async def _open(self) -> None:
        if self.ws is None or self.ws.close_code is not None:
            self.ws = await websockets.connect(self.base_url.replace("http", "ws") + self.session["ws"], max_size=2**24)
            assert json.loads(await self.ws.recv())["type"] == "hello"

    async def exchange(self, message: str | bytes) -> int | None:
        """Send ``message`` then a ping; None if the connection is still good, else its close code."""
        await self._open()
        try:
            await self.ws.send(message)
            await self.ws.send(json.dumps({"type": "ping", "t": 1.5}))
            while True:
                reply = await asyncio.wait_for(self.ws.recv(), 10)
                if isinstance(reply, str) and json.loads(reply)["type"] in ("pong", "error"):
                    if json.loads(reply)["type"] == "pong":
                        return None
        except websockets.ConnectionClosed:
            pass
        code = self.ws.close_code
        self.closes[code] = self.closes.get(code, 0) + 1
        return code


@FUZZ
@given(message=websocket_messages)
def test_no_websocket_message_breaks_the_game_and_every_refusal_has_a_documented_code(base_url, fuzz_connection, message):
    code = fuzz_connection.run(fuzz_connection.exchange(message))
    assert code is None or code in DOCUMENTED_CLOSES, (message[:100], code)


def test_the_fuzzed_game_still_plays_in_the_same_processes(base_url, fuzz_connection):
    async def play():
        async with await Participant.connect(base_url, fuzz_connection.session) as player:
            for _ in range(10):
                await player.next_frame()
            return player.hello["session_id"]

    assert fuzz_connection.run(play()) == fuzz_connection.session["session_id"]
    # No process crashed or restarted under the campaign: the manager, the writer, the game's host.
    assert fuzz_connection.processes() == fuzz_connection.processes_at_start
    # The campaign did exercise the refusals (bad bytes, bad JSON, bad fields, too big, too fast):
    print("websocket closes by code:", fuzz_connection.closes, "HTTP statuses:", dict(HTTP_STATUSES))
    assert len(fuzz_connection.closes) >= 3 and sum(fuzz_connection.closes.values()) >= CASES // 10
    report = os.environ.get("CROWDPLAY_FUZZ_REPORT")
    if report:
        with open(report, "w") as file:
            json.dump({
                "cases_per_property": CASES,
                "http_statuses": {str(code): count for code, count in sorted(HTTP_STATUSES.items())},
                "websocket_closes": {str(code): count for code, count in sorted(fuzz_connection.closes.items())},
                "processes_unchanged": True,
            }, file)
