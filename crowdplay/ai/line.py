"""The policy line: AI observations to a policy actor and actions back over one TCP connection.

Each EnvActor process sends one request per policy actor per tick. As a Ray call that costs a
2.4-3.8 ms round trip on this machine and ~1 ms of CPU at each end (measured); over a socket it
costs well under a millisecond, which is most of the difference between answering a 60 Hz game in
time and answering it a frame late. Ray still starts the actor, hands out its address and
restarts it.

The wire (``crowdplay.wire`` framing):

    client -> server   HELLO (the actor's secret, first)   REQUEST (id:u32, streams and observations)
    server -> client   ANSWER (id:u32, JSON list: an action, or why the policy gave none)

A stream names whose episode an observation continues (``crowdplay.ai.streams``); an answer that
is a string is the reason the policy failed for that observation.

Observations are msgpack with numpy arrays as an extension type, never pickle: the port is open
on the node's network, and the secret only proves the caller got it from Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from crowdplay.ai.answers import Answer
from crowdplay.msgpack_arrays import decode_array, encode_array
from crowdplay.wire import ChannelClosed, read_message, write_message

log = logging.getLogger(__name__)

HELLO, REQUEST, ANSWER = range(3)
REQUEST_ID = struct.Struct("<I")


Streams = list[str | None]


def pack_request(streams: Streams, observations: list[Any]) -> bytes:
    """A request's payload after its id: the streams and the observations (numpy arrays included)."""
    packed: bytes = msgpack.packb([streams, observations], default=encode_array)
    return packed


def unpack_request(payload: bytes) -> tuple[Streams, list[Any]]:
    """The streams and observations of a request; raises ValueError when the payload is malformed."""
    request = msgpack.unpackb(payload, ext_hook=decode_array)
    if not (isinstance(request, list) and len(request) == 2 and all(isinstance(part, list) for part in request)):
        raise ValueError("a request holds a list of streams and a list of observations")
    streams, observations = request
    if len(streams) != len(observations) or not all(stream is None or isinstance(stream, str) for stream in streams):
        raise ValueError("a request names one stream (a string or null) per observation")
    return streams, observations


class PolicyLineServer:
    """Accepts lines into a policy actor and answers each request with ``answer(observations)``."""

    def __init__(self, answer: Callable[[list[Any], Streams], Awaitable[list[Answer]]], secret: str) -> None:
        self.answer = answer
        self.secret = secret
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str) -> int:
        """Listen on ``host`` at a free port and return the port."""
        self._server = await asyncio.start_server(self._serve, host, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks: set[asyncio.Task[Any]] = set()
        try:
            kind, payload = await asyncio.wait_for(read_message(reader), timeout=10)
            if kind != HELLO or not hmac.compare_digest(payload, self.secret.encode()):
                return
            while True:
                kind, payload = await read_message(reader)
                if kind != REQUEST or len(payload) < REQUEST_ID.size:
                    return
                (request_id,) = REQUEST_ID.unpack_from(payload)
                streams, observations = unpack_request(payload[REQUEST_ID.size :])
                task = asyncio.get_running_loop().create_task(self._reply(writer, request_id, observations, streams))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (TimeoutError, ChannelClosed, ConnectionError):
            pass
        except Exception as error:  # a malformed request ends that line, never the actor
            log.warning("policy line closed: %s", error)
        finally:
            for task in tasks:
                task.cancel()
            writer.close()

    async def _reply(self, writer: asyncio.StreamWriter, request_id: int, observations: list[Any], streams: Streams) -> None:
        actions = await self.answer(observations, streams)
        if not writer.is_closing():
            write_message(writer, ANSWER, REQUEST_ID.pack(request_id) + json.dumps(actions).encode())

    def close(self) -> None:
        """Stop accepting new lines (open lines end with the actor)."""
        if self._server is not None:
            self._server.close()


class PolicyLine:
    """A game process's connection to one policy actor; requests may overlap."""

    def __init__(self, host: str, port: int, secret: str) -> None:
        self.address = (host, port)
        self.secret = secret
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[Any] | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self.closed = False

    async def connect(self) -> PolicyLine:
        """Open the connection and send the secret; returns this line, ready for requests."""
        reader, self._writer = await asyncio.open_connection(*self.address)
        write_message(self._writer, HELLO, self.secret.encode())
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))
        return self

    async def call(self, observations: list[Any], streams: Streams | None = None) -> list[Answer]:
        """The answers for ``observations`` (of ``streams``, default: none); ChannelClosed if the
        line broke meanwhile."""
        if self.closed or self._writer is None:
            raise ChannelClosed("the policy line is closed")
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        answer: asyncio.Future[list[int | str]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = answer
        request = pack_request(list(streams) if streams is not None else [None] * len(observations), observations)
        write_message(self._writer, REQUEST, REQUEST_ID.pack(self._next_id) + request)
        return await answer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                kind, payload = await read_message(reader)
                (request_id,) = REQUEST_ID.unpack_from(payload)
                answer = self._waiting.pop(request_id, None)
                if kind == ANSWER and answer is not None and not answer.done():
                    answer.set_result(json.loads(payload[REQUEST_ID.size :]))
        except (ChannelClosed, ConnectionError, ValueError, struct.error):
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection; every request still waiting fails with ChannelClosed."""
        self.closed = True
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(ChannelClosed("the policy line closed"))
        self._waiting.clear()
        if self._writer is not None:
            with contextlib.suppress(RuntimeError):
                self._writer.close()
