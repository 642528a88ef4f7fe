"""The frame channel: a direct socket between an EnvActor and the ingress replica serving a player.

Ray actor calls and streaming generators cost ~1 ms of CPU per item on each side, which at 60 fps
per participant is most of a core for a handful of sessions. Frames and inputs therefore move over
one TCP connection per participant, opened by the ingress to an address the EnvActor hands out
through Ray; Ray keeps placement, lifecycle and control. Messages are framed by ``crowdplay.wire``:

    server -> client   FRAME (binary frame message)   TEXT (JSON event, as on the websocket)   HEARTBEAT (empty)
    client -> server   HELLO (JSON {"secret", "agent", "session"}, or {"secret", "watch"}, first)   ACK (empty)   INPUT (JSON,
                       ``ParticipantInput.to_wire``)   PAGE (JSON, ``PageEvent`` or ``RoundTrip.to_wire``)   HEARTBEAT (empty)
                       PROBE (empty, instead of HELLO: the server answers one HEARTBEAT and closes)

Flow control keeps the "drop, don't queue" promise end to end: the server has at most ``window``
unacknowledged messages in flight; the ingress acknowledges each one after its websocket send
finished, so a slow participant stalls the channel and the EnvActor then sends the newest frame.
The server writes each message from what produced it (the tick, an event), not from a task of its
own per connection: per frame and participant, one write and one acknowledgement read.

Liveness: a machine that stops answering (a network partition, a stuck VM) drops packets without
resetting the connection, so a read would wait for ever. The server therefore writes a HEARTBEAT
whenever it has written nothing for ``stall_s / HEARTBEATS_PER_STALL`` (a paused or waiting game,
a channel out of credit), outside the window and never acknowledged; the client waits at most
``stall_s`` for the next message and then raises ``ChannelStalled``. The deadline runs only while
the client waits to read, so a participant whose own websocket is slow never trips it.

A game server that is merely slow (its process starved of CPU on a loaded machine, its event loop
held up) falls silent too, and ending its games as unreachable would misname what happened. So
silence alone is not enough: after ``SILENT_SHARE`` of the deadline the client tries a TCP
handshake with the server's address for the rest of it. The kernel there completes it however busy
the process is, while a partition or a stuck machine drops it; a machine that answers gets more
time, up to ``HUNG_AFTER_STALLS`` deadlines of silence.

The other way round, the ingress writes a HEARTBEAT whenever it has written nothing (no
acknowledgement, input or page report) for the same interval, and a game server that hears nothing
from a seat's ingress for ``stall_s`` notes ``link_lost`` for that participant (``link_ok`` when it
hears again): a one-player game pauses rather than play on, and record, steps nobody is there for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, SupportsIndex

from crowdplay import protocol
from crowdplay.engagement import PageEvent, PageReport, page_report
from crowdplay.environments import InvalidAction
from crowdplay.fanout import Fanout, FrameSource, Subscriber
from crowdplay.inputs import ParticipantInput
from crowdplay.lineup import Lineup, SeatUnavailable
from crowdplay.realtime import LiveEnv, SessionEnded
from crowdplay.wire import HEADER, MAX_PAYLOAD, ChannelClosed, close_writer, read_message, write_message

log = logging.getLogger(__name__)

FRAME, TEXT, HELLO, ACK, INPUT, PAGE, HEARTBEAT, PROBE = range(8)
#: The server's heartbeats come this many times within the client's stall deadline, so one or two
#: lost to a busy moment never make a live channel look stalled.
HEARTBEATS_PER_STALL = 4
#: The share of the stall deadline spent waiting for a message; the rest bounds the handshake that
#: tells a silent machine from a busy process.
SILENT_SHARE = 0.75
#: A server whose machine answers handshakes but that sends nothing for this many stall deadlines is
#: given up all the same (a hung process).
HUNG_AFTER_STALLS = 10


class ChannelStalled(ConnectionError):
    """Nothing arrived on the channel within its stall deadline: the game server's machine stopped
    answering (a partition, a stuck VM), as opposed to closing the connection."""


class ChannelServer:
    """Serves one game's participants; runs inside the EnvActor. Each connection is one
    participant's seat: the lineup learns when it arrives and leaves."""

    def __init__(self, lineup: Lineup, secret: str, window: int, stall_s: float = 0.0) -> None:
        """``stall_s``: the client's stall deadline (``Settings.channel_stall_s``; 0: no heartbeats)."""
        self.lineup = lineup
        self.live = lineup.live
        self.secret = secret
        self.window = window
        self.heartbeat_s = stall_s / HEARTBEATS_PER_STALL
        self._server: asyncio.Server | None = None
        self.host = ""
        self.port = 0

    async def start(self, host: str) -> int:
        """Listen on ``host`` at a free port and return the port."""
        self._server = await asyncio.start_server(self._serve, host=host, port=0)
        self.host, self.port = host, self._server.sockets[0].getsockname()[1]
        return self.port

    def close(self) -> None:
        """Stop accepting connections (open ones end with their game)."""
        if self._server is not None:
            self._server.close()
            self._server = None  # it holds ``_serve`` and with it this object: a cycle otherwise

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            kind, payload = await asyncio.wait_for(read_message(reader), timeout=10)
            if kind == PROBE:  # someone asks whether this machine answers: it does
                write_message(writer, HEARTBEAT)
                await writer.drain()
                return
            hello = json.loads(payload) if kind == HELLO else {}
            if not hmac.compare_digest(str(hello.get("secret", "")).encode(), self.secret.encode()):
                log.warning("refused a channel connection with a wrong secret")
                return
            watcher = hello.get("watch")
            try:
                if watcher is not None:
                    subscriber = self.lineup.watch(str(watcher))
                else:
                    held = self.lineup.hold()
                    if held is not None:  # a build holds the process: the game begins after it
                        await held
                    subscriber = self.lineup.connect(str(hello.get("agent")), str(hello.get("session")))
            except SeatUnavailable as refusal:
                write_message(writer, TEXT, protocol.text("error", reason=str(refusal), code=protocol.CLOSE_SESSION_ENDED).encode())
                await self._finish(reader, writer)
                return
            try:
                await self._play(subscriber, reader, writer, watching=watcher is not None)
            finally:
                if watcher is not None:
                    self.lineup.unwatch(subscriber)
                else:
                    self.lineup.disconnect(subscriber)
        except (TimeoutError, ChannelClosed, ConnectionError, ValueError):
            return
        finally:
            await close_writer(writer)

    async def _play(self, subscriber: Subscriber, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watching: bool = False) -> None:
        """Push the game's stream and apply the participant's inputs until the last message is
        acknowledged; a watcher's inputs are dropped (the ingress never sends any)."""
        agent = subscriber.agent
        pusher = _Pusher(self.live.fanout, self.live, subscriber, writer, self.window)
        link = None if watching else _Link(self.live, agent)
        heartbeat = _Heartbeat(pusher, self.heartbeat_s, link) if self.heartbeat_s > 0 else None
        with self.live.fanout.pushing(subscriber, pusher.pump), contextlib.ExitStack() as beating:
            if heartbeat is not None:
                beating.callback(heartbeat.stop)
            pusher.pump()  # what is there already: the first screen, the lineup's events
            while not pusher.finished:
                kind, payload = await read_message(reader)
                if link is not None:
                    link.heard += 1
                    if link.lost:
                        link.note(lost=False)
                if kind == ACK:
                    pusher.acknowledged()
                elif kind in (INPUT, PAGE) and subscriber.final is None and not watching:  # a replaced connection no longer plays
                    refusal = self._apply_input(agent, kind, json.loads(payload))
                    if refusal is not None:
                        pusher.finished = True
                        write_message(writer, TEXT, refusal.encode())
                        await self._finish(reader, writer)
                        return

    @staticmethod
    async def _finish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Close our side after the last message and wait for the peer: closing with its
        acknowledgements still unread would reset the connection and could lose that message."""
        await writer.drain()
        writer.write_eof()
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(reader.read(), timeout=5)

    def _apply_input(self, agent: str, kind: int, data: dict[str, Any]) -> str | None:
        """Apply one input, or note one page event; for a refused input, the ``error`` event to send before closing."""
        try:
            if kind == INPUT:
                self.live.submit(agent, ParticipantInput.from_wire(data))
            else:
                self.live.note_page(agent, page_report(data))
            return None
        except InvalidAction as error:
            return protocol.text("error", reason=str(error), code=protocol.CLOSE_POLICY_VIOLATION)
        except SessionEnded:
            return protocol.text("error", reason="the session has ended", code=protocol.CLOSE_SESSION_ENDED)


@dataclass(eq=False)
class _Pusher:
    """Sends one subscriber's messages from whatever produced them (the tick's frame, an event),
    with at most ``credits`` (the window) of them unacknowledged: a subscriber out of credit is
    skipped, and on the next acknowledgement it gets the newest frame, not the ones it missed.
    Nothing here awaits, so a frame costs no task switch on this side."""

    fanout: Fanout
    source: FrameSource
    subscriber: Subscriber
    writer: asyncio.StreamWriter
    credits: int
    #: the last message (the end, a dismissal, a refusal) was sent
    finished: bool = False
    #: messages written so far (the heartbeat checks whether any went out since its last look)
    written: int = 0

    def pump(self) -> None:
        """Send what is new while credit lasts."""
        try:
            while self.credits > 0 and not self.finished and not self.writer.is_closing():
                following = self.fanout.next_message(self.subscriber, self.source)
                if following is None:
                    return
                message, self.finished = following
                if isinstance(message, bytes):
                    write_message(self.writer, FRAME, message)
                else:
                    write_message(self.writer, TEXT, message.encode())
                self.credits -= 1
                self.written += 1
        except Exception:  # noqa: BLE001 - one connection's failure must not stop the game's tick
            log.exception("a frame channel stopped sending")
            self.finished = True
            self.writer.transport.abort()  # the connection's task sees it closed and ends

    def acknowledged(self) -> None:
        """The ingress finished sending one message: one more may go."""
        self.credits += 1
        self.pump()


class _Link:
    """Whether a seat's ingress still speaks, told to the game as ``link_lost`` / ``link_ok`` page
    events (recorded; a one-player game pauses while it is lost)."""

    def __init__(self, live: LiveEnv, agent: str) -> None:
        self._live = live
        self._agent = agent
        self.lost = False
        #: messages read from the ingress so far (the heartbeat checks whether it still speaks)
        self.heard = 0

    def note(self, lost: bool) -> None:
        """The ingress fell silent, or spoke again."""
        self.lost = lost
        try:
            self._live.note_page(self._agent, PageEvent("link_lost" if lost else "link_ok", self._live.frame_id))
        except (InvalidAction, SessionEnded):  # an AI took the seat over, or the game is over
            pass


class _Writing(Protocol):
    """A connection end as its heartbeat sees it: its writer, and how many messages it wrote."""

    writer: asyncio.StreamWriter
    written: int


class _Heartbeat:
    """Writes a HEARTBEAT on a connection that has written nothing for ``interval_s``, from a timer
    rather than a task: a running game's frames (or, at the ingress, their acknowledgements) make
    it a no-op, and it costs a connection one timer callback per interval. With a ``link`` (the
    game server's end), it also tells it when nothing was read for ``HEARTBEATS_PER_STALL``
    intervals."""

    def __init__(self, end: _Writing, interval_s: float, link: _Link | None = None) -> None:
        self._end = end
        self._interval_s = interval_s
        self._link = link
        self._seen = end.written
        self._heard = link.heard if link is not None else 0
        self._quiet_beats = 0
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(interval_s, self._beat)

    def _beat(self) -> None:
        end, link = self._end, self._link
        if end.writer.is_closing():
            return
        if end.written == self._seen:
            write_message(end.writer, HEARTBEAT)
            end.written += 1
        self._seen = end.written
        if link is not None:
            self._quiet_beats = self._quiet_beats + 1 if link.heard == self._heard else 0
            self._heard = link.heard
            if self._quiet_beats == HEARTBEATS_PER_STALL and not link.lost:
                link.note(lost=True)
        self._timer = self._loop.call_later(self._interval_s, self._beat)

    def stop(self) -> None:
        """The connection ended: no more heartbeats."""
        self._timer.cancel()


class _TimedReader(asyncio.StreamReader):
    """A stream reader that notes when bytes last arrived, so a deadline that fired late (its own
    event loop was busy) is not taken for a silent peer."""

    received_at = 0.0

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        """Note the arrival, then buffer as usual."""
        self.received_at = time.monotonic()
        super().feed_data(data)


class ChannelClient:
    """The ingress end of one participant's channel."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stall_s: float = 0.0, address: tuple[str, int] | None = None,
    ) -> None:
        """``stall_s``: how long to wait for the next message before ``ChannelStalled`` (0: for
        ever); ``address``: the server's, to tell a silent machine from a busy process (without
        it, silence for ``stall_s`` is enough)."""
        self._reader: asyncio.StreamReader = reader
        self.writer = writer
        self._stall_s = stall_s or None
        self._address = address
        #: messages written so far (acknowledgements, inputs, page reports, heartbeats)
        self.written = 0
        #: when idle (a paused game, a participant pressing nothing), so the game server can tell
        #: an idle ingress from a silent one
        self._heartbeat = _Heartbeat(self, stall_s / HEARTBEATS_PER_STALL) if stall_s else None
        #: why the channel was given up as stalled (its inputs then raise it too, not a reset)
        self._stalled: ChannelStalled | None = None

    @classmethod
    async def connect(
        cls, host: str, port: int, secret: str, agent: str, session_id: str, watch: str | None = None, stall_s: float = 0.0,
    ) -> ChannelClient:
        """A participant's channel to ``agent``'s seat, or with ``watch`` (who is watching) a
        read-only view of the game. With ``stall_s``, a machine that does not take the connection
        within it raises ``ChannelStalled`` (a dropped SYN is retried by the kernel for minutes)."""
        loop = asyncio.get_running_loop()
        reader = _TimedReader(loop=loop)
        try:
            async with asyncio.timeout(stall_s or None):
                transport, protocol = await loop.create_connection(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), host, port)
        except TimeoutError:
            raise ChannelStalled(f"the game server at {host}:{port} did not answer within {stall_s:g} s") from None
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        hello = {"secret": secret, "watch": watch} if watch is not None else {"secret": secret, "agent": agent, "session": session_id}
        write_message(writer, HELLO, json.dumps(hello).encode())
        await writer.drain()
        return cls(reader, writer, stall_s, (host, port))

    async def messages(self) -> AsyncIterator[bytes | str]:
        """Frames and events; each is acknowledged when the consumer asks for the next one.
        ``ChannelStalled`` when nothing, not even a heartbeat, arrived within the stall deadline
        (the connection is then aborted: a graceful close would wait on the silent peer)."""
        started = time.monotonic()
        header: bytes | None = None
        wait_s = self._stall_s * SILENT_SHARE if self._stall_s and self._address else self._stall_s
        while True:
            waiting_since = time.monotonic()
            try:
                async with asyncio.timeout(wait_s):
                    if header is None:
                        header = await self._reader.readexactly(HEADER.size)
                    kind, length = HEADER.unpack(header)
                    if length > MAX_PAYLOAD:
                        return
                    payload = await self._reader.readexactly(length)
                    header = None
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except TimeoutError:
                if self._heard_since(waiting_since):
                    continue  # data came while this loop was too busy to read it: the peer is not silent
                if await self._only_busy(started):
                    continue
                self.writer.transport.abort()
                now = time.monotonic()
                silent_s = now - self._last_heard(started)
                self._stalled = ChannelStalled(f"nothing arrived on the frame channel for {silent_s:.1f} s ({now - started:.1f} s after it opened)")
                raise self._stalled from None
            if kind == HEARTBEAT:
                continue
            yield payload if kind == FRAME else payload.decode()
            self._write(ACK)

    def _heard_since(self, waiting_since: float) -> bool:
        """Whether bytes arrived while this read waited after all: this event loop was held up
        (the deadline's timer and the data came due together), so the peer is not the silent one.
        A message half read keeps its header for the next try (``readexactly`` takes nothing
        until all its bytes are there)."""
        reader = self._reader
        return isinstance(reader, _TimedReader) and reader.received_at >= waiting_since

    def _last_heard(self, started: float) -> float:
        """When bytes last arrived (``started``, the stream's start, if none did since)."""
        return max(started, getattr(self._reader, "received_at", 0.0))

    async def _only_busy(self, started: float) -> bool:
        """Whether the silent server's machine still answers a handshake (its process is slow, not
        cut off), unless it has been silent for ``HUNG_AFTER_STALLS`` deadlines."""
        if self._address is None or self._stall_s is None:
            return False
        heard_at = self._last_heard(started)
        if time.monotonic() - heard_at >= self._stall_s * HUNG_AFTER_STALLS:
            return False
        busy = await kernel_answers(*self._address, self._stall_s * (1 - SILENT_SHARE))
        if busy:
            log.info("the game server at %s:%d sent nothing for %.1f s but its machine answers: waiting on", *self._address, time.monotonic() - heard_at)
        return busy

    async def send_input(self, given: ParticipantInput) -> None:
        """Send one participant's input (keys or an action) to the game."""
        if self._stalled is not None:
            raise ChannelStalled(str(self._stalled))
        self._write(INPUT, json.dumps(given.to_wire(), separators=(",", ":")).encode())
        await self.writer.drain()

    async def send_page(self, event: PageReport) -> None:
        """Send one change on the participant's page, or a round trip it measured, to the game."""
        if self._stalled is not None:
            raise ChannelStalled(str(self._stalled))
        self._write(PAGE, json.dumps(event.to_wire(), separators=(",", ":")).encode())
        await self.writer.drain()

    def _write(self, kind: int, payload: bytes = b"") -> None:
        write_message(self.writer, kind, payload)
        self.written += 1

    async def close(self) -> None:
        """Close the connection; the game keeps the seat for the reconnect grace."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
        await close_writer(self.writer)


async def channel_answers(host: str, port: int, timeout_s: float) -> bool:
    """Whether the machine behind a frame channel's address answers within ``timeout_s``: its
    server's heartbeat to a PROBE, or a refused connection (its kernel answered: the game there
    ended). False when it stays silent (a partition, a stuck VM) or the network says it cannot
    reach it."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            write_message(writer, PROBE)
            await writer.drain()
            kind, _ = await read_message(reader)
            return kind == HEARTBEAT
    except ConnectionRefusedError:
        return True
    except (TimeoutError, OSError):
        return False
    finally:
        if writer is not None:
            writer.transport.abort()


async def kernel_answers(host: str, port: int, timeout_s: float) -> bool:
    """Whether a TCP handshake with ``host:port`` completes within ``timeout_s``. The kernel there
    completes it however busy the listening process is; a partition or a stuck machine drops it,
    and a refusal says nothing listens there any more. A handshake that completed while this event
    loop was too busy to see it in time counts as completed."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout_s):
                await loop.sock_connect(sock, (host, port))
            return True
        except TimeoutError:
            return _connected(sock)
        except OSError:
            return False


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True
