"""Exports read back by their own consumers: NumPy, Minari's loader and RLlib's offline pipeline."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from crowdplay.data.episode import AgentTrajectory, Episode
from crowdplay.data.exports import export_minari, export_npz, export_rllib, load_npz
from tests.offline_rl import bc_sample

STEPS = 25
SHAPE = (84, 84, 4)
ACTIONS = 6


def _trajectory(seed: int, steps: int, end: str, observations: np.ndarray | None = None) -> AgentTrajectory:
    """Random play whose rewards are unique across the test data, so rows can be found again."""
    rng = np.random.default_rng(seed)
    if observations is None:
        observations = rng.integers(0, 256, (steps + 1, *SHAPE), dtype=np.uint8)
    ends = np.zeros(steps, dtype=bool)
    ends[-1:] = True
    return AgentTrajectory(
        observations=observations,
        actions=rng.integers(0, ACTIONS, steps).astype(np.int64),
        rewards=(seed * 1000 + rng.permutation(steps)) * 0.5,
        terminations=ends if end == "terminated" else np.zeros(steps, dtype=bool),
        truncations=ends if end == "truncated" else np.zeros(steps, dtype=bool),
        action_count=ACTIONS,
        infos={
            "ram": rng.integers(0, 256, (steps, 128), dtype=np.uint8),
            "frame_id": np.arange(1, steps + 1, dtype=np.uint32),
            "tick_time": 1000.0 + np.arange(steps) / 60,
            "client_frame": np.arange(steps, dtype=np.int64) - 2,
        },
    )


def _single(episode_id: str, seed: int, end: str, steps: int = STEPS) -> Episode:
    meta = {"_id": episode_id, "players": ["p1"], "score": np.int64(7)}
    return Episode(episode_id, "ALE/Pong-v5", meta, {"agent_0": _trajectory(seed, steps, end)}, "atari84")


def _duo(episode_id: str = "duo", seed: int = 3) -> Episode:
    first = _trajectory(seed, STEPS, "terminated")
    second = _trajectory(seed + 1, STEPS, "terminated", observations=first.observations)
    return Episode(episode_id, "ALE/Pong-v5", {"players": ["p1", "p2"]}, {"agent_0": first, "agent_1": second}, "atari84")


SINGLES = [_single("term", 1, "terminated"), _single("trunc", 2, "truncated")]
EMPTY = _single("empty", 5, "terminated", steps=0)
ALL = [*SINGLES, _duo(), EMPTY]
DUOS = [_duo(), _duo("duo2", 6)]


def _lazily(episodes: list[Episode]) -> Iterator[Episode]:
    """A generator, as a store loader would hand them over: no len, one at a time."""
    yield from episodes


def _assert_trajectory_equal(got: AgentTrajectory, want: AgentTrajectory) -> None:
    for name in ("observations", "actions", "rewards", "terminations", "truncations"):
        expected = getattr(want, name)
        value = np.asarray(getattr(got, name))
        assert value.shape == expected.shape and value.dtype == expected.dtype, name
        np.testing.assert_array_equal(value, expected, err_msg=name)


def test_npz_round_trip(tmp_path: Path) -> None:
    paths = export_npz(_lazily(ALL), tmp_path, progress=False)

    expected = {(e.episode_id, agent): (e, t) for e in ALL for agent, t in e.agents.items()}
    assert sorted(p.name for p in paths) == sorted(f"{i}__{a}.npz" for i, a in expected)
    for path in paths:
        loaded = load_npz(path)
        (agent, trajectory), = loaded.agents.items()
        episode, want = expected[(loaded.episode_id, agent)]
        _assert_trajectory_equal(trajectory, want)
        assert trajectory.infos.keys() == want.infos.keys()
        for name, values in want.infos.items():
            assert trajectory.infos[name].dtype == values.dtype
            np.testing.assert_array_equal(trajectory.infos[name], values)
        assert trajectory.action_count == ACTIONS
        assert (loaded.env_id, loaded.observation_format) == (episode.env_id, "atari84")
        assert loaded.meta == json.loads(json.dumps(episode.meta, default=int))
    with np.load(paths[0], allow_pickle=False) as archive:
        assert {"observations", "actions", "meta", "info_ram"} <= set(archive.files)


def _assert_minari_matches(dataset, episodes: list[tuple[Episode, AgentTrajectory]]) -> None:
    assert dataset.total_episodes == len(episodes)
    assert dataset.total_steps == sum(t.steps for _, t in episodes)
    assert dataset.observation_space.shape == SHAPE and dataset.action_space.n == ACTIONS
    for stored, (_episode, want) in zip(dataset.iterate_episodes(), episodes, strict=True):
        _assert_trajectory_equal(stored, want)
        for name, values in want.infos.items():
            assert len(stored.infos[name]) == want.steps + 1, name
            assert not np.any(stored.infos[name][0]), name
            np.testing.assert_array_equal(stored.infos[name][1:], values, err_msg=name)
    metas = list(dataset.storage.get_episode_metadata(dataset.episode_indices))
    assert [m["episode_id"] for m in metas] == [e.episode_id for e, _ in episodes]


def test_minari_single_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import minari

    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    dataset = export_minari(_lazily(SINGLES), "crowdplay/pong-v0", agent="agent_0", data_path=tmp_path, progress=False)
    assert "MINARI_DATASETS_PATH" not in os.environ

    assert dataset.id == "crowdplay/pong-v0"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    loaded = minari.load_dataset("crowdplay/pong-v0")
    _assert_minari_matches(loaded, [(e, e.agents["agent_0"]) for e in SINGLES])
    episodes = list(loaded.iterate_episodes())
    assert episodes[0].terminations[-1] and not episodes[0].truncations[-1]
    assert episodes[1].truncations[-1] and not episodes[1].terminations[-1]


def test_minari_one_dataset_per_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import minari

    datasets = export_minari(_lazily([*DUOS, EMPTY]), "crowdplay/all-v0", data_path=tmp_path, progress=False, author="tests")

    assert {agent: d.id for agent, d in datasets.items()} == {
        "agent_0": "crowdplay/all-agent_0-v0",
        "agent_1": "crowdplay/all-agent_1-v0",
    }
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    for agent in ("agent_0", "agent_1"):
        loaded = minari.load_dataset(f"crowdplay/all-{agent}-v0")
        _assert_minari_matches(loaded, [(e, e.agents[agent]) for e in DUOS])
    assert minari.load_dataset("crowdplay/all-agent_0-v0").storage.metadata["author"] == {"tests"}


def test_minari_keeps_a_single_agent_id_and_refuses_to_mix_with_multi_agent(tmp_path: Path) -> None:
    """A single-agent recording keeps the id as given (the default changed: it used to get the
    agent's name too); one agent in both kinds of recording would need two datasets at once."""
    datasets = export_minari(_lazily([*SINGLES, EMPTY]), "crowdplay/pong-v0", data_path=tmp_path, progress=False)
    assert {agent: d.id for agent, d in datasets.items()} == {"agent_0": "crowdplay/pong-v0"}
    with pytest.raises(ValueError, match="single-agent and multi-agent recordings"):
        export_minari(_lazily(ALL), "crowdplay/mixed-v0", data_path=tmp_path, progress=False)


def test_minari_refuses_mismatched_spaces(tmp_path: Path) -> None:
    odd = _single("odd", 9, "terminated")
    odd.agents["agent_0"].action_count = ACTIONS + 1
    with pytest.raises(ValueError, match="differ"):
        export_minari([SINGLES[0], odd], "crowdplay/odd-v0", agent="agent_0", data_path=tmp_path, progress=False)
    with pytest.raises(ValueError, match="jpeg_encoding"):  # 4 stacked frames are no image
        export_minari(SINGLES, "crowdplay/jpeg-v0", agent="agent_0", data_path=tmp_path, jpeg_encoding=True)


def _rows_by_reward(episodes: list[Episode], agent: str) -> dict[np.float32, tuple[AgentTrajectory, str, int]]:
    return {
        np.float32(reward): (episode.agents[agent], episode.episode_id, t)
        for episode in episodes
        if agent in episode.agents
        for t, reward in enumerate(episode.agents[agent].rewards)
    }


def test_rllib_layout_decodes_like_rllib(tmp_path: Path) -> None:
    from ray.rllib.core.columns import Columns
    from ray.rllib.utils.compression import unpack_if_needed

    assert export_rllib(_lazily(ALL), tmp_path, progress=False) == tmp_path

    assert sorted(p.name for p in (tmp_path / "agent_0").iterdir()) == ["duo.parquet", "term.parquet", "trunc.parquet"]
    assert sorted(p.name for p in (tmp_path / "agent_1").iterdir()) == ["duo.parquet"]
    for agent in ("agent_0", "agent_1"):
        table = pq.read_table(tmp_path / agent).to_pydict()
        rows = _rows_by_reward(ALL, agent)
        assert len(table[Columns.REWARDS]) == len(rows)
        for i, reward in enumerate(table[Columns.REWARDS]):
            trajectory, episode_id, t = rows[np.float32(reward)]
            assert table[Columns.EPS_ID][i] == episode_id and table[Columns.AGENT_ID][i] == agent
            assert table[Columns.T][i] == t
            np.testing.assert_array_equal(unpack_if_needed(table[Columns.OBS][i]), trajectory.observations[t])
            np.testing.assert_array_equal(unpack_if_needed(table[Columns.NEXT_OBS][i]), trajectory.observations[t + 1])
            assert table[Columns.ACTIONS][i] == trajectory.actions[t]
            assert table[Columns.TERMINATEDS][i] == trajectory.terminations[t]
            assert table[Columns.TRUNCATEDS][i] == trajectory.truncations[t]
            info = table[Columns.INFOS][i]
            np.testing.assert_array_equal(info["ram"], trajectory.infos["ram"][t])
            assert info["frame_id"] == trajectory.infos["frame_id"][t]


def test_rllib_bc_samples_the_export(tmp_path: Path, ray_session: None) -> None:
    """RLlib's own pipeline (OfflineData -> OfflinePreLearner -> learner connectors) reads it."""
    import gymnasium as gym

    export_rllib(_lazily(ALL), tmp_path, agent="agent_0", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["duo.parquet", "term.parquet", "trunc.parquet"]
    batch = bc_sample(tmp_path, gym.spaces.Box(0, 255, SHAPE, np.uint8), gym.spaces.Discrete(ACTIONS))

    rows = _rows_by_reward(ALL, "agent_0")
    assert len(batch["rewards"]) == 16
    for i, reward in enumerate(batch["rewards"]):
        trajectory, _, t = rows[np.float32(reward)]
        np.testing.assert_array_equal(batch["obs"][i], trajectory.observations[t])
        np.testing.assert_array_equal(batch["new_obs"][i], trajectory.observations[t + 1])
        assert batch["actions"][i] == trajectory.actions[t]
        assert batch["terminateds"][i] == trajectory.terminations[t]
        assert batch["truncateds"][i] == trajectory.truncations[t]


def test_ai_substitutes_flags_each_step_a_policy_played_without_its_own_answer() -> None:
    from crowdplay.data.loading import ai_substitutes

    policy, person = {"human": False, "policy": "p"}, {"human": True, "participant": "x"}
    rows = [[0, "a", "no answer yet"], [2, "a", None], [4, "a", "policy raised X"], [6, "a", None]]
    controllers = [policy] * 5 + [person] + [policy] * 2
    assert ai_substitutes(controllers, rows).tolist() == [True, True, False, False, True, False, False, False]
    assert ai_substitutes([policy, person], []).tolist() == [True, False]  # played before any answer: no answer yet
