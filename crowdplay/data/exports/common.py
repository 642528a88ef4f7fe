"""What every exporter shares: progress bars, safe file names, JSON-able metadata, atomic writes."""

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
    """What identifies an exported trajectory, kept beside the arrays in every format."""
    return {
        "episode_id": str(episode.episode_id),
        "env_id": episode.env_id,
        "agent": agent,
        "action_count": int(trajectory.action_count),
        "observation_format": episode.observation_format,
        "steps": trajectory.steps,
    }


def replace_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a hidden temporary file, so readers never see half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
