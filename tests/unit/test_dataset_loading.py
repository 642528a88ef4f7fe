"""Dataset's finding and loading on an embedded store written by hand: the query each filter
builds and the arrays each chunk column ends up in, without Ray or an environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crowdplay.data import Dataset
from crowdplay.data.loading import StoredSteps, observation_format
from crowdplay.recording.chunk import pack_chunk
from crowdplay.recording.store import TrajectoryStore

PERSON = {"human": True}
POLICY = {"policy": "random"}


def _chunk(first_step: int, steps: int, controllers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A chunk's columns as the recorder writes them, for one agent ``agent_0``."""
    span = np.arange(first_step, first_step + steps)
    columns = {
        "first_step": first_step,
        "steps": steps,
        "start_state": None,
        "controllers": controllers,
        "frame_id": span + 100,
        "tick_time": span * 0.02,
        "action/agent_0": span % 3,
        "reward/agent_0": np.ones(steps),
        "client_frame/agent_0": span + 99,
        "terminated": np.zeros(steps, bool),
        "truncated": np.zeros(steps, bool),
        "inputs": [],
        "frames": [],
    }
    return columns | extra


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Dataset]:
    store = TrajectoryStore.open(str(tmp_path / "store.db"))
    store.put_episode("e1", {
        "env_id": "Toy", "agents": ["agent_0"], "screen_shape": [2, 2, 3], "started_at": 10.0, "task_id": "t",
        "status": "complete", "returns": {"agent_0": 5.0}, "human_only": True, "action_counts": {"agent_0": 3},
    })
    store.put_episode("e2", {"env_id": "Toy", "agents": ["agent_0"], "started_at": 20.0, "status": "finished", "returns": {"agent_0": 1.0}})
    store.put_episode("e3", {"env_id": "Other", "agents": ["agent_0"], "started_at": 30.0, "human_only": False})
    first = _chunk(
        0, 3, {"agent_0": PERSON}, start_state=b"state",
        inputs=[[1, "agent_0", ["Space"], 1, 99, 10.5]], infos=[[2, "agent_0", {"lives": 3}]],
    )
    second = _chunk(3, 2, {"agent_0": POLICY}, ai_actions=[[1, "agent_0", 2, 103, 0.01]])
    for seq, columns in enumerate((first, second)):
        store.put_chunk("e1", seq, pack_chunk(columns), columns["steps"])
    with Dataset(store) as dataset:
        yield dataset


def _ids(found: list[dict[str, Any]]) -> list[str]:
    return [document["_id"] for document in found]


def test_each_filter_narrows_the_listing(data: Dataset) -> None:
    assert _ids(data.episodes()) == ["e1", "e2", "e3"]
    assert _ids(data.episodes(env="Toy", task="t")) == ["e1"]
    assert _ids(data.episodes(since=15, until="1970-01-01T00:00:30")) == ["e2"]
    assert _ids(data.episodes(human_only=False)) == ["e3"]
    assert _ids(data.episodes(min_return=2)) == ["e1"]


def test_completed_and_status_filters_combine(data: Dataset) -> None:
    assert _ids(data.episodes(completed=True)) == ["e1"]
    assert _ids(data.episodes(completed=False)) == ["e2", "e3"]
    assert _ids(data.episodes(status=["finished", "unended"])) == ["e2", "e3"]
    assert _ids(data.episodes(completed=False, status="unended")) == ["e3"]


def test_a_load_joins_the_chunks_and_ends_an_unfinished_episode_truncated(data: Dataset) -> None:
    episode = data.load("e1", observations=None)
    trajectory = episode.agents["agent_0"]
    assert episode.observation_format == "none" and trajectory.observations is None
    assert trajectory.actions.tolist() == [0, 1, 2, 0, 1] and trajectory.action_count == 3
    assert trajectory.truncations.tolist() == [False, False, False, False, True]
    assert not trajectory.terminations.any()
    assert list(trajectory.infos) == ["frame_id", "tick_time", "client_frame", "human", "ai_substitute"]
    assert trajectory.infos["human"].tolist() == [True, True, True, False, False]
    # The policy played step 3 before its first answer (applied from step 4): a substitute.
    assert trajectory.infos["ai_substitute"].tolist() == [False, False, False, True, False]
    assert trajectory.env_infos == [{}, {}, {"lives": 3}, {}, {}]
    assert episode.snapshots == {0: b"state"} and episode.meta["loaded_steps"] == 5


def test_held_keys_expand_the_input_changes_over_the_steps(data: Dataset) -> None:
    assert data.held_keys("e1", "agent_0") == [(), ("Space",), ("Space",), ("Space",), ("Space",)]


def test_an_unknown_observation_format_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown observation format 'gray'; choose one of env, rgb"):
        observation_format("gray", None)
    assert observation_format("env", None) == "rgb"
    assert observation_format("env", {"agent_0": {"type": "Box"}}) == "env"
    assert observation_format(None, None) is None


def test_no_chunks_load_as_no_steps() -> None:
    stored = StoredSteps.read([], None)
    terminated, truncated = stored.endings()
    assert stored.steps == 0 and terminated.size == 0 and truncated.size == 0
    assert stored.screen_array(None, "rgb").shape == (0,)
