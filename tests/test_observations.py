"""The environment's own observations, recorded for any Gymnasium space and read back in it.

Spaces as data (described, rebuilt, split into leaves and joined again) on their own; then real
games recorded in this process (no Ray) with environments whose every observation is also kept
by a wrapper, so what ``Dataset.load`` gives back is compared with what the environment returned,
step by step. Atari stores nothing twice. Bad spaces and observations fail with the environment's
name, and nothing recorded before is lost.
"""

from __future__ import annotations

import asyncio
import json

import gymnasium as gym
import numpy as np
import pytest

from crowdplay.data import Dataset
from crowdplay.environments import EnvSpec, Keymap, register_env
from crowdplay.environments.parallel_adapter import make_adapter
from crowdplay.environments.spaces import Leaves, ObservationOutsideSpace, UnrecordableSpace, assemble, describe, json_part, leaves, rebuild
from crowdplay.lineup import Lineup
from crowdplay.realtime import LiveEnv
from crowdplay.recording.chunk import unpack_chunk
from crowdplay.recording.store import TrajectoryStore
from tests.recorded_games import recorded_game

NESTED = gym.spaces.Dict(
    {
        "position": gym.spaces.Box(-5, 5, (2,), np.int16),
        "cell": gym.spaces.Discrete(16, start=-3),
        "switches": gym.spaces.MultiBinary(3),
        "inventory": gym.spaces.Tuple((gym.spaces.MultiDiscrete([3, 4]), gym.spaces.Box(0.0, 1.0, (2, 2), np.float64))),
    }
)
SPACES = {
    "box_float32": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
    "box_uint8_image": gym.spaces.Box(0, 255, (4, 5, 3), np.uint8),
    "box_bool": gym.spaces.Box(0, 1, (2,), np.bool_),
    "box_bounds_per_element": gym.spaces.Box(np.array([0.0, -1.0]), np.array([1.0, 2.0]), dtype=np.float64),
    "discrete": gym.spaces.Discrete(5),
    "multi_discrete_2d": gym.spaces.MultiDiscrete([[2, 3], [4, 5]]),
    "multi_binary_2d": gym.spaces.MultiBinary([2, 3]),
    "nested": NESTED,
}


# ----------------------------------------------------------------- spaces as data
@pytest.mark.parametrize("name", SPACES)
def test_every_recordable_space_survives_json_and_its_samples_split_and_join(name):
    space = SPACES[name]
    space.seed(3)
    description = json.loads(json.dumps(describe(space)))  # as stored
    assert rebuild(description) == space
    split = Leaves(description)
    samples = [space.sample() for _ in range(4)]
    columns = {leaf.path: np.stack([split.split(sample)[index] for sample in samples]) for index, leaf in enumerate(split.columns)}
    joined = assemble(description, columns)
    for index, sample in enumerate(samples):
        assert rebuild(description).contains(pick(joined, index))
        assert equal(pick(joined, index), sample)


def pick(value, index):
    if isinstance(value, dict):
        return {key: pick(sub, index) for key, sub in value.items()}
    if isinstance(value, tuple):
        return tuple(pick(sub, index) for sub in value)
    return value[index]


def equal(a, b) -> bool:
    if isinstance(a, dict):
        return set(a) == set(b) and all(equal(a[key], b[key]) for key in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_leaves_of_a_nested_space_are_named_by_their_path():
    assert [(leaf.path, leaf.shape, leaf.dtype.name) for leaf in leaves(describe(NESTED))] == [
        ("cell", (), "int64"), ("inventory/0", (2,), "int64"), ("inventory/1", (2, 2), "float64"),
        ("position", (2,), "int16"), ("switches", (3,), "int8"),
    ]


def test_observations_outside_their_space_and_spaces_without_fixed_shape_are_refused():
    split = Leaves(describe(NESTED))
    good = NESTED.sample()
    with pytest.raises(ObservationOutsideSpace, match=r"observation 'position' has shape \(3,\), its space \(2,\)"):
        split.split({**good, "position": np.zeros(3, np.int16)})
    with pytest.raises(ObservationOutsideSpace, match="must be a dict with keys"):
        split.split({key: value for key, value in good.items() if key != "cell"})
    with pytest.raises(ObservationOutsideSpace, match="has dtype float64, its space int16"):
        split.split({**good, "position": np.zeros(2)})
    assert split.split({**good, "position": [1, 2]})[3].dtype == np.int16  # plain ints fit an int Box
    for space in (gym.spaces.Text(5), gym.spaces.Sequence(gym.spaces.Discrete(2)), gym.spaces.Dict({"t": gym.spaces.Text(3)})):
        with pytest.raises(UnrecordableSpace, match="has no fixed shape per step"):
            describe(space)


def test_the_json_part_of_an_info():
    info = {
        "lives": np.int64(3), "ratio": np.float32(0.5), "name": "level-1", "nan": float("nan"), "small": np.arange(3),
        "big": np.zeros(100), "nested": {"a": [1, {"b": object()}]}, "object": object(), 7: True,
    }
    assert json_part(info) == {"lives": 3, "ratio": 0.5, "name": "level-1", "small": [0, 1, 2], "nested": {"a": [1, {}]}, "7": True}


# ----------------------------------------------------------------- recording real games
class Kept(gym.Wrapper):
    """Keeps every observation and info the environment returns (the ground truth), one list per
    episode in ``Kept.episodes``."""

    episodes: list[list] = []

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        Kept.episodes.append([(observation, info)])
        return observation, info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        Kept.episodes[-1].append((observation, info))
        return observation, reward, terminated, truncated, info


class Dungeon(gym.Env):
    """A small env with a nested Dict observation and changing infos, rendered as RGB."""

    metadata = {"render_modes": ["rgb_array"]}
    observation_space = NESTED
    action_space = gym.spaces.Discrete(3)

    def __init__(self, render_mode: str = "rgb_array", bad_after: int | None = None) -> None:
        self.render_mode = render_mode
        self.bad_after = bad_after

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._observation(), {"start": (options or {}).get("level", 0), "array": np.ones(2)}

    def step(self, action):
        self.t += 1
        observation = self._observation()
        if self.bad_after is not None and self.t > self.bad_after:
            observation["position"] = np.zeros(3, np.int16)
        info = {"t": self.t, "odd": True} if self.t % 2 else {"unjsonable": object()}
        return observation, float(action), False, self.t >= 90, info

    def _observation(self):
        self.observation_space.seed(int(self.np_random.integers(1 << 30)))
        return self.observation_space.sample()

    def render(self):
        return np.full((6, 8, 3), self.t % 255, np.uint8)


async def play(env_id: str, store: TrajectoryStore, seconds: float, actions=None) -> tuple[LiveEnv, Lineup]:
    """A real game of ``env_id`` recording into ``store``, played for ``seconds`` (actions
    from ``actions``, one per tick), then ended by the researcher unless it ended itself."""

    game = recorded_game(env_id, store)
    await game.play(int(seconds * 60), actions or [None])
    return game.live, game.lineup


def test_a_nested_dict_observation_is_recorded_every_step_and_loaded_in_its_space(tmp_path):
    register_env(EnvSpec(
        id="Dungeon", title="Dungeon", description="d", make_env=lambda: Kept(Dungeon()), keymap=Keymap({"ArrowUp": 1}, noop=0),
        reset_options={"level": 4},
    ))
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))
    asyncio.run(play("Dungeon", store, 2.0, actions=[0, 1, 2]))
    with Dataset(store) as data:
        [first, second] = data.episodes()
        assert first["status"] == "complete" and first["steps"] == 90 and second["status"] == "interrupted"
        assert rebuild(first["observation_spaces"]["agent_0"]) == NESTED  # the space, without the env
        assert first["action_labels"] == {"agent_0": ["0", "1", "2"]} and first["idle"] == {"agent_0": "noop"}
        assert first["reset_infos"] == {"agent_0": {"start": 4, "array": [1.0, 1.0]}} and first["reset_options"] == {"level": 4}
        episode = data.load(first["_id"])
        trajectory = episode.agents["agent_0"]
        assert episode.observation_format == "env" and episode.observation_space("agent_0") == NESTED
        assert set(trajectory.observations) == set(NESTED.spaces)
        assert trajectory.observations["inventory"][1].shape == (91, 2, 2)
        # Sessions started later in the same game continue the env: the second episode's reset
        # is the last one the wrapper kept.
        replayed = make_adapter(EnvSpec(id="Again", title="t", description="d", make_env=lambda: Kept(Dungeon()), keymap=Keymap({"ArrowUp": 1}, noop=0)))
        Kept.episodes = []
        replayed.reset(first["seed"], first["reset_options"])
        for action in trajectory.actions:
            replayed.step({"agent_0": int(action)})
        truth = Kept.episodes[0]
        assert len(truth) == 91
        for step, (observation, _info) in enumerate(truth):
            assert equal(pick(trajectory.observations, step), observation), step
            if step:
                assert trajectory.env_infos[step - 1] == ({"t": step, "odd": True} if step % 2 else {})
        assert np.array_equal(trajectory.rewards, trajectory.actions.astype(float))
        assert data.load(first["_id"], observations="rgb").agents["agent_0"].observations.shape == (91, 6, 8, 3)  # the frames too
        later = data.load(second["_id"]).agents["agent_0"]
        assert later.observations["position"].shape[0] == later.steps + 1


@pytest.mark.parametrize("gym_id, space_type", [("FrozenLake-v1", gym.spaces.Discrete), ("Acrobot-v1", gym.spaces.Box), ("Taxi-v3", gym.spaces.Discrete)])
def test_gymnasium_envs_record_their_own_observations(tmp_path, gym_id, space_type):
    env_id = gym_id.replace("-", "_")
    register_env(EnvSpec(
        id=env_id, title=gym_id, description="d", make_env=lambda: Kept(gym.make(gym_id, render_mode="rgb_array")),
        keymap=Keymap({"ArrowLeft": 0, "ArrowRight": 1}), idle="repeat",
    ))
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))
    Kept.episodes = []
    asyncio.run(play(env_id, store, 1.5, actions=[0, 0, 1, 1, 1]))
    returned = [episode for episode in Kept.episodes if len(episode) > 1]  # one without a step is not stored
    with Dataset(store) as data:
        stored = data.episodes()
        assert len(stored) == len(returned) >= 1
        for info, truth in zip(stored, returned):
            episode = data.load(info["_id"])
            trajectory = episode.agents["agent_0"]
            space = episode.observation_space("agent_0")
            assert isinstance(space, space_type) and trajectory.observations.dtype == space.dtype
            assert np.array_equal(trajectory.observations, np.stack([np.asarray(observation) for observation, _ in truth]))
            assert all(space.contains(observation) for observation in trajectory.observations)
            assert json.loads(info["env_origin"]["gymnasium_spec"])["id"] == gym_id  # what rebuilds the env


def test_atari_stores_its_screen_once_and_loads_it_as_rgb(tmp_path):
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))
    asyncio.run(play("Pong", store, 1.0))
    with Dataset(store) as data:
        [info] = data.episodes()
        assert "observation_spaces" not in info and info["env_origin"]["module"].startswith("ale_py")
        for document in store.iter_chunks(info["_id"]):
            assert not [name for name in unpack_chunk(document["data"]) if name.startswith("obs")]
        episode = data.load(info["_id"])
        assert episode.observation_format == "rgb" and episode.agents["agent_0"].observations.shape[1:] == (210, 160, 3)


# ----------------------------------------------------------------- bad environments
def test_a_space_that_cannot_be_recorded_fails_the_game_naming_the_env_and_agent():
    class Chatty(Dungeon):
        observation_space = gym.spaces.Dict({"said": gym.spaces.Text(10)})

    spec = EnvSpec(id="Chatty", title="c", description="d", make_env=Chatty, keymap=Keymap({"ArrowUp": 1}, noop=0))
    with pytest.raises(UnrecordableSpace, match="environment 'Chatty', agent 'agent_0': observation space Dict"):
        make_adapter(spec)


def test_an_observation_outside_its_space_at_reset_fails_the_start_naming_the_env(tmp_path):
    class Liar(Dungeon):
        def reset(self, *, seed=None, options=None):
            observation, info = super().reset(seed=seed, options=options)
            return {**observation, "cell": "three"}, info

    register_env(EnvSpec(id="Liar", title="l", description="d", make_env=Liar, keymap=Keymap({"ArrowUp": 1}, noop=0)))
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))
    with pytest.raises(ObservationOutsideSpace, match="environment 'Liar', agent 'agent_0': the observation reset returned is outside its space"):
        asyncio.run(play("Liar", store, 0.1))
    assert store.find_episodes({}) == []


def test_an_observation_outside_its_space_during_play_ends_that_game_and_keeps_what_was_recorded(tmp_path):
    register_env(EnvSpec(id="Breaks", title="b", description="d", make_env=lambda: Dungeon(bad_after=70), keymap=Keymap({"ArrowUp": 1}, noop=0)))
    register_env(EnvSpec(id="Fine", title="f", description="d", make_env=Dungeon, keymap=Keymap({"ArrowUp": 1}, noop=0)))
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))

    async def both() -> tuple[LiveEnv, LiveEnv]:
        (broken, _), (fine, _) = await asyncio.gather(play("Breaks", store, 2.0), play("Fine", store, 2.0))
        return broken, fine

    broken, fine = asyncio.run(both())
    assert broken.stopped.startswith("the environment failed: environment 'Breaks', agent 'agent_0': the observation step returned is outside its space")
    assert fine.stopped == "the researcher ended this session" and fine.episodes.steps > 0  # the other game played on
    with Dataset(store) as data:
        [episode] = data.episodes(env="Breaks")
        assert episode["status"] == "interrupted" and episode["reason"] == broken.stopped
        loaded = data.load(episode["_id"]).agents["agent_0"]
        assert loaded.steps == 70 and loaded.observations["position"].shape == (71, 2)
