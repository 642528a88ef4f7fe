"""numpy arrays in msgpack: one extension type, binary (dtype, shape and raw bytes, never converted
element by element), for the recording's chunks (``crowdplay.recording.chunk``) and the policy line
(``crowdplay.ai.line``).

Its layout is part of the stored chunk format: ``ARRAY_EXT``'s payload is a 4-byte little-endian
header length, the msgpack header ``[dtype string, shape]``, then the array's bytes in C order.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

ARRAY_EXT = 1


def encode_array(value: Any) -> Any:
    """msgpack's ``default``: a numpy array as ``ARRAY_EXT``, a numpy scalar as the Python value."""
    if isinstance(value, np.ndarray):
        # value.shape, not np.ascontiguousarray's (which makes a 0-d array 1-d); tobytes is C order.
        header = msgpack.packb([value.dtype.str, list(value.shape)])
        return msgpack.ExtType(ARRAY_EXT, len(header).to_bytes(4, "little") + header + value.tobytes())
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"msgpack cannot carry a value of type {type(value).__name__} (numbers, strings, lists, dicts and numpy values only)")


def decode_array(code: int, data: bytes) -> np.ndarray:
    """msgpack's ``ext_hook``: ``encode_array``'s inverse; raises ValueError for any other extension."""
    if code != ARRAY_EXT:
        raise ValueError(f"unknown extension type {code}")
    size = int.from_bytes(data[:4], "little")
    dtype, shape = msgpack.unpackb(data[4 : 4 + size])
    return np.frombuffer(data[4 + size :], dtype=np.dtype(dtype)).reshape(shape)
