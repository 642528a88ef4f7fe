"""Exports of any environment, from games really played and recorded here (no Ray).

A classic-control env (state Box), a toy-text env (Discrete observations), a Dict/Tuple
observation env and a PettingZoo parallel env are played and recorded into a store, then exported
with their own observations: Minari datasets carry the real environment spec (``recover_environment``
gives a working env with the dataset's spaces), keep a single agent's dataset id as given and name
a multi-agent recording's datasets per agent; npz and RLlib get the same observations. A pixel
export stays within a small factor of the store's own bytes for the same episodes.
"""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pyarrow.parquet as pq
import pytest

from crowdplay.data import Dataset
from crowdplay.data.exports import export_minari, export_npz, export_rllib, load_npz
from crowdplay.environments import EnvSpec, Keymap, list_envs, register_env
from crowdplay.inputs import ParticipantInput
from crowdplay.recording.store import TrajectoryStore
from tests.offline_rl import bc_sample
from tests.recorded_games import recorded_game

ARROWS = Keymap({"ArrowLeft": 0, "ArrowRight": 2}, noop=1)


class DictView(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """MountainCar's state as a Dict with a nested Tuple; recordable in its spec (constructor args)."""

    def __init__(self, env: gym.Env, scale: float = 1.0) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, scale=scale)
        gym.ObservationWrapper.__init__(self, env)
        self.scale = scale
        self.observation_space = gym.spaces.Dict(
            {
                "position": gym.spaces.Box(-1.2 * scale, 0.6 * scale, (1,), np.float32),
                "motion": gym.spaces.Tuple((gym.spaces.Box(-0.07, 0.07, (1,), np.float32), gym.spaces.Discrete(3))),
            }
        )

    def observation(self, observation):
        velocity = observation[1:2].astype(np.float32)
        return {
            "position": (observation[:1] * self.scale).astype(np.float32),
            "motion": (velocity, int(np.sign(velocity[0])) + 1),
        }


def _mountain_car() -> gym.Env:
    return gym.make("MountainCar-v0", render_mode="rgb_array")


def _kaz():
    from pettingzoo.butterfly import knights_archers_zombies_v11

    return knights_archers_zombies_v11.parallel_env(render_mode="rgb_array")


SPECS = [
    EnvSpec(id="ExportCar", title="car", description="d", fps=240, make_env=_mountain_car, keymap=ARROWS),
    EnvSpec(
        id="ExportLake", title="lake", description="d", fps=120, make_env=lambda: gym.make("FrozenLake-v1", render_mode="rgb_array"),
        keymap=Keymap({"ArrowLeft": 0, "ArrowDown": 1, "ArrowRight": 2, "ArrowUp": 3}), idle="repeat",
    ),
    EnvSpec(id="ExportDictCar", title="dict car", description="d", fps=240, make_env=lambda: DictView(_mountain_car()), keymap=ARROWS),
    EnvSpec(
        id="ExportKaz", title="kaz", description="d", make_env=_kaz,
        keymap=Keymap({"ArrowUp": 0, "ArrowDown": 1, "ArrowLeft": 2, "ArrowRight": 3, "Space": 4}, noop=5),
    ),
]
for _spec in SPECS:
    if _spec.id not in {known.id for known in list_envs()}:
        register_env(_spec)


async def _play(env_id: str, store: TrajectoryStore, seconds: float, actions: list[int], until_complete: bool) -> None:
    """Play ``env_id`` for ``seconds`` (longer, up to 20 s, until an episode is complete if asked),
    one action per 1/60 s for every agent, then end the game and let the last chunks be stored."""

    game = recorded_game(env_id, store)
    live = game.live
    start, seq = time.monotonic(), 0
    while live.stopped is None:
        elapsed = time.monotonic() - start
        if elapsed > 20 or (elapsed > seconds and not (until_complete and not store.find_episodes({"status": "complete"}))):
            break
        seq += 1
        for agent in game.agents:
            live.submit(agent, ParticipantInput.choosing(actions[seq % len(actions)], live.frame_id, seq))
        await asyncio.sleep(1 / 60)
    await game.end()


def _record(directory: Path, env_id: str, seconds: float, actions: list[int], until_complete: bool = False) -> Dataset:
    store = TrajectoryStore.open(str(directory / f"{env_id}.db"))
    asyncio.run(_play(env_id, store, seconds, actions, until_complete))
    return Dataset(store)


@pytest.fixture(scope="module")
def car(tmp_path_factory) -> Dataset:
    """MountainCar: at least one whole 200-step episode (its time limit) and the one cut short."""
    with _record(tmp_path_factory.mktemp("car"), "ExportCar", 1.0, [0, 0, 2, 2, 2], until_complete=True) as data:
        yield data


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Dataset:
    with _record(tmp_path_factory.mktemp("lake"), "ExportLake", 0.7, [1, 2, 2, 1, 0, 3]) as data:
        yield data


@pytest.fixture(scope="module")
def dict_car(tmp_path_factory) -> Dataset:
    with _record(tmp_path_factory.mktemp("dict"), "ExportDictCar", 0.6, [0, 2, 2]) as data:
        yield data


@pytest.fixture(scope="module")
def kaz(tmp_path_factory) -> Dataset:
    with _record(tmp_path_factory.mktemp("kaz"), "ExportKaz", 0.5, [0, 2, 4, 5]) as data:
        yield data


def _with_steps(data: Dataset) -> list[str]:
    return [info["_id"] for info in data.episodes() if info.get("steps")]


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return set(a) == set(b) and all(_equal(a[key], b[key]) for key in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def _check_against_store(dataset, data: Dataset, ids: list[str], agent: str = "agent_0", observations: str = "env") -> None:
    """Every exported episode is the stored one: observations in their space, actions, rewards, ends."""
    assert dataset.total_episodes == len(ids)
    for stored, episode_id in zip(dataset.iterate_episodes(), ids, strict=True):
        want = data.load(episode_id, observations=observations).agents[agent]
        assert _equal(stored.observations, want.observations)
        np.testing.assert_array_equal(stored.actions, want.actions)
        np.testing.assert_array_equal(stored.rewards, want.rewards)
        np.testing.assert_array_equal(stored.terminations, want.terminations)
        np.testing.assert_array_equal(stored.truncations, want.truncations)
        assert [json.loads(text) for text in stored.infos["env_info"][1:]] == want.env_infos


def _load_minari(root: Path, dataset_id: str, monkeypatch: pytest.MonkeyPatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return minari.load_dataset(dataset_id)


def _recover_and_play(dataset) -> gym.Env:
    """The dataset's environment, rebuilt from its spec, resets and steps with the dataset's spaces."""
    env = dataset.recover_environment()
    observation, _ = env.reset(seed=0)
    assert dataset.observation_space.contains(observation)
    observation, *_ = env.step(dataset.action_space.sample())
    assert dataset.observation_space.contains(observation)
    assert env.observation_space == dataset.observation_space and env.action_space == dataset.action_space
    env.close()
    return env


# ----------------------------------------------------------------- Minari, single agent
def test_a_classic_control_env_exports_its_state_and_its_real_spec(car, tmp_path, monkeypatch):
    ids = _with_steps(car)
    assert any(info.get("status") == "complete" for info in car.episodes())
    returned = export_minari(car.iter_load(ids), "crowdplay/car-v0", data_path=tmp_path, progress=False)

    assert {agent: dataset.id for agent, dataset in returned.items()} == {"agent_0": "crowdplay/car-v0"}  # as given
    dataset = _load_minari(tmp_path, "crowdplay/car-v0", monkeypatch)
    assert dataset.env_spec.id == "MountainCar-v0" and dataset.env_spec.kwargs["render_mode"] == "rgb_array"
    assert dataset.observation_space == gym.make("MountainCar-v0").observation_space == car.load(ids[0]).observation_space("agent_0")
    assert dataset.action_space == gym.spaces.Discrete(3)
    _check_against_store(dataset, car, ids)
    _recover_and_play(dataset)
    metadata = dataset.storage.metadata
    assert metadata["crowdplay_env_id"] == "ExportCar" and metadata["crowdplay_observation_format"] == "env"
    assert json.loads(metadata["crowdplay_env_origin"]["gymnasium_spec"])["id"] == "MountainCar-v0"
    [first] = dataset.storage.get_episode_metadata([0])
    assert first["episode_id"] == ids[0] and first["observation_space"]["type"] == "Box"


def test_a_toy_text_env_exports_discrete_observations(lake, tmp_path, monkeypatch):
    ids = _with_steps(lake)
    export_minari(lake.iter_load(ids), "crowdplay/lake-v0", data_path=tmp_path, progress=False)

    dataset = _load_minari(tmp_path, "crowdplay/lake-v0", monkeypatch)
    assert dataset.observation_space == gym.spaces.Discrete(16) and dataset.action_space == gym.spaces.Discrete(4)
    assert dataset.env_spec.id == "FrozenLake-v1"
    _check_against_store(dataset, lake, ids)
    assert next(dataset.iterate_episodes()).observations.dtype == np.int64
    _recover_and_play(dataset)


def test_dict_and_tuple_observations_are_minari_dict_and_tuple_spaces_with_the_wrapper_in_the_spec(dict_car, tmp_path, monkeypatch):
    ids = _with_steps(dict_car)
    export_minari(dict_car.iter_load(ids), "crowdplay/dict-car-v0", data_path=tmp_path, progress=False)

    dataset = _load_minari(tmp_path, "crowdplay/dict-car-v0", monkeypatch)
    assert dataset.observation_space == DictView(_mountain_car()).observation_space
    [wrapper] = dataset.env_spec.additional_wrappers
    assert wrapper.entry_point.endswith(":DictView") and wrapper.kwargs == {"scale": 1.0}
    _check_against_store(dataset, dict_car, ids)
    episode = next(dataset.iterate_episodes())
    assert isinstance(episode.observations["motion"], tuple) and episode.observations["motion"][1].dtype == np.int64
    _recover_and_play(dataset)


def test_pixels_only_when_asked_and_compressed_within_5x_of_the_store(car, tmp_path, monkeypatch):
    """The episodes' data stays within 5x the store's bytes for them. Minari's format adds one fixed
    cost per dataset: its metadata.json spells the Box's bounds out element by element (6.7 MB for
    a 600x400 RGB screen, whatever the number of episodes); the export adds nothing beyond it."""
    from minari.serialization import serialize_space

    ids = _with_steps(car)
    export_minari(car.iter_load(ids, observations="rgb"), "crowdplay/car-pixels-v0", data_path=tmp_path, progress=False)

    dataset = _load_minari(tmp_path, "crowdplay/car-pixels-v0", monkeypatch)
    assert dataset.observation_space == gym.spaces.Box(0, 255, (400, 600, 3), np.uint8)
    # The env that made them, observing its screen: recover_environment() sees what the dataset holds.
    assert dataset.env_spec.id == "MountainCar-v0" and dataset.env_spec.additional_wrappers[-1].name == "AddRenderObservation"
    env = _recover_and_play(dataset)
    first_screen, _ = env.reset(seed=car.episode(ids[0])["seed"])
    steps = dataset.total_steps
    store_bytes = sum(len(chunk["data"]) for episode_id in ids for chunk in car.store.iter_chunks(episode_id))
    data_path = Path(dataset.storage.data_path)
    export_bytes = sum(path.stat().st_size for path in data_path.rglob("*") if path.is_file())
    metadata_bytes = (data_path / "metadata.json").stat().st_size
    minari_space_bytes = len(serialize_space(dataset.observation_space))
    raw_bytes = (steps + len(ids)) * 400 * 600 * 3
    print(
        f"\nMountainCar rgb, {len(ids)} episodes, {steps} steps: store {store_bytes:,} B; Minari export {export_bytes:,} B = "
        f"episodes {export_bytes - metadata_bytes:,} B (ratio {(export_bytes - metadata_bytes) / store_bytes:.2f}) + dataset "
        f"metadata.json {metadata_bytes:,} B, {minari_space_bytes:,} B of it Minari's observation space; "
        f"uncompressed screens {raw_bytes:,} B"
    )
    assert export_bytes - metadata_bytes < 5 * store_bytes
    assert metadata_bytes - minari_space_bytes < 20_000
    first = next(dataset.iterate_episodes())
    assert np.array_equal(first.observations, car.load(ids[0], observations="rgb").agents["agent_0"].observations)  # lossless
    assert np.array_equal(first.observations[0], first_screen)


def test_the_command_line_exports_env_observations_under_the_id_given(car, tmp_path, monkeypatch, capsys):
    from crowdplay.cli import build_parser

    args = build_parser().parse_args(
        ["data", "export", "--format", "minari", "--out", str(tmp_path), "--dataset-id", "lab/car-v1", "--quiet"]
    )
    assert args.observations == "env"
    assert args.data_run(car, args) == 0
    out = capsys.readouterr().out
    assert "wrote Minari dataset lab/car-v1:" in out and "env_spec MountainCar-v0" in out
    assert _load_minari(tmp_path, "lab/car-v1", monkeypatch).observation_space.shape == (2,)


# ----------------------------------------------------------------- Minari, PettingZoo
def test_a_pettingzoo_env_exports_one_dataset_per_agent_without_env_spec(kaz, tmp_path, monkeypatch):
    ids = _with_steps(kaz)
    agents = ["archer_0", "archer_1", "knight_0", "knight_1"]
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        returned = export_minari(kaz.iter_load(ids), "crowdplay/kaz-v0", data_path=tmp_path, progress=False)
    assert not [w for w in warned if "env_spec" in str(w.message)]  # expected for PettingZoo: no warning

    assert {agent: dataset.id for agent, dataset in returned.items()} == {agent: f"crowdplay/kaz-{agent}-v0" for agent in agents}
    for agent in agents:
        dataset = _load_minari(tmp_path, f"crowdplay/kaz-{agent}-v0", monkeypatch)
        assert dataset.env_spec is None
        assert dataset.observation_space == _kaz().observation_space(agent) == gym.spaces.Box(-1.0, 1.0, (27, 5), np.float64)
        metadata = dataset.storage.metadata
        assert metadata["crowdplay_env_origin"]["name"] == "knights_archers_zombies_v11" and metadata["crowdplay_agent"] == agent
        assert "knights_archers_zombies_v11" in metadata["description"] and "one dataset per agent" in metadata["description"]
        _check_against_store(dataset, kaz, ids, agent)


# ----------------------------------------------------------------- npz and RLlib
def test_npz_keeps_env_observations_and_flattens_dict_ones(car, dict_car, tmp_path):
    [path] = export_npz(car.iter_load(_with_steps(car)[:1]), tmp_path / "car", progress=False)
    with np.load(path, allow_pickle=False) as archive:
        assert archive["observations"].dtype == np.float32 and archive["observations"].shape[1:] == (2,)
        assert json.loads(str(archive["meta"]))["observation_space"]["type"] == "Box"

    ids = _with_steps(dict_car)
    paths = export_npz(dict_car.iter_load(ids), tmp_path / "dict", progress=False)
    with np.load(paths[0], allow_pickle=False) as archive:
        assert {"observations/position", "observations/motion/0", "observations/motion/1"} <= set(archive.files)
        assert "observations" not in archive.files
    for path, episode_id in zip(paths, ids, strict=True):
        loaded = load_npz(path)
        want = dict_car.load(episode_id).agents["agent_0"]
        got = loaded.agents["agent_0"]
        assert _equal(got.observations, want.observations) and got.env_infos == want.env_infos
        assert loaded.observation_space("agent_0") == DictView(_mountain_car()).observation_space


def test_rllib_rows_carry_each_steps_observation_in_its_space(dict_car, kaz, tmp_path):
    from ray.rllib.core.columns import Columns
    from ray.rllib.utils.compression import unpack_if_needed

    ids = _with_steps(dict_car)
    export_rllib(dict_car.iter_load(ids), tmp_path / "dict", agent="agent_0", progress=False)
    table = pq.read_table(tmp_path / "dict" / f"{ids[0]}.parquet").to_pydict()
    want = dict_car.load(ids[0]).agents["agent_0"]
    for t in (0, want.steps - 1):
        obs, new_obs = unpack_if_needed(table[Columns.OBS][t]), unpack_if_needed(table[Columns.NEXT_OBS][t])
        assert _equal(obs, {"position": want.observations["position"][t], "motion": tuple(part[t] for part in want.observations["motion"])})
        assert _equal(new_obs["position"], want.observations["position"][t + 1])
        assert json.loads(table[Columns.INFOS][t]["env_info"]) == want.env_infos[t]

    kaz_ids = _with_steps(kaz)
    export_rllib(kaz.iter_load(kaz_ids), tmp_path / "kaz", progress=False)
    assert sorted(p.name for p in (tmp_path / "kaz").iterdir()) == ["archer_0", "archer_1", "knight_0", "knight_1"]
    table = pq.read_table(tmp_path / "kaz" / "knight_1").to_pydict()
    knight = kaz.load(kaz_ids[0]).agents["knight_1"]
    first = unpack_if_needed(table[Columns.OBS][0])
    assert first.shape == (27, 5) and first.dtype == np.float64 and np.array_equal(first, knight.observations[0])


def test_rllib_reads_a_state_env_export_through_its_offline_pipeline(car, tmp_path, ray_session):
    """BC's OfflineData -> OfflinePreLearner samples the MountainCar export: float32 states."""
    ids = _with_steps(car)
    export_rllib(car.iter_load(ids), tmp_path, agent="agent_0", progress=False)
    batch = bc_sample(tmp_path, gym.make("MountainCar-v0").observation_space, gym.spaces.Discrete(3))

    transitions = set()  # (state, next state, action): a state at the left wall may repeat
    for episode_id in ids:
        trajectory = car.load(episode_id).agents["agent_0"]
        observations = trajectory.observations
        transitions |= {(observations[t].tobytes(), observations[t + 1].tobytes(), int(trajectory.actions[t])) for t in range(trajectory.steps)}
    assert len(batch["obs"]) == 16
    for obs, new_obs, action in zip(batch["obs"], batch["new_obs"], batch["actions"]):
        assert obs.dtype == np.float32 and obs.shape == (2,)
        assert (np.asarray(obs).tobytes(), np.asarray(new_obs).tobytes(), int(action)) in transitions
