"""Dataset exports: recorded episodes as NumPy archives, Minari datasets and RLlib offline data.

Every exporter takes an iterable of :class:`~crowdplay.data.episode.Episode` (a generator that
loads lazily is fine: one episode is held in memory at a time), writes as it goes and shows a
``tqdm`` progress bar on a terminal (``progress=False`` or a non-TTY stderr turns it off; pass
``total`` when the iterable has no ``len``). Episodes with zero steps carry no transition and are
skipped by the Minari and RLlib exports.

NumPy (:func:`export_npz`)
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

Minari (:func:`export_minari`)
    Minari datasets hold one agent, so a multi-agent recording becomes one dataset per agent:
    with ``agent=None`` the id ``[namespace/]name-v<N>`` turns into ``[namespace/]name-<agent>-v<N>``
    for every agent met, and a dict ``{agent: MinariDataset}`` is returned; with ``agent`` given
    only that agent is exported, under ``dataset_id`` unchanged, and the dataset is returned.
    Observation space ``Box(0, 255, obs_shape, uint8)``, action space ``Discrete(action_count)``,
    stored with Minari's ``arrow`` backend, lossless unless ``jpeg_encoding=True``. Infos follow
    Minari's ``T + 1`` convention (the first entry pairs with the reset observation): nothing is
    recorded at reset, so ``infos[name][0]`` is zeros and ``infos[name][1:]`` the recorded steps.
    Each Minari episode's metadata names the CrowdPlay ``episode_id``, ``env_id``, ``agent`` and
    ``observation_format``.

RLlib (:func:`export_rllib`)
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
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, overload

import numpy as np
from tqdm import tqdm

from crowdplay.data.episode import AgentTrajectory, Episode

if TYPE_CHECKING:
    import pyarrow as pa
    from minari import MinariDataset

__all__ = ["export_minari", "export_npz", "export_rllib", "load_npz"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: Minari dataset names allow only word characters and dashes.
_ID_UNSAFE = re.compile(r"[^-\w]")
_INFO_PREFIX = "info_"


# --- shared helpers -------------------------------------------------------------------------


def _safe(name: str) -> str:
    """A file-name safe form of an id, so ids never escape the export directory."""
    return _UNSAFE.sub("_", str(name)) or "_"


def _progress(episodes: Iterable[Episode], total: int | None, progress: bool, desc: str) -> Iterator[Episode]:
    """Wrap the episodes in a progress bar that stays quiet off a terminal (logs, CI)."""
    disable = not progress or not sys.stderr.isatty()
    yield from tqdm(episodes, total=total, desc=desc, unit="episode", disable=disable)


def _agents(episode: Episode, agent: str | None) -> Iterator[tuple[str, AgentTrajectory]]:
    """The (name, trajectory) pairs to export: all agents, or the one asked for if present."""
    if agent is None:
        yield from episode.agents.items()
    elif agent in episode.agents:
        yield agent, episode.agents[agent]


def _json_default(value: Any) -> Any:
    """Make store documents JSON: numpy values as Python, dates as ISO text, the rest as str."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _jsonable(value: Any) -> Any:
    """``value`` reduced to plain JSON types (ObjectIds, datetimes... become strings)."""
    return json.loads(json.dumps(value, default=_json_default))


def _describe(episode: Episode, agent: str, trajectory: AgentTrajectory) -> dict[str, Any]:
    """What identifies an exported trajectory, kept beside the arrays in every format."""
    return {
        "episode_id": str(episode.episode_id),
        "env_id": episode.env_id,
        "agent": agent,
        "action_count": int(trajectory.action_count),
        "observation_format": episode.observation_format,
        "steps": trajectory.steps,
    }


def _replace_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a hidden temporary file, so readers never see half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# --- NumPy ----------------------------------------------------------------------------------


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
    for episode in _progress(episodes, total, progress, "npz"):
        for agent, trajectory in episode.agents.items():
            path = directory / f"{_safe(episode.episode_id)}__{_safe(agent)}.npz"
            arrays = _npz_arrays(episode, agent, trajectory)
            _replace_atomically(path, lambda file: np.savez_compressed(file, **arrays))
            written.append(path)
    return written


def _npz_arrays(episode: Episode, agent: str, trajectory: AgentTrajectory) -> dict[str, np.ndarray]:
    """The named arrays of one agent's archive, ``meta`` as a JSON string (no pickle needed)."""
    meta = _describe(episode, agent, trajectory) | {"meta": episode.meta}
    arrays = {
        "observations": np.asarray(trajectory.observations),
        "actions": np.asarray(trajectory.actions),
        "rewards": np.asarray(trajectory.rewards),
        "terminations": np.asarray(trajectory.terminations),
        "truncations": np.asarray(trajectory.truncations),
        "meta": np.array(json.dumps(meta, default=_json_default)),
    }
    for name, values in trajectory.infos.items():
        arrays[_INFO_PREFIX + name] = np.asarray(values)
    return arrays


def load_npz(path: str | os.PathLike[str]) -> Episode:
    """Read an archive written by :func:`export_npz` back as a single-agent episode."""
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        infos = {key[len(_INFO_PREFIX) :]: archive[key] for key in archive.files if key.startswith(_INFO_PREFIX)}
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


# --- Minari ---------------------------------------------------------------------------------


@contextmanager
def _minari_root(data_path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Point Minari at ``data_path`` for the export; Minari only reads its root from the env.

    This sets a process-wide variable, so concurrent exports in threads must share one root.
    """
    if data_path is None:
        yield
        return
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = os.fspath(Path(data_path).resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def _agent_dataset_id(dataset_id: str, agent: str) -> str:
    """``[namespace/]name-v<N>`` to ``[namespace/]name-<agent>-v<N>``."""
    from minari.dataset.minari_dataset import gen_dataset_id, parse_dataset_id

    namespace, name, version = parse_dataset_id(dataset_id)
    return gen_dataset_id(namespace, f"{name}-{_ID_UNSAFE.sub('_', agent)}", version)


def _minari_infos(infos: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Infos padded to Minari's T + 1 rows with a leading zero row for the unrecorded reset.

    One-dimensional infos go in as lists of NumPy scalars: Minari 0.5.4's arrow backend writes
    an empty shape tag for (T,) arrays and then fails to read it back.
    """
    padded: dict[str, Any] = {}
    for name, values in infos.items():
        values = np.asarray(values)
        values = np.concatenate([np.zeros_like(values[:1]), values])
        padded[name] = list(values) if values.ndim == 1 else values
    return padded


def _minari_buffer(trajectory: AgentTrajectory) -> Any:
    """One Minari episode buffer, straight from the recorded arrays (no live env needed)."""
    from minari.data_collector import EpisodeBuffer

    return EpisodeBuffer(
        observations=np.asarray(trajectory.observations),
        actions=np.asarray(trajectory.actions, dtype=np.int64),
        rewards=np.asarray(trajectory.rewards, dtype=np.float64),
        terminations=np.asarray(trajectory.terminations, dtype=bool),
        truncations=np.asarray(trajectory.truncations, dtype=bool),
        infos=_minari_infos(trajectory.infos) or None,
    )


def _minari_spaces(trajectory: AgentTrajectory) -> tuple[Any, Any]:
    """Observation and action spaces as they would have been for a live agent."""
    from gymnasium import spaces

    if trajectory.action_count <= 0:
        raise ValueError("a Minari export needs the agent's action_count (size of its Discrete space)")
    shape = np.asarray(trajectory.observations).shape[1:]
    return spaces.Box(0, 255, shape=shape, dtype=np.uint8), spaces.Discrete(int(trajectory.action_count))


def _create_minari(
    dataset_id: str,
    episode: Episode,
    agent: str,
    trajectory: AgentTrajectory,
    jpeg_encoding: bool,
    dataset_info: dict[str, Any],
) -> MinariDataset:
    """Start a dataset with its first episode, its spaces taken from that episode."""
    import minari

    observation_space, action_space = _minari_spaces(trajectory)
    shape = observation_space.shape
    if jpeg_encoding and not (len(shape) == 2 or (len(shape) == 3 and shape[2] == 3)):
        raise ValueError(f"jpeg_encoding needs grayscale or RGB observations, not shape {shape}")
    info = {
        "algorithm_name": "human demonstrations (CrowdPlay)",
        "description": f"CrowdPlay human demonstrations in {episode.env_id}, agent {agent}.",
    } | dataset_info
    with warnings.catch_warnings():
        # Recorded offline: no env spec, eval env or code link is expected, and Minari warns on each.
        warnings.filterwarnings("ignore", message=r".*(is set to None|env_spec is None).*", category=UserWarning)
        return minari.create_dataset_from_buffers(
            dataset_id,
            [_minari_buffer(trajectory)],
            observation_space=observation_space,
            action_space=action_space,
            data_format="arrow",
            jpeg_encoding=jpeg_encoding,
            **info,
        )


def _check_minari_fits(dataset: MinariDataset, trajectory: AgentTrajectory) -> None:
    """Refuse an episode whose spaces differ from the dataset's, rather than store garbage."""
    observation_space, action_space = _minari_spaces(trajectory)
    if observation_space != dataset.observation_space or action_space != dataset.action_space:
        raise ValueError(
            f"episode spaces {observation_space}, {action_space} differ from dataset {dataset.id}'s "
            f"{dataset.observation_space}, {dataset.action_space}"
        )


@overload
def export_minari(
    episodes: Iterable[Episode],
    dataset_id: str,
    *,
    agent: str,
    data_path: str | os.PathLike[str] | None = ...,
    progress: bool = ...,
    total: int | None = ...,
    jpeg_encoding: bool = ...,
    **dataset_info: Any,
) -> MinariDataset: ...


@overload
def export_minari(
    episodes: Iterable[Episode],
    dataset_id: str,
    *,
    agent: None = ...,
    data_path: str | os.PathLike[str] | None = ...,
    progress: bool = ...,
    total: int | None = ...,
    jpeg_encoding: bool = ...,
    **dataset_info: Any,
) -> dict[str, MinariDataset]: ...


def export_minari(
    episodes: Iterable[Episode],
    dataset_id: str,
    *,
    agent: str | None = None,
    data_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    total: int | None = None,
    jpeg_encoding: bool = False,
    **dataset_info: Any,
) -> MinariDataset | dict[str, MinariDataset]:
    """Write Minari dataset(s) from recorded episodes, one episode buffer at a time.

    ``dataset_id`` is ``[namespace/]name-v<N>``; see the module docstring for how agents map to
    datasets. ``data_path`` overrides the Minari root (``MINARI_DATASETS_PATH``, default
    ``~/.minari/datasets``) for this call only; load with the same root. ``jpeg_encoding`` trades
    exact pixels for size, for ``(H, W)`` or ``(H, W, 3)`` observations only (not stacked frames).
    ``dataset_info`` goes to ``minari.create_dataset_from_buffers`` (``author``, ``author_email``,
    ``code_permalink``, ``description``, ``eval_env``, ...).
    Raises ``ValueError`` if a dataset id already exists or an episode's spaces disagree.
    """
    datasets: dict[str, MinariDataset] = {}
    with _minari_root(data_path):
        for episode in _progress(episodes, total, progress, "minari"):
            for name, trajectory in _agents(episode, agent):
                if trajectory.steps == 0:
                    continue
                dataset = datasets.get(name)
                if dataset is None:
                    target = dataset_id if agent is not None else _agent_dataset_id(dataset_id, name)
                    dataset = datasets[name] = _create_minari(
                        target, episode, name, trajectory, jpeg_encoding, dataset_info
                    )
                else:
                    _check_minari_fits(dataset, trajectory)
                    dataset.update_dataset_from_buffer([_minari_buffer(trajectory)])
                index = dataset.storage.total_episodes - 1
                episode_meta = _describe(episode, name, trajectory) | {"meta": _jsonable(episode.meta)}
                dataset.storage.update_episode_metadata([episode_meta], [index])
    if agent is None:
        return datasets
    if agent not in datasets:
        raise ValueError(f"no episode with steps for agent {agent!r}: nothing to export")
    return datasets[agent]


# --- RLlib ----------------------------------------------------------------------------------


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
    described = _describe(episode, agent, trajectory) | {"meta": episode.meta}
    return pa.table(columns, metadata={"crowdplay": json.dumps(described, default=_json_default)})


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
    for episode in _progress(episodes, total, progress, "rllib"):
        for name, trajectory in _agents(episode, agent):
            if trajectory.steps == 0:
                continue
            folder = directory if agent is not None else directory / _safe(name)
            folder.mkdir(exist_ok=True)
            table = _rllib_table(episode, name, trajectory)
            path = folder / f"{_safe(episode.episode_id)}.parquet"
            _replace_atomically(path, lambda file: pq.write_table(table, file))
    return directory
