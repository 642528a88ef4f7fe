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
import numpy as np

NDARRAY_EXT = 1
FORMAT_VERSION = 1


class ChunkFormatError(ValueError):
    """Bytes that are not a chunk of a known format version."""


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        header = msgpack.packb([array.dtype.str, list(array.shape)])
        return msgpack.ExtType(NDARRAY_EXT, len(header).to_bytes(4, "little") + header + array.tobytes())
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot record a value of type {type(value).__name__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code != NDARRAY_EXT:
        raise ChunkFormatError(f"unknown extension type {code}")
    size = int.from_bytes(data[:4], "little")
    dtype, shape = msgpack.unpackb(data[4 : 4 + size])
    return np.frombuffer(data[4 + size :], dtype=np.dtype(dtype)).reshape(shape)


def pack_chunk(columns: dict[str, Any]) -> bytes:
    """Serialize and compress one chunk."""
    body = msgpack.packb({"v": FORMAT_VERSION, "columns": columns}, default=_default, use_bin_type=True)
    compressed: bytes = lz4.frame.compress(body)
    return compressed


def unpack_chunk(blob: bytes) -> dict[str, Any]:
    """The columns of a chunk written by ``pack_chunk``."""
    try:
        document = msgpack.unpackb(lz4.frame.decompress(blob), ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except (RuntimeError, ValueError, msgpack.UnpackException) as error:
        raise ChunkFormatError(f"not a recording chunk: {error}") from error
    if not isinstance(document, dict) or document.get("v") != FORMAT_VERSION:
        raise ChunkFormatError("unknown chunk format version")
    columns: dict[str, Any] = document["columns"]
    return columns
