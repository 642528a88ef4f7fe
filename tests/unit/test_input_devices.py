"""Input devices without a browser: the ``source`` of a ``keys`` message from the websocket to the
stored recording (and old recordings without it), the gamepad controls an environment's keymap
implies and their overrides, and the study's ``touch`` option."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from crowdplay import protocol
from crowdplay.data import Dataset
from crowdplay.environments import EnvSpec, GamepadMap, Keymap, arrow_keymap, atari_keymap, get_env, named_keymap, number_keymap, wasd_keymap
from crowdplay.environments.gamepad import default_gamepad
from crowdplay.inputs import AppliedInput, ParticipantInput
from crowdplay.recording.chunk import pack_chunk
from crowdplay.recording.store import TrajectoryStore
from crowdplay.study import StudyConfigError, define_study, reset_study
from crowdplay.study_schema import StudyConfig

LIMIT = 2048
ARROWS = {"dpad_up": "ArrowUp", "dpad_down": "ArrowDown", "dpad_left": "ArrowLeft", "dpad_right": "ArrowRight"}
_ids = itertools.count()


# ----------------------------------------------------------------- the keys message's source
@pytest.mark.parametrize("source", ["keyboard", "gamepad", "touch"])
def test_a_keys_message_names_its_device_and_the_source_survives_every_hop(source: str) -> None:
    message = f'{{"type":"keys","keys":["Space"],"frame":3,"seq":2,"source":"{source}"}}'
    parsed = protocol.parse_client_message(message, LIMIT)
    assert parsed == ParticipantInput.holding({"Space"}, 3, 2, source=source)
    assert protocol.parse_client_message(protocol.input_message(parsed), LIMIT) == parsed  # the Python client's message
    assert ParticipantInput.from_wire(parsed.to_wire()) == parsed  # the frame channel's JSON
    applied = AppliedInput("agent_0", parsed, 1, 3, 4, 10, 11, 5, 0.01)
    assert applied.as_dict()["source"] == source  # the EnvActor's input log


def test_a_keys_message_without_a_source_comes_from_a_keyboard_and_an_action_from_a_program() -> None:
    assert protocol.parse_client_message('{"type":"keys","keys":[]}', LIMIT).source == "keyboard"
    wire = ParticipantInput.holding({"Space"}, 1, 1).to_wire()
    del wire["source"]  # a peer of before the field
    assert ParticipantInput.from_wire(wire).source == "keyboard"
    action = protocol.parse_client_message('{"type":"action","action":2}', LIMIT)
    assert action.source == "action" and ParticipantInput.from_wire(action.to_wire()) == action
    assert ParticipantInput(None, 1).source == "action"  # an action made without a source


@pytest.mark.parametrize("source", ['"mouse"', '""', "1", "null", '["touch"]'])
def test_any_other_source_closes_the_connection_with_a_reason(source: str) -> None:
    with pytest.raises(protocol.ProtocolError) as refused:
        protocol.parse_client_message(f'{{"type":"keys","keys":[],"source":{source}}}', LIMIT)
    assert refused.value.close_code == protocol.CLOSE_POLICY_VIOLATION
    assert "'source' must be one of 'keyboard', 'gamepad', 'touch'" in refused.value.reason


def test_an_input_refuses_a_source_that_does_not_fit_it() -> None:
    with pytest.raises(ValueError, match="source must be one of keyboard, gamepad, touch"):
        ParticipantInput.holding({"Space"}, source="action")
    with pytest.raises(ValueError, match="source must be one of action"):
        ParticipantInput(None, 1, source="touch")


# ----------------------------------------------------------------- the stored inputs
def _chunk(inputs: list[list[object]]) -> dict[str, object]:
    return {
        "first_step": 0, "steps": 3, "start_state": None, "controllers": {"agent_0": {"human": True}}, "frame_id": [1, 2, 3],
        "tick_time": [0.0, 0.1, 0.2], "action/agent_0": [0, 1, 1], "reward/agent_0": [0.0, 0.0, 0.0], "client_frame/agent_0": [0, 1, 2],
        "terminated": [False] * 3, "truncated": [False] * 3, "inputs": inputs, "frames": [],
    }


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Dataset]:
    store = TrajectoryStore.open(str(tmp_path / "store.db"))
    store.put_episode("old", {"env_id": "Toy", "agents": ["agent_0"], "started_at": 1.0})
    store.put_episode("new", {"env_id": "Toy", "agents": ["agent_0"], "started_at": 2.0})
    store.put_chunk("old", 0, pack_chunk(_chunk([[1, "agent_0", ["Space"], 1, 0, 10.5]])), 3)
    rows = [[0, "agent_0", ["ArrowLeft"], 1, 0, 10.0, "touch"], [1, "agent_0", ["ArrowLeft", "Space"], 2, 1, 10.1, "gamepad"], [2, "agent_0", [], 3, 2, 10.2, "keyboard"]]
    store.put_chunk("new", 0, pack_chunk(_chunk(rows)), 3)
    with Dataset(store) as dataset:
        yield dataset


def test_the_dataset_reads_each_inputs_device_and_an_old_recording_as_a_keyboards(data: Dataset) -> None:
    assert [event["source"] for event in data.inputs("new")] == ["touch", "gamepad", "keyboard"]
    assert data.inputs("new")[1]["keys"] == ["ArrowLeft", "Space"]
    [old] = data.inputs("old")
    assert old == {"step": 1, "agent": "agent_0", "keys": ["Space"], "seq": 1, "client_frame": 0, "received_at": 10.5, "source": "keyboard"}
    assert data.held_keys("new", "agent_0") == [("ArrowLeft",), ("ArrowLeft", "Space"), ()]


# ----------------------------------------------------------------- gamepad controls
def test_the_default_gamepad_puts_directions_on_the_d_pad_and_the_stick_and_fire_on_a() -> None:
    invaders = default_gamepad(atari_keymap(["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]))
    assert invaders["a"] == "Space" and {control: invaders[control] for control in ARROWS} == ARROWS
    assert invaders["left_stick_left"] == "ArrowLeft" and invaders["left_stick_down"] == "ArrowDown"
    assert not {"b", "x", "y", "right_stick_up"} & set(invaders)  # nothing else unless the keymap needs it


def test_the_default_gamepad_gives_the_keymaps_other_keys_to_the_free_buttons_in_action_order() -> None:
    taxi_keys = {"down": "ArrowDown", "up": "ArrowUp", "right": "ArrowRight", "left": "ArrowLeft", "pickup": "KeyP", "dropoff": "KeyD"}
    taxi = default_gamepad(named_keymap(["down", "up", "right", "left", "pickup", "dropoff"], taxi_keys))
    assert taxi["a"] == "KeyP" and taxi["b"] == "KeyD"  # no Space: A is free for the first other key
    digits = default_gamepad(number_keymap(["noop", "left", "right", "jump"]))
    assert [digits[button] for button in ("a", "b", "x", "y")] == ["Digit1", "Digit2", "Digit3", "Digit4"]
    wasd = default_gamepad(wasd_keymap(["noop", "fire", "up", "down", "left", "right"]))
    assert wasd["dpad_up"] == "KeyW" and wasd["left_stick_left"] == "KeyA" and wasd["a"] == "Space"


def test_a_gamepad_map_overrides_the_default_and_can_stand_alone() -> None:
    keymap = arrow_keymap(["noop", "fire", "left", "right"])
    merged = GamepadMap({"b": "Space", "a": None, "dpad_left": "ArrowLeft+Space"}).resolve(keymap)
    assert merged["b"] == "Space" and "a" not in merged and merged["dpad_left"] == "ArrowLeft+Space" and merged["dpad_right"] == "ArrowRight"
    assert GamepadMap({"rt": "Space"}, replace=True).resolve(keymap) == {"rt": "Space"}


@pytest.mark.parametrize(
    ("gamepad", "message"),
    [
        (GamepadMap({"dpad_upp": "ArrowUp"}), r"environment 'PadTest\d+', every agent: gamepad: unknown control 'dpad_upp' \(did you mean 'dpad_up'\?\)"),
        (GamepadMap({"a": "Spacebar"}), r"gamepad: 'a' holds 'Spacebar', which is not a key code"),
        ({"agent_0": GamepadMap({"zz": "Space"})}, r"agent 'agent_0': gamepad: unknown control 'zz' \(known: a, b, x"),
        ({"a": "Space"}, r"agent 'a': gamepad must be a GamepadMap\(\{control: key\}\) or \{agent: GamepadMap\}, got 'Space'"),
    ],
)
def test_a_wrong_gamepad_option_is_refused_at_registration_naming_the_environment(gamepad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EnvSpec(id=f"PadTest{next(_ids)}", title="t", description="d", make_env=lambda: None, gamepad=gamepad)  # type: ignore[arg-type]


def test_a_gamepad_control_holding_a_key_the_keymap_does_not_use_is_refused_when_the_game_is_built() -> None:
    spec = EnvSpec(id="PadBuild", title="t", description="d", make_env=lambda: None, gamepad=GamepadMap({"b": "KeyQ"}))
    keymap = Keymap({"Space": 1, "ArrowLeft": 2}, noop=0)
    with pytest.raises(ValueError, match=r"environment 'PadBuild', agent 'agent_0': gamepad: 'b' holds \['KeyQ'\], which the keymap does not use"):
        spec.agent_gamepad("agent_0", keymap)
    assert spec.agent_gamepad("agent_0", Keymap({"KeyQ": 1}, noop=0))["b"] == "KeyQ"


# ----------------------------------------------------------------- the study's options
@pytest.fixture
def forget_the_study() -> Iterator[None]:
    yield
    reset_study()


def test_touch_is_excluded_unless_the_study_allows_it_and_a_task_can_set_its_gamepad(forget_the_study: None) -> None:
    assert StudyConfig.model_fields["touch"].default == "excluded"
    task = f"pad-task-{next(_ids)}"
    study = define_study({"touch": "allowed", "tasks": {task: {"environment": "SpaceInvaders", "gamepad": GamepadMap({"b": "Space"})}}})
    assert study.touch == "allowed"
    assert study.tasks[task].spec.gamepad == get_env(task).gamepad and study.tasks[task].spec.gamepad.controls == {"b": "Space"}


def test_a_wrong_touch_or_gamepad_option_names_the_study_or_the_task(forget_the_study: None) -> None:
    with pytest.raises(StudyConfigError, match=r"study: 'touch' must be one of allowed, excluded, got 'phones'"):
        define_study({"touch": "phones", "tasks": {f"pad-task-{next(_ids)}": {"environment": "Pong"}}})
    task = f"pad-task-{next(_ids)}"
    with pytest.raises(StudyConfigError, match=rf"task '{task}': environment '{task}', every agent: gamepad: unknown control 'trigger'"):
        define_study({"tasks": {task: {"environment": "Pong", "gamepad": GamepadMap({"trigger": "Space"})}}})
