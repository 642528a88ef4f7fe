"""NumPy archives.

One compressed archive per episode and agent, ``<directory>/<episode_id>__<agent>.npz``
(characters outside ``[A-Za-z0-9._-]`` in either part become ``_``), loadable with
``np.load(path)`` and no pickle:

=================  =================  ===========================================
array              shape, dtype       meaning
=================  =================  ===========================================
``observations``   (T + 1, ...) u8    first before any action, last after step T
``actions``        (T,) int64         action taken at step t
``rewards``        (T,) float64       reward of step t
``terminations``   (T,) bool          step t ended the episode (game over)
``truncations``    (T,) bool          step t cut the episode short (time limit)
``info_<name>``    (T, ...)           per-step extras: ``ram``, ``frame_id``, ...
``meta``           0-d str            JSON: ``episode_id``, ``env_id``, ``agent``,
                                      ``action_count``, ``observation_format``,
                                      ``steps`` and ``meta`` (the store document)
=================  =================  ===========================================

:func:`load_npz` reads one back as a single-agent :class:`Episode`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from crowdplay.data.episode import AgentTrajectory, Episode
from crowdplay.data.exports.common import INFO_PREFIX, describe, json_default, progress_bar, replace_atomically, safe_name


def export_npz(
    episodes: Iterable[Episode],
    directory: str | os.PathLike[str],
    *,
    progress: bool = True,
    total: int | None = None,
) -> list[Path]:
    """Write one compressed ``.npz`` per episode and agent; return the files written.

    The archives need nothing but NumPy to read, which makes them the lowest common
    denominator for analysis; the layout is in the module docstring.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for episode in progress_bar(episodes, total, progress, "npz"):
        for agent, trajectory in episode.agents.items():
            path = directory / f"{safe_name(episode.episode_id)}__{safe_name(agent)}.npz"
            arrays = _npz_arrays(episode, agent, trajectory)
            replace_atomically(path, lambda file: np.savez_compressed(file, **arrays))
            written.append(path)
    return written


def _npz_arrays(episode: Episode, agent: str, trajectory: AgentTrajectory) -> dict[str, np.ndarray]:
    """The named arrays of one agent's archive, ``meta`` as a JSON string (no pickle needed)."""
    meta = describe(episode, agent, trajectory) | {"meta": episode.meta}
    arrays = {
        "observations": np.asarray(trajectory.observations),
        "actions": np.asarray(trajectory.actions),
        "rewards": np.asarray(trajectory.rewards),
        "terminations": np.asarray(trajectory.terminations),
        "truncations": np.asarray(trajectory.truncations),
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
            observations=archive["observations"],
            actions=archive["actions"],
            rewards=archive["rewards"],
            terminations=archive["terminations"],
            truncations=archive["truncations"],
            action_count=meta["action_count"],
            infos=infos,
        )
    return Episode(
        episode_id=meta["episode_id"],
        env_id=meta["env_id"],
        meta=meta["meta"],
        agents={meta["agent"]: trajectory},
        observation_format=meta["observation_format"],
    )
