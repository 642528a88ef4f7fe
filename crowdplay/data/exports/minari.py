"""Minari datasets.

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
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from crowdplay.data.episode import AgentTrajectory, Episode
from crowdplay.data.exports.common import ID_UNSAFE, agents_of, describe, jsonable, progress_bar

if TYPE_CHECKING:
    from minari import MinariDataset


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
    return gen_dataset_id(namespace, f"{name}-{ID_UNSAFE.sub('_', agent)}", version)


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
        for episode in progress_bar(episodes, total, progress, "minari"):
            for name, trajectory in agents_of(episode, agent):
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
                episode_meta = describe(episode, name, trajectory) | {"meta": jsonable(episode.meta)}
                dataset.storage.update_episode_metadata([episode_meta], [index])
    if agent is None:
        return datasets
    if agent not in datasets:
        raise ValueError(f"no episode with steps for agent {agent!r}: nothing to export")
    return datasets[agent]
