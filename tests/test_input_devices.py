"""Gamepads and touch screens in a real Chromium (Debian's, driven by Playwright): a participant
plays with a gamepad (a fake one the page finds through ``navigator.getGamepads``), another on a
phone with the on-screen controls (several fingers at once), and the recording read back with
``crowdplay.data`` says which device made each input and which action it played.

The deployment is ``crowdplay serve`` running a study that allows touch (the suite's own
deployment runs no study, and a study's default keeps touch devices out), with one task whose
gamepad fires on B instead of A.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from crowdplay.data import Dataset
from tests.conftest import serve_plugin

STUDY = '''
"""A study that lets phones and tablets play, and a task that fires on the gamepad's B button."""
from crowdplay.environments import GamepadMap
from crowdplay.study import define_study

define_study({
    "title": "Devices study",
    "touch": "allowed",
    "tasks": {
        "invaders": {"environment": "SpaceInvaders", "title": "Space Invaders"},
        "invaders-b": {"environment": "SpaceInvaders", "title": "Space Invaders, B fires", "gamepad": GamepadMap({"a": None, "b": "Space"})},
    },
})
'''

#: A standard-mapping gamepad the page polls like a real one: the test moves its stick and
#: presses its buttons through ``window.fakePad``.
FAKE_GAMEPAD = """
window.fakePad = {
  id: "Fake standard gamepad", index: 0, connected: true, mapping: "standard", timestamp: 0,
  buttons: Array.from({ length: 17 }, () => ({ pressed: false, touched: false, value: 0 })),
  axes: [0, 0, 0, 0],
};
Object.defineProperty(navigator, "getGamepads", { configurable: true, value: () => [window.fakePad, null, null, null] });
"""

# Space Invaders' actions (ALE): the keymap's RIGHT, LEFT and LEFTFIRE.
RIGHT, LEFT, LEFTFIRE = 2, 3, 5


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Any:
    """``crowdplay serve`` with the study above, recording into a store of its own."""
    with serve_plugin(tmp_path_factory.mktemp("devices"), "device_study", STUDY, "crowdplay-devices-test") as served:
        yield served


def start(page, url: str, task_id: str) -> str:
    """Pick ``task_id`` in the library, press Start, wait until the game is on screen; the game's id."""
    page.goto(url)
    page.click(f"button[data-env-id={task_id}]")
    page.click("#start")
    page.wait_for_function("window.crowdplay.phase === 'playing' && window.crowdplay.framesDisplayed > 30", timeout=60_000)
    return str(page.evaluate("window.crowdplay.gameId"))


def recorded(store: Path, game_id: str) -> tuple[list[dict[str, Any]], list[int]]:
    """The inputs and agent_0's actions of the game's (finished) episode, read with the dataset API."""
    with Dataset.open(str(store)) as data:
        deadline = time.monotonic() + 30
        while True:
            found = [episode for episode in data.episodes() if episode["game_id"] == game_id and episode.get("status")]
            if found:
                [episode] = found
                inputs = data.inputs(episode["_id"])
                actions = [int(action) for action in data.load(episode["_id"], observations=None).agents["agent_0"].actions]
                return inputs, actions
            assert time.monotonic() < deadline, f"game {game_id}: its episode was not stored"
            time.sleep(0.3)


def played(inputs: list[dict[str, Any]], actions: list[int], keys: list[str]) -> list[tuple[str, int]]:
    """(source, action played at the step it took effect) of every input that held ``keys``."""
    return [(event["source"], actions[event["step"]]) for event in inputs if event["keys"] == keys and event["step"] < len(actions)]


def test_a_participant_plays_with_a_gamepad_and_each_input_is_recorded_as_the_gamepads(browser, deployment):
    context = browser.new_context()
    page = context.new_page()
    page.add_init_script(FAKE_GAMEPAD)
    game_id = start(page, deployment["url"], "invaders-b")
    assert page.evaluate("window.crowdplay.errors") == []

    # The left stick pushed left with B held (this task's fire button): LEFTFIRE, as ArrowLeft+Space on a keyboard.
    page.evaluate("window.fakePad.axes[0] = -0.9; window.fakePad.buttons[1] = { pressed: true, touched: true, value: 1 }")
    time.sleep(0.6)
    page.evaluate("window.fakePad.axes[0] = 0.2; window.fakePad.buttons[1] = { pressed: false, touched: false, value: 0 }")  # 0.2: inside the dead zone
    time.sleep(0.3)
    # A no longer fires in this task; the d-pad's right does move.
    page.evaluate("window.fakePad.buttons[0].pressed = true; window.fakePad.buttons[15].pressed = true")
    time.sleep(0.6)
    page.evaluate("window.fakePad.buttons[0].pressed = false; window.fakePad.buttons[15].pressed = false")
    time.sleep(0.3)
    page.click("#finish")
    page.wait_for_selector("#score-page:not([hidden])")
    context.close()

    inputs, actions = recorded(deployment["store"], game_id)
    assert inputs and {event["source"] for event in inputs} == {"gamepad"}
    assert ("gamepad", LEFTFIRE) in played(inputs, actions, ["ArrowLeft", "Space"])
    assert ("gamepad", RIGHT) in played(inputs, actions, ["ArrowRight"])  # A held too, but A is unmapped here
    assert [event["keys"] for event in inputs][-1] == []  # everything released


def test_a_participant_plays_on_a_phone_with_the_on_screen_controls_several_fingers_at_once(browser, deployment):
    context = browser.new_context(is_mobile=True, has_touch=True, viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page = context.new_page()
    page.goto(deployment["url"])
    page.wait_for_selector("button[data-env-id=invaders]")
    assert page.locator("#touch-warning").is_hidden()  # the study allows touch: no "use a keyboard" warning
    game_id = start(page, deployment["url"], "invaders")

    controls = page.locator("#touch-controls")
    assert controls.is_visible() and page.evaluate("getComputedStyle(document.getElementById('touch-controls')).touchAction") == "none"
    buttons = {key: page.locator(f"#touch-controls [data-key={key}]") for key in ("ArrowLeft", "ArrowRight", "Space")}
    assert page.locator("#touch-controls .touch-key").count() == 3  # one per key of the keymap
    assert buttons["Space"].get_attribute("aria-label") == "FIRE (Space)" and buttons["ArrowLeft"].text_content() == "LEFT"
    boxes = {key: button.bounding_box() for key, button in buttons.items()}
    assert all(box["width"] >= 44 and box["height"] >= 44 for box in boxes.values()), boxes
    assert all(box["x"] >= 0 and box["x"] + box["width"] <= 390 for box in boxes.values()), boxes  # on screen, no sideways scroll

    def centre(key: str) -> dict[str, float]:
        box = boxes[key]
        return {"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2}

    touch = context.new_cdp_session(page)
    scrolled = page.evaluate("window.scrollY")
    touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{**centre("ArrowLeft"), "id": 1}]})
    time.sleep(0.6)
    assert page.evaluate("document.querySelector('#touch-controls [data-key=ArrowLeft]').getAttribute('aria-pressed')") == "true"
    touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{**centre("ArrowLeft"), "id": 1}, {**centre("Space"), "id": 2}]})
    time.sleep(0.6)
    touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    time.sleep(0.3)
    assert page.evaluate("window.scrollY") == scrolled
    assert page.evaluate("window.crowdplay.errors") == []
    page.tap("#finish")
    page.wait_for_selector("#score-page:not([hidden])")
    context.close()

    inputs, actions = recorded(deployment["store"], game_id)
    assert inputs and {event["source"] for event in inputs} == {"touch"}
    assert ("touch", LEFT) in played(inputs, actions, ["ArrowLeft"])
    assert ("touch", LEFTFIRE) in played(inputs, actions, ["ArrowLeft", "Space"])  # two fingers: left and fire together
    assert [event["keys"] for event in inputs][-1] == []
