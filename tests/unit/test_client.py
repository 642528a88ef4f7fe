"""The reference client's inputs, as the protocol spells them (docs/protocol.md), without a server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from crowdplay import codec, protocol
from crowdplay.client import Participant


class RecordingSocket:
    """Stands in for the websocket: keeps what the client sends."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, message: str | bytes) -> None:
        self.sent.append(json.loads(message))


def participant() -> tuple[Participant, RecordingSocket]:
    socket = RecordingSocket()
    client = Participant("http://127.0.0.1:1", {}, socket, {}, codec.FrameDecoder((2, 2)), None)  # type: ignore[arg-type]
    client.last_frame_id = 41
    return client, socket


def test_keys_and_actions_carry_the_last_frame_and_consecutive_seqs() -> None:
    client, socket = participant()

    async def play() -> tuple[int, int]:
        return await client.press({"Up", "Space"}), await client.act(3)

    assert asyncio.run(play()) == (1, 2)
    assert socket.sent == [
        {"type": "keys", "keys": ["Space", "Up"], "frame": 41, "seq": 1},
        {"type": "action", "action": 3, "frame": 41, "seq": 2},
    ]
    assert sorted(client._pending_inputs) == [1, 2]  # each awaits the frame that applies it, for its latency


def test_seqs_wrap_at_the_protocols_modulo() -> None:
    client, socket = participant()
    client._seq = protocol.INPUT_SEQ_MODULO - 1
    assert asyncio.run(client.act(0)) == 0
    assert socket.sent[0]["seq"] == 0
