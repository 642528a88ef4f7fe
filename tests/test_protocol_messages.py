"""Client message validation: every malformed message gets a reason and the right close code."""

from __future__ import annotations

import json

import pytest

from crowdplay import protocol
from crowdplay.inputs import ParticipantInput

LIMIT = 2048


def test_valid_messages_parse():
    keys = protocol.parse_client_message(json.dumps({"type": "keys", "keys": ["Space", "ArrowLeft"], "frame": 9, "seq": 3}), LIMIT)
    assert keys == ParticipantInput.holding({"Space", "ArrowLeft"}, 9, 3)
    assert protocol.parse_client_message('{"type":"action","action":2}', LIMIT) == ParticipantInput.choosing(2, 0, 0)
    assert protocol.parse_client_message('{"type":"ping","t":1.5}', LIMIT) == protocol.PingMessage(1.5)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b"\x00\x01", protocol.CLOSE_UNSUPPORTED_DATA),
        ("x" * (LIMIT + 1), protocol.CLOSE_TOO_BIG),
        ("{not json", protocol.CLOSE_INVALID_PAYLOAD),
        ("[1, 2]", protocol.CLOSE_INVALID_PAYLOAD),
        ('{"type": "teleport"}', protocol.CLOSE_POLICY_VIOLATION),
        ('{"type": "keys", "keys": "Space"}', protocol.CLOSE_POLICY_VIOLATION),
        ('{"type": "keys", "keys": [1]}', protocol.CLOSE_POLICY_VIOLATION),
        (json.dumps({"type": "keys", "keys": ["K"] * 17}), protocol.CLOSE_POLICY_VIOLATION),
        ('{"type": "keys", "keys": [], "frame": -1}', protocol.CLOSE_POLICY_VIOLATION),
        ('{"type": "keys", "keys": [], "seq": 70000}', protocol.CLOSE_POLICY_VIOLATION),
        ('{"type": "action", "action": "1"}', protocol.CLOSE_POLICY_VIOLATION),
        ('{"type": "action", "action": true}', protocol.CLOSE_POLICY_VIOLATION),
        ('{"type": "ping", "t": "now"}', protocol.CLOSE_POLICY_VIOLATION),
        ("[" * 100000, protocol.CLOSE_TOO_BIG),
    ],
)
def test_bad_messages_are_refused_with_a_reason_and_close_code(message, code):
    with pytest.raises(protocol.ProtocolError) as refused:
        protocol.parse_client_message(message, LIMIT)
    assert refused.value.close_code == code
    assert refused.value.reason


def test_deeply_nested_json_within_the_size_limit_is_refused_not_crashing():
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_client_message("[" * 2000 + "]" * 2000, 5000)
