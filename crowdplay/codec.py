"""Frame encoding: lossless, delta against the client's previous frame, deflated.

One implementation serves the EnvActor (encode), ``crowdplay.client`` and the tests (decode); the
browser's decoder in ``web/static/app.js`` follows the same layout, documented in docs/protocol.md.

A frame message is a 16-byte header followed by a payload:

    header  = kind:u8  flags:u8  frame_id:u32  env_step:u32  score:f32  input_seq:u16   (little-endian)

``input_seq`` is the sequence number of the last input message from this client that the
environment has applied, so a client can measure key-to-frame latency exactly.
    payload = empty                              -> the screen did not change
            | first_row:u16  rows:u16  zlib(bytes of those rows)

For a keyframe the rows are the screen itself; otherwise they are the XOR of the new screen with the
previous one, restricted to the band of rows that changed. Screens are 2-D palette indices (one byte
per pixel) or H x W x 3 RGB.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

KIND_FRAME = 0x01
FLAG_KEYFRAME = 0x01
FLAG_NEW_EPISODE = 0x02

HEADER = struct.Struct("<BBIIfH")
BAND = struct.Struct("<HH")
ZLIB_LEVEL = 6


class DecodeError(ValueError):
    """A frame message that cannot be applied (truncated, corrupt, or a delta without a base)."""


@dataclass(frozen=True)
class FrameHeader:
    flags: int
    frame_id: int
    env_step: int
    score: float
    input_seq: int

    @property
    def keyframe(self) -> bool:
        return bool(self.flags & FLAG_KEYFRAME)

    @property
    def new_episode(self) -> bool:
        return bool(self.flags & FLAG_NEW_EPISODE)


def _band(rows: np.ndarray, first: int) -> bytes:
    return BAND.pack(first, rows.shape[0]) + zlib.compress(np.ascontiguousarray(rows).tobytes(), ZLIB_LEVEL)


def keyframe_payload(screen: np.ndarray) -> bytes:
    """The whole screen, compressed."""
    return _band(screen, 0)


def delta_payload(screen: np.ndarray, previous: np.ndarray) -> bytes:
    """XOR against ``previous`` over the band of changed rows; empty when nothing changed."""
    diff = np.bitwise_xor(screen, previous)
    changed = np.flatnonzero(diff.reshape(diff.shape[0], -1).any(axis=1))
    if changed.size == 0:
        return b""
    first, last = int(changed[0]), int(changed[-1])
    return _band(diff[first : last + 1], first)


def frame_message(payload: bytes, *, flags: int, frame_id: int, env_step: int, score: float, input_seq: int) -> bytes:
    """Prefix a payload with the frame header."""
    return HEADER.pack(KIND_FRAME, flags, frame_id & 0xFFFFFFFF, env_step & 0xFFFFFFFF, score, input_seq & 0xFFFF) + payload


def parse_header(message: bytes) -> tuple[FrameHeader, memoryview]:
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
        header, payload = parse_header(message)
        if header.keyframe:
            self.screen = np.zeros(self.shape, dtype=np.uint8)
        elif self.screen is None:
            raise DecodeError("delta frame received before any keyframe")
        if len(payload):
            self._apply(payload, header.keyframe)
        return header, self.screen

    def _apply(self, payload: memoryview, keyframe: bool) -> None:
        if len(payload) < BAND.size:
            raise DecodeError("payload shorter than its band header")
        first, count = BAND.unpack_from(payload)
        if first + count > self.shape[0]:
            raise DecodeError(f"band rows {first}..{first + count} exceed screen height {self.shape[0]}")
        try:
            raw = zlib.decompress(payload[BAND.size :])
        except zlib.error as exc:
            raise DecodeError(f"corrupt deflate stream: {exc}") from exc
        band = np.frombuffer(raw, dtype=np.uint8)
        expected = count * int(np.prod(self.shape[1:]))
        if band.size != expected:
            raise DecodeError(f"band holds {band.size} bytes, expected {expected}")
        band = band.reshape((count, *self.shape[1:]))
        rows = self.screen[first : first + count]
        if keyframe:
            rows[...] = band
        else:
            np.bitwise_xor(rows, band, out=rows)
