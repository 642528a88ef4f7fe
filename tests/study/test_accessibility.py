"""The participant's journey outside the game, for everyone: axe-core (run in the page) finds no
serious or critical violation on any non-game page, the journey works with the keyboard alone
with a visible focus, and reduced motion is respected."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.study.test_journey import play_until_complete

#: axe-core, installed by ``make test`` (the Makefile's ``axe`` target) with npm, never at run time.
AXE = Path(__file__).resolve().parents[2] / ".venv" / "axe" / "node_modules" / "axe-core" / "axe.min.js"


def serious_violations(page) -> list[str]:
    """axe-core's WCAG 2.1 A/AA and best-practice rules on the page as it is now: the serious and
    critical violations, each with the elements it found."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate("axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] })")
    return [
        f"{violation['id']} ({violation['impact']}): {[node['target'] for node in violation['nodes']]}"
        for violation in result["violations"]
        if violation["impact"] in ("serious", "critical")
    ]


@pytest.fixture(scope="module")
def axe_ready() -> None:
    if not AXE.exists():
        pytest.fail(f"axe-core is missing at {AXE}: run `make test` (its `axe` target installs it)")


def test_every_page_outside_the_game_has_no_serious_accessibility_violation(browser, base_url, axe_ready):
    page = browser.new_page()
    page.goto(f"{base_url}/?PROLIFIC_PID=PID-AXE&STUDY_ID=S-1&SESSION_ID=X-AXE")
    page.wait_for_selector("#consent:not([hidden])")
    found = {"consent": serious_violations(page)}
    page.click("#agree")
    page.wait_for_selector("#library:not([hidden])")
    found["library"] = serious_violations(page)
    page.click("button[data-task-id=pong-prolific]")
    page.wait_for_selector("#how-to-play:not([hidden])")
    found["task"] = serious_violations(page)
    page.click("#report-button")
    found["problem report"] = serious_violations(page)
    page.click("#close-report")
    page.click("#start")
    play_until_complete(page)
    page.clock.install()  # the score page's countdown waits for the test
    page.click("#finish")
    page.wait_for_selector("#continue-box:not([hidden])")
    found["score"] = serious_violations(page)
    page.fill("#feedback", "Fine.")
    page.click("#send-feedback")
    page.wait_for_function("document.getElementById('feedback-status').textContent.includes('Thank you')")
    found["feedback sent"] = serious_violations(page)
    page.close()
    assert found == {name: [] for name in found}


def focus_ring(page) -> str:
    """The focused element's outline, as drawn."""
    return page.evaluate("(() => { const s = getComputedStyle(document.activeElement); return `${s.outlineStyle} ${s.outlineWidth}`; })()")


def press_tab_until(page, selector: str, limit: int = 30) -> None:
    """Tab through the page until ``selector`` has the focus, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(selector) => document.activeElement.matches(selector)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def test_the_journey_works_with_the_keyboard_alone_with_a_visible_focus(browser, base_url):
    page = browser.new_page()
    page.goto(f"{base_url}/?participant=P-KEYBOARD")
    page.wait_for_selector("#consent:not([hidden])")
    press_tab_until(page, "#agree")
    assert focus_ring(page).startswith("solid") and not focus_ring(page).endswith(" 0px")
    page.keyboard.press("Enter")
    page.wait_for_selector("#library:not([hidden])")
    press_tab_until(page, "button[data-task-id=invaders-mturk]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#chosen:not([hidden])")
    assert page.evaluate("document.activeElement.id") == "start"  # the task page hands the focus to Start
    page.keyboard.press("Enter")
    page.wait_for_function("window.crowdplay.framesDisplayed > 30", timeout=30_000)
    page.keyboard.down("Space")  # the game's keys play
    page.wait_for_function("window.crowdplay.stats && window.crowdplay.stats.values.time_played >= 3", timeout=30_000)
    page.keyboard.up("Space")
    press_tab_until(page, "#finish")
    page.keyboard.press("Enter")
    page.wait_for_selector("#score-page:not([hidden])")
    press_tab_until(page, "#feedback")
    page.keyboard.type("Typed with the keyboard.")
    press_tab_until(page, "#send-feedback")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('feedback-status').textContent.includes('Thank you')")
    press_tab_until(page, "#report-button")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "report-text"  # the dialog takes the focus
    page.keyboard.press("Escape")
    assert not page.is_visible("#report-dialog")
    page.close()


def test_reduced_motion_turns_transitions_off(browser, base_url):
    for reduce, expected in (("reduce", "0s"), ("no-preference", None)):
        page = browser.new_page(reduced_motion=reduce)
        page.goto(f"{base_url}/?participant=P-MOTION")
        page.wait_for_selector("#consent:not([hidden])")
        duration = page.evaluate("getComputedStyle(document.getElementById('agree')).transitionDuration")
        assert duration == expected if expected else duration != "0s"
        page.close()
