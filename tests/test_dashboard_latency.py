"""The dashboard's input latency end to end: a participant plays in a real Chromium with key
presses, then the researcher's overview (its JSON, /metrics and the /admin page) has both latency
histograms filled: the game process's receive-to-apply delays, still there after the game ended,
and the page's own key-to-frame-displayed delays, which it reported over its websocket."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import pytest
from ray import serve

from crowdplay.config import Settings
from crowdplay.web.ingress import build_app
from tests.conftest import wait_until
from tests.test_admin_page import parse_exposition
from tests.test_browser import set_tab_hidden, start_game

ADMIN_TOKEN = "latency-admin-token"


@pytest.fixture(scope="module")
def admin_base_url(base_url: str, settings: Settings) -> Iterator[str]:
    """The app at the root with an admin token: the page's websocket and the dashboard must reach
    the same ingress replica, which keeps the pages' reports (one replica, as serve_config.yaml)."""
    serve.run(build_app(replace(settings, admin_token=ADMIN_TOKEN)), name="crowdplay", route_prefix="/")
    yield base_url
    serve.run(build_app(settings), name="crowdplay", route_prefix="/")


def admin_get(url: str) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.read().decode())


def overview(base_url: str) -> dict:
    return dict(json.loads(admin_get(f"{base_url}/api/admin/overview")))


def play_with_key_presses(page, seconds: float) -> None:
    """Tap Space and the arrows for ``seconds``: a key change every 150 ms, each a ``keys`` message."""
    page.focus("#screen")
    deadline = time.monotonic() + seconds
    keys = ["Space", "ArrowLeft", "ArrowRight"]
    taps = 0
    while time.monotonic() < deadline:
        key = keys[taps % len(keys)]
        page.keyboard.down(key)
        time.sleep(0.075)
        page.keyboard.up(key)
        time.sleep(0.075)
        taps += 1


def test_a_session_with_key_presses_fills_both_latency_histograms(browser, admin_base_url: str) -> None:
    page = browser.new_page()
    page.goto(admin_base_url)
    page.click("button[data-env-id=SpaceInvaders]")
    page.click("#start")
    page.wait_for_function("window.crowdplay.framesDisplayed > 30", timeout=30_000)
    game_id = page.evaluate("window.crowdplay.gameId")
    play_with_key_presses(page, 6.0)
    page.wait_for_function("window.crowdplay.latency.reports >= 2", timeout=15_000)  # the first at once, the next 5 s later
    measured = page.evaluate("window.crowdplay.latency.measured")
    assert page.evaluate("window.crowdplay.errors") == []
    page.close()

    # After the session: its game ends once the reconnect grace is over, and the figures stay.
    wait_until(lambda: all(game["game_id"] != game_id for game in overview(admin_base_url)["games"]), "the game did not end", timeout=60)
    histograms = overview(admin_base_url)["histograms"]
    server, browser_side = histograms["input_latency_ms"], histograms["key_to_frame_ms"]
    assert server["samples"] >= 20 and sum(server["counts"]) == server["samples"] and server["p50"] is not None
    assert 0 < browser_side["samples"] <= measured and browser_side["p50"] is not None
    assert browser_side["p99"] <= 1000  # a local page sees its keys on screen within a second
    [replica] = browser_side["processes"]
    assert replica["count"] >= browser_side["samples"] and replica["sum"] > 0

    types, samples = parse_exposition(admin_get(f"{admin_base_url}/metrics"))
    assert types["crowdplay_key_to_frame_ms"] == types["crowdplay_input_latency_ms"] == "histogram"
    assert sum(count for (name, _), count in samples.items() if name == "crowdplay_key_to_frame_ms_count") >= browser_side["samples"]
    assert sum(count for (name, _), count in samples.items() if name == "crowdplay_input_latency_ms_count") >= server["samples"]

    dashboard = browser.new_page()
    dashboard.goto(f"{admin_base_url}/admin?token={ADMIN_TOKEN}")
    for chart in ("#latency-histogram", "#key-to-frame-histogram"):
        summary = dashboard.locator(f"{chart} p.summary")
        summary.wait_for(timeout=15_000)
        shown = re.search(r"n = ([\d,]+)", summary.inner_text())
        assert shown and int(shown.group(1).replace(",", "")) > 0, f"{chart}: {summary.inner_text()}"
    dashboard.close()


def session_row(overview: dict, session_id: str) -> dict | None:
    """The live session's row among the overview's games, or None once it left them."""
    return next((session for game in overview["games"] for session in game["sessions"] if session["session_id"] == session_id), None)


def test_the_dashboard_shows_a_sessions_engagement_live_and_once_finished(browser, admin_base_url: str) -> None:
    page = start_game(browser, admin_base_url, "Breakout")
    session_id = page.evaluate("window.crowdplay.sessionId")
    set_tab_hidden(page, True)
    page.wait_for_function("window.crowdplay.events.includes('paused')", timeout=10_000)
    time.sleep(1.0)
    set_tab_hidden(page, False)
    page.wait_for_function("window.crowdplay.events.includes('resumed')", timeout=10_000)

    live = session_row(overview(admin_base_url), session_id)  # answered by its game process (EnvActor.engagement)
    assert live is not None and live["engagement"]["pauses"] == 1 and live["engagement"]["time_hidden"] >= 1.0
    dashboard = browser.new_page()
    dashboard.goto(f"{admin_base_url}/admin?token={ADMIN_TOKEN}")
    shown = dashboard.locator(f'#games-table span.engagement[data-session-id="{session_id}"]')
    shown.wait_for(timeout=15_000)
    assert re.fullmatch(r"hidden \d+ s · idle .+ · 1 pause", shown.inner_text()), shown.inner_text()

    page.click("#finish")
    page.wait_for_selector("#score-page:not([hidden])")
    finished = next(row for row in overview(admin_base_url)["finished_sessions"] if row["session_id"] == session_id)
    assert finished["engagement"]["pauses"] == 1 and finished["engagement"]["time_hidden"] >= 1.0 and finished["time_played"] > 0
    row = dashboard.locator(f'#finished-table tbody tr[data-session-id="{session_id}"]')
    row.wait_for(timeout=15_000)
    assert "1 pause" in row.locator("td.engagement").inner_text()
    dashboard.close()
    page.close()
