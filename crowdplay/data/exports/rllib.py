"""RLlib offline data.

Parquet in the columnar layout the new API stack reads by default
(``config.offline_data(input_=[path])``, ``input_read_episodes=False``): one row per step,
as RLlib's own ``OfflineSingleAgentEnvRunner`` records with ``output_write_episodes=False``.
Columns ``eps_id`` (str), ``agent_id`` (str), ``t`` (int64), ``obs``, ``new_obs``, ``actions``
(int64), ``rewards`` (float64), ``terminateds``, ``truncateds`` (bool) and ``infos`` (a struct
of the step's extras, the info that comes with ``new_obs``, with ``env_info``: the environment's
own info as JSON text, when the episode has it). ``obs`` and ``new_obs`` are each step's
observation as the episodes were loaded (by default the environment's own in its space's
structure: an array, 0-d for a Discrete space, or a dict or tuple of arrays for a Dict or Tuple
space; or screens), compressed with ``ray.rllib.utils.compression.pack``, which
is what RLlib's default ``input_compress_columns=[obs, new_obs]`` expects: RLlib's reader unpacks
them back into that structure. One file per episode:
``<directory>/<episode_id>.parquet`` when ``agent`` is given, else
``<directory>/<agent>/<episode_id>.parquet`` for every agent, one dataset (one policy) each,
since RLlib's offline reader is single-agent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crowdplay.data.episode import AgentTrajectory, Episode
from crowdplay.data.exports.common import agents_of, describe, env_info_texts, json_default, observation_at, progress_bar, replace_atomically, safe_name

if TYPE_CHECKING:
    import pyarrow as pa


def _info_struct(infos: Mapping[str, np.ndarray], steps: int, env_infos: list[str] | None) -> pa.StructArray:
    """Per-step extras as one struct column; multi-dimensional values as fixed-size lists; the
    environment's own infos as JSON text."""
    import pyarrow as pa

    arrays: list[pa.Array] = []
    for values in infos.values():
        values = np.asarray(values)
        if values.ndim == 1:
            arrays.append(pa.array(values))
        else:
            flat = np.ascontiguousarray(values).reshape(steps, -1)
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1]))
    names = list(infos)
    if env_infos is not None:
        arrays.append(pa.array(env_infos, pa.string()))
        names.append("env_info")
    return pa.StructArray.from_arrays(arrays, names=names)


def _rllib_table(episode: Episode, agent: str, trajectory: AgentTrajectory) -> pa.Table:
    """One row per step in the column names of RLlib's ``Columns``, observations packed."""
    import pyarrow as pa
    from ray.rllib.core.columns import Columns
    from ray.rllib.utils.compression import compression_supported, pack

    if not compression_supported():
        raise RuntimeError("RLlib's observation compression needs lz4, which is not importable")
    steps = trajectory.steps
    if trajectory.observations is None:
        raise ValueError("an RLlib export needs observations: load the episodes with observations other than None")
    packed = [pack(observation_at(trajectory.observations, step)) for step in range(steps + 1)]
    columns: dict[str, Any] = {
        Columns.EPS_ID: pa.array([str(episode.episode_id)] * steps, pa.string()),
        Columns.AGENT_ID: pa.array([agent] * steps, pa.string()),
        Columns.T: pa.array(np.arange(steps, dtype=np.int64)),
        Columns.OBS: pa.array(packed[:-1], pa.string()),
        Columns.ACTIONS: pa.array(np.asarray(trajectory.actions, dtype=np.int64)),
        Columns.REWARDS: pa.array(np.asarray(trajectory.rewards, dtype=np.float64)),
        Columns.NEXT_OBS: pa.array(packed[1:], pa.string()),
        Columns.TERMINATEDS: pa.array(np.asarray(trajectory.terminations, dtype=bool)),
        Columns.TRUNCATEDS: pa.array(np.asarray(trajectory.truncations, dtype=bool)),
    }
    env_infos = env_info_texts(episode, agent, trajectory)
    if trajectory.infos or env_infos is not None:
        columns[Columns.INFOS] = _info_struct(trajectory.infos, steps, None if env_infos is None else env_infos[1:])
    described = describe(episode, agent, trajectory) | {"meta": episode.meta}
    return pa.table(columns, metadata={"crowdplay": json.dumps(described, default=json_default)})


def export_rllib(
    episodes: Iterable[Episode],
    directory: str | os.PathLike[str],
    *,
    agent: str | None = None,
    progress: bool = True,
    total: int | None = None,
) -> Path:
    """Write RLlib offline data (new API stack, columnar parquet); return ``directory``.

    Train on it with ``config.offline_data(input_=[str(directory)])`` when ``agent`` was given,
    else ``input_=[str(directory / agent)]``; RLlib's default ``input_compress_columns`` fits.
    No Ray cluster is needed to write. The layout is in the module docstring.
    """
    import pyarrow.parquet as pq

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for episode in progress_bar(episodes, total, progress, "rllib"):
        for name, trajectory in agents_of(episode, agent):
            if trajectory.steps == 0:
                continue
            folder = directory if agent is not None else directory / safe_name(name)
            folder.mkdir(exist_ok=True)
            table = _rllib_table(episode, name, trajectory)
            path = folder / f"{safe_name(episode.episode_id)}.parquet"
            replace_atomically(path, lambda file: pq.write_table(table, file))  # noqa: B023 (called before the loop moves on)
    return directory
