"""NumPy archives.

One compressed archive per episode and agent, ``<directory>/<episode_id>__<agent>.npz``
(characters outside ``[A-Za-z0-9._-]`` in either part become ``_``), loadable with
``np.load(path)`` and no pickle:

=========================  =================  ===========================================
array                      shape, dtype       meaning
=========================  =================  ===========================================
``observations``           (T + 1, ...)       first before any action, last after step T:
                                              the environment's own (its space's dtype) or
                                              screens (uint8), as the episodes were loaded
``observations/<path>``    (T + 1, ...)       instead of ``observations`` for a Dict or Tuple
                                              space: one array per leaf, named by its path
                                              (``position``, ``inventory/0``: keys and tuple
                                              positions joined with ``/``)
``actions``                (T,) int64         action taken at step t
``rewards``                (T,) float64       reward of step t
``terminations``           (T,) bool          step t ended the episode (game over)
``truncations``            (T,) bool          step t cut the episode short (time limit)
``info_<name>``            (T, ...)           per-step extras: ``ram``, ``frame_id``, ...
``env_infos``              0-d str            JSON list: the environment's info of each
                                              step (what was kept of it; ``reset``'s is in
                                              ``meta["meta"]["reset_infos"]``)
``meta``                   0-d str            JSON: ``episode_id``, ``env_id``, ``agent``,
                                              ``action_count``, ``observation_format``,
                                              ``observation_space`` (JSON description;
                                              ``crowdplay.environments.spaces.rebuild`` gives
                                              the Gymnasium space), ``steps`` and ``meta``
                                              (the store document)
=========================  =================  ===========================================

Episodes loaded with ``observations=None`` have no observation arrays.
:func:`load_npz` reads one back as a single-agent :class:`Episode`, Dict/Tuple observations
joined again into dicts/tuples of arrays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from crowdplay.data.episode import AgentTrajectory, Episode
from crowdplay.data.exports.common import INFO_PREFIX, agents_of, describe, json_default, observation_leaves, progress_bar, replace_atomically, safe_name

OBSERVATIONS = "observations"


def export_npz(
    episodes: Iterable[Episode],
    directory: str | os.PathLike[str],
    *,
    agent: str | None = None,
    progress: bool = True,
    total: int | None = None,
) -> list[Path]:
    """Write one compressed ``.npz`` per episode and agent (only ``agent``'s when given); return
    the files written.

    The archives need nothing but NumPy to read, which makes them the lowest common
    denominator for analysis; the layout is in the module docstring.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for episode in progress_bar(episodes, total, progress, "npz"):
        for name, trajectory in agents_of(episode, agent):
            path = directory / f"{safe_name(episode.episode_id)}__{safe_name(name)}.npz"
            arrays: dict[str, Any] = _npz_arrays(episode, name, trajectory)  # savez takes them as **kwargs
            replace_atomically(path, lambda file: np.savez_compressed(file, **arrays))  # noqa: B023 (called before the loop moves on)
            written.append(path)
    return written


def _npz_arrays(episode: Episode, agent: str, trajectory: AgentTrajectory) -> dict[str, np.ndarray]:
    """The named arrays of one agent's archive, ``meta`` as a JSON string (no pickle needed)."""
    meta = describe(episode, agent, trajectory) | {"meta": episode.meta}
    arrays: dict[str, np.ndarray] = {}
    if trajectory.observations is not None:
        for path, values in observation_leaves(trajectory.observations).items():
            arrays[f"{OBSERVATIONS}/{path}" if path else OBSERVATIONS] = values
    arrays |= {
        "actions": np.asarray(trajectory.actions),
        "rewards": np.asarray(trajectory.rewards),
        "terminations": np.asarray(trajectory.terminations),
        "truncations": np.asarray(trajectory.truncations),
        "env_infos": np.array(json.dumps(trajectory.env_infos, default=json_default)),
        "meta": np.array(json.dumps(meta, default=json_default)),
    }
    for name, values in trajectory.infos.items():
        arrays[INFO_PREFIX + name] = np.asarray(values)
    return arrays


def load_npz(path: str | os.PathLike[str]) -> Episode:
    """Read an archive written by :func:`export_npz` back as a single-agent episode."""
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        infos = {key[len(INFO_PREFIX) :]: archive[key] for key in archive.files if key.startswith(INFO_PREFIX)}
        trajectory = AgentTrajectory(
            observations=_observations(archive, meta.get("observation_space")),
            actions=archive["actions"],
            rewards=archive["rewards"],
            terminations=archive["terminations"],
            truncations=archive["truncations"],
            action_count=meta["action_count"],
            infos=infos,
            env_infos=json.loads(str(archive["env_infos"])) if "env_infos" in archive.files else [],
        )
    return Episode(
        episode_id=meta["episode_id"],
        env_id=meta["env_id"],
        meta=meta["meta"],
        agents={meta["agent"]: trajectory},
        observation_format=meta["observation_format"],
    )


def _observations(archive: Any, description: dict[str, Any] | None) -> Any:
    """The archive's observations in their space's structure (None if it has none)."""
    from crowdplay.environments.spaces import assemble

    if OBSERVATIONS in archive.files:
        return archive[OBSERVATIONS]
    prefix = OBSERVATIONS + "/"
    columns = {key[len(prefix) :]: archive[key] for key in archive.files if key.startswith(prefix)}
    if not columns:
        return None
    if description is None:
        raise ValueError("the archive has Dict/Tuple observations but no observation_space in its meta")
    return assemble(description, columns)
