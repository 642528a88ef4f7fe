"""The participant's input: one type from the websocket's parser through the channel to the log."""

from __future__ import annotations

import dataclasses

import pytest

from crowdplay.game_observers import InputLog
from crowdplay.inputs import AppliedInput, ParticipantInput


def test_an_input_holds_keys_or_an_action_and_crosses_the_channel_unchanged() -> None:
    keys, action = ParticipantInput.holding(["Space", "ArrowLeft"], 9, 3), ParticipantInput.choosing(2, 4, 5)
    assert keys.to_wire() == {"kind": "keys", "keys": ["ArrowLeft", "Space"], "frame": 9, "seq": 3, "at": 0.0, "source": "keyboard"}
    assert action.to_wire() == {"kind": "action", "action": 2, "frame": 4, "seq": 5, "at": 0.0}
    assert ParticipantInput.from_wire(keys.to_wire()) == keys and ParticipantInput.from_wire(action.to_wire()) == action
    stamped = dataclasses.replace(keys, ingress_at=1700000000.25)  # when the ingress received it
    assert ParticipantInput.from_wire(stamped.to_wire()).ingress_at == 1700000000.25
    assert ParticipantInput.holding([]).held == () and action.held == ()
    with pytest.raises(ValueError):
        ParticipantInput(None, None)
    with pytest.raises(ValueError):
        ParticipantInput(frozenset(), 1)


def test_an_applied_input_is_logged_with_the_fields_the_page_sent() -> None:
    applied = AppliedInput("agent_0", ParticipantInput.holding(["KeyB", "KeyA"], 7, 2), 3, 8, 9, 1, 2, 5, 0.01)
    assert applied.as_dict() == {
        "agent": "agent_0", "action": 3, "keys": ["KeyA", "KeyB"], "source": "keyboard", "seq": 2, "client_frame": 7, "received_frame": 8,
        "applied_frame": 9, "received_tick": 1, "applied_tick": 2, "env_step": 5, "apply_delay_s": 0.01,
    }


def test_the_input_log_times_each_inputs_path_through_the_game_until_its_frame_is_sent() -> None:
    log = InputLog()
    given = dataclasses.replace(ParticipantInput.holding(["Space"], 7, 2), ingress_at=99.5)
    log.input_applied(AppliedInput("agent_0", given, 1, 8, 9, 1, 2, 5, 0.004), received_at=100.0)
    assert log.as_dicts()[0]["frame_sent_at"] == 0.0  # applied, its tick not yet through
    log.frames_sent()
    sent = log.as_dicts()[0]["frame_sent_at"]
    log.frames_sent()  # a later tick with nothing new applied stamps nothing
    [entry] = log.as_dicts()
    assert entry["seq"] == 2 and entry["ingress_at"] == 99.5 and entry["arrived_at"] == 100.0
    assert entry["applied_at"] == pytest.approx(100.004) and entry["frame_sent_at"] == sent > entry["applied_at"]
