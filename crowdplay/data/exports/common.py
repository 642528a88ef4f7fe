"""What every exporter shares: progress bars, safe file names, JSON-able metadata, atomic writes,
and walking observations of any space (an array, or a dict/tuple of arrays for Dict/Tuple spaces)."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm import tqdm

from crowdplay.data.episode import AgentTrajectory, Episode

UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: Minari dataset names allow only word characters and dashes.
ID_UNSAFE = re.compile(r"[^-\w]")
INFO_PREFIX = "info_"


def safe_name(name: str) -> str:
    """A file-name safe form of an id, so ids never escape the export directory."""
    return UNSAFE.sub("_", str(name)) or "_"


def progress_bar(episodes: Iterable[Episode], total: int | None, progress: bool, desc: str) -> Iterator[Episode]:
    """Wrap the episodes in a progress bar that stays quiet off a terminal (logs, CI)."""
    disable = not progress or not sys.stderr.isatty()
    yield from tqdm(episodes, total=total, desc=desc, unit="episode", disable=disable)


def agents_of(episode: Episode, agent: str | None) -> Iterator[tuple[str, AgentTrajectory]]:
    """The (name, trajectory) pairs to export: all agents, or the one asked for if present."""
    if agent is None:
        yield from episode.agents.items()
    elif agent in episode.agents:
        yield agent, episode.agents[agent]


def json_default(value: Any) -> Any:
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


def jsonable(value: Any) -> Any:
    """``value`` reduced to plain JSON types (ObjectIds, datetimes... become strings)."""
    return json.loads(json.dumps(value, default=json_default))


def describe(episode: Episode, agent: str, trajectory: AgentTrajectory) -> dict[str, Any]:
    """What identifies an exported trajectory, kept beside the arrays in every format;
    ``observation_space`` is the JSON description (``crowdplay.environments.spaces.rebuild`` gives
    the Gymnasium space) of the observations as exported, None when none were loaded."""
    return {
        "episode_id": str(episode.episode_id),
        "env_id": episode.env_id,
        "agent": agent,
        "action_count": int(trajectory.action_count),
        "observation_format": episode.observation_format,
        "observation_space": observation_description(episode, agent),
        "steps": trajectory.steps,
    }


def observation_description(episode: Episode, agent: str) -> dict[str, Any] | None:
    """The JSON description of ``agent``'s observation space as loaded (None: no observations)."""
    from crowdplay.environments.spaces import describe as describe_space

    if episode.observation_format == "none" or episode.agents[agent].observations is None:
        return None
    return describe_space(episode.observation_space(agent))


def observation_leaves(observations: Any, path: str = "") -> dict[str, np.ndarray]:
    """Observations of any space as flat arrays named by their path in the space, the names the
    store uses: ``""`` for an array, ``position`` or ``inventory/0`` inside dicts and tuples."""
    if isinstance(observations, dict):
        leaves: dict[str, np.ndarray] = {}
        for key, value in observations.items():
            leaves |= observation_leaves(value, f"{path}/{key}" if path else str(key))
        return leaves
    if isinstance(observations, tuple):
        leaves = {}
        for index, value in enumerate(observations):
            leaves |= observation_leaves(value, f"{path}/{index}" if path else str(index))
        return leaves
    return {path: np.asarray(observations)}


def observation_at(observations: Any, step: int) -> Any:
    """One step's observation out of stacked ones, in the space's structure (an array, a dict, a tuple)."""
    if isinstance(observations, dict):
        return {key: observation_at(value, step) for key, value in observations.items()}
    if isinstance(observations, tuple):
        return tuple(observation_at(value, step) for value in observations)
    return np.asarray(observations[step])


def env_info_texts(episode: Episode, agent: str, trajectory: AgentTrajectory) -> list[str] | None:
    """The environment's infos as JSON text, ``T + 1`` of them (the info ``reset`` returned, then
    step ``k``'s at ``k + 1``), or None when the episode carries none (built by hand)."""
    if len(trajectory.env_infos) != trajectory.steps or not trajectory.steps:
        return None
    reset = (episode.meta.get("reset_infos") or {}).get(agent) or {}
    return [json.dumps(info, default=json_default) for info in [reset, *trajectory.env_infos]]


def replace_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a hidden temporary file, so readers never see half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
