"""A study end to end: the participant's journey in a real Chromium for an MTurk-style and a
Prolific-style URL, completion refused until the requirements are met (also through the API),
tasks outside their window, turn-based play, feedback and reports, and the researcher dashboard."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from crowdplay.client import Participant, ServerError, http_json
from crowdplay.recording.store import TrajectoryStore
from crowdplay.study import current_study
from tests.study.config import SECONDS_TO_COMPLETE
from tests.study.conftest import STUDY_SETTINGS
from tests.test_admin_page import parse_exposition

ADMIN = {"Authorization": "Bearer test-admin-token"}


def run(coroutine):
    """Run a coroutine to completion in a thread of its own (Playwright's sync API keeps an event
    loop running in this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def request(url: str, method: str = "GET", headers: dict | None = None, payload: dict | None = None) -> tuple[int, dict | str]:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            body = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as error:
        body, status = error.read().decode(), error.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def play_until_complete(page) -> None:
    page.wait_for_function("window.crowdplay.framesDisplayed > 30", timeout=30_000)
    page.keyboard.down("Space")
    page.wait_for_function("window.crowdplay.stats && window.crowdplay.stats.complete", timeout=30_000)
    page.keyboard.up("Space")


def test_the_mturk_journey_from_consent_to_the_completion_code(browser, base_url):
    page = browser.new_page()
    page.goto(f"{base_url}/?assignmentId=A-1&hitId=H-1&workerId=WORKER-MTURK-1")
    page.wait_for_selector("#consent:not([hidden])")
    assert "Consent to take part" in page.inner_text("#consent-text")  # the researcher's Markdown, rendered
    page.click("#agree")
    page.wait_for_selector("#library:not([hidden])")
    assert page.locator("button[data-task-id=breakout-over]").is_disabled()  # its window is over
    page.click("button[data-task-id=invaders-mturk]")
    assert "Time played" in page.inner_text("#requirements")
    # Before Start: the task's instructions and its keys, generated from the keymap.
    page.wait_for_selector("#how-to-play:not([hidden])")
    assert "Shoot the aliens" in page.inner_text("#task-controls .instructions")
    hints = [" ".join(text.split()) for text in page.locator("#task-controls .key-hints li").all_inner_texts()]
    assert "Space FIRE" in hints and "← LEFT" in hints
    page.click("#start")
    assert "Shoot the aliens" in page.inner_text("#instructions") or page.wait_for_function(
        "document.getElementById('instructions').textContent.includes('Shoot the aliens')"
    )
    play_until_complete(page)
    assert page.locator("[data-requirement=time_played] progress").get_attribute("value") == "1"
    assert "Estimated bonus" in page.inner_text("#bonus")
    session_id, token = page.evaluate("[window.crowdplay.sessionId, window.crowdplay.token]")
    page.click("#finish")
    page.wait_for_selector("#score-page:not([hidden])")
    page.wait_for_selector("#completion-code-box:not([hidden])")
    code = page.inner_text("#completion-code")
    assert len(code) == 12 and page.locator("#histogram svg rect.own").count() == 1
    assert page.inner_text("#percentile") in {"You are the first to finish this task.", *(f"{n} other participants have finished this task so far; how you compare is shown once 10 have." for n in range(2, 10)), "One other participant has finished this task so far; how you compare is shown once 10 have."}
    status, completion = request(f"{base_url}/api/sessions/{session_id}/completion?token={token}")
    assert status == 200 and completion == {"code": code}  # the same code, from the server
    page.fill("#feedback", "ü" * 3000)  # within the box's 4000 characters, but 6 KB as UTF-8: the page says so and sends nothing
    page.click("#send-feedback")
    page.wait_for_function("document.getElementById('feedback-status').textContent.includes('too long')")
    page.fill("#feedback", "Fun, but the aliens are fast.")
    page.click("#send-feedback")
    page.wait_for_function("document.getElementById('feedback-status').textContent.includes('Thank you')")
    # A returning participant is not asked to consent again (remembered per consent version).
    page.goto(f"{base_url}/?assignmentId=A-1&hitId=H-1&workerId=WORKER-MTURK-1")
    page.wait_for_selector("#library:not([hidden])")
    page.close()

    store = TrajectoryStore.open(STUDY_SETTINGS.store_uri)
    [assignment] = store.find_assignments({"_id": session_id})
    assert assignment["task_id"] == "invaders-mturk" and assignment["completed_at"] and assignment["finished_at"]
    assert assignment["statistics"]["values"]["time_played"] >= SECONDS_TO_COMPLETE
    assert assignment["participant"] != "WORKER-MTURK-1"  # a pseudonym, never the worker id
    assert assignment["params"] == {"assignmentId": "A-1", "hitId": "H-1"}
    assert abs(assignment["consented_at"] - assignment["created_at"]) < 120  # the consent, recorded with its time
    assert assignment["created_at"] <= assignment["connected_at"] <= assignment["finished_at"]  # they played: one of the participants
    [feedback] = store.find_notes({"session_id": session_id})
    assert feedback["kind"] == "feedback" and "aliens" in feedback["text"]
    episodes = store.find_episodes({"task_id": "invaders-mturk"})
    assert episodes and episodes[0]["env_id"] == "SpaceInvaders" and "statistics" in episodes[0]
    store.close()


def page_with_stub(browser, site: str, text: str):
    """A page on which ``site`` (another website, not reachable from here) answers ``text``."""
    page = browser.new_page()
    page.route(f"{site}/**", lambda route: route.fulfill(status=200, body=f"<p>{text}</p>", content_type="text/html"))
    return page


def agree_and_pick(page, url: str, task_id: str) -> None:
    """Land on ``url``, consent, and pick ``task_id`` in the library."""
    page.goto(url)
    page.wait_for_selector("#consent:not([hidden])")
    page.click("#agree")
    page.click(f"button[data-task-id={task_id}]")


def test_the_prolific_score_page_stays_until_the_participant_continues_and_then_counts_down(browser, base_url):
    page = page_with_stub(browser, "https://app.prolific.com", "Prolific: submission complete")
    agree_and_pick(page, f"{base_url}/?PROLIFIC_PID=PID-1&STUDY_ID=S-1&SESSION_ID=X-1", "pong-prolific")
    page.click("#start")
    play_until_complete(page)
    page.clock.install()  # the score page's timers run on a clock the test moves (the game's ran on the real one)
    page.click("#finish")
    page.wait_for_selector("#continue-box:not([hidden])")
    assert page.inner_text("#continue") == "Return to Prolific"
    page.clock.run_for("00:30")  # half a minute without a click: the score stays on screen
    assert page.url.startswith(base_url) and page.is_visible("#final-score") and page.is_visible("#histogram svg")
    assert "in 30 s" in page.inner_text("#auto-continue")  # the study's default: 60 s, counted down
    page.click("#continue")
    page.wait_for_url("https://app.prolific.com/submissions/complete?cc=CPTEST", timeout=15_000)
    assert "submission complete" in page.content()
    page.close()


def test_the_score_page_continues_by_itself_after_its_countdown_unless_the_participant_stays(browser, base_url):
    for stay in (True, False):
        page = page_with_stub(browser, "https://app.prolific.com", "Prolific: submission complete")
        agree_and_pick(page, f"{base_url}/?PROLIFIC_PID=PID-2&STUDY_ID=S-1&SESSION_ID=X-{stay}", "pong-prolific")
        page.click("#start")
        play_until_complete(page)
        page.clock.install()
        page.click("#finish")
        page.wait_for_selector("#continue-box:not([hidden])")
        if stay:
            page.click("#stay")
            page.clock.run_for("02:00")
            assert page.url.startswith(base_url) and "ready" in page.inner_text("#auto-continue")
        else:
            page.clock.run_for("01:01")
            page.wait_for_url("https://app.prolific.com/submissions/complete?cc=CPTEST", timeout=15_000)
        page.close()


def test_a_redirect_card_sends_the_participant_elsewhere_and_touch_only_devices_are_warned(browser, base_url):
    page = page_with_stub(browser, "https://example.org", "another study")
    agree_and_pick(page, f"{base_url}/?participant=P-REDIRECT", "elsewhere")
    page.wait_for_url("https://example.org/another-study")
    page.close()
    phone = browser.new_context(is_mobile=True, has_touch=True, viewport={"width": 390, "height": 844})
    page = phone.new_page()
    page.goto(base_url)
    page.wait_for_selector("#touch-warning:not([hidden])")
    assert "keyboard" in page.inner_text("#touch-warning")
    phone.close()
    desktop = browser.new_page()
    desktop.goto(base_url)
    desktop.wait_for_selector("#consent:not([hidden])")
    assert desktop.locator("#touch-warning").is_hidden()
    desktop.close()


def test_no_completion_before_the_requirements_are_met_not_even_through_the_api(base_url):
    async def scenario():
        player = await Participant.join(base_url, "invaders-mturk", participant="WORKER-API-1")
        session = player.session
        url = f"{base_url}/api/sessions/{session['session_id']}"
        early = request(f"{url}/completion?token={session['token']}")
        wrong = request(f"{url}/completion?token=not-the-token")
        summary = request(f"{url}/summary?token={session['token']}")
        for _ in range(int(60 * (SECONDS_TO_COMPLETE + 1))):
            await player.next_frame()
        late = request(f"{url}/completion?token={session['token']}")
        await player.close()
        return early, wrong, summary, late

    early, wrong, summary, late = run(scenario())
    assert early[0] == 403 and early[1]["error"] == "not_complete" and early[1]["progress"]["time_played"] < 1
    assert wrong[0] == 403 and wrong[1]["error"] == "bad_token"
    assert summary[0] == 200 and summary[1]["complete"] is False and "time_played" in summary[1]["values"]
    assert late[0] == 200 and len(late[1]["code"]) == 12


def test_a_task_outside_its_window_takes_nobody_and_auto_assignment_skips_it(base_url):
    with pytest.raises(ServerError) as refused:
        http_json(f"{base_url}/api/sessions", {"task_id": "breakout-over"})
    assert refused.value.status == 409 and "ended" in refused.value.body["reason"]
    session = http_json(f"{base_url}/api/sessions", {"task_id": "auto"})
    assert session["task_id"] in {"invaders-mturk", "pong-prolific", "invaders-turns", "invaders-in-view", "breakout-stay"}
    study = http_json(f"{base_url}/api/study")
    assert [task["id"] for task in study["tasks"]] == list(current_study().tasks)
    assert study["consent"]["version"] and "<strong>" in study["consent"]["html"]


def set_tab_hidden(page, hidden: bool) -> None:
    """The participant switches tabs (headless Chromium has no second tab to switch to)."""
    page.evaluate(
        """(hidden) => {
            Object.defineProperty(document, 'hidden', { value: hidden, configurable: true });
            document.dispatchEvent(new Event('visibilitychange'));
        }""",
        hidden,
    )


def test_a_task_that_allows_a_second_of_hidden_page_is_not_completed_after_two(browser, base_url):
    page = browser.new_page()
    agree_and_pick(page, f"{base_url}/?assignmentId=A-2&hitId=H-2&workerId=WORKER-VIEW", "invaders-in-view")
    assert "hidden for at most 1 s" in page.inner_text("[data-requirement=max_hidden_s]")
    page.wait_for_selector("#how-to-play:not([hidden])")
    assert "plays on without you" in page.inner_text("#when-away")
    page.click("#start")
    page.wait_for_function("window.crowdplay.framesDisplayed > 30", timeout=30_000)
    set_tab_hidden(page, True)
    time.sleep(2.0)  # the task plays on ("play"), and counts the time
    set_tab_hidden(page, False)
    page.wait_for_function("window.crowdplay.stats && window.crowdplay.stats.hidden_too_long", timeout=15_000)
    assert "hidden for longer" in page.inner_text("#status") and not page.evaluate("window.crowdplay.events.includes('paused')")
    session_id, token = page.evaluate("[window.crowdplay.sessionId, window.crowdplay.token]")
    page.wait_for_function(f"window.crowdplay.stats.values.time_played >= {SECONDS_TO_COMPLETE}", timeout=30_000)
    page.click("#finish")
    page.wait_for_selector("#score-page:not([hidden])")
    page.wait_for_function("document.getElementById('completion-note').textContent.includes('hidden for longer')")
    status, _ = request(f"{base_url}/api/sessions/{session_id}/completion?token={token}")
    assert status == 403  # the server's judgement, not the page's
    page.close()


def test_a_task_that_ends_when_the_participant_leaves_its_page_ends_and_records_why(browser, base_url):
    page = browser.new_page()
    agree_and_pick(page, f"{base_url}/?participant=P-STAY", "breakout-stay")
    page.wait_for_selector("#how-to-play:not([hidden])")
    assert "ends the game" in page.inner_text("#when-away")
    page.click("#start")
    page.wait_for_function("window.crowdplay.framesDisplayed > 30", timeout=30_000)
    game_id = page.evaluate("window.crowdplay.gameId")
    set_tab_hidden(page, True)
    page.wait_for_function("document.getElementById('status').textContent.includes('ended because you left')", timeout=10_000)
    assert page.is_visible("#start-again")
    store = TrajectoryStore.open(STUDY_SETTINGS.store_uri)
    deadline = time.monotonic() + 30
    while not (episodes := [e for e in store.find_episodes({"game_id": game_id}) if e.get("status")]):
        assert time.monotonic() < deadline, "the episode was not stored"
        time.sleep(0.3)
    store.close()
    assert [entry["event"] for entry in episodes[0]["page_events"]][-1] == "hidden"
    assert episodes[0]["status"] == "interrupted" and "left" in episodes[0]["reason"]
    page.close()


def test_turn_based_play_steps_once_per_key_press(base_url):
    async def scenario():
        async with await Participant.join(base_url, "invaders-turns") as player:
            await player.next_frame()  # the start screen
            first = player.last_frame_id
            await asyncio.sleep(0.5)
            waited = len(player.timings)
            for _press in range(5):
                await player.press({"Space"})
                await player.next_frame()
                await player.press(set())  # releasing is not a turn
            await asyncio.sleep(0.3)
            return first, waited, player

    first, waited, player = run(scenario())
    assert waited == 1  # nothing moved while nobody pressed a key
    assert len(player.timings) == 6


def test_reports_work_without_a_session(base_url):
    status, _ = request(f"{base_url}/api/report", "POST", payload={"text": "The page is blank", "page": "landing"})
    assert status == 201
    status, body = request(f"{base_url}/api/report", "POST", payload={"text": ""})
    assert status == 400 and body["error"] == "invalid_note"


def test_the_dashboard_needs_its_token_and_shows_a_running_session(browser, base_url):
    assert request(f"{base_url}/api/admin/overview")[0] == 401
    assert request(f"{base_url}/api/admin/overview", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert request(f"{base_url}/metrics")[0] == 401

    loop = asyncio.new_event_loop()  # the participant plays in a thread of its own; Playwright drives this one
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def call(coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    async def play(frames: int) -> Participant:
        player = await Participant.join(base_url, "invaders-mturk", participant="WORKER-DASH-1")
        for _ in range(frames):
            await player.next_frame()
        return player

    player = call(play(90))
    status, overview = request(f"{base_url}/api/admin/overview", headers=ADMIN)
    metrics = urllib.request.urlopen(urllib.request.Request(f"{base_url}/metrics", headers=ADMIN), timeout=30).read().decode()
    page = browser.new_page()
    page.goto(f"{base_url}/admin?token=test-admin-token")
    end_button = f"button.end-session[data-session-id='{player.session['session_id']}']"
    page.wait_for_selector(end_button)
    page.on("dialog", lambda dialog: dialog.accept())
    page.click(end_button)
    ended = call(player.wait_for_event("end", timeout=15))
    page.close()
    call(player.close())
    loop.call_soon_threadsafe(loop.stop)

    assert status == 200
    [game] = [game for game in overview["games"] if any(s["session_id"] == player.session["session_id"] for s in game["sessions"])]
    assert game["task_id"] == "invaders-mturk" and game["env_id"] == "SpaceInvaders" and game["phase"] == "playing"
    [task] = [task for task in overview["tasks"] if task["task_id"] == "invaders-mturk"]
    assert task["live_sessions"] >= 1 and task["target"] == 100
    assert overview["histograms"]["frame_interval_ms"]["samples"] > 60
    ticked = [process for process in overview["histograms"]["frame_interval_ms"]["processes"] if process["count"]]
    assert ticked and all(process["sum"] > 0 and process["buckets"][-1] == ["+Inf", process["count"]] for process in ticked)
    assert 'crowdplay_live_sessions{task="invaders-mturk"}' in metrics
    types, samples = parse_exposition(metrics)
    assert types["crowdplay_frame_interval_ms"] == "histogram"
    assert sum(count for (name, _), count in samples.items() if name == "crowdplay_frame_interval_ms_count") > 60
    assert "researcher" in ended["reason"]


def test_the_study_speaks_german_to_a_german_browser_or_lang_de_and_english_otherwise(browser, base_url):
    context = browser.new_context(locale="de-DE")
    page = context.new_page()
    page.goto(f"{base_url}/?participant=P-DE")
    page.wait_for_selector("#consent:not([hidden])")
    assert page.evaluate("document.documentElement.lang") == "de" and page.inner_text("#study-title") == "CrowdPlay-Teststudie"
    assert "Einverständnis zur Teilnahme" in page.inner_text("#consent-text")  # the study's own German consent
    assert page.inner_text("#agree") == "Ich stimme zu" and page.inner_text("#report-button") == "Problem melden"
    page.click("#agree")
    assert page.inner_text("#library h2") == "Wählen Sie ein Spiel"
    page.click("button[data-task-id=invaders-mturk]")
    page.wait_for_selector("#how-to-play:not([hidden])")
    assert page.inner_text("#start") == "Starten" and page.inner_text("#how-to-play-heading") == "So wird gespielt"
    hints = [" ".join(text.split()) for text in page.locator("#task-controls .key-hints li").all_inner_texts()]
    assert "Leertaste FIRE" in hints and "pausiert" in page.inner_text("#when-away")
    context.close()
    for url, language, agree in ((f"{base_url}/?lang=de&participant=P-DE2", "de", "Ich stimme zu"), (f"{base_url}/?participant=P-EN", "en", "I agree")):
        page = browser.new_page()  # an English browser: ?lang=de still asks for German
        page.goto(url)
        page.wait_for_selector("#consent:not([hidden])")
        assert page.evaluate("document.documentElement.lang") == language and page.inner_text("#agree") == agree
        page.close()
