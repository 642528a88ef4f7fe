"""One chunk's environment observations and step infos, recorded column by column.

Each agent's observation after every step is split into its space's leaves
(``crowdplay.environments.spaces``) and each leaf becomes one array per chunk:
``obs/<agent>`` for a space that is a leaf itself, ``obs/<agent>/<path>`` inside a Dict or Tuple;
row ``i`` is the observation the environment returned from the chunk's step ``i``. The episode's
first chunk also holds the observation ``reset`` returned, as ``obs0/...`` (one row). So an
episode of ``T`` steps has ``T + 1`` observations, aligned with its screens: observation ``k`` is
what the agent saw before action ``k``.

Step infos are sparse: ``infos`` lists ``[step, agent, info]`` only where the JSON-able part of an
agent's info (``spaces.json_part``) is not empty.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crowdplay.environments.spaces import Leaves, ObservationOutsideSpace, json_part


def column_name(prefix: str, agent: str, path: str) -> str:
    """A column's name: ``<prefix>/<agent>`` for a leaf space, ``<prefix>/<agent>/<path>`` inside a Dict or Tuple."""
    return f"{prefix}/{agent}/{path}" if path else f"{prefix}/{agent}"


class ObservationColumns:
    """One chunk's observation columns and step infos, filled on the tick path."""

    def __init__(self, leaves: dict[str, Leaves]) -> None:
        self.leaves = leaves
        self._values: dict[str, list[list[np.ndarray]]] = {agent: [[] for _ in split.columns] for agent, split in leaves.items()}
        self._first: dict[str, list[np.ndarray]] | None = None
        self.infos: list[list[Any]] = []

    def start(self, observations: dict[str, Any]) -> None:
        """The observations ``reset`` returned (the episode's first chunk only)."""
        self._first = self._split(observations, "reset")

    def add(self, step: int, observations: dict[str, Any], infos: dict[str, Any] | None) -> None:
        """One step's observations (all checked before any is kept) and infos."""
        for agent, values in self._split(observations, "step").items():
            for column, value in zip(self._values[agent], values):
                column.append(value)
        for agent, info in (infos or {}).items():
            kept = json_part(info) if info else None
            if kept:
                self.infos.append([step, agent, kept])

    def _split(self, observations: dict[str, Any], source: str) -> dict[str, list[np.ndarray]]:
        """Every agent's observation split into its leaves; ``ObservationOutsideSpace`` names the
        agent and whether ``reset`` or ``step`` returned it."""
        split = {}
        for agent, leaves in self.leaves.items():
            try:
                split[agent] = leaves.split(observations[agent])
            except KeyError:
                raise ObservationOutsideSpace(f"agent {agent!r}: {source} returned no observation for it") from None
            except ObservationOutsideSpace as error:
                raise ObservationOutsideSpace(f"agent {agent!r}: the observation {source} returned is outside its space: {error}") from None
        return split

    def columns(self) -> dict[str, Any]:
        """The chunk's columns (built when the chunk is sealed, off the tick path)."""
        columns: dict[str, Any] = {"infos": self.infos}
        for agent, split in self.leaves.items():
            for index, (leaf, values) in enumerate(zip(split.columns, self._values[agent])):
                columns[column_name("obs", agent, leaf.path)] = np.stack(values) if values else np.zeros((0, *leaf.shape), leaf.dtype)
                if self._first is not None:
                    columns[column_name("obs0", agent, leaf.path)] = self._first[agent][index][None]
        return columns
