"""numpy arrays through msgpack, as the chunks store them and the policy line sends them."""

from __future__ import annotations

import lz4.frame
import msgpack
import numpy as np
import pytest

from crowdplay.ai.line import pack_request, unpack_request
from crowdplay.msgpack_arrays import ARRAY_EXT, decode_array, encode_array
from crowdplay.recording.chunk import ChunkFormatError, pack_chunk, unpack_chunk


def round_trip(value: object) -> object:
    return msgpack.unpackb(msgpack.packb(value, default=encode_array), ext_hook=decode_array)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.uint8).reshape(3, 4),
        np.linspace(-1, 1, 7, dtype=np.float32),
        np.arange(24, dtype=">i4").reshape(2, 3, 4),
        np.zeros((0, 5), dtype=np.int64),
        np.arange(20, dtype=np.float64).reshape(4, 5)[:, ::2],  # not contiguous
        np.array(3.5),
    ],
)
def test_arrays_come_back_with_their_dtype_shape_and_values(array: np.ndarray) -> None:
    back = round_trip(array)
    assert isinstance(back, np.ndarray) and back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array)


def test_numpy_scalars_become_python_values_and_other_types_are_refused() -> None:
    assert round_trip([np.int64(3), np.float32(0.5), np.bool_(True)]) == [3, 0.5, True]
    with pytest.raises(TypeError, match="set"):
        msgpack.packb({1, 2}, default=encode_array)


def test_the_stored_layout_is_a_header_length_the_header_and_the_bytes() -> None:
    """The chunk format stores this layout: it must not change."""
    ext = encode_array(np.array([1, 2], dtype="<u2"))
    header = msgpack.packb(["<u2", [2]])
    assert ext == msgpack.ExtType(ARRAY_EXT, len(header).to_bytes(4, "little") + header + b"\x01\x00\x02\x00")


def test_another_extension_is_refused_by_both_readers() -> None:
    foreign = msgpack.packb({"v": 1, "columns": {"x": msgpack.ExtType(7, b"")}})
    with pytest.raises(ValueError, match="unknown extension type 7"):
        msgpack.unpackb(foreign, ext_hook=decode_array)
    with pytest.raises(ChunkFormatError):
        unpack_chunk(lz4.frame.compress(foreign))


def test_a_policy_request_and_a_chunk_carry_observations_and_columns_alike() -> None:
    observation = {"image": np.arange(6, dtype=np.uint8).reshape(2, 3), "direction": np.int64(2)}
    streams, observations = unpack_request(pack_request(["g-0/agent_0", None], [observation, np.ones(2)]))
    assert streams == ["g-0/agent_0", None]
    assert np.array_equal(observations[0]["image"], observation["image"]) and observations[0]["direction"] == 2
    columns = unpack_chunk(pack_chunk({"frames": observation["image"], "steps": 2}))
    assert np.array_equal(columns["frames"], observation["image"]) and columns["steps"] == 2
