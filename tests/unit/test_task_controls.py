"""The task page's controls before Start: the keys, action names and instructions of every agent
people play, from a game built once per process (a keymap may need the built game)."""

from __future__ import annotations

import dataclasses

import pytest

from crowdplay.environments import get_env
from crowdplay.hello import task_controls

pytestmark = pytest.mark.unit


def test_a_one_player_atari_game_lists_its_keys_and_action_names():
    controls = task_controls(get_env("SpaceInvaders"))
    assert controls["humans"] == controls["agents"] and len(controls["agents"]) == 1
    [agent] = controls["agents"]
    keymap = controls["keymaps"][agent]
    labels = controls["action_labels"].get(agent) or controls["action_meanings"]
    assert labels[keymap["Space"]] == "FIRE" and labels[keymap["ArrowLeft"]] == "LEFT"


def test_a_two_player_pettingzoo_game_lists_each_agent_and_its_instructions():
    spec = dataclasses.replace(get_env("Pong2P"), instructions={"first_0": "<p>You are green.</p>", "second_0": "<p>You are orange.</p>"})
    controls = task_controls(spec)
    assert controls["humans"] == ["first_0", "second_0"]
    assert controls["instructions"] == {"first_0": "<p>You are green.</p>", "second_0": "<p>You are orange.</p>"}
    assert all(controls["keymaps"][agent] for agent in controls["humans"])


def test_the_game_is_built_once_per_spec():
    spec = get_env("Breakout")
    assert task_controls(spec) is task_controls(spec)
    assert task_controls(dataclasses.replace(spec, instructions="new")) is not task_controls(spec)
