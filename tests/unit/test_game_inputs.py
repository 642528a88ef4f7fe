"""Turns in the ``wait_for_key`` mode (``crowdplay.game_inputs``): one per press of a mapped key,
playing the key just pressed; a release, or a key still held, is no turn (docs/environments.md,
Modes)."""

from __future__ import annotations

from crowdplay.environments.keymap import Keymap
from crowdplay.game_inputs import AgentInputs
from crowdplay.inputs import ParticipantInput
from crowdplay.vocabulary import Mode

TAXI = Keymap({"ArrowDown": 0, "ArrowUp": 1, "ArrowRight": 2, "ArrowLeft": 3})


def turns(*key_sets: tuple[str, ...], mode: str = Mode.WAIT_FOR_KEY, per_tick: int = 1) -> list[int | None]:
    """The action of each tick that steps, for a participant's inputs arriving ``per_tick`` to a tick."""
    inputs = AgentInputs({"agent_0": TAXI}, {"agent_0": "wait"}, mode)
    played: list[int | None] = []
    for tick, start in enumerate(range(0, len(key_sets), per_tick), 1):
        for seq, keys in enumerate(key_sets[start : start + per_tick], start + 1):
            inputs.queue("agent_0", ParticipantInput(keys=frozenset(keys), action=None, frame=tick, seq=seq), tick, tick)
        _, pressed = inputs.apply(tick, tick, len(played), 0.0)
        if inputs.turn_due(mode, pressed):
            played.append(inputs.action["agent_0"])
    return played


def test_a_key_pressed_while_another_is_held_plays_the_key_pressed_and_a_release_is_no_turn():
    up, left = "ArrowUp", "ArrowLeft"
    assert turns((up,), (up, left), (left,), ()) == [1, 3]  # before: [1, 1, 3] (up again, then a release played left)


def test_a_press_released_before_its_tick_still_takes_its_turn():
    assert turns(("ArrowRight",), (), per_tick=2) == [2]  # before: no turn (the release replaced the press)


def test_holding_keys_steps_while_held_and_realtime_every_tick():
    assert turns(("ArrowUp",), ("ArrowUp",), (), mode=Mode.HOLD_KEYS) == [1, 1]
    assert len(turns(("ArrowUp",), (), mode=Mode.REALTIME)) == 2
