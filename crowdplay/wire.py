"""Message framing for CrowdPlay's direct sockets (the frame channel, the policy line).

Ray actor calls cost ~1 ms of CPU at each end and 2-4 ms of round trip here, too much for
per-frame traffic, so frames and AI observations travel over plain TCP connections whose
addresses Ray hands out. Every message on them is framed the same way:

    message = kind:u8  length:u32  payload        (little-endian)
"""

from __future__ import annotations

import asyncio
import struct

HEADER = struct.Struct("<BI")
MAX_PAYLOAD = 1 << 24


class ChannelClosed(ConnectionError):
    """The other side closed the connection (or broke the framing)."""


async def read_message(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The next message's kind and payload; ChannelClosed when the connection closes or a payload exceeds
    ``MAX_PAYLOAD``."""
    try:
        kind, length = HEADER.unpack(await reader.readexactly(HEADER.size))
        if length > MAX_PAYLOAD:
            raise ChannelClosed(f"message of {length} bytes exceeds {MAX_PAYLOAD}")
        return kind, await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        raise ChannelClosed("the connection closed") from None


def write_message(writer: asyncio.StreamWriter, kind: int, payload: bytes = b"") -> None:
    """Queue one framed message (the caller drains the writer when it must wait)."""
    writer.write(HEADER.pack(kind, len(payload)) + payload)


#: How long a closing connection may take to hand over what is left to send. A peer that reads
#: nothing (a stuck process, a link cut without a reset) would otherwise hold the close, and with it
#: everything its handler holds (a game, its emulator), for as long as TCP retransmits: minutes.
CLOSE_TIMEOUT_S = 2.0


async def close_writer(writer: asyncio.StreamWriter, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close the connection and wait until it is closed, whatever broke it; after ``timeout_s`` the
    bytes the peer has not taken are dropped (the connection is aborted). A broken connection's
    error is kept by the stream and raised by every ``wait_closed``; caught as it is, its traceback
    would hold the waiting frame, and that frame the stream: a reference cycle that kept a game's
    objects (its channel server, lineup, emulator) alive until a full collection. So the caught
    error lets go of its traceback."""
    writer.close()
    closing = asyncio.ensure_future(writer.wait_closed())
    closing.add_done_callback(_let_go_of_traceback)
    try:
        await asyncio.wait({closing}, timeout=timeout_s)
    finally:  # given up waiting, or cancelled: what the peer has not taken is dropped
        if not closing.done():
            writer.transport.abort()
    await asyncio.wait({closing})


def _let_go_of_traceback(closing: asyncio.Future[None]) -> None:
    """The connection is closed either way; its error must not hold the frames it passed through."""
    error = None if closing.cancelled() else closing.exception()
    if error is not None:
        error.__traceback__ = None
