"""The built-in games, their keymaps and the palette the codec relies on."""

from __future__ import annotations

import numpy as np
import pytest

from crowdplay.environments import EnvAdapter, InvalidAction, Keymap, UnknownEnvironment, get_env, list_envs
from crowdplay.environments.ntsc_palette import NTSC_PALETTE
from crowdplay.environments.replay import replay_screens

SEVEN_GAMES = ["SpaceInvaders", "Breakout", "Pong", "MontezumaRevenge", "Riverraid", "Qbert", "BeamRider"]


def test_the_seven_atari_games_are_registered():
    assert set(SEVEN_GAMES) <= {spec.id for spec in list_envs()}
    with pytest.raises(UnknownEnvironment):
        get_env("NoSuchGame")


@pytest.mark.parametrize("game", SEVEN_GAMES)
def test_games_run_at_native_rate_without_sticky_actions(game):
    adapter = EnvAdapter(get_env(game))
    try:
        kwargs = adapter.env.spec.kwargs
        assert kwargs["frameskip"] == 1
        assert kwargs["repeat_action_probability"] == 0.0
        assert get_env(game).fps == 60
    finally:
        adapter.close()


@pytest.mark.parametrize("game", SEVEN_GAMES)
def test_ntsc_palette_reproduces_the_emulators_rgb_screen(game):
    adapter = EnvAdapter(get_env(game))
    rng = np.random.default_rng(1)
    try:
        adapter.reset(1)
        ale = adapter.env.unwrapped.ale
        for step in range(400):
            adapter.step({"agent_0": int(rng.integers(adapter.action_count))})
            if step % 40 == 0:
                assert np.array_equal(NTSC_PALETTE[adapter.screen()], ale.getScreenRGB())
    finally:
        adapter.close()


def test_replay_with_the_same_seed_and_actions_gives_the_same_screens():
    actions = [1, 2, 3, 0, 4, 5] * 30
    first = [s.copy() for s in replay_screens("SpaceInvaders", 7, actions)]
    second = list(replay_screens("SpaceInvaders", 7, actions))
    assert len(first) == len(actions) + 1
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_keymap_picks_the_largest_held_combination_and_ignores_unmapped_keys():
    keymap = Keymap({"ArrowLeft": 3, "Space": 1, "ArrowLeft+Space": 5}, noop=0)
    assert keymap.resolve([]) == 0
    assert keymap.resolve(["ArrowLeft"]) == 3
    assert keymap.resolve(["Space", "ArrowLeft"]) == 5
    assert keymap.resolve(["ShiftLeft", "ArrowLeft"]) == 3
    assert keymap.resolve(["ShiftLeft"]) == 0


def test_atari_keymaps_follow_the_action_meanings():
    adapter = EnvAdapter(get_env("SpaceInvaders"))
    keymap = adapter.keymaps["agent_0"]
    meanings = adapter.action_meanings
    assert meanings[keymap.resolve(["Space"])] == "FIRE"
    assert meanings[keymap.resolve(["ArrowLeft", "Space"])] == "LEFTFIRE"
    assert meanings[keymap.resolve([])] == "NOOP"
    adapter.close()
    pong = EnvAdapter(get_env("Pong"))
    # Pong's paddle moves up on RIGHT: the Up arrow must mean RIGHT there.
    assert pong.action_meanings[pong.keymaps["agent_0"].resolve(["ArrowUp"])] == "RIGHT"
    pong.close()


def test_actions_outside_the_action_space_are_refused():
    adapter = EnvAdapter(get_env("Pong"))
    try:
        for bad in (-1, adapter.action_count, True, 2.0):
            with pytest.raises(InvalidAction):
                adapter.check_action("agent_0", bad)
        with pytest.raises(InvalidAction):
            adapter.check_action("agent_9", 0)
        assert adapter.check_action("agent_0", 1) == 1
    finally:
        adapter.close()


def test_the_ai_unavailable_options_are_checked_at_registration():
    from dataclasses import replace

    from crowdplay.environments import get_env

    with pytest.raises(ValueError, match="environment 'Bad': ai_unavailable must be one of play_on, end, got 'stop'"):
        replace(get_env("SpaceInvaders"), id="Bad", ai_unavailable="stop")
    with pytest.raises(ValueError, match="environment 'Bad': ai_unavailable_after_s must be a positive number"):
        replace(get_env("SpaceInvaders"), id="Bad", ai_unavailable_after_s=0)
