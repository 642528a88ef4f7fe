"""Observation spaces as data: described in JSON once per episode, recorded as flat columns.

A recording must be readable without the plugin that defined its environment, so each episode
stores its agents' observation spaces as a JSON description (``describe``; ``rebuild`` gives the
Gymnasium space back). Observations are stored column by column: every leaf of a space (a Box, a
Discrete, ... inside any nesting of Dict and Tuple) is one array per chunk, ``(steps, *shape)`` of
the leaf's dtype, named by its path (``position``, ``sensors/0``; "" for a space that is a leaf
itself). ``Leaves`` splits observations into those columns on the tick path and ``assemble``
joins stacked columns back into the space's own structure (dicts of arrays for a Dict space).

Recordable spaces: Box (any dtype), Discrete, MultiDiscrete, MultiBinary, and Dict and Tuple of
them, nested. Others (Text, Graph, Sequence, OneOf) have no fixed shape per step and are refused
when the episode starts, naming the environment and the space.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

Description = dict[str, Any]


class UnrecordableSpace(TypeError):
    """A space whose observations cannot be recorded column by column."""


class ObservationOutsideSpace(ValueError):
    """An observation whose structure, shape or dtype is not its declared space's."""


def _bound(values: np.ndarray) -> Any:
    """A Box bound as JSON: one number when it is the same everywhere (the usual case), else the
    full nested list; infinities as strings, which JSON has no numbers for."""
    flat = values.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return _number(flat[0])
    return [_number(value) for value in flat.tolist()]


def _number(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and not np.isfinite(value):
        return "inf" if value > 0 else "-inf" if value < 0 else "nan"
    return value


def _unbound(value: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    values = np.asarray([float(v) if isinstance(v, str) else v for v in value] if isinstance(value, list) else
                        (float(value) if isinstance(value, str) else value), dtype=np.float64)
    return np.broadcast_to(values.reshape(shape) if values.size > 1 else values, shape).astype(dtype)


def describe(space: gym.Space[Any]) -> Description:
    """The JSON description of ``space`` (``UnrecordableSpace`` for a space without fixed shapes)."""
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": np.dtype(space.dtype).str, "low": _bound(space.low), "high": _bound(space.high)}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist(), "dtype": np.dtype(space.dtype).str}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": list(space.shape)}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {str(key): describe(sub) for key, sub in space.spaces.items()}}
    if isinstance(space, gym.spaces.Tuple):
        return {"type": "Tuple", "spaces": [describe(sub) for sub in space.spaces]}
    raise UnrecordableSpace(f"a {type(space).__name__} space has no fixed shape per step and cannot be recorded")


def rebuild(description: Description) -> gym.Space[Any]:
    """The Gymnasium space a description was made from."""
    kind = description["type"]
    if kind == "Box":
        shape, dtype = tuple(description["shape"]), np.dtype(description["dtype"])
        low, high = _unbound(description["low"], shape, dtype), _unbound(description["high"], shape, dtype)
        # gymnasium annotates dtype as a scalar type but takes any np.dtype (it calls np.dtype on it);
        # the recorded dtype is passed as it is so that its byte order survives the round trip
        return gym.spaces.Box(low, high, shape, dtype)  # type: ignore[arg-type]
    if kind == "Discrete":
        return gym.spaces.Discrete(description["n"], start=description.get("start", 0))
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(description["nvec"], dtype=np.dtype(description["dtype"]).str, start=description.get("start"))
    if kind == "MultiBinary":
        n = description["n"]
        return gym.spaces.MultiBinary(n[0] if len(n) == 1 else n)  # MultiBinary(3) != MultiBinary([3])
    if kind == "Dict":
        return gym.spaces.Dict({key: rebuild(sub) for key, sub in description["spaces"].items()})
    if kind == "Tuple":
        return gym.spaces.Tuple([rebuild(sub) for sub in description["spaces"]])
    raise UnrecordableSpace(f"unknown space type {kind!r} in a recording")


@dataclass(frozen=True)
class Leaf:
    """One column of a space: where it sits, and the shape and dtype of one step's value."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype


def leaves(description: Description, path: str = "") -> Iterator[Leaf]:
    """The space's columns, in a fixed order (a Dict's keys as given, a Tuple's positions)."""
    kind = description["type"]
    if kind in ("Dict", "Tuple"):
        items = description["spaces"].items() if kind == "Dict" else enumerate(description["spaces"])
        for key, sub in items:
            yield from leaves(sub, f"{path}/{key}" if path else str(key))
    elif kind == "Box":
        yield Leaf(path, tuple(description["shape"]), np.dtype(description["dtype"]))
    elif kind == "Discrete":
        yield Leaf(path, (), np.dtype(np.int64))
    elif kind == "MultiDiscrete":
        yield Leaf(path, tuple(np.shape(description["nvec"])), np.dtype(description["dtype"]))
    elif kind == "MultiBinary":
        yield Leaf(path, tuple(description["n"]), np.dtype(np.int8))


class Leaves:
    """Splits one step's observation into its leaves' values, checking each against its space
    (structure, shape and dtype kind: an int where a float Box is declared is converted, a
    mismatch raises ``ObservationOutsideSpace``). Bounds are not checked per step: a researcher's
    environment may legitimately report values at the edge, and ``contains`` costs a pass over
    every array on the tick path."""

    def __init__(self, description: Description) -> None:
        self.description = description
        self.columns = list(leaves(description))

    def split(self, observation: Any) -> list[np.ndarray]:
        """One step's observation as its leaves' arrays, in ``leaves`` order; ObservationOutsideSpace when it
        does not fit the space."""
        values: list[np.ndarray] = []
        self._split(self.description, observation, "", values)
        return values

    def _split(self, description: Description, value: Any, path: str, out: list[np.ndarray]) -> None:
        """Walk ``value`` along ``description``, appending each leaf's array to ``out`` in ``leaves`` order."""
        kind = description["type"]
        if kind == "Dict":
            self._split_dict(description["spaces"], value, path, out)
        elif kind == "Tuple":
            self._split_tuple(description["spaces"], value, path, out)
        else:
            out.append(_fit(value, self.columns[len(out)], path))

    def _split_dict(self, spaces: dict[str, Description], value: Any, path: str, out: list[np.ndarray]) -> None:
        """A Dict space's value: a dict with exactly the space's keys."""
        if not isinstance(value, dict) or set(value) != set(spaces):
            raise ObservationOutsideSpace(f"observation{_at(path)} must be a dict with keys {sorted(spaces)}")
        for key, sub in spaces.items():
            self._split(sub, value[key], f"{path}/{key}" if path else key, out)

    def _split_tuple(self, spaces: list[Description], value: Any, path: str, out: list[np.ndarray]) -> None:
        """A Tuple space's value: a tuple or list as long as the space."""
        if not isinstance(value, (tuple, list)) or len(value) != len(spaces):
            raise ObservationOutsideSpace(f"observation{_at(path)} must be a tuple of {len(spaces)}")
        for index, sub in enumerate(spaces):
            self._split(sub, value[index], f"{path}/{index}" if path else str(index), out)


def _fit(value: Any, leaf: Leaf, path: str) -> np.ndarray:
    """A leaf's value as an array of its shape and dtype: converted when only the width or an
    integer-to-float kind differs, refused otherwise."""
    array = np.asarray(value)
    if array.shape != leaf.shape:
        raise ObservationOutsideSpace(f"observation{_at(path)} has shape {array.shape}, its space {leaf.shape}")
    if array.dtype == leaf.dtype:
        return array
    if not _convertible(array.dtype, leaf.dtype):
        raise ObservationOutsideSpace(f"observation{_at(path)} has dtype {array.dtype}, its space {leaf.dtype}")
    return array.astype(leaf.dtype)


def _convertible(given: np.dtype[Any], declared: np.dtype[Any]) -> bool:
    """Whether a value of dtype ``given`` may stand for ``declared``: a cast within one kind, or an
    integer or boolean where a number is declared (Python ints arrive as int64 for a float Box)."""
    return bool(np.can_cast(given, declared, casting="same_kind")) or (given.kind in "iub" and declared.kind in "iuf")


def _at(path: str) -> str:
    return f" {path!r}" if path else ""


def assemble(description: Description, columns: dict[str, np.ndarray], path: str = "") -> Any:
    """Stacked columns (``path -> (N, *shape)``) joined into the space's structure: an array for a
    leaf space, a dict of those for a Dict space, a tuple for a Tuple space."""
    kind = description["type"]
    if kind == "Dict":
        return {key: assemble(sub, columns, f"{path}/{key}" if path else key) for key, sub in description["spaces"].items()}
    if kind == "Tuple":
        return tuple(assemble(sub, columns, f"{path}/{index}" if path else str(index)) for index, sub in enumerate(description["spaces"]))
    return columns[path]


#: How deep ``json_part`` keeps nested dicts and lists, and the largest array it keeps.
JSON_DEPTH = 4
JSON_ARRAY_SIZE = 64


def json_part(value: Any, depth: int = 0) -> Any:
    """The JSON-able part of an ``info`` value: numbers, strings, booleans and None, numpy scalars
    as numbers, and lists and string-keyed dicts of those (at most 4 levels deep); arrays of up to
    64 elements as lists. Anything else is dropped (``None`` here, left out of dicts and lists)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, (np.generic, np.ndarray)):
        return _json_numpy(value, depth)
    if depth >= JSON_DEPTH:
        return None
    if isinstance(value, dict):
        return _json_dict(value, depth)
    if isinstance(value, (list, tuple)):
        return _json_list(value, depth)
    return None


def _json_numpy(value: np.generic | np.ndarray, depth: int) -> Any:
    """A numpy scalar as its Python number, a small array as its nested list, a large array dropped."""
    if isinstance(value, np.generic):
        return json_part(value.item(), depth)
    return json_part(value.tolist(), depth) if value.size <= JSON_ARRAY_SIZE else None


def _json_dict(value: dict[Any, Any], depth: int) -> dict[str, Any]:
    """A dict's string- and int-keyed entries whose values have a JSON-able part (keys as strings)."""
    kept = {str(key): json_part(sub, depth + 1) for key, sub in value.items() if isinstance(key, (str, int))}
    return {key: sub for key, sub in kept.items() if sub is not None}


def _json_list(value: list[Any] | tuple[Any, ...], depth: int) -> list[Any]:
    """A list or tuple's items that have a JSON-able part."""
    kept_items = [json_part(sub, depth + 1) for sub in value]
    return [sub for sub in kept_items if sub is not None]
