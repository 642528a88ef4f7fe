"""Controls for any environment: action labels, keymap helpers, what "no key held" plays (``idle``),
and the key hints participants see. Real environments throughout: CartPole (no no-op action),
ALE games (named actions), two-player PettingZoo Atari, and the deployment of tests/conftest.py."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import ray

from crowdplay.client import Participant
from crowdplay.config import Settings
from crowdplay.controllers import Human
from crowdplay.environments import EnvAdapter, EnvSpec, Keymap, get_env, make_adapter, register_env
from crowdplay.environments.keymap import KEY_CODES, arrow_keymap, atari_keymap, named_keymap, number_keymap, wasd_keymap
from crowdplay.inputs import ParticipantInput
from crowdplay.realtime import LiveEnv
from crowdplay.recording.chunk import unpack_chunk
from crowdplay.recording.recorder import Recorder
from tests.study_envs import make_cartpole

LEFT, RIGHT = 0, 1  # CartPole: push the cart left, push it right


def cartpole(env_id: str, **options: object) -> EnvSpec:
    """CartPole with arrow keys for its two labelled actions, and ``options`` (``idle`` among them)."""
    options = {"action_labels": ["left", "right"], "keymap": arrow_keymap, **options}
    return EnvSpec(id=env_id, title="CartPole", description="", make_env=make_cartpole, **options)


# ----------------------------------------------------------------- keymap helpers
def test_arrow_keymap_reads_direction_labels_in_any_case_and_combined():
    keymap = arrow_keymap(["noop", "Left", "RIGHT", "up", "Down", "fire", "UP_LEFT", "downrightfire"])
    assert keymap.noop == 0
    assert keymap.match([]) is None and keymap.resolve([]) == 0
    assert keymap.resolve(["ArrowLeft"]) == 1 and keymap.resolve(["ArrowRight"]) == 2
    assert keymap.resolve(["ArrowUp"]) == 3 and keymap.resolve(["ArrowDown"]) == 4
    assert keymap.resolve(["Space"]) == 5
    assert keymap.resolve(["ArrowUp", "ArrowLeft"]) == 6
    assert keymap.resolve(["ArrowDown", "ArrowRight", "Space", "ShiftLeft"]) == 7


def test_arrow_keymap_without_a_noop_label_has_no_noop():
    keymap = arrow_keymap(["left", "right"])
    assert keymap.noop is None and keymap.resolve([]) is None
    assert keymap.to_json() == {"ArrowLeft": LEFT, "ArrowRight": RIGHT}


def test_wasd_and_number_keymaps():
    wasd = wasd_keymap(["NOOP", "up", "left", "down", "right", "fire"])
    assert wasd.to_json() == {"KeyW": 1, "KeyA": 2, "KeyS": 3, "KeyD": 4, "Space": 5} and wasd.noop == 0
    digits = number_keymap(["north", "east", "south", "west"])
    assert digits.to_json() == {"Digit1": 0, "Digit2": 1, "Digit3": 2, "Digit4": 3} and digits.noop is None
    assert number_keymap(["no-op", "go"]).noop == 0  # a no-op label is the no-op, and keeps its digit
    assert number_keymap([str(i) for i in range(10)]).resolve(["Digit0"]) == 9
    with pytest.raises(ValueError, match="ten digit keys"):
        number_keymap([str(i) for i in range(11)])


def test_named_keymaps_refuse_labels_they_cannot_read_or_that_need_the_same_keys():
    with pytest.raises(ValueError, match=r"\['jump'\]"):
        arrow_keymap(["left", "jump"])
    with pytest.raises(ValueError, match="'left' and 'LEFT' both need the keys ArrowLeft"):
        arrow_keymap(["left", "LEFT"])
    with pytest.raises(ValueError, match="both mean no-op"):
        arrow_keymap(["noop", "NOOP", "left"])
    assert named_keymap(["jump", "duck"], {"jump": "KeyJ", "duck": "KeyK"}).to_json() == {"KeyJ": 0, "KeyK": 1}


def test_arrow_keymap_reads_the_full_ale_action_set_like_atari_keymap():
    env = gym.make("ALE/MontezumaRevenge-v5")
    try:
        meanings = env.unwrapped.get_action_meanings()
    finally:
        env.close()
    assert len(meanings) == 18
    assert arrow_keymap(meanings).to_json() == atari_keymap(meanings).to_json()
    assert arrow_keymap(meanings).noop == atari_keymap(meanings).noop == meanings.index("NOOP")


def test_keymap_problems_name_unknown_keys_and_actions_outside_the_space():
    keymap = Keymap({"Arrowleft": 0, "KeyQ": 5, "Space+KeyQ": 1, "KeyQ+Space": 2}, noop=7)
    problems = "; ".join(keymap.problems(3))
    assert "unknown key codes ['Arrowleft']" in problems
    assert "'KeyQ' maps to action 5, outside the action space 0..2" in problems
    assert "its noop 7 is outside" in problems
    assert "'Space+KeyQ' and 'KeyQ+Space' are the same combination" in problems
    assert Keymap({"ArrowLeft": 0}).problems(1) == []
    assert {"ArrowLeft", "KeyW", "Digit1", "Space", "ShiftLeft", "Numpad5", "F1"} <= KEY_CODES


# ----------------------------------------------------------------- registration and start errors
def test_an_env_without_a_noop_and_without_an_idle_choice_is_refused_at_registration():
    with pytest.raises(ValueError, match=r"environment 'CartPoleNoIdle'.*no no-op action.*idle option"):
        register_env(cartpole("CartPoleNoIdle"))
    with pytest.raises(ValueError, match=r"environment 'CartPoleIdleNoop'.*no no-op action.*idle option"):
        register_env(cartpole("CartPoleIdleNoop", idle="noop"))  # asking for a no-op it does not have
    with pytest.raises(ValueError, match=r"environment 'CartPoleOddIdle'.*idle must be one of noop, repeat, wait"):
        register_env(cartpole("CartPoleOddIdle", idle="sometimes"))


def test_keymaps_naming_unknown_keys_or_actions_outside_the_labels_are_refused_at_registration():
    with pytest.raises(ValueError, match=r"environment 'CartPoleTypo', every agent: keymap: unknown key codes \['Arrowleft'\]"):
        register_env(cartpole("CartPoleTypo", keymap=Keymap({"Arrowleft": 0, "ArrowRight": 1}), idle="wait"))
    with pytest.raises(ValueError, match=r"environment 'CartPoleThree', every agent: keymap: 'KeyE' maps to action 2, outside the action space 0..1"):
        register_env(cartpole("CartPoleThree", keymap=Keymap({"KeyQ": 0, "KeyW": 1, "KeyE": 2}), idle="wait"))
    with pytest.raises(ValueError, match=r"environment 'CartPoleWords', every agent: keymap: labels \['push'\]"):
        register_env(cartpole("CartPoleWords", action_labels=["left", "push"], idle="wait"))
    with pytest.raises(ValueError, match="action_labels must be a list of non-empty strings"):
        register_env(cartpole("CartPoleLabelString", action_labels="left right", idle="wait"))
    team = get_env("SpaceInvaders2P")
    with pytest.raises(ValueError, match=r"environment 'DuoBadKeys', agent 'second_0': keymap: 'KeyQ' maps to action 9, outside the action space 0..5"):
        register_env(replace(team, id="DuoBadKeys", action_labels=["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"],
                             keymap={"first_0": atari_keymap, "second_0": Keymap({"KeyQ": 9}, noop=0)}))
    with pytest.raises(ValueError, match=r"environment 'DuoBadIdle'.*names agents \['third_0'\]"):
        register_env(replace(team, id="DuoBadIdle", idle={"third_0": "wait"}))


def test_what_needs_the_environment_is_refused_when_the_game_is_built():
    # labels of the wrong length, and a keymap factory given the environment's own names ("0", "1")
    with pytest.raises(ValueError, match=r"environment 'CartPoleShortLabels', agent 'agent_0': action_labels has 3 labels but the action space has 2"):
        make_adapter(cartpole("CartPoleShortLabels", action_labels=["left", "right", "up"], idle="wait"))
    with pytest.raises(ValueError, match=r"environment 'CartPoleNoLabels', agent 'agent_0': keymap: labels \['0', '1'\]"):
        make_adapter(cartpole("CartPoleNoLabels", action_labels=None, idle="repeat"))
    with pytest.raises(ValueError, match=r"environment 'BreakoutSeven', agent 'agent_0': keymap: 'Digit5' maps to action 4, outside the action space 0..3; .*'Digit7' maps to action 6"):
        make_adapter(replace(get_env("Breakout"), id="BreakoutSeven", keymap=Keymap({f"Digit{i + 1}": i for i in range(7)}, noop=0)))


# ----------------------------------------------------------------- labels
def test_ale_games_keep_their_own_action_meanings_as_labels():
    adapter = EnvAdapter(get_env("Breakout"))
    try:
        assert adapter.action_labels == {"agent_0": adapter.env.unwrapped.get_action_meanings()} == {"agent_0": ["NOOP", "FIRE", "RIGHT", "LEFT"]}
    finally:
        adapter.close()
    live = LiveEnv(get_env("Breakout"), 0, Settings())
    try:
        hello = live.describe()
        assert hello["action_labels"] == {"agent_0": ["NOOP", "FIRE", "RIGHT", "LEFT"]} and hello["idle"] == {"agent_0": "noop"}
        assert hello["keymaps"]["agent_0"] == {"Space": 1, "ArrowRight": 2, "ArrowLeft": 3} and hello["noop_actions"] == {"agent_0": 0}
    finally:
        live.stop("test over")


def test_multi_agent_labels_and_keymaps_are_per_agent():
    spec = replace(
        get_env("SpaceInvaders2P"), id="DuoLabels",
        action_labels={"second_0": ["wait", "shoot", "go right", "go left", "right and shoot", "left and shoot"]},
        keymap={"first_0": atari_keymap, "second_0": number_keymap}, idle={"second_0": "repeat"},
    )
    adapter = make_adapter(spec)
    try:
        assert adapter.action_labels["first_0"] == ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
        assert adapter.action_labels["second_0"][2] == "go right"
        assert adapter.keymaps["second_0"].resolve(["Digit3"]) == 2 and adapter.keymaps["second_0"].noop is None
        assert adapter.idle == {"first_0": "noop", "second_0": "repeat"}
    finally:
        adapter.close()


# ----------------------------------------------------------------- idle choices through the real-time loop
def recorded_play(spec: EnvSpec, script: list[list[str] | None]) -> tuple[LiveEnv, list[dict], list[int | None]]:
    """Tick ``spec``'s LiveEnv once per entry of ``script`` (the held keys submitted before that
    tick; None: no new input), with a real Recorder; returns the LiveEnv, its delivered chunks
    and the action in effect after each tick (None: waiting)."""
    chunks: list[dict] = []

    async def deliver(episode_id, seq, blob, steps, fields):
        chunks.append(unpack_chunk(blob))

    async def scenario():
        recorder = Recorder("controls", ("agent_0",), deliver, 1000, {"agent_0": Human()})
        live = LiveEnv(spec, 7, Settings(), recorder=recorder)
        in_effect = []
        for tick, keys in enumerate(script, start=1):
            if keys is not None:
                live.submit("agent_0", ParticipantInput.holding(keys, live.frame_id, tick))
            live.tick(tick)  # what the shared TickClock calls every 1/fps s
            in_effect.append(live.inputs.action["agent_0"])
        live.stop("test over")
        await asyncio.sleep(0.3)  # the last chunk is sealed and delivered
        return live, in_effect

    live, in_effect = asyncio.run(scenario())
    return live, chunks, in_effect


SCRIPT = [None, [], ["ArrowRight"], None, [], None, ["ArrowLeft", "ShiftLeft"], ["ShiftLeft"], None]


def recorded_actions(chunks: list[dict]) -> list[int]:
    return np.concatenate([chunk["action/agent_0"] for chunk in chunks]).tolist() if chunks else []


def cartpole_after(actions: list[int]) -> np.ndarray:
    """CartPole's state after ``actions`` from the seed LiveEnv uses: what was really applied."""
    env = make_cartpole()
    env.reset(seed=7)
    for action in actions:
        env.step(action)
    state = np.array(env.unwrapped.state)
    env.close()
    return state


def test_idle_repeat_plays_the_last_action_again_and_records_it():
    live, chunks, in_effect = recorded_play(cartpole("CartPoleRepeat", idle="repeat"), SCRIPT)
    # nothing to repeat before the first key: the game waits; then every release repeats
    assert in_effect == [None, None, RIGHT, RIGHT, RIGHT, RIGHT, LEFT, LEFT, LEFT]
    applied = [RIGHT, RIGHT, RIGHT, RIGHT, LEFT, LEFT, LEFT]
    assert live.episodes[-1].actions["agent_0"].tolist() == applied
    assert recorded_actions(chunks) == applied
    assert np.array_equal(np.array(live.adapter.env.unwrapped.state), cartpole_after(applied))
    log = list(live.input_log)
    assert [entry.action for entry in log] == [None, RIGHT, RIGHT, LEFT, LEFT]  # a release logs the repeated action


def test_idle_wait_does_not_step_or_record_while_no_mapped_key_is_held():
    live, chunks, in_effect = recorded_play(cartpole("CartPoleWait", idle="wait"), SCRIPT)
    assert in_effect == [None, None, RIGHT, RIGHT, None, None, LEFT, None, None]
    applied = [RIGHT, RIGHT, LEFT]  # only the ticks with a mapped key held stepped
    assert live.episodes.steps == 3 and live.ticks == len(SCRIPT)
    assert live.episodes[-1].actions["agent_0"].tolist() == applied
    assert recorded_actions(chunks) == applied
    assert np.array_equal(np.array(live.adapter.env.unwrapped.state), cartpole_after(applied))


def test_idle_noop_plays_the_no_op_the_researcher_chose():
    keymap = Keymap({"ArrowLeft": LEFT, "ArrowRight": RIGHT}, noop=LEFT)  # an explicit choice: no key pushes left
    live, chunks, in_effect = recorded_play(cartpole("CartPoleNoop", keymap=keymap, idle="noop"), SCRIPT)
    assert in_effect == [LEFT, LEFT, RIGHT, RIGHT, LEFT, LEFT, LEFT, LEFT, LEFT]
    assert recorded_actions(chunks) == in_effect == live.episodes[-1].actions["agent_0"].tolist()
    assert np.array_equal(np.array(live.adapter.env.unwrapped.state), cartpole_after(in_effect))


def test_idle_wait_on_the_real_clock():
    async def scenario():
        live = LiveEnv(cartpole("CartPoleWaitClock", idle="wait"), 3, Settings())
        live.start()
        await asyncio.sleep(0.3)
        waited = (live.ticks, live.episodes.steps)
        live.submit("agent_0", ParticipantInput.holding(["ArrowLeft"], 0, 1))
        await asyncio.sleep(0.1)
        live.submit("agent_0", ParticipantInput.holding([], 0, 2))
        await asyncio.sleep(0.05)
        held_steps = live.episodes.steps
        await asyncio.sleep(0.3)
        live.stop("test over")
        return live, waited, held_steps

    live, (ticks, steps), held_steps = asyncio.run(scenario())
    assert ticks >= 10 and steps == 0  # ticking, but nothing is played until a mapped key is held
    assert 3 <= held_steps == live.episodes.steps  # stepped while held, stopped on release
    assert {action for record in live.episodes for action in record.actions["agent_0"]} == {LEFT}


# ----------------------------------------------------------------- the deployment and the page
def test_hello_carries_the_labels_keymap_and_idle_choice_of_a_non_atari_env(base_url, manager):
    async def scenario():
        async with await Participant.join(base_url, "TestCartPole") as player:
            await player.wait_for_event("play", timeout=30)
            await asyncio.sleep(0.5)  # no key held: the game must wait
            before = []
            while not player.frames.empty():
                before.append(player.frames.get_nowait()[0].env_step)
            await player.press({"ArrowRight"})
            steps = 0
            while steps < 3:
                steps = (await player.next_frame())[0].env_step
            await player.press(set())
            session_id = player.session["session_id"]
            actor = await asyncio.to_thread(ray.get, manager.session_actor.remote(session_id))
            records = await asyncio.to_thread(ray.get, actor.episodes.remote(session_id))
            return player.hello, before, records

    hello, before, records = asyncio.run(scenario())
    assert hello["agent"] == "agent_0" and hello["channels"] == 3
    assert hello["action_labels"] == {"agent_0": ["left", "right"]}
    assert hello["keymaps"] == {"agent_0": {"ArrowLeft": LEFT, "ArrowRight": RIGHT}}
    assert hello["idle"] == {"agent_0": "wait"} and hello["noop_actions"] == {"agent_0": None}
    assert before and set(before) == {0}  # only the first screen until a key was held
    (record,) = [r for r in records if r["episode"] == 0]
    assert len(record["actions"]["agent_0"]) >= 3 and set(record["actions"]["agent_0"]) == {RIGHT}


def test_the_page_shows_the_key_hints(browser, base_url):
    page = browser.new_page()
    try:
        page.goto(base_url)
        page.click("button[data-env-id=TestCartPole]")
        page.click("#start")
        page.wait_for_selector("#controls", state="visible", timeout=30_000)
        hints = page.locator("#key-hints li")
        assert hints.count() == 2
        assert [" ".join(hints.nth(i).inner_text().split()) for i in range(2)] == ["← left", "→ right"]
        assert page.text_content("#idle-hint") == "No key: the game waits for you"
        assert not page.locator("#key-combos").is_visible()
        page.click("#leave")

        page.click("button[data-env-id=SpaceInvaders]")
        page.click("#start")
        page.wait_for_function("window.crowdplay.events.includes('hello') && document.querySelectorAll('#key-hints li').length === 5", timeout=30_000)
        assert page.locator("#controls").is_visible()
        texts = [" ".join(text.split()) for text in page.locator("#key-hints li").all_inner_texts()]
        assert texts == ["Space FIRE", "→ RIGHT", "← LEFT", "→+Space RIGHTFIRE", "←+Space LEFTFIRE"]
        assert page.text_content("#idle-hint") == "No key: NOOP"
        assert page.evaluate("window.crowdplay.errors") == []
        page.click("#leave")

        # 18 actions: the single keys are listed, the 12 combinations folded away until asked for
        page.click("button[data-env-id=MontezumaRevenge]")
        page.click("#start")
        page.wait_for_function("document.querySelectorAll('#key-combo-hints li').length === 12", timeout=30_000)
        assert page.locator("#key-hints li").count() == 5
        assert page.text_content("#key-combos summary") == "12 key combinations"
        combo = page.locator("#key-combo-hints li[data-keys='ArrowLeft+ArrowUp+Space']")
        assert not combo.is_visible()
        page.click("#key-combos summary")
        assert " ".join(combo.inner_text().split()) == "←+↑+Space UPLEFTFIRE"
    finally:
        page.close()
