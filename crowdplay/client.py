"""A Python participant that speaks the websocket protocol the way the browser does.

Tests and the load benchmark use it; researchers can use it to smoke-test a study::

    async with await Participant.join("http://127.0.0.1:8000", "SpaceInvaders") as p:
        header, screen = await p.next_frame()
        await p.press({"Space"})
        p.rtt_ms                                  # the connection's latest round trip (ping to pong), ms
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets

from crowdplay import codec, protocol
from crowdplay.inputs import ParticipantInput
from crowdplay.round_trips import MAX_RTT_MS, RoundTrip

#: How often a participant pings, as the page does (crowdplay/web/static/presence.js).
PING_EVERY_S = 2.0
#: Pings awaiting their pong; an older one is forgotten (its pong, if it comes, is kept as an event).
MAX_PINGS_AWAITED = 16


class ServerError(RuntimeError):
    """The server refused a request; ``status`` and ``body`` say why."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {body.get('reason', body)}")
        self.status = status
        self.body = body


def http_json(url: str, payload: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """GET (or POST ``payload``) and decode the JSON answer; 4xx/5xx raise ServerError."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read())  # every CrowdPlay answer is a JSON object
            return answer
    except urllib.error.HTTPError as error:
        raise ServerError(error.code, json.loads(error.read() or b"{}")) from None


@dataclass
class FrameTiming:
    """When one frame arrived (``perf_counter``) and its size in bytes."""

    frame_id: int
    received_at: float
    size: int


@dataclass
class Participant:
    """One simulated participant on one session's websocket: frames decoded (or only timed) by a
    background reader, events kept, key-to-frame latencies measured, and the connection's round
    trips measured and reported as the page does (a ping every ``ping_every_s``)."""

    base_url: str
    session: dict[str, Any]
    websocket: websockets.ClientConnection
    hello: dict[str, Any]
    decoder: codec.FrameDecoder
    palette: np.ndarray | None
    frames: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    events: list[dict[str, Any]] = field(default_factory=list)
    timings: list[FrameTiming] = field(default_factory=list)
    #: (sent at, seconds until the first frame that applied it) for every input, perf_counter clock
    key_latencies: list[tuple[float, float]] = field(default_factory=list)
    #: per input sequence number: (sent, first frame that applied it arrived), wall clock, so the
    #: stages of its path can be set against the server's (``crowdplay.bench.load``)
    key_walls: dict[int, tuple[float, float]] = field(default_factory=dict)
    #: every round trip measured (ms): ping sent to its pong received, as the page measures it
    rtt_samples: list[float] = field(default_factory=list)
    #: seconds between pings (None: no pings, no round trips)
    ping_every_s: float | None = PING_EVERY_S
    last_frame_id: int = 0
    bytes_received: int = 0
    #: False for load generators: frames are counted and timed but not decoded (a browser decodes on its own CPU).
    decode: bool = True
    _seq: int = 0
    _pending_inputs: dict[int, float] = field(default_factory=dict)
    _reader: asyncio.Task[Any] | None = None
    _pinger: asyncio.Task[Any] | None = None
    #: the ``t`` of each ping awaiting its pong (perf_counter seconds), oldest first
    _pings: dict[float, None] = field(default_factory=dict)
    #: the latest round trip, not reported to the server yet (it goes with the next ping)
    _unreported: RoundTrip | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _event_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    #: when ``join`` asked for the session, had the answer and had ``hello`` (perf_counter clock)
    requested_at: float = 0.0
    answered_at: float = 0.0
    hello_at: float = 0.0

    @classmethod
    async def join(
        cls,
        base_url: str,
        env_id: str,
        decode: bool = True,
        participant: str | None = None,
        params: dict[str, str] | None = None,
        resume: str | None = None,
        ping_every_s: float | None = PING_EVERY_S,
        **connect_options: object,
    ) -> Participant:
        """Create a session for ``env_id`` and connect to it; returns after ``hello``.
        ``participant``, ``params`` and ``resume`` are what a study page passes on (see POST
        /api/sessions; ``resume``: an earlier answer's, to take that seat back as a second tab);
        ``ping_every_s``: how often to measure the connection's round trip (None: never)."""
        base_url = base_url.rstrip("/")
        body: dict[str, Any] = {"env_id": env_id}
        if participant is not None:
            body["participant"] = participant
        if params is not None:
            body["params"] = params
        if resume is not None:
            body["resume"] = resume
        requested_at = time.perf_counter()
        session = await asyncio.to_thread(http_json, f"{base_url}/api/sessions", body)
        answered_at = time.perf_counter()
        joined = await cls.connect(base_url, session, decode, ping_every_s, **connect_options)
        joined.requested_at, joined.answered_at = requested_at, answered_at
        return joined

    @classmethod
    async def connect(
        cls, base_url: str, session: dict[str, Any], decode: bool = True, ping_every_s: float | None = PING_EVERY_S, **connect_options: Any
    ) -> Participant:
        """Open the websocket of an already created ``session`` (the answer of POST /api/sessions) and
        wait for ``hello``; ServerError if the server answers anything else. The first ping goes
        out at once, then one every ``ping_every_s`` (None: none)."""
        ws_url = base_url.replace("http", "ws", 1) + session["ws"]
        websocket = await websockets.connect(ws_url, max_size=2**24, **connect_options)
        hello = json.loads(await websocket.recv())
        if hello.get("type") != "hello":
            await websocket.close()
            raise ServerError(400, hello)
        shape = (hello["height"], hello["width"]) if hello["channels"] == 1 else (hello["height"], hello["width"], hello["channels"])
        palette = protocol.decode_palette(hello["palette"])
        participant = cls(base_url, session, websocket, hello, codec.FrameDecoder(shape), palette, decode=decode, ping_every_s=ping_every_s)
        participant.hello_at = time.perf_counter()
        participant._reader = asyncio.get_running_loop().create_task(participant._read())
        if ping_every_s is not None:
            participant._pinger = asyncio.get_running_loop().create_task(participant._ping_every(ping_every_s))
        return participant

    @property
    def rtt_ms(self) -> float | None:
        """The latest round trip (ms), None before the first pong."""
        return self.rtt_samples[-1] if self.rtt_samples else None

    async def ping(self) -> None:
        """Send a ping, reporting the latest round trip measured since the last one (the
        protocol's ``ping``: the server records it with the game)."""
        t = time.perf_counter()
        self._pings[t] = None
        if len(self._pings) > MAX_PINGS_AWAITED:
            del self._pings[next(iter(self._pings))]
        previous, self._unreported = self._unreported, None
        await self.websocket.send(protocol.ping_message(t, previous))

    async def _ping_every(self, every_s: float) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while not self.closed.is_set():
                await self.ping()
                await asyncio.sleep(every_s)

    def _event(self, event: dict[str, Any], now: float) -> None:
        """Keep a text message; the pong of one of our pings is a round trip measured instead."""
        if event.get("type") == "pong" and event.get("t") in self._pings:
            del self._pings[event["t"]]
            rtt_ms = round((now - event["t"]) * 1000, 3)
            self.rtt_samples.append(rtt_ms)
            if rtt_ms <= MAX_RTT_MS:  # the server takes no longer one
                self._unreported = RoundTrip(rtt_ms, self.last_frame_id)
            return
        self.events.append(event)
        self._event_arrived.set()

    async def _read(self) -> None:
        try:
            async for message in self.websocket:
                now = time.perf_counter()
                if isinstance(message, str):
                    self._event(json.loads(message), now)
                    continue
                self.bytes_received += len(message)
                if self.decode:
                    header, screen = self.decoder.decode(message)
                    self.frames.put_nowait((header, screen.copy()))
                else:
                    header, _ = codec.parse_header(message)
                self.last_frame_id = header.frame_id
                self.timings.append(FrameTiming(header.frame_id, now, len(message)))
                self._note_applied_inputs(header.input_seq, now)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def _note_applied_inputs(self, applied_seq: int, now: float) -> None:
        wall_offset = time.time() - time.perf_counter()
        for seq in [s for s in self._pending_inputs if (applied_seq - s) % protocol.INPUT_SEQ_MODULO < 2**15]:
            sent_at = self._pending_inputs.pop(seq)
            self.key_latencies.append((sent_at, now - sent_at))
            self.key_walls[seq] = (sent_at + wall_offset, now + wall_offset)

    async def wait_for_event(self, kind: str, timeout: float = 10.0, **fields: object) -> dict[str, Any]:
        """The first event of type ``kind`` (with these field values), waiting for it if needed."""

        async def arrival() -> dict[str, Any]:
            """Look through the events so far, then wait for the next one (or the close) and look again."""
            while True:
                for event in self.events:
                    if event.get("type") == kind and all(event.get(k) == v for k, v in fields.items()):
                        return event
                if self.closed.is_set():
                    raise ConnectionError(f"the connection closed before a {kind!r} event; events: {self.events}")
                self._event_arrived.clear()
                waiters = {asyncio.ensure_future(self._event_arrived.wait()), asyncio.ensure_future(self.closed.wait())}
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()

        return await asyncio.wait_for(arrival(), timeout)

    def rgb(self, screen: np.ndarray) -> np.ndarray:
        """A decoded screen as RGB (palette applied when the environment sends indices)."""
        return self.palette[screen] if self.palette is not None else screen

    async def next_frame(self, timeout: float = 10.0) -> tuple[codec.FrameHeader, np.ndarray]:
        """The next frame's header and decoded screen; TimeoutError after ``timeout`` seconds."""
        return await asyncio.wait_for(self.frames.get(), timeout)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % protocol.INPUT_SEQ_MODULO
        self._pending_inputs[self._seq] = time.perf_counter()
        return self._seq

    async def press(self, keys: Iterable[str]) -> int:
        """Send the full set of held keys (empty = release all); returns the input's seq."""
        seq = self._next_seq()
        await self.websocket.send(protocol.input_message(ParticipantInput.holding(keys, self.last_frame_id, seq)))
        return seq

    async def act(self, action: int) -> int:
        """Send an action by its index in the action space (the protocol's ``action`` message);
        returns the input's seq. The browser only sends held keys, so this is how a script plays an
        environment by choosing actions, or checks how the server treats one; docs/reference.md
        lists it as part of the reference client."""
        seq = self._next_seq()
        await self.websocket.send(protocol.input_message(ParticipantInput.choosing(action, self.last_frame_id, seq)))
        return seq

    async def send_raw(self, message: str | bytes) -> None:
        """Send ``message`` as it is (tests of malformed input)."""
        await self.websocket.send(message)

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Return once the server closed the connection; TimeoutError after ``timeout`` seconds."""
        await asyncio.wait_for(self.closed.wait(), timeout)

    async def close(self) -> None:
        """Close the websocket and wait for the reader (and the pinger) to finish."""
        if self._pinger is not None:
            self._pinger.cancel()
            await asyncio.gather(self._pinger, return_exceptions=True)
        await self.websocket.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def __aenter__(self) -> Participant:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
