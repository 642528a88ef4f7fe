"""The participant's input: one type from the websocket's parser through the channel to the log."""

from __future__ import annotations

import pytest

from crowdplay.inputs import AppliedInput, ParticipantInput


def test_an_input_holds_keys_or_an_action_and_crosses_the_channel_unchanged() -> None:
    keys, action = ParticipantInput.holding(["Space", "ArrowLeft"], 9, 3), ParticipantInput.choosing(2, 4, 5)
    assert keys.to_wire() == {"kind": "keys", "keys": ["ArrowLeft", "Space"], "frame": 9, "seq": 3}
    assert action.to_wire() == {"kind": "action", "action": 2, "frame": 4, "seq": 5}
    assert ParticipantInput.from_wire(keys.to_wire()) == keys and ParticipantInput.from_wire(action.to_wire()) == action
    assert ParticipantInput.holding([]).held == () and action.held == ()
    with pytest.raises(ValueError):
        ParticipantInput(None, None)
    with pytest.raises(ValueError):
        ParticipantInput(frozenset(), 1)


def test_an_applied_input_is_logged_with_the_fields_the_page_sent() -> None:
    applied = AppliedInput("agent_0", ParticipantInput.holding(["KeyB", "KeyA"], 7, 2), 3, 8, 9, 1, 2, 5, 0.01)
    assert applied.as_dict() == {
        "agent": "agent_0", "action": 3, "keys": ["KeyA", "KeyB"], "seq": 2, "client_frame": 7, "received_frame": 8,
        "applied_frame": 9, "received_tick": 1, "applied_tick": 2, "env_step": 5, "apply_delay_s": 0.01,
    }
