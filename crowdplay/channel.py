"""The frame channel: a direct socket between an EnvActor and the ingress replica serving a player.

Ray actor calls and streaming generators cost ~1 ms of CPU per item on each side, which at 60 fps
per participant is most of a core for a handful of sessions. Frames and inputs therefore move over
one TCP connection per participant, opened by the ingress to an address the EnvActor hands out
through Ray; Ray keeps placement, lifecycle and control. The wire is simple framing:

    message = kind:u8  length:u32  payload        (little-endian)

    server -> client   FRAME (binary frame message)   TEXT (JSON event, as on the websocket)
    client -> server   HELLO (JSON {"secret", "agent"}, first)   ACK (empty)   INPUT (JSON)

Flow control keeps the "drop, don't queue" promise end to end: the server has at most ``window``
unacknowledged messages in flight; the ingress acknowledges each one after its websocket send
finished, so a slow participant stalls the channel and the EnvActor then sends the newest frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import struct
from collections.abc import AsyncIterator

from crowdplay import protocol
from crowdplay.environments import InvalidAction
from crowdplay.realtime import LiveEnv, SessionEnded, Subscriber

log = logging.getLogger(__name__)

FRAME, TEXT, HELLO, ACK, INPUT = range(5)
HEADER = struct.Struct("<BI")
MAX_PAYLOAD = 1 << 24
#: A connection that does not authenticate within this time is dropped.
HELLO_TIMEOUT_S = 10.0
#: After the last message, how long the peer gets to close before we do.
FINISH_TIMEOUT_S = 5.0


class ChannelClosed(ConnectionError):
    """The other side closed the channel."""


async def read_message(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    try:
        kind, length = HEADER.unpack(await reader.readexactly(HEADER.size))
        if length > MAX_PAYLOAD:
            raise ChannelClosed(f"channel message of {length} bytes exceeds {MAX_PAYLOAD}")
        return kind, await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        raise ChannelClosed("the channel closed") from None


def write_message(writer: asyncio.StreamWriter, kind: int, payload: bytes = b"") -> None:
    writer.write(HEADER.pack(kind, len(payload)) + payload)


class ChannelServer:
    """Serves a LiveEnv's participants; runs inside the EnvActor."""

    def __init__(self, live: LiveEnv, secret: str, window: int) -> None:
        self.live = live
        self.secret = secret
        self.window = window
        self._server: asyncio.Server | None = None

    async def start(self, host: str) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ChannelConnection(self), host=host, port=0)
        return self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Stop accepting connections (open ones end with the session)."""
        if self._server is not None:
            self._server.close()

    def apply_input(self, agent: str, data: dict) -> str | None:
        """Apply one input; for a refused one, the ``error`` event to send before closing."""
        try:
            if data["kind"] == "keys":
                self.live.submit_keys(agent, data["keys"], data["frame"], data["seq"])
            else:
                self.live.submit_action(agent, data["action"], data["frame"], data["seq"])
            return None
        except InvalidAction as error:
            return protocol.text("error", reason=str(error), code=protocol.CLOSE_POLICY_VIOLATION)
        except SessionEnded:
            return protocol.text("error", reason="the session has ended", code=protocol.CLOSE_SESSION_ENDED)
        except (KeyError, TypeError) as error:
            return protocol.text("error", reason=f"malformed input: {error}", code=protocol.CLOSE_POLICY_VIOLATION)


class ChannelConnection(asyncio.Protocol):
    """One participant's channel, server side: the LiveEnv pushes frames in as ticks happen
    (``realtime.Connection``); acknowledgements and inputs are handled as they arrive, in the
    event loop's callbacks, without a task of their own."""

    def __init__(self, server: ChannelServer) -> None:
        self.server = server
        self.credits = server.window
        self.subscriber: Subscriber | None = None
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._paused = False
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None

    # ----------------------------------------------------------------- transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._timer = asyncio.get_running_loop().call_later(HELLO_TIMEOUT_S, self._abort)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= HEADER.size and not self._closing:
            kind, length = HEADER.unpack_from(buffer)
            if length > MAX_PAYLOAD:
                return self._abort()
            end = HEADER.size + length
            if len(buffer) < end:
                return
            payload = bytes(buffer[HEADER.size : end])
            del buffer[:end]
            self._handle(kind, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self.subscriber is not None:
            self.server.live.unsubscribe(self.subscriber)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._offer()

    # ----------------------------------------------------------------- messages
    def _handle(self, kind: int, payload: bytes) -> None:
        if self.subscriber is None:
            self._hello(kind, payload)
        elif kind == ACK:
            self.credits += 1
            self._offer()
        elif kind == INPUT:
            try:
                data = json.loads(payload)
            except ValueError:
                data = None
            refusal = self.server.apply_input(self.subscriber.agent, data) if isinstance(data, dict) else protocol.text(
                "error", reason="malformed input", code=protocol.CLOSE_POLICY_VIOLATION
            )
            if refusal is not None:
                self.server.live.unsubscribe(self.subscriber)
                self._write(TEXT, refusal.encode())
                self.finish()

    def _hello(self, kind: int, payload: bytes) -> None:
        self._timer.cancel()
        try:
            hello = json.loads(payload) if kind == HELLO else {}
        except ValueError:
            hello = {}
        if not isinstance(hello, dict) or not hmac.compare_digest(str(hello.get("secret", "")).encode(), self.server.secret.encode()):
            log.warning("refused a channel connection with a wrong secret")
            return self._abort()
        try:
            self.subscriber = self.server.live.subscribe(str(hello.get("agent")), self)
        except (InvalidAction, SessionEnded):
            self._abort()

    def _offer(self) -> None:
        if self.subscriber is not None and not self._closing:
            self.server.live.offer(self.subscriber)

    # ----------------------------------------------------------------- realtime.Connection
    def can_send(self) -> bool:
        return self.credits > 0 and not self._paused and not self._closing

    def send(self, message: bytes | str) -> None:
        self.credits -= 1
        if isinstance(message, bytes):
            self._write(FRAME, message)
        else:
            self._write(TEXT, message.encode())

    def finish(self) -> None:
        """Close our side after the last message and let the peer close: closing with its
        acknowledgements still unread would reset the connection and could lose that message."""
        if self._closing:
            return
        self._closing = True
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except OSError:  # the peer is already gone
            self.transport.close()
            return
        self._timer = asyncio.get_running_loop().call_later(FINISH_TIMEOUT_S, self.transport.close)

    def _write(self, kind: int, payload: bytes) -> None:
        self.transport.write(HEADER.pack(kind, len(payload)) + payload)

    def _abort(self) -> None:
        self._closing = True
        self.transport.close()


class ChannelClient:
    """The ingress end of one participant's channel."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, secret: str, agent: str) -> "ChannelClient":
        reader, writer = await asyncio.open_connection(host, port)
        write_message(writer, HELLO, json.dumps({"secret": secret, "agent": agent}).encode())
        await writer.drain()
        return cls(reader, writer)

    async def messages(self) -> AsyncIterator[bytes | str]:
        """Frames and events; each is acknowledged when the consumer asks for the next one."""
        while True:
            try:
                kind, payload = await read_message(self._reader)
            except ChannelClosed:
                return
            yield payload if kind == FRAME else payload.decode()
            write_message(self._writer, ACK)

    async def send_input(self, data: dict) -> None:
        write_message(self._writer, INPUT, json.dumps(data, separators=(",", ":")).encode())
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
