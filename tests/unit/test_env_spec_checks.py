"""EnvSpec's registration checks and its turn mode, without building an environment."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from crowdplay.environments.keymap import Keymap
from crowdplay.environments.spec import MODES, EnvSpec
from crowdplay.vocabulary import Mode


def spec(**options: object) -> EnvSpec:
    return EnvSpec(**{"id": "Probe", "title": "Probe", "description": "d", "make_env": lambda: None, **options})  # type: ignore[arg-type]


def test_a_mode_given_by_name_is_held_as_the_enum_and_shown_as_its_name() -> None:
    probe = spec(mode="hold_keys")
    assert probe.mode is Mode.HOLD_KEYS and probe.mode == "hold_keys"
    assert json.dumps(probe.public()["mode"]) == '"hold_keys"'
    assert replace(probe, mode=Mode.WAIT_FOR_KEY).mode is Mode.WAIT_FOR_KEY
    assert MODES == ("realtime", "wait_for_key", "hold_keys")


def test_an_unknown_mode_is_refused_naming_the_environment_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"environment 'Probe': mode must be one of realtime, wait_for_key, hold_keys, got 'turns'"):
        spec(mode="turns")


@pytest.mark.parametrize("options, message", [
    ({"id": "no spaces"}, r"environment id 'no spaces' must be non-empty"),
    ({"fps": 0, "ai_unavailable": "shrug"}, r"fps must be within 1..240, got 0"),  # checked before the AI options
    ({"ai_unavailable": "shrug"}, r"ai_unavailable must be one of play_on, end, got 'shrug'"),
    ({"human_timeout": -1}, r"human_timeout must be a positive number of seconds or None"),
    ({"reset_options": {"when": object()}}, r"reset_options must be JSON-able"),
    ({"action_labels": "left right"}, r"every agent: action_labels must be a list of non-empty strings"),
    ({"idle": {"a": "nap"}}, r"agent 'a': idle must be one of noop, repeat, wait, got 'nap'"),
])
def test_bad_options_are_refused_naming_the_option(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(**options)


def test_keymaps_are_checked_per_agent_when_they_can_be_built_without_the_environment() -> None:
    with pytest.raises(ValueError, match=r"agent 'b': the keymap option has no entry for this agent"):
        spec(keymap={"a": Keymap({"KeyA": 0}, 0)}).agent_controls("b", ["x"])
    with pytest.raises(ValueError, match=r"agent 'a': the keymap factory returned str, not a Keymap"):
        spec(keymap={"a": lambda labels: "nope"}, action_labels={"a": ["x"]})
    with pytest.raises(ValueError, match=r"every agent: the keymap has no no-op action"):
        spec(keymap=Keymap({"KeyA": 0}))
    assert spec(keymap=Keymap({"KeyA": 0}), idle="wait").agent_controls(None, None)[1] == "wait"
