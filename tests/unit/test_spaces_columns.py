"""How one step's observation is split into recorded columns, and what of an info is kept."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from crowdplay.environments.spaces import Leaves, ObservationOutsideSpace, describe, json_part, rebuild


def test_values_of_a_narrower_or_integer_dtype_are_converted_to_the_declared_one() -> None:
    box = Leaves(describe(gym.spaces.Box(0.0, 1.0, (2,), np.float32)))
    [column] = box.split([1, 0])  # Python ints where floats are declared
    assert column.dtype == np.float32 and column.tolist() == [1.0, 0.0]
    [same] = box.split(np.zeros(2, np.float32))
    assert same.dtype == np.float32


def test_values_of_another_kind_or_shape_are_refused_naming_where() -> None:
    nested = Leaves(describe(gym.spaces.Dict({"pos": gym.spaces.Box(0, 9, (2,), np.int64), "seen": gym.spaces.Tuple([gym.spaces.Discrete(3)])})))
    with pytest.raises(ObservationOutsideSpace, match=r"observation 'pos' has dtype float64, its space int64"):
        nested.split({"pos": np.array([0.5, 1.5]), "seen": (1,)})
    with pytest.raises(ObservationOutsideSpace, match=r"observation 'pos' has shape \(3,\), its space \(2,\)"):
        nested.split({"pos": [1, 2, 3], "seen": (1,)})
    with pytest.raises(ObservationOutsideSpace, match=r"observation 'seen' must be a tuple of 1"):
        nested.split({"pos": [1, 2], "seen": (1, 2)})
    with pytest.raises(ObservationOutsideSpace, match=r"observation must be a dict with keys \['pos', 'seen'\]"):
        nested.split([1, 2])


def test_a_recorded_box_keeps_its_byte_order_and_a_multidiscrete_its_dtype() -> None:
    big_endian = gym.spaces.Box(0.0, 1.0, (2,), np.dtype(">f4"))
    assert rebuild(describe(big_endian)).dtype == np.dtype(">f4")
    multi = gym.spaces.MultiDiscrete([3, 4], dtype=np.int32)
    assert rebuild(describe(multi)) == multi


def test_json_part_keeps_numbers_small_arrays_and_shallow_containers() -> None:
    assert json_part(np.float32(0.5)) == 0.5 and json_part(float("nan")) is None
    assert json_part(np.arange(3)) == [0, 1, 2] and json_part(np.arange(65)) is None
    assert json_part({1: "a", (2,): "tuple key", "gone": object()}) == {"1": "a"}
    assert json_part([[[[["too deep"]]]]]) == [[[[]]]]
