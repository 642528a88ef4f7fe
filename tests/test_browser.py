"""A participant in a real Chromium (Debian's, driven by Playwright): pick a game, Start, play."""

from __future__ import annotations

import base64
import os
import signal
import time

import numpy as np
import ray

from crowdplay.data import Dataset
from crowdplay.environments.replay import replay_screens
from tests.conftest import TEST_SETTINGS


def open_game(browser, base_url: str, env_id: str, query: str = ""):
    """A new page that picks ``env_id`` in the library and presses Start."""
    page = browser.new_page()
    page.goto(base_url + query)
    page.click(f"button[data-env-id={env_id}]")
    page.click("#start")
    return page


def start_game(browser, base_url: str, env_id: str, query: str = ""):
    page = open_game(browser, base_url, env_id, query)
    page.wait_for_function("window.crowdplay.framesDisplayed > 30", timeout=30_000)
    return page


def canvas_fingerprint(page) -> list[int]:
    return page.evaluate(
        """() => {
            const c = document.getElementById('screen');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const sums = [0, 0, 0];
            for (let i = 0; i < d.length; i += 4) { sums[0] += d[i]; sums[1] += d[i + 1] * (i % 977); sums[2] += d[i + 2] * (i % 631); }
            return sums;
        }"""
    )


def test_a_participant_plays_space_invaders_with_the_keyboard(browser, base_url, manager):
    page = start_game(browser, base_url, "SpaceInvaders")
    session_id = page.evaluate("window.crowdplay.sessionId")
    # The attract phase ends at ~130 steps; frame ids are on the process's clock, which a process
    # that hosted games before has long run, so the frames shown count the steps.
    page.wait_for_function("window.crowdplay.framesDisplayed > 140")
    before = canvas_fingerprint(page)
    page.keyboard.down("Space")
    page.keyboard.down("ArrowLeft")
    time.sleep(1.0)
    page.keyboard.up("ArrowLeft")
    page.keyboard.up("Space")
    time.sleep(0.3)
    after = canvas_fingerprint(page)
    assert before != after, "the canvas did not change while playing"
    assert page.evaluate("window.crowdplay.errors") == []

    actor = ray.get(manager.session_actor.remote(session_id))
    log = ray.get(actor.input_log.remote(session_id))
    applied = {(entry["action"], tuple(entry["keys"])) for entry in log}
    assert (5, ("ArrowLeft", "Space")) in applied  # LEFTFIRE, from the held keys via the keymap
    assert all(entry["applied_tick"] == entry["received_tick"] + 1 for entry in log)
    assert all(entry["client_frame"] > 0 for entry in log)
    page.close()


def test_the_browser_decoder_is_lossless_on_a_scrolling_game(browser, base_url, manager):
    page = start_game(browser, base_url, "Riverraid")
    page.select_option("#scale", "4")
    assert page.evaluate("document.getElementById('screen').style.width") == "640px"
    page.keyboard.down("ArrowUp")
    time.sleep(2.5)
    snapshot = page.evaluate("window.crowdplay.snapshot()")
    session_id = page.evaluate("window.crowdplay.sessionId")
    page.keyboard.up("ArrowUp")
    actor = ray.get(manager.session_actor.remote(session_id))
    episodes = {record["episode"]: record for record in ray.get(actor.episodes.remote(session_id))}
    record = episodes[snapshot["episode"]]
    screens = list(replay_screens("Riverraid", record["seed"], record["actions"]["agent_0"][: snapshot["envStep"]], record["start_state"]))
    decoded = np.frombuffer(base64.b64decode(snapshot["screen"]), dtype=np.uint8).reshape(210, 160)
    assert snapshot["envStep"] > 60
    assert page.evaluate("window.crowdplay.rowMoveFrames") > 0  # scrolling exercised the row-move path
    assert np.array_equal(decoded, screens[snapshot["envStep"]])
    assert page.evaluate("window.crowdplay.errors") == []
    page.close()


def test_the_page_passes_its_url_parameters_and_the_worker_id_is_stored_pseudonymised(browser, base_url, manager):
    page = start_game(browser, base_url, "Pong", "/?PROLIFIC_PID=browser-worker-7&study=b1")
    game_id = page.evaluate("window.crowdplay.gameId")
    page.wait_for_function("window.crowdplay.framesDisplayed > 120")  # past the first chunk
    page.close()
    with Dataset.open(TEST_SETTINGS.store_uri) as data:
        deadline = time.monotonic() + 30
        while not (found := [e for e in data.episodes() if e["game_id"] == game_id]):
            assert time.monotonic() < deadline, "the episode was not stored"
            time.sleep(0.3)
        [episode] = found
        assert episode["sessions"]["agent_0"]["params"] == {"study": "b1"}
        assert episode["participants"] == [data.pseudonym("browser-worker-7")]
        assert "Chrome" in episode["sessions"]["agent_0"]["user_agent"] and "browser-worker-7" not in repr(episode)


def test_two_pages_play_the_same_two_player_game(browser, base_url, manager):
    first = open_game(browser, base_url, "Pong2P")
    first.wait_for_function("window.crowdplay.lobby && window.crowdplay.lobby.phase === 'waiting'", timeout=30_000)
    # The waiting room says who is still awaited.
    assert first.locator("#lobby").is_visible()
    assert "Waiting for 1 more participant" in first.text_content("#lobby-note")
    assert first.get_attribute("#seats li[data-agent=second_0]", "data-status") == "open"
    assert "2 players" in first.text_content("button[data-env-id=Pong2P]")

    second = open_game(browser, base_url, "Pong2P")
    for page in (first, second):
        page.wait_for_function("window.crowdplay.events.includes('countdown')", timeout=30_000)
        page.wait_for_function("window.crowdplay.phase === 'playing' && window.crowdplay.framesDisplayed > 60", timeout=30_000)
        assert not page.locator("#lobby").is_visible()
    assert first.evaluate("window.crowdplay.gameId") == second.evaluate("window.crowdplay.gameId")
    agents = {page.evaluate("window.crowdplay.agent") for page in (first, second)}
    assert agents == {"first_0", "second_0"}
    assert "You play" in first.text_content("#role")

    # Each page's keys move its own paddle: both inputs reach the game, each for its own agent.
    for page in (first, second):
        page.focus("#screen")
        page.keyboard.down("ArrowUp")
    time.sleep(0.5)
    for page in (first, second):
        page.keyboard.up("ArrowUp")
    session_id = first.evaluate("window.crowdplay.sessionId")
    log = ray.get(ray.get(manager.session_actor.remote(session_id)).input_log.remote(session_id))
    assert {(entry["agent"], entry["action"]) for entry in log} >= {("first_0", 2), ("second_0", 2)}

    # One page leaves: without a fallback the other is told the game ended and why.
    second.close()
    first.wait_for_function("window.crowdplay.phase === 'ended'", timeout=30_000)
    assert "left the game" in first.text_content("#status")
    first.close()


def test_a_page_whose_game_server_dies_says_so_and_starts_again(browser, base_url, manager):
    page = start_game(browser, base_url, "Pong")
    first_game = page.evaluate("window.crowdplay.gameId")
    actor = ray.get(manager.session_actor.remote(page.evaluate("window.crowdplay.sessionId")))
    os.kill(ray.get(actor.__ray_call__.remote(lambda self: os.getpid())), signal.SIGKILL)
    page.wait_for_selector("#start-again:not([hidden])", timeout=15_000)
    assert "game server stopped unexpectedly" in page.inner_text("#status")
    shown = page.evaluate("window.crowdplay.framesDisplayed")
    page.click("#start-again")
    page.wait_for_function(f"window.crowdplay.gameId !== {first_game!r} && window.crowdplay.framesDisplayed > {shown + 30}", timeout=30_000)
    assert page.is_hidden("#start-again")
    page.close()


def test_a_second_tab_of_the_same_browser_takes_the_seat_back_and_another_browser_with_the_same_id_does_not(browser, base_url):
    query = "/?PROLIFIC_PID=tab-worker-9"
    context = browser.new_context()  # one browser profile: its tabs share localStorage

    def play_in(page):
        page.goto(base_url + query)
        page.click("button[data-env-id=SpaceInvaders]")
        page.click("#start")
        page.wait_for_function("window.crowdplay.framesDisplayed > 10", timeout=30_000)
        return page.evaluate("window.crowdplay.sessionId")

    first = context.new_page()
    first_session = play_in(first)
    second_session = play_in(context.new_page())
    stranger = browser.new_page()  # another browser (profile), the same participant id in its URL
    stranger_session = play_in(stranger)
    first.wait_for_function("window.crowdplay.errors.length > 0 || document.body.innerText.includes('another tab')", timeout=10_000)
    assert second_session == first_session
    assert stranger_session != first_session
    context.close()
    stranger.close()


def test_a_participant_watches_an_ai_only_game_and_their_keys_go_nowhere(browser, base_url, manager):
    page = start_game(browser, base_url, "TestAIPong")
    assert page.locator("#role").inner_text() == "You are watching: AI plays this game; your keys do nothing here."
    assert page.locator("#controls").is_hidden()
    session_id = page.evaluate("window.crowdplay.sessionId")
    before = canvas_fingerprint(page)
    page.keyboard.down("ArrowUp")
    time.sleep(1.0)
    page.keyboard.up("ArrowUp")
    assert canvas_fingerprint(page) != before  # the AI plays on
    assert page.evaluate("window.crowdplay.errors") == [] and page.evaluate("window.crowdplay.agent") is None
    game_id = next(game["game_id"] for game in ray.get(manager.list_games.remote()) if game["env_id"] == "TestAIPong" and game["seats"] == {})
    assert session_id and game_id
    page.close()


def set_tab_hidden(page, hidden: bool) -> None:
    """What the browser does when the participant switches tabs: ``document.hidden`` changes and
    ``visibilitychange`` fires (headless Chromium has no second tab to switch to)."""
    page.evaluate(
        """(hidden) => {
            Object.defineProperty(document, 'hidden', { value: hidden, configurable: true });
            Object.defineProperty(document, 'visibilityState', { value: hidden ? 'hidden' : 'visible', configurable: true });
            document.dispatchEvent(new Event('visibilitychange'));
        }""",
        hidden,
    )


def test_a_hidden_tab_pauses_a_one_player_game_and_the_recording_and_statistics_say_so(browser, base_url, manager):
    page = start_game(browser, base_url, "Breakout")
    game_id = page.evaluate("window.crowdplay.gameId")
    assert page.evaluate("document.getElementById('fps-box').hidden")  # no frame counter for participants
    set_tab_hidden(page, True)
    page.wait_for_function("window.crowdplay.events.includes('paused')", timeout=10_000)
    assert page.is_visible("#paused-note")
    received = page.evaluate("window.crowdplay.framesReceived")
    time.sleep(1.0)
    assert page.evaluate("window.crowdplay.framesReceived") - received <= 2  # the game waits: no frames
    set_tab_hidden(page, False)
    page.wait_for_function("window.crowdplay.events.includes('resumed')", timeout=10_000)
    page.wait_for_function(f"window.crowdplay.framesReceived > {received + 30}", timeout=10_000)
    assert not page.is_visible("#paused-note")
    page.click("#finish")
    page.wait_for_selector("#score-page:not([hidden])")
    values = page.evaluate("window.crowdplay.summary.values")
    assert values["time_hidden"] >= 1.0 and values["pauses"] == 1 and values["time_paused"] >= 1.0
    with Dataset.open(TEST_SETTINGS.store_uri) as data:
        deadline = time.monotonic() + 30
        while not (found := [e for e in data.episodes() if e["game_id"] == game_id and e.get("status")]):
            assert time.monotonic() < deadline, "the episode was not stored"
            time.sleep(0.3)
    events = [entry["event"] for entry in found[0]["page_events"]]
    assert events == ["visible", "focus", "hidden", "pause", "visible", "resume"], events
    page.goto(base_url + "/?debug=1")
    page.wait_for_selector("#library:not([hidden])")
    assert not page.evaluate("document.getElementById('fps-box').hidden")  # a researcher debugging sees it
    page.close()


def test_a_slow_connection_is_told_to_the_participant_and_recorded(browser, base_url, manager):
    page = start_game(browser, base_url, "Pong")
    network = page.context.new_cdp_session(page)
    network.send("Network.enable")
    # Chromium's own network emulation (DevTools' throttling), which covers websockets: a link with
    # 600 ms of latency and 8 KB/s down.
    network.send("Network.emulateNetworkConditions", {"offline": False, "latency": 600, "downloadThroughput": 8_000, "uploadThroughput": 8_000})
    page.wait_for_selector("#connection-note:not([hidden])", timeout=20_000)
    assert "too slow" in page.inner_text("#connection-note") and "slow_connection" in page.evaluate("window.crowdplay.pageEvents")
    network.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    page.wait_for_selector("#connection-note", state="hidden", timeout=30_000)
    assert "connection_ok" in page.evaluate("window.crowdplay.pageEvents")
    page.click("#finish")
    page.wait_for_selector("#score-page:not([hidden])")
    assert page.evaluate("window.crowdplay.summary.values.time_slow_connection") > 1.0
    page.close()
