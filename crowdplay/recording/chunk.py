"""The chunk format: up to a second of one episode's steps, compact and self-describing.

A chunk is a mapping of column name -> value, where values are numbers, strings, lists, dicts or
numpy arrays. It is packed with msgpack (arrays stay binary: dtype, shape and raw bytes, never
converted element by element) and compressed with lz4 frame, so a second of Atari screens (60
palette-index frames, mostly identical bytes) shrinks to a few kilobytes at hundreds of MB/s.
"""

from __future__ import annotations

from typing import Any

import lz4.frame
import msgpack

from crowdplay.msgpack_arrays import decode_array, encode_array

FORMAT_VERSION = 1


class ChunkFormatError(ValueError):
    """Bytes that are not a chunk of a known format version."""


def pack_chunk(columns: dict[str, Any]) -> bytes:
    """Serialize and compress one chunk."""
    body = msgpack.packb({"v": FORMAT_VERSION, "columns": columns}, default=encode_array, use_bin_type=True)
    compressed: bytes = lz4.frame.compress(body)
    return compressed


def unpack_chunk(blob: bytes) -> dict[str, Any]:
    """The columns of a chunk written by ``pack_chunk``."""
    try:
        document = msgpack.unpackb(lz4.frame.decompress(blob), ext_hook=decode_array, raw=False, strict_map_key=False)
    except (RuntimeError, ValueError, msgpack.UnpackException) as error:
        raise ChunkFormatError(f"not a recording chunk: {error}") from error
    if not isinstance(document, dict) or document.get("v") != FORMAT_VERSION:
        raise ChunkFormatError("unknown chunk format version")
    columns: dict[str, Any] = document["columns"]
    return columns
