"""RLlib offline data.

Parquet in the columnar layout the new API stack reads by default
(``config.offline_data(input_=[path])``, ``input_read_episodes=False``): one row per step,
as RLlib's own ``OfflineSingleAgentEnvRunner`` records with ``output_write_episodes=False``.
Columns ``eps_id`` (str), ``agent_id`` (str), ``t`` (int64), ``obs``, ``new_obs``, ``actions``
(int64), ``rewards`` (float64), ``terminateds``, ``truncateds`` (bool) and ``infos`` (a struct
of the step's extras, the info that comes with ``new_obs``). ``obs`` and ``new_obs`` are
compressed with ``ray.rllib.utils.compression.pack``, which is what RLlib's default
``input_compress_columns=[obs, new_obs]`` expects. One file per episode:
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
from crowdplay.data.exports.common import agents_of, describe, json_default, progress_bar, replace_atomically, safe_name

if TYPE_CHECKING:
    import pyarrow as pa


def _info_struct(infos: Mapping[str, np.ndarray], steps: int) -> pa.StructArray:
    """Per-step extras as one struct column; multi-dimensional values as fixed-size lists."""
    import pyarrow as pa

    arrays: list[pa.Array] = []
    for values in infos.values():
        values = np.asarray(values)
        if values.ndim == 1:
            arrays.append(pa.array(values))
        else:
            flat = np.ascontiguousarray(values).reshape(steps, -1)
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1]))
    return pa.StructArray.from_arrays(arrays, names=list(infos))


def _rllib_table(episode: Episode, agent: str, trajectory: AgentTrajectory) -> pa.Table:
    """One row per step in the column names of RLlib's ``Columns``, observations packed."""
    import pyarrow as pa
    from ray.rllib.core.columns import Columns
    from ray.rllib.utils.compression import compression_supported, pack

    if not compression_supported():
        raise RuntimeError("RLlib's observation compression needs lz4, which is not importable")
    steps = trajectory.steps
    observations = np.asarray(trajectory.observations)
    packed = [pack(np.ascontiguousarray(observation)) for observation in observations]
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
    if trajectory.infos:
        columns[Columns.INFOS] = _info_struct(trajectory.infos, steps)
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
            replace_atomically(path, lambda file: pq.write_table(table, file))
    return directory
