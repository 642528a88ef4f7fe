"""Messages on the participant's websocket, shared by the ingress and ``crowdplay.client``.

Server -> client: binary frame messages (see ``crowdplay.codec``) and JSON text messages
(``hello``, ``lobby``, ``countdown``, ``play``, ``player``, ``episode_end``, ``error``, ``end``,
``pong``). Client -> server: JSON text messages
(``keys``, ``action``, ``ping``, ``page``, ``latency``). Full description in docs/protocol.md.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from crowdplay.engagement import PAGE_EVENTS, PageEvent
from crowdplay.inputs import DEFAULT_SOURCE, KEY_SOURCES, ParticipantInput
from crowdplay.round_trips import MAX_RTT_MS, RoundTrip

# Close codes: the standard ones, and 4xxx for application reasons.
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SESSION_ENDED = 4000
CLOSE_REPLACED = 4001
CLOSE_SERVER_UNREACHABLE = 4002
CLOSE_UNAUTHORIZED = 4003
CLOSE_UNKNOWN_SESSION = 4004

MAX_HELD_KEYS = 16
MAX_KEY_NAME = 32
MAX_FRAME_ID = 2**32 - 1
INPUT_SEQ_MODULO = 2**16


class ProtocolError(Exception):
    """A client message the server refuses; ``close_code`` says how the websocket is closed."""

    def __init__(self, reason: str, close_code: int = CLOSE_POLICY_VIOLATION) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


@dataclass(frozen=True)
class PingMessage:
    """A ping carrying the client's time ``t``, which the ``pong`` echoes so the page can measure
    the round trip; and the round trip of the client's previous ping, for the game to record
    (only the client can time it, and the next ping is the report that costs no extra message)."""

    t: float
    round_trip: RoundTrip | None = None


#: A ``latency`` report holds at most this many samples, each in 0..MAX_LATENCY_MS: the page sends
#: one every 5 s at most, and a bound keeps a report a small, fixed amount of work for the ingress.
MAX_LATENCY_SAMPLES = 64
MAX_LATENCY_MS = 60_000


@dataclass(frozen=True)
class LatencyReport:
    """Key-to-frame-displayed delays (ms) the page measured since its last report: only the page
    knows when a frame reached the screen, so it reports them for the dashboard."""

    key_to_frame_ms: tuple[float, ...]


#: ``keys`` and ``action`` messages are the participant's input, as the game takes it.
ClientMessage = ParticipantInput | PingMessage | LatencyReport | PageEvent


def _int_field(data: dict[str, Any], name: str, upper: int) -> int:
    value = data.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= upper:
        raise ProtocolError(f"{name!r} must be an integer in 0..{upper}")
    return value


def parse_client_message(message: str | bytes, max_bytes: int) -> ClientMessage:
    """Validate one client message; raise ProtocolError with a reason the client can act on."""
    if isinstance(message, bytes):
        raise ProtocolError("binary messages are not accepted from clients; send JSON text", CLOSE_UNSUPPORTED_DATA)
    size = len(message) if len(message) > max_bytes else len(message.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError(f"message of {size} bytes or more exceeds the limit of {max_bytes}", CLOSE_TOO_BIG)
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        raise ProtocolError("message is not valid JSON", CLOSE_INVALID_PAYLOAD) from None
    if not isinstance(data, dict):
        raise ProtocolError("message must be a JSON object", CLOSE_INVALID_PAYLOAD)
    kind = data.get("type")
    parse = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parse is None:
        raise ProtocolError(f"unknown message type {kind!r}; expected 'keys', 'action', 'ping', 'page' or 'latency'")
    return parse(data)


def _keys_message(data: dict[str, Any]) -> ParticipantInput:
    keys = data.get("keys")
    if (
        not isinstance(keys, list)
        or len(keys) > MAX_HELD_KEYS
        or not all(isinstance(k, str) and 0 < len(k) <= MAX_KEY_NAME for k in keys)
    ):
        raise ProtocolError(f"'keys' must be a list of at most {MAX_HELD_KEYS} key names")
    source = data.get("source", DEFAULT_SOURCE)
    if source not in KEY_SOURCES:
        raise ProtocolError(f"'source' must be one of {', '.join(map(repr, KEY_SOURCES))} (the device that made the change), got {source!r}")
    return ParticipantInput.holding(keys, _int_field(data, "frame", MAX_FRAME_ID), _int_field(data, "seq", INPUT_SEQ_MODULO - 1), source=source)


def _action_message(data: dict[str, Any]) -> ParticipantInput:
    action = data.get("action")
    if not isinstance(action, int) or isinstance(action, bool):
        raise ProtocolError("'action' must be an integer")
    return ParticipantInput.choosing(action, _int_field(data, "frame", MAX_FRAME_ID), _int_field(data, "seq", INPUT_SEQ_MODULO - 1))


def _ping_message(data: dict[str, Any]) -> PingMessage:
    t = data.get("t", 0)
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        raise ProtocolError("'t' must be a number")
    rtt = data.get("rtt_ms")
    if rtt is None:
        return PingMessage(float(t))
    if not isinstance(rtt, (int, float)) or isinstance(rtt, bool) or not 0 <= rtt <= MAX_RTT_MS:
        raise ProtocolError(f"'rtt_ms' must be a number in 0..{MAX_RTT_MS} (the previous ping's round trip in ms)")
    return PingMessage(float(t), RoundTrip(float(rtt), _int_field(data, "frame", MAX_FRAME_ID)))


def _page_message(data: dict[str, Any]) -> PageEvent:
    event = data.get("event")
    if event not in PAGE_EVENTS:
        raise ProtocolError(f"'event' must be one of {', '.join(map(repr, PAGE_EVENTS))}, got {event!r}")
    return PageEvent(event, _int_field(data, "frame", MAX_FRAME_ID))


def _latency_message(data: dict[str, Any]) -> LatencyReport:
    samples = data.get("key_to_frame_ms")
    if (
        not isinstance(samples, list)
        or len(samples) > MAX_LATENCY_SAMPLES
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= MAX_LATENCY_MS for v in samples)
    ):
        raise ProtocolError(f"'key_to_frame_ms' must be a list of at most {MAX_LATENCY_SAMPLES} numbers in 0..{MAX_LATENCY_MS} (ms)")
    return LatencyReport(tuple(float(v) for v in samples))


_PARSERS: dict[str, Callable[[dict[str, Any]], ClientMessage]] = {
    "keys": _keys_message, "action": _action_message, "ping": _ping_message, "page": _page_message, "latency": _latency_message,
}


def input_message(given: ParticipantInput) -> str:
    """The client's ``keys`` or ``action`` message for ``given`` (what ``parse_client_message`` reads back)."""
    if given.action is not None:
        return json.dumps({"type": "action", "action": given.action, "frame": given.frame, "seq": given.seq})
    source = {"source": given.source} if given.source != DEFAULT_SOURCE else {}  # the default goes unsaid
    return json.dumps({"type": "keys", "keys": list(given.held), "frame": given.frame, "seq": given.seq, **source})


def ping_message(t: float, previous: RoundTrip | None = None) -> str:
    """The client's ``ping`` carrying ``t``, and the ``previous`` ping's round trip when there is
    one to report (what ``parse_client_message`` reads back)."""
    return json.dumps({"type": "ping", "t": t, **(previous.to_wire() if previous is not None else {})})


def encode_palette(palette: np.ndarray | None) -> str | None:
    """A 256x3 palette as base64 of its 768 bytes (sent once, in ``hello``)."""
    return None if palette is None else base64.b64encode(np.ascontiguousarray(palette, dtype=np.uint8).tobytes()).decode()


def decode_palette(text: str | None) -> np.ndarray | None:
    """The hello's palette (base64 of RGB triples) as an (N, 3) uint8 array, or None when the screens are RGB."""
    return None if text is None else np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(-1, 3)


def text(kind: str, **fields: object) -> str:
    """A server JSON message."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))
