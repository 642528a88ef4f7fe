"""Frame encoding: lossless, delta against the client's previous frame, deflated.

One implementation serves the EnvActor (encode), ``crowdplay.client`` and the tests (decode); the
browser's decoder in ``web/static/app.js`` follows the same layout, specified in docs/protocol.md.

A frame message is a 16-byte header followed by a payload:

    header  = kind:u8  flags:u8  frame_id:u32  env_step:u32  score:f32  input_seq:u16   (little-endian)
    payload = empty                                          -> the screen did not change
            | first_row:u16 rows:u16 first_col:u16 cols:u16 zlib(body)

A keyframe's body is the screen's rows ``first_row .. first_row+rows`` (all of them). A delta's body
describes the band of changed rows:

    [moves: i16 x rows]        only with FLAG_ROW_MOVES: row r becomes previous row r + moves[r]
    mask: ceil(rows/8) bytes   bit r (MSB first) set when row r carries XOR data
    xor: for each set row, columns first_col .. first_col+cols XORed with the previous screen

Row moves make scrolling games (River Raid) cheap: a row that exists elsewhere in the previous
screen is copied instead of re-sent. ``input_seq`` is the sequence number of the last input message
from this client that the environment has applied, so a client can measure key-to-frame latency.
Screens are 2-D palette indices (one byte per pixel) or H x W x 3 RGB.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

KIND_FRAME = 0x01
FLAG_KEYFRAME = 0x01
FLAG_NEW_EPISODE = 0x02
FLAG_ROW_MOVES = 0x04

HEADER = struct.Struct("<BBIIfH")
BAND = struct.Struct("<HHHH")
ZLIB_LEVEL = 6
#: Row moves are used only when at least this many rows moved: below it their map costs more than it saves.
MIN_ROW_MOVES = 16

_HASH_WEIGHTS = np.random.default_rng(20261121).integers(1, 2**63, size=4096, dtype=np.uint64) | np.uint64(1)


class DecodeError(ValueError):
    """A frame message that cannot be applied (truncated, corrupt, or a delta without a base)."""


class Screen:
    """A screen's pixels with their row hashes, computed once and reused by every delta against it.

    Hashes only propose where a row may have moved from; every proposal is checked byte for byte,
    and whether a row changed at all is decided by comparing pixels, never by hashes.
    """

    __slots__ = ("pixels", "_row_hashes")

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        self._row_hashes: np.ndarray | None = None

    @property
    def row_hashes(self) -> np.ndarray:
        """A hash per row, computed on first use: deltas against this screen look up where a row may have moved from."""
        if self._row_hashes is None:
            rows = self.pixels.reshape(self.pixels.shape[0], -1)
            if rows.shape[1] % 8 == 0 and rows.shape[1] // 8 <= _HASH_WEIGHTS.size:
                mixed = rows.view(np.uint64) * _HASH_WEIGHTS[: rows.shape[1] // 8]
            else:
                mixed = rows.astype(np.uint64) * _HASH_WEIGHTS[np.arange(rows.shape[1]) % _HASH_WEIGHTS.size]
            mixed ^= mixed >> np.uint64(31)  # fold high bits down so bytes at equal offsets do not cancel
            self._row_hashes = mixed.sum(axis=1)
        return self._row_hashes


@dataclass(frozen=True)
class FrameHeader:
    """The fixed header of a frame message: flags, frame id (the tick's position on the clock's grid),
    the environment's step, the score and the newest input of the receiver the game has applied."""

    flags: int
    frame_id: int
    env_step: int
    score: float
    input_seq: int

    @property
    def keyframe(self) -> bool:
        """Whether the payload is a whole screen rather than a delta."""
        return bool(self.flags & FLAG_KEYFRAME)

    @property
    def new_episode(self) -> bool:
        """Whether this is the first frame of a new episode."""
        return bool(self.flags & FLAG_NEW_EPISODE)


@dataclass(frozen=True)
class Payload:
    """An encoded screen; ``flags`` are the codec's header flags it needs (keyframe, row moves)."""

    data: bytes
    flags: int


def keyframe_payload(screen: Screen, level: int = ZLIB_LEVEL) -> Payload:
    """The whole screen, compressed (``level`` 1 is ~4x faster and ~2x larger)."""
    height, width = screen.pixels.shape[:2]
    body = zlib.compress(screen.pixels.tobytes(), level)
    return Payload(BAND.pack(0, height, 0, width) + body, FLAG_KEYFRAME)


def _row_moves(screen: Screen, previous: Screen, changed: np.ndarray) -> np.ndarray:
    """For each row, the previous row with identical content (itself when none, or when not worth it)."""
    identity = np.arange(changed.size)
    if changed.sum() < MIN_ROW_MOVES:
        return identity
    old, new = previous.row_hashes, screen.row_hashes
    order = np.argsort(old, kind="stable")
    position = np.minimum(np.searchsorted(old[order], new), changed.size - 1)
    found = changed & (old[order][position] == new)
    source = np.where(found, order[position], identity)
    moved = np.flatnonzero(source != identity)
    if moved.size == 0:
        return identity
    really_equal = (screen.pixels[moved] == previous.pixels[source[moved]]).reshape(moved.size, -1).all(axis=1)
    source[moved[~really_equal]] = moved[~really_equal]  # a hash collision: send that row as XOR
    return source if (source != identity).sum() >= MIN_ROW_MOVES else identity


def delta_payload(screen: Screen, previous: Screen) -> Payload:
    """What changed since ``previous``: moved rows, then XOR over the changed rows and columns."""
    changed = (screen.pixels != previous.pixels).reshape(screen.pixels.shape[0], -1).any(axis=1)
    if not changed.any():
        return Payload(b"", 0)
    identity = np.arange(changed.size)
    source = _row_moves(screen, previous, changed)
    moved = source != identity
    xor_rows = changed & ~moved
    rows = np.flatnonzero(changed)
    first, last = int(rows[0]), int(rows[-1]) + 1
    xor = np.bitwise_xor(screen.pixels[xor_rows], previous.pixels[xor_rows])
    columns = np.flatnonzero(xor.reshape(xor.shape[0], xor.shape[1], -1).any(axis=(0, 2))) if xor.size else rows[:0]
    first_col, cols = (int(columns[0]), int(columns[-1]) + 1 - int(columns[0])) if columns.size else (0, 0)
    parts = [np.packbits(xor_rows[first:last]).tobytes(), np.ascontiguousarray(xor[:, first_col : first_col + cols]).tobytes()]
    flags = 0
    if moved.any():
        parts.insert(0, (source[first:last] - identity[first:last]).astype("<i2").tobytes())
        flags = FLAG_ROW_MOVES
    body = zlib.compress(b"".join(parts), ZLIB_LEVEL)
    return Payload(BAND.pack(first, last - first, first_col, cols) + body, flags)


def frame_message(payload: Payload, *, flags: int, frame_id: int, env_step: int, score: float, input_seq: int) -> bytes:
    """Prefix a payload with the frame header; ``flags`` adds non-codec flags (new episode)."""
    return (
        HEADER.pack(KIND_FRAME, flags | payload.flags, frame_id & 0xFFFFFFFF, env_step & 0xFFFFFFFF, score, input_seq & 0xFFFF)
        + payload.data
    )


def parse_header(message: bytes) -> tuple[FrameHeader, memoryview]:
    """The header and the payload after it; DecodeError for a short message or another kind."""
    if len(message) < HEADER.size:
        raise DecodeError(f"frame message of {len(message)} bytes is shorter than the {HEADER.size}-byte header")
    kind, flags, frame_id, env_step, score, input_seq = HEADER.unpack_from(message)
    if kind != KIND_FRAME:
        raise DecodeError(f"unknown message kind {kind}")
    return FrameHeader(flags, frame_id, env_step, score, input_seq), memoryview(message)[HEADER.size :]


class FrameDecoder:
    """Rebuilds screens from a client's stream of frame messages, in order."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)
        self.screen: np.ndarray | None = None

    def decode(self, message: bytes) -> tuple[FrameHeader, np.ndarray]:
        """The frame's header and the screen after applying it (the decoder's own array, updated in place);
        DecodeError for a delta before any keyframe or a corrupt payload."""
        header, payload = parse_header(message)
        if not header.keyframe and self.screen is None:
            raise DecodeError("delta frame received before any keyframe")
        try:
            if header.keyframe:
                self.screen = np.zeros(self.shape, dtype=np.uint8)
            if len(payload):
                self._apply(payload, header)
        except DecodeError:
            self.screen = None  # wait for the next keyframe rather than show a wrong picture
            raise
        assert self.screen is not None  # a keyframe set it, or it was there for the delta
        return header, self.screen

    def _apply(self, payload: memoryview, header: FrameHeader) -> None:
        if len(payload) < BAND.size:
            raise DecodeError("payload shorter than its band header")
        first, rows, first_col, cols = BAND.unpack_from(payload)
        height, width = self.shape[:2]
        pixel = int(np.prod(self.shape[2:], dtype=int))
        if first + rows > height or first_col + cols > width:
            raise DecodeError(f"band rows {first}+{rows} / columns {first_col}+{cols} exceed the {height}x{width} screen")
        try:
            body = memoryview(zlib.decompress(payload[BAND.size :]))
        except zlib.error as exc:
            raise DecodeError(f"corrupt deflate stream: {exc}") from exc
        screen = self.screen
        assert screen is not None  # decode() checked it (a delta) or just made it (a keyframe)
        if header.keyframe:
            self._expect(body, rows * width * pixel)
            screen[first : first + rows] = np.frombuffer(body, np.uint8).reshape((rows, width, *self.shape[2:]))
            return
        band = screen[first : first + rows]
        if header.flags & FLAG_ROW_MOVES:
            if len(body) < 2 * rows:
                raise DecodeError("delta body shorter than its row moves")
            moves = np.frombuffer(body[: 2 * rows], "<i2").astype(np.int64)
            body = body[2 * rows :]
            sources = first + np.arange(rows) + moves
            if sources.size and (sources.min() < 0 or sources.max() >= height):
                raise DecodeError("row move points outside the screen")
            band[...] = screen[sources]  # fancy indexing copies before the assignment
        mask_bytes = (rows + 7) // 8
        if len(body) < mask_bytes:
            raise DecodeError("delta body shorter than its row mask")
        xor_rows = np.flatnonzero(np.unpackbits(np.frombuffer(body[:mask_bytes], np.uint8))[:rows])
        data = body[mask_bytes:]
        self._expect(data, xor_rows.size * cols * pixel)
        if xor_rows.size and cols:
            xor = np.frombuffer(data, np.uint8).reshape((xor_rows.size, cols, *self.shape[2:]))
            band[xor_rows, first_col : first_col + cols] ^= xor

    @staticmethod
    def _expect(body: memoryview, size: int) -> None:
        if len(body) != size:
            raise DecodeError(f"frame body holds {len(body)} bytes, expected {size}")
