"""The researcher dashboard and the Prometheus exposition, without Ray.

The page runs in Debian's Chromium (driven by Playwright) against a small Starlette stand-in for
the admin API, so these tests pin down the page's contract with the backend: the bearer token,
the 401 handling and the End button's POST.
"""

from __future__ import annotations

import asyncio
import copy
import math
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from crowdplay import protocol
from crowdplay.config import Settings
from crowdplay.environments import get_env
from crowdplay.environments.parallel_adapter import make_adapter
from crowdplay.lineup import Lineup
from crowdplay.realtime import LiveEnv
from crowdplay.web.metrics import exposition, prometheus_text
from tests.conftest import wait_until

STATIC = Path(__file__).parent.parent / "crowdplay" / "web" / "static"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
TOKEN = "secret-token"

SAMPLE_OVERVIEW: dict = {
    "study": "Atari demonstrations",
    "generated_at": 1795000000.0,
    "totals": {"live_sessions": 3, "waiting": 1, "completed": 12, "participants": 40, "abandoned_starts": 7, "data_bytes": 123456789, "builds_behind_play": 2,
               "withdrawn_requests": 5},
    "tasks": [
        {"task_id": "invaders", "title": "Space Invaders", "live_sessions": 2, "waiting": 1, "completed": 10, "target": 50, "participants": 30, "abandoned_starts": 4, "open": True},
        {"task_id": "pong", "title": "Pong", "live_sessions": 1, "waiting": 0, "completed": 2, "target": 0, "participants": 10, "open": False},
    ],
    "nodes": [
        {"node_id": "abc123def456abc123def456", "sessions": 3, "games": 2},
        {"node_id": "fed987", "sessions": 1, "games": 1},
    ],
    "games": [
        {
            "game_id": "g-0123456789abcdef",
            "task_id": "invaders",
            "env_id": "SpaceInvaders",
            "node_id": "abc123def456abc123def456",
            "phase": "playing",
            "seats": {"agent_0": "ready"},
            "sessions": [
                {
                    "session_id": "s-1", "agent": "agent_0", "participant": "pseudonym-1",
                    "engagement": {"time_hidden": 12.4, "idle_time": 30.0, "pauses": 2, "time_unfocused": 5.2, "time_paused": 11.9, "time_slow_connection": 0.0},
                }
            ],
            "started_at": 1794999880.0,
        }
    ],
    "finished_sessions": [
        {
            "session_id": "s-0", "task_id": "pong", "participant": "pseudonym-0", "finished_at": 1794999940.0, "completed": True, "time_played": 185.0,
            "engagement": {"time_hidden": 0.0, "idle_time": 95.0, "pauses": 1, "time_unfocused": 3.0, "time_paused": 3.0, "time_slow_connection": 61.0},
        }
    ],
    "histograms": {
        "frame_interval_ms": {
            "edges": [0, 5, 10, 15, 16, 17, 18, 20, 25, 33, 50, 100], "counts": [0, 1, 3, 10, 900, 40, 5, 2, 1, 0, 0], "p50": 16.7, "p99": 19.0,
            "processes": [
                {"actor": "actor-1", "node": "abc123def456abc123def456", "buckets": [["5.0", 0], ["16.2", 900], ["33.4", 960], ["+Inf", 962]], "sum": 16011.25, "count": 962},
                {"actor": "actor-2", "node": "fed987", "buckets": [["5.0", 1], ["16.2", 40], ["33.4", 41], ["+Inf", 41]], "sum": 640.5, "count": 41},
            ],
        },
        "input_latency_ms": {
            "edges": [0, 2, 5, 10, 20, 50, 100, 200], "counts": [10, 50, 80, 20, 5, 1, 0], "p50": 6.0, "p99": 30.0,
            "processes": [{"actor": "actor-1", "node": "abc123def456abc123def456", "buckets": [["1.0", 10], ["16.7", 150], ["+Inf", 166]], "sum": 1020.125, "count": 166}],
        },
        "key_to_frame_ms": {
            "edges": [0, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 300, 500, 1000, 2000], "counts": [0, 2, 30, 25, 8, 3, 1, 1, 0, 0, 0, 0, 0, 0],
            "p50": 30.0, "p99": 80.0, "samples": 70,
            "processes": [{"replica": "Ingress#abc", "node": "abc123def456abc123def456", "buckets": [["10.0", 0], ["50.0", 65], ["+Inf", 70]], "sum": 2150.5, "count": 70}],
        },
    },
    "completions_timeline": [[1794999000.0, 1], [1794999500.0, 2]],
}


# ---------------------------------------------------------------- the Prometheus text

SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')
UNESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_exposition(body: str) -> tuple[dict[str, str], dict[tuple[str, frozenset], float]]:
    """Metric types from the TYPE lines, and every sample keyed by name and labels, checking
    each line against the text format's grammar on the way."""
    assert body.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset], float] = {}
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE_LINE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, label_text, value = match.groups()
        labels = {}
        if label_text:
            assert "".join(m.group(0) for m in LABEL.finditer(label_text)) == label_text, f"bad labels: {label_text!r}"
            for m in LABEL.finditer(label_text):
                labels[m.group(1)] = re.sub(r"\\[\\\"n]", lambda e: UNESCAPES[e.group(0)], m.group(2))
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return types, samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_prometheus_text_exposes_the_gauges() -> None:
    types, samples = parse_exposition(prometheus_text(SAMPLE_OVERVIEW))
    for name in ("crowdplay_live_sessions", "crowdplay_waiting_participants", "crowdplay_completed_assignments", "crowdplay_target_assignments", "crowdplay_participants", "crowdplay_node_sessions", "crowdplay_data_bytes"):
        assert types[name] == "gauge"
    assert value(samples, "crowdplay_live_sessions", task="invaders") == 2
    assert value(samples, "crowdplay_waiting_participants", task="invaders") == 1
    assert value(samples, "crowdplay_completed_assignments", task="invaders") == 10
    assert value(samples, "crowdplay_target_assignments", task="invaders") == 50
    assert value(samples, "crowdplay_participants", task="invaders") == 30
    assert value(samples, "crowdplay_abandoned_starts", task="invaders") == 4
    assert value(samples, "crowdplay_completed_assignments", task="pong") == 2
    assert value(samples, "crowdplay_node_sessions", node="abc123def456abc123def456") == 3
    assert value(samples, "crowdplay_node_sessions", node="fed987") == 1
    assert value(samples, "crowdplay_data_bytes") == 123456789
    assert types["crowdplay_builds_behind_play_total"] == "counter"
    assert value(samples, "crowdplay_builds_behind_play_total") == 2
    assert types["crowdplay_withdrawn_requests_total"] == "counter"
    assert value(samples, "crowdplay_withdrawn_requests_total") == 5


@pytest.mark.parametrize(("name", "key"), [("crowdplay_frame_interval_ms", "frame_interval_ms"), ("crowdplay_input_latency_ms", "input_latency_ms")])
def test_prometheus_text_exposes_each_processs_histogram_with_its_exact_sum(name: str, key: str) -> None:
    types, samples = parse_exposition(prometheus_text(SAMPLE_OVERVIEW))
    assert types[name] == "histogram"
    processes = SAMPLE_OVERVIEW["histograms"][key]["processes"]
    for process in processes:
        labels = {"actor": process["actor"], "node": process["node"]}
        buckets = {dict(keys)["le"]: count for (sample, keys), count in samples.items() if sample == f"{name}_bucket" and dict(keys).items() >= labels.items()}
        assert buckets == {le: count for le, count in process["buckets"]}
        assert value(samples, f"{name}_count", **labels) == process["count"] == buckets["+Inf"]
        assert value(samples, f"{name}_sum", **labels) == process["sum"]
    assert len([key for key in samples if key[0] == f"{name}_count"]) == len(processes)


def test_the_scraper_chooses_openmetrics_or_the_text_format() -> None:
    body, content_type = exposition(SAMPLE_OVERVIEW, None)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8" and body.decode() == prometheus_text(SAMPLE_OVERVIEW)
    body, content_type = exposition(SAMPLE_OVERVIEW, "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0") and body.decode().endswith("# EOF\n")
    assert 'crowdplay_input_latency_ms_sum{actor="actor-1",node="abc123def456abc123def456"} 1020.125' in body.decode().splitlines()


def test_prometheus_text_escapes_label_values() -> None:
    overview = copy.deepcopy(SAMPLE_OVERVIEW)
    nasty = 'say "hi" \\ there\nnow'
    overview["tasks"].append({"task_id": nasty, "title": "x", "live_sessions": 7, "waiting": 0, "completed": 0, "target": 1, "participants": 0, "open": True})
    body = prometheus_text(overview)
    assert 'crowdplay_live_sessions{task="say \\"hi\\" \\\\ there\\nnow"} 7.0' in body.splitlines()
    _, samples = parse_exposition(body)
    assert value(samples, "crowdplay_live_sessions", task=nasty) == 7


def test_prometheus_text_of_an_empty_overview_still_declares_the_metrics() -> None:
    types, samples = parse_exposition(prometheus_text({"tasks": [], "nodes": [], "totals": {}, "histograms": {}}))
    assert types["crowdplay_live_sessions"] == "gauge" and types["crowdplay_frame_interval_ms"] == "histogram"
    assert value(samples, "crowdplay_data_bytes") == 0
    assert not [key for key in samples if key[0].startswith(("crowdplay_frame_interval_ms", "crowdplay_live_sessions"))]


# ---------------------------------------------------------------- a stand-in admin API


class StubBackend:
    """The two admin endpoints, answering from a fixed overview and recording every End."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.overview = copy.deepcopy(SAMPLE_OVERVIEW)
        self.token = TOKEN
        self.overview_requests = 0
        self.end_calls: list[tuple[str, str | None]] = []
        self.started: list[str] = []
        self.watched: list[str] = []
        self.watch_ended = 0
        self.viewer_messages = 0

    def refusal(self, request: Request) -> JSONResponse | None:
        header = request.headers.get("authorization")
        if header is None:
            return JSONResponse({"error": "unauthorized", "reason": "missing bearer token"}, status_code=401)
        if header != f"Bearer {self.token}":
            return JSONResponse({"error": "unauthorized", "reason": "the admin token is not valid"}, status_code=401)
        return None

    async def admin_page(self, request: Request) -> FileResponse:
        return FileResponse(STATIC / "admin.html")

    async def get_overview(self, request: Request) -> JSONResponse:
        self.overview_requests += 1
        return self.refusal(request) or JSONResponse(self.overview)

    async def end_session(self, request: Request) -> JSONResponse:
        self.end_calls.append((request.path_params["session_id"], request.headers.get("authorization")))
        return self.refusal(request) or JSONResponse({"ended": request.path_params["session_id"]})

    async def start_game(self, request: Request) -> JSONResponse:
        self.started.append((await request.json())["env_id"])
        return self.refusal(request) or JSONResponse({"game_id": "g-demo", "env_id": self.started[-1]}, status_code=201)

    async def watch(self, websocket: WebSocket) -> None:
        """A real AI-only game (TestAIPong, Ray-free), streamed read-only as the server does."""
        await websocket.accept()
        if websocket.query_params.get("token") != self.token:
            await websocket.send_text(protocol.text("error", reason="watching a game needs the admin token (?token=)", code=protocol.CLOSE_UNAUTHORIZED))
            await websocket.close(protocol.CLOSE_UNAUTHORIZED)
            return
        spec = get_env("TestAIPong")
        lineup = Lineup(LiveEnv(spec, 3, Settings(), adapter=make_adapter(spec)), Settings(countdown_s=0.0))
        viewer = lineup.watch("dashboard")
        self.watched.append(websocket.path_params["game_id"])
        hello = lineup.live.describe()
        await websocket.send_text(protocol.text("hello", session_id=None, game_id=self.watched[-1], **{**hello, "agent": None, "watching": True, "instructions": ""}))
        stream = lineup.live.stream(viewer.agent, viewer)

        async def forward() -> None:
            async for message in stream:
                await (websocket.send_bytes(message) if isinstance(message, bytes) else websocket.send_text(message))

        sender = asyncio.create_task(forward())
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                self.viewer_messages += 1
        finally:
            sender.cancel()
            lineup.unwatch(viewer)
            lineup.end("done")
            self.watch_ended += 1

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/admin", self.admin_page),
                Route("/api/admin/overview", self.get_overview, methods=["GET"]),
                Route("/api/admin/sessions/{session_id}/end", self.end_session, methods=["POST"]),
                Route("/api/admin/games", self.start_game, methods=["POST"]),
                WebSocketRoute("/api/admin/games/{game_id}/watch", self.watch),
                Mount("/static", StaticFiles(directory=STATIC)),
            ]
        )


@pytest.fixture(scope="module")
def stub() -> StubBackend:
    return StubBackend()


@pytest.fixture(scope="module")
def admin_url(stub: StubBackend) -> Iterator[str]:
    """The stub served by uvicorn in a thread, on a socket bound up front so no other process can take the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(stub.app(), log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "uvicorn did not start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Browser, admin_url: str, stub: StubBackend) -> Iterator[Page]:
    """A fresh browser context (so an empty sessionStorage) that fails the test on any script error."""
    stub.reset()
    context = chromium.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == []


def sign_in(page: Page, admin_url: str, token: str = TOKEN) -> None:
    page.goto(admin_url + "/admin")
    page.fill("#token-input", token)
    page.press("#token-input", "Enter")


# ---------------------------------------------------------------- the page


def test_the_page_asks_for_a_token_first(page: Page, admin_url: str, stub: StubBackend) -> None:
    page.goto(admin_url + "/admin")
    expect(page.locator("#token-form")).to_be_visible()
    expect(page.locator("#token-input")).to_be_focused()
    expect(page.locator("#overview")).to_be_hidden()
    assert stub.overview_requests == 0


def test_a_wrong_token_shows_the_servers_reason(page: Page, admin_url: str, stub: StubBackend) -> None:
    sign_in(page, admin_url, "wrong-token")
    expect(page.locator("#error")).to_have_text("the admin token is not valid")
    expect(page.locator("#token-form")).to_be_visible()
    expect(page.locator("#overview")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('crowdplay-admin-token')") is None


def test_the_right_token_shows_the_overview(page: Page, admin_url: str) -> None:
    sign_in(page, admin_url)
    row = page.locator('#tasks-table tbody tr[data-task-id="invaders"]')
    expect(row).to_contain_text("Space Invaders")
    expect(row).to_contain_text("10 / 50")
    expect(row.locator("progress")).to_have_attribute("value", "10")
    expect(page.locator('#tasks-table tbody tr[data-task-id="pong"]')).to_contain_text("closed")
    expect(page.locator("#token-form")).to_be_hidden()
    expect(page.locator("#study-title")).to_have_text("Atari demonstrations")
    expect(page.locator("#total-live-sessions")).to_have_text("3")
    expect(page.locator("#total-data")).to_have_text("123.5 MB")
    expect(page.locator("#total-participants")).to_have_text("40")
    expect(page.locator("#total-abandoned-starts")).to_have_text("7")
    expect(page.locator("#total-builds-behind-play")).to_have_text("2")
    expect(page.locator("#total-withdrawn-requests")).to_have_text("5")

    game = page.locator('#games-table tbody tr[data-game-id="g-0123456789abcdef"]')
    expect(game).to_contain_text("agent_0: ready")
    expect(game).to_contain_text("2 min ago")  # relative to generated_at, not to the browser's clock
    expect(game.locator('button.end-session[data-session-id="s-1"]')).to_have_text("End")

    expect(page.locator("#frame-histogram svg rect.bar")).to_have_count(11)
    expect(page.locator("#latency-histogram svg rect.bar")).to_have_count(7)
    expect(page.locator("#frame-histogram")).to_contain_text("p50 16.7")
    expect(page.locator("#latency-histogram")).to_contain_text("receive to apply (ms)")
    expect(page.locator("#nodes-chart li")).to_have_count(2)
    expect(page.locator('#nodes-chart .bar[data-node-id="fed987"]')).to_have_attribute("data-sessions", "1")
    expect(page.locator("#completions-chart svg path.line")).to_have_count(1)
    expect(page.locator("#error")).to_have_text("")


def test_both_input_latency_histograms_show_their_samples(page: Page, admin_url: str) -> None:
    sign_in(page, admin_url)
    server, browser = page.locator("#latency-histogram"), page.locator("#key-to-frame-histogram")
    expect(page.locator("figure", has=server).locator("figcaption")).to_have_text("Receive to apply (server)")
    expect(page.locator("figure", has=browser).locator("figcaption")).to_have_text("Key to frame displayed (browser)")
    expect(server.locator("p.summary")).to_have_text("p50 6 ms · p99 30 ms · n = 166")
    expect(browser.locator("p.summary")).to_have_text("p50 30 ms · p99 80 ms · n = 70")
    expect(browser.locator("svg rect.bar")).to_have_count(14)
    expect(browser).to_contain_text("key to frame displayed (ms)")
    heights = [float(h) for h in browser.locator("svg rect.bar").evaluate_all("bars => bars.map((bar) => bar.getAttribute('height'))")]
    assert heights[2] == max(heights) > 0 and heights[0] == 0 and heights[6] > 0  # the 20-30 ms bucket is the tallest


def test_an_overview_without_key_to_frame_reports_says_so(page: Page, admin_url: str, stub: StubBackend) -> None:
    del stub.overview["histograms"]["key_to_frame_ms"]
    sign_in(page, admin_url)
    expect(page.locator("#latency-histogram p.summary")).to_contain_text("n = 166")
    expect(page.locator("#key-to-frame-histogram")).to_have_text("No data yet.")


def node_rows(count: int) -> list[dict]:
    """``count`` nodes with Ray-sized ids and 0..count-1 sessions, in no particular order."""
    return [{"node_id": f"{(index * 7919) % 1000:03d}" + "ab" * 26, "sessions": (index * 13) % count, "games": 1} for index in range(count)]


def test_sessions_per_node_at_one_node_is_one_labelled_bar(page: Page, admin_url: str, stub: StubBackend) -> None:
    stub.overview["nodes"] = [{"node_id": "abc123def456abc123def456", "sessions": 3, "games": 2}]
    sign_in(page, admin_url)
    rows = page.locator("#nodes-chart li")
    expect(rows).to_have_count(1)
    expect(page.locator("#nodes-chart p.summary")).to_have_text("1 node · 3 sessions")
    expect(rows.locator(".label")).to_have_text("abc123def4…")
    expect(rows.locator(".value")).to_have_text("3 sessions · 2 games")
    expect(rows).to_have_attribute("title", "abc123def456abc123def456: 3 sessions, 2 games")
    track, bar = rows.locator(".track").bounding_box(), rows.locator(".bar").bounding_box()
    assert track and bar and bar["width"] == pytest.approx(track["width"], abs=1) and bar["height"] >= 10  # the busiest fills its track
    assert page.locator("#nodes-chart").bounding_box()["height"] < 100  # one row, not a tall empty chart


def test_sessions_per_node_at_fifty_nodes_is_sorted_and_scrolls(page: Page, admin_url: str, stub: StubBackend) -> None:
    stub.overview["nodes"] = node_rows(50)
    sign_in(page, admin_url)
    rows = page.locator("#nodes-chart li")
    expect(rows).to_have_count(50)
    total = sum(node["sessions"] for node in stub.overview["nodes"])
    expect(page.locator("#nodes-chart p.summary")).to_have_text(f"50 nodes · {total:,} sessions · busiest 49 · 1 without sessions")
    shown = [int(n) for n in page.locator("#nodes-chart .bar").evaluate_all("bars => bars.map((bar) => bar.dataset.sessions)")]
    assert shown == sorted((node["sessions"] for node in stub.overview["nodes"]), reverse=True)
    widths = rows.locator(".bar").evaluate_all("bars => bars.map((bar) => bar.getBoundingClientRect().width)")
    assert widths == sorted(widths, reverse=True) and widths[0] > 100 and widths[-1] == 0
    rows_height = rows.first.bounding_box()["height"]
    assert rows_height >= 20  # each row stays as tall as a line of text
    scroller = page.locator("#nodes-chart ol.bars.scrolls")
    sizes = scroller.evaluate("list => [list.clientHeight, list.scrollHeight]")
    assert sizes[0] < 15 * rows_height < sizes[1]  # about a dozen rows on screen, the rest a scroll away


def test_the_page_keeps_polling(page: Page, admin_url: str, stub: StubBackend) -> None:
    sign_in(page, admin_url)
    expect(page.locator("#total-live-sessions")).to_have_text("3")
    stub.overview["totals"]["live_sessions"] = 4
    expect(page.locator("#total-live-sessions")).to_have_text("4", timeout=5000)


def test_a_token_in_the_url_is_stored_and_removed_from_the_address_bar(page: Page, admin_url: str) -> None:
    page.goto(admin_url + f"/admin?token={TOKEN}&view=1")
    expect(page.locator('#tasks-table tbody tr[data-task-id="invaders"]')).to_be_visible()
    assert page.url == admin_url + "/admin?view=1"
    assert page.evaluate("sessionStorage.getItem('crowdplay-admin-token')") == TOKEN


def test_a_revoked_token_brings_back_the_form(page: Page, admin_url: str, stub: StubBackend) -> None:
    sign_in(page, admin_url)
    expect(page.locator("#overview")).to_be_visible()
    stub.token = "rotated"
    expect(page.locator("#token-form")).to_be_visible(timeout=5000)
    expect(page.locator("#error")).to_have_text("the admin token is not valid")
    expect(page.locator("#overview")).to_be_hidden()


def test_end_posts_once_with_the_bearer_token(page: Page, admin_url: str, stub: StubBackend) -> None:
    sign_in(page, admin_url)
    dialogs: list[str] = []

    def accept(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    renders = page.evaluate("window.crowdplayAdmin.renders")
    page.click('#games-table button.end-session[data-session-id="s-1"]')
    wait_until(lambda: len(stub.end_calls) >= 1, "no POST reached the end endpoint")
    page.wait_for_function(f"window.crowdplayAdmin.renders > {renders}")  # the page refreshed after ending
    time.sleep(0.5)
    assert stub.end_calls == [("s-1", f"Bearer {TOKEN}")]
    assert len(dialogs) == 1 and "s-1" in dialogs[0]
    expect(page.locator("#error")).to_have_text("")


def test_a_dismissed_confirm_sends_nothing(page: Page, admin_url: str, stub: StubBackend) -> None:
    sign_in(page, admin_url)
    page.on("dialog", lambda dialog: dialog.dismiss())
    page.click('#games-table button.end-session[data-session-id="s-1"]')
    time.sleep(0.5)
    assert stub.end_calls == []


def test_server_text_is_shown_as_text_never_as_markup(page: Page, admin_url: str, stub: StubBackend) -> None:
    markup = '<img src=x onerror="window.injected=1">'
    stub.overview["study"] = markup
    stub.overview["tasks"][0]["title"] = markup
    stub.overview["games"][0]["sessions"][0]["participant"] = markup
    stub.overview["nodes"][0]["node_id"] = markup
    sign_in(page, admin_url)
    expect(page.locator('#tasks-table tbody tr[data-task-id="invaders"] td').nth(1)).to_have_text(markup)
    expect(page.locator("#study-title")).to_have_text(markup)
    expect(page.locator("#games-table .participant")).to_have_text(markup)
    assert page.locator("main img, header img").count() == 0
    assert page.evaluate("window.injected") is None


# ---------------------------------------------------------------- engagement


def test_each_live_session_shows_its_engagement_updated_in_place(page: Page, admin_url: str, stub: StubBackend) -> None:
    sign_in(page, admin_url)
    engagement = page.locator('#games-table span.engagement[data-session-id="s-1"]')
    expect(engagement).to_have_text("hidden 12 s · idle 30 s · 2 pauses")
    expect(engagement).to_have_attribute("title", "unfocused 5 s · paused 12 s · slow connection 0 s")
    page.locator('#games-table button.end-session[data-session-id="s-1"]').evaluate("button => { button.dataset.kept = 'yes'; }")
    stub.overview["games"][0]["sessions"][0]["engagement"].update(time_hidden=75.0, idle_time=31.0, pauses=1)
    expect(engagement).to_have_text("hidden 1 min 15 s · idle 31 s · 1 pause", timeout=5000)
    expect(page.locator('#games-table button.end-session[data-kept="yes"]')).to_have_count(1)  # the row was not rebuilt under the pointer


def test_a_session_whose_engagement_is_not_known_shows_a_dash(page: Page, admin_url: str, stub: StubBackend) -> None:
    stub.overview["games"][0]["sessions"][0]["engagement"] = None
    sign_in(page, admin_url)
    engagement = page.locator('#games-table span.engagement[data-session-id="s-1"]')
    expect(engagement).to_have_text("–")
    expect(engagement).to_have_attribute("title", "engagement not known yet")


def test_finished_sessions_are_listed_with_their_final_engagement(page: Page, admin_url: str, stub: StubBackend) -> None:
    sign_in(page, admin_url)
    expect(page.locator("#finished-section")).to_be_visible()
    row = page.locator('#finished-table tbody tr[data-session-id="s-0"]')
    expect(row.locator("td")).to_have_text(["pseudonym-0", "pong", "1 min ago", "3 min 5 s", "yes", "hidden 0 s · idle 1 min 35 s · 1 pause"])
    expect(row.locator("td.engagement")).to_have_attribute("title", "unfocused 3 s · paused 3 s · slow connection 1 min 1 s")
    stub.overview["finished_sessions"] = []
    expect(page.locator("#finished-section")).to_be_hidden(timeout=5000)


def test_an_overview_without_engagement_still_draws_its_sessions(page: Page, admin_url: str, stub: StubBackend) -> None:
    """A manager from before engagement was reported: no ``engagement`` and no ``finished_sessions``."""
    del stub.overview["games"][0]["sessions"][0]["engagement"]
    del stub.overview["finished_sessions"]
    sign_in(page, admin_url)
    expect(page.locator('#games-table span.engagement[data-session-id="s-1"]')).to_have_text("–")
    expect(page.locator("#finished-section")).to_be_hidden()


# ---------------------------------------------------------------- the recording path's health

RECORDING = {
    "writer": {"state": "late", "answered_at": 1794999990.0, "age_s": 10.0, "error": "no answer for 9.5 s", "pid": 4242, "started_at": 1794990000.0},
    "store": {
        "state": "failing", "stale": True, "as_of_age_s": 10.0, "errors": 7,
        "last_error": {"kind": "OperationalError", "message": "database or disk is full", "at": 1794999950.0, "age_s": 50.0},
        "last_ok_at": 1794999900.0,
    },
    "spool": {"batches": 3, "bytes": 1_250_000, "oldest_at": 1794999880.0, "oldest_age_s": 120.0, "stale": True},
    "unacked": {
        "chunks": 40, "memory_bytes": 300_000, "disk_bytes": 2_000_000, "disk_chunks": 30, "oldest_age_s": 65.0,
        "processes": [
            {"actor_id": "actor-0123456789abcdef", "node_id": "abc123def456abc123def456", "pid": 77, "chunks": 40, "memory_chunks": 10,
             "memory_bytes": 300_000, "disk_chunks": 30, "disk_bytes": 2_000_000, "oldest_age_s": 65.0, "memory_limit_bytes": 300_000,
             "calls_out": 4, "spill_failures": 0},
        ],
    },
    "pending_saves": {"saves": 2, "oldest_at": 1794999970.0, "oldest_age_s": 30.0, "failed_attempts": 0, "last_error": None},
    "data": {"state": "late", "answered_at": 1794999990.0, "age_s": 10.0, "error": None},
}


def test_prometheus_text_exposes_the_recording_paths_health() -> None:
    overview = {**copy.deepcopy(SAMPLE_OVERVIEW), "recording": copy.deepcopy(RECORDING)}
    types, samples = parse_exposition(prometheus_text(overview))
    assert value(samples, "crowdplay_writer_state", state="late") == 1 and value(samples, "crowdplay_writer_state", state="ok") == 0
    assert value(samples, "crowdplay_writer_stats_age_seconds") == 10.0
    assert value(samples, "crowdplay_store_state", state="failing") == 1 and value(samples, "crowdplay_store_state", state="healthy") == 0
    assert value(samples, "crowdplay_store_last_error_timestamp_seconds", kind="OperationalError") == 1794999950.0
    assert value(samples, "crowdplay_store_errors") == 7
    assert value(samples, "crowdplay_spool_batches") == 3 and value(samples, "crowdplay_spool_bytes") == 1_250_000
    assert value(samples, "crowdplay_spool_oldest_age_seconds") == 120.0
    assert value(samples, "crowdplay_pending_saves") == 2 and value(samples, "crowdplay_pending_saves_oldest_age_seconds") == 30.0
    labels = {"actor": "actor-0123456789abcdef", "node": "abc123def456abc123def456"}
    assert value(samples, "crowdplay_unacked_chunks", **labels) == 40
    assert value(samples, "crowdplay_unacked_memory_bytes", **labels) == 300_000
    assert value(samples, "crowdplay_unacked_disk_bytes", **labels) == 2_000_000
    assert value(samples, "crowdplay_unacked_oldest_age_seconds", **labels) == 65.0
    for name in ("crowdplay_writer_state", "crowdplay_store_state", "crowdplay_spool_bytes", "crowdplay_unacked_disk_bytes"):
        assert types[name] == "gauge"


def test_prometheus_text_without_a_recording_section_says_unknown() -> None:
    _, samples = parse_exposition(prometheus_text(SAMPLE_OVERVIEW))
    assert value(samples, "crowdplay_writer_state", state="unknown") == 1 and value(samples, "crowdplay_store_state", state="unknown") == 1
    assert math.isnan(value(samples, "crowdplay_writer_stats_age_seconds")) and value(samples, "crowdplay_spool_batches") == 0


def test_the_page_shows_a_late_writer_a_failing_store_its_spool_and_the_game_servers_backlog(page: Page, admin_url: str, stub: StubBackend) -> None:
    stub.overview["recording"] = copy.deepcopy(RECORDING)
    sign_in(page, admin_url)
    expect(page.locator("#recording-section")).to_be_visible()
    expect(page.locator("#total-recording")).to_have_text("writer late")
    expect(page.locator("#total-recording")).to_have_attribute("data-state", "failing")
    expect(page.locator("#recording-writer")).to_contain_text("late")
    expect(page.locator("#recording-writer")).to_contain_text("10 s old")
    expect(page.locator("#recording-store")).to_contain_text("failing (as of 10 s ago)")
    expect(page.locator("#recording-store")).to_contain_text("last error OperationalError 50 s ago")
    expect(page.locator("#recording-spool")).to_contain_text("3 batches, 1.3 MB")
    expect(page.locator("#recording-spool")).to_contain_text("oldest 2 min 0 s old")
    expect(page.locator("#recording-unacked")).to_contain_text("40 chunks")
    expect(page.locator("#recording-unacked")).to_contain_text("300 KB in memory, 2.0 MB on disk, oldest 1 min 5 s old")
    expect(page.locator("#recording-saves")).to_contain_text("2 saves")
    row = page.locator('#unacked-table tbody tr[data-actor-id="actor-0123456789abcdef"]')
    expect(row).to_contain_text("2.0 MB")
    expect(row.locator("td").nth(6)).to_have_text("4")

    # Recovered: the summary says so, the spool and backlog are empty.
    stub.overview["recording"]["writer"] = {"state": "ok", "age_s": 0.0, "pid": 4242}
    stub.overview["recording"]["store"] = {"state": "healthy", "stale": False, "errors": 7, "last_error": RECORDING["store"]["last_error"]}
    stub.overview["recording"]["spool"] = {"batches": 0, "bytes": 0, "oldest_at": None, "oldest_age_s": None}
    stub.overview["recording"]["unacked"] = {"chunks": 0, "memory_bytes": 0, "disk_bytes": 0, "oldest_age_s": None, "processes": []}
    stub.overview["recording"]["pending_saves"] = {"saves": 0}
    expect(page.locator("#total-recording")).to_have_text("ok", timeout=5000)
    expect(page.locator("#total-recording")).to_have_attribute("data-state", "ok")
    expect(page.locator("#recording-spool")).to_contain_text("empty")
    expect(page.locator("#recording-unacked")).to_contain_text("all acknowledged")
    expect(page.locator("#unacked-table tbody")).to_contain_text("No game servers.")


def test_an_overview_without_recording_hides_the_section(page: Page, admin_url: str) -> None:
    sign_in(page, admin_url)
    expect(page.locator("#total-live-sessions")).to_have_text("3")
    expect(page.locator("#recording-section")).to_be_hidden()
    expect(page.locator("#total-recording")).to_have_text("–")


# ---------------------------------------------------------------- AI policies

def test_the_page_shows_each_policys_state_reason_and_substitutes(page: Page, admin_url: str, stub: StubBackend) -> None:
    stub.overview["policies"] = {
        "pong-dqn": {"state": "failing", "reason": "policy raised KeyError: 'action_dist_inputs'", "answers": 0, "substitutes": 1855,
                     "answers_per_s": 0, "substitute_rate": 1.0, "latency_p50_ms": None, "latency_p99_ms": None},
        "invaders-ppo": {"state": "answering", "reason": None, "answers": 5400, "substitutes": 3,
                         "answers_per_s": 59.5, "substitute_rate": 0.0, "latency_p50_ms": 6.1, "latency_p99_ms": 11.0},
    }
    sign_in(page, admin_url)
    expect(page.locator("#policies-section")).to_be_visible()
    failing = page.locator('#policies-table tbody tr[data-policy-id="pong-dqn"]')
    expect(failing.locator("td").nth(1)).to_have_attribute("data-state", "failing")
    expect(failing).to_contain_text("policy raised KeyError: 'action_dist_inputs'")
    expect(failing.locator("td").nth(4)).to_contain_text("100.0% lately")
    answering = page.locator('#policies-table tbody tr[data-policy-id="invaders-ppo"]')
    expect(answering.locator("td").nth(1)).to_have_attribute("data-state", "ok")
    expect(answering.locator("td").nth(3)).to_have_text("6.1 ms")
    stub.overview["policies"] = {}
    expect(page.locator("#policies-section")).to_be_hidden(timeout=5000)


# ---------------------------------------------------------------- watching games

def test_the_page_starts_an_ai_only_game_and_shows_it_live(page: Page, admin_url: str, stub: StubBackend) -> None:
    stub.overview["ai_only_envs"] = ["TestAIPong"]
    sign_in(page, admin_url)
    expect(page.locator("#ai-games-section")).to_be_visible()
    expect(page.locator("#ai-game-env option")).to_have_text(["TestAIPong"])
    page.click("#ai-game-form button[type=submit]")
    expect(page.locator("#watch-section")).to_be_visible()
    expect(page.locator("#watch-status")).to_have_text("Watching AI Pong (read-only).")
    page.wait_for_function("window.crowdplayAdmin.watching.frames > 60", timeout=15000)  # a second of the live game, painted
    painted = page.evaluate("""() => {
        const canvas = document.getElementById('watch-screen');
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        return [canvas.width, canvas.height, new Set(Array.from(pixels.filter((_, i) => i % 4 === 0))).size];
    }""")
    assert stub.started == ["TestAIPong"] and stub.watched == ["g-demo"]
    assert painted[:2] == [160, 210] and painted[2] >= 2  # Pong's field, paddles and ball: more than one colour
    page.click("#watch-stop")
    expect(page.locator("#watch-section")).to_be_hidden()
    wait_until(lambda: stub.watch_ended == 1, "the watch connection did not close")
    assert stub.viewer_messages == 0 and stub.started == ["TestAIPong"]  # the page never sends the game anything


def test_a_live_games_watch_button_opens_its_view(page: Page, admin_url: str, stub: StubBackend) -> None:
    sign_in(page, admin_url)
    page.click('#games-table tr[data-game-id="g-0123456789abcdef"] button.watch-game')
    page.wait_for_function("window.crowdplayAdmin.watching.frames > 10", timeout=15000)
    assert stub.watched == ["g-0123456789abcdef"]
    expect(page.locator("#watch-game")).to_have_text("g-01234567…")
