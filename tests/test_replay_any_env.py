"""Replay check for every environment: real games recorded in-process through the real recording
path (LiveEnv, Recorder, ChunkBatcher, the embedded store), then replayed from their seed and
actions and compared with the recording (observations, rewards, flags, frames).

The environments are registered when this module is imported, so the command-line test loads it
as the plugin (``CROWDPLAY_PLUGINS=tests.test_replay_any_env``) to replay the same games."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from pettingzoo import ParallelEnv

from crowdplay.data import Dataset, replay_check
from crowdplay.data.replay_check import FLOAT_ATOL, FLOAT_RTOL, MATCH, MISMATCH, NOT_REPLAYABLE, RESET
from crowdplay.environments import EnvSpec, Keymap, register_env
from crowdplay.realtime import LiveEnv
from crowdplay.recording.chunk import pack_chunk, unpack_chunk
from crowdplay.recording.store import TrajectoryStore
from tests.recorded_games import recorded_game

ROOT = Path(__file__).resolve().parent.parent
ARROWS = Keymap({"ArrowLeft": 0, "ArrowDown": 1, "ArrowRight": 2, "ArrowUp": 3})
THREE = Keymap({"ArrowLeft": 0, "ArrowRight": 2}, noop=1)


# ----------------------------------------------------------------- environments
class LakeDict(gym.ObservationWrapper):
    """FrozenLake seen as a Dict: the cell, its row and column, and the distance to the goal."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({
            "cell": gym.spaces.Discrete(16),
            "where": gym.spaces.Dict({"row_col": gym.spaces.Box(0, 3, (2,), np.int64), "distance": gym.spaces.Box(0.0, 10.0, (), np.float32)}),
            "tuple": gym.spaces.Tuple((gym.spaces.MultiBinary(4), gym.spaces.Discrete(2))),
        })

    def observation(self, observation):
        row, col = divmod(int(observation), 4)
        return {
            "cell": int(observation),
            "where": {"row_col": np.array([row, col], np.int64), "distance": np.float32(np.hypot(3 - row, 3 - col))},
            "tuple": (np.array([row == 0, row == 3, col == 0, col == 3], np.int8), int(observation) % 2),
        }


class Dice(gym.Env):
    """A toy environment with unseeded randomness in ``reset`` or in ``step`` (never replayable)."""

    metadata = {"render_modes": ["rgb_array"]}
    observation_space = gym.spaces.Box(-1000.0, 1000.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def __init__(self, noisy: str) -> None:
        self.noisy, self.render_mode, self.state = noisy, "rgb_array", np.zeros(2, np.float32)
        self.system = random.SystemRandom()  # the operating system's entropy: no seed reaches it

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = self.np_random.normal(size=2).astype(np.float32)
        if self.noisy == "reset":
            self.state[1] = self.system.random()
        return self.state.copy(), {}

    def step(self, action):
        self.state = (self.state + (int(action) - 1) + (self.system.random() if self.noisy == "step" else 0.0)).astype(np.float32)
        return self.state.copy(), float(self.state[0]), False, False, {}

    def render(self):
        return np.full((8, 8, 3), int(abs(self.state[0]) * 10) % 256, np.uint8)


class Forgetful(gym.Env):
    """Seeded, but ``reset`` does not clear its count of every step it ever took, which it
    observes: a game's later episodes depend on the episodes before them. Episodes last 5 steps."""

    metadata = {"render_modes": ["rgb_array"]}
    observation_space = gym.spaces.Box(-1000.0, 1000.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def __init__(self) -> None:
        self.render_mode, self.total, self.t, self.value = "rgb_array", 0, 0, 0.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.value = 0, float(self.np_random.normal())
        return np.array([self.value, self.total], np.float32), {}

    def step(self, action):
        self.t, self.total, self.value = self.t + 1, self.total + 1, self.value + int(action) - 1
        return np.array([self.value, self.total], np.float32), 1.0, self.t >= 5, False, {}

    def render(self):
        return np.full((4, 4, 3), self.total % 256, np.uint8)


class Relay(ParallelEnv):
    """Two runners; ``runner_0`` is done after 5 steps and the other runs on: the done one is not
    stepped and keeps its last observation."""

    metadata = {"name": "relay_v0", "render_modes": ["rgb_array"]}
    possible_agents = ["runner_0", "runner_1"]

    def __init__(self) -> None:
        self.agents: list[str] = []
        self.render_mode = "rgb_array"
        self.position = {agent: np.zeros(2, np.float32) for agent in self.possible_agents}

    def observation_space(self, agent):
        return gym.spaces.Box(-1000.0, 1000.0, (2,), np.float32)

    def action_space(self, agent):
        return gym.spaces.Discrete(3)

    def reset(self, seed=None, options=None):
        self.rng = np.random.default_rng(seed)
        self.agents, self.t = list(self.possible_agents), 0
        self.position = {agent: self.rng.normal(size=2).astype(np.float32) for agent in self.agents}
        return {agent: self.position[agent].copy() for agent in self.agents}, {agent: {} for agent in self.agents}

    def step(self, actions):
        assert set(actions) == set(self.agents), "a done agent was stepped"
        self.t += 1
        for agent, action in actions.items():
            self.position[agent] = (self.position[agent] + (int(action) - 1) * 0.5 + self.rng.normal(scale=0.1, size=2)).astype(np.float32)
        observations = {agent: self.position[agent].copy() for agent in self.agents}
        rewards = {agent: float(self.position[agent][0]) for agent in self.agents}
        terminations = {agent: agent == "runner_0" and self.t >= 5 for agent in self.agents}
        truncations = {agent: False for agent in self.agents}
        self.agents = [agent for agent in self.agents if not terminations[agent]]
        return observations, rewards, terminations, truncations, {agent: {} for agent in observations}

    def render(self):
        frame = np.zeros((16, 16, 3), np.uint8)
        for index, agent in enumerate(self.possible_agents):
            x, y = (np.clip(self.position[agent], -4, 3.9) + 4).astype(int) * 2
            frame[y, x, index] = 255
        return frame


def knights():
    from pettingzoo.butterfly import knights_archers_zombies_v11

    return knights_archers_zombies_v11.parallel_env(render_mode="rgb_array")


def _spec(env_id: str, make_env, keymap=THREE, **options) -> EnvSpec:
    return register_env(EnvSpec(id=env_id, title=env_id, description="replay test", make_env=make_env, keymap=keymap, **options))


ACROBOT = _spec("ReplayAcrobot", lambda: gym.make("Acrobot-v1", render_mode="rgb_array"))
LAKE = _spec("ReplayLake", lambda: gym.make("FrozenLake-v1", render_mode="rgb_array"), ARROWS, mode="wait_for_key", idle="wait")
DICT_LAKE = _spec(
    "ReplayDictLake", lambda: LakeDict(gym.make("FrozenLake-v1", render_mode="rgb_array", is_slippery=False)), ARROWS, idle="repeat",
    reset_options={"unused": 1},
)
KNIGHTS = _spec("ReplayKnights", knights, Keymap({"ArrowUp": 0, "ArrowDown": 1, "ArrowLeft": 2, "ArrowRight": 3, "Space": 4}, noop=5))
RELAY = _spec("ReplayRelay", Relay)
DICE_STEP = _spec("ReplayDiceStep", lambda: Dice("step"))
DICE_RESET = _spec("ReplayDiceReset", lambda: Dice("reset"))
FORGETFUL = _spec("ReplayForgetful", Forgetful)
DECLARED = _spec("ReplayDeclared", lambda: Dice("none"), replayable="it reads a sensor")

#: env id -> (ticks played, the actions submitted in turn: one per tick, None skips a tick)
GAMES = {
    "ReplayAcrobot": (100, [0, 0, 2, 2, 2, 1, 1]),
    "ReplayLake": (80, [1, None, 2, None, 2, 1, None, 3, 0]),
    "ReplayDictLake": (60, [0, 3, 2, 0, 3, 2, 2, 0, 0]),  # along the top row, clear of the holes
    "ReplayKnights": (40, [0, 2, 4, 4, 3, 5, 1]),
    "ReplayRelay": (40, [0, 2, 2, 1]),
    "ReplayDiceStep": (20, [0, 2]),
    "ReplayDiceReset": (20, [0, 2]),
    "ReplayDeclared": (20, [0, 2]),
    "ReplayForgetful": (40, [0, 2, 1]),
    "SpaceInvaders": (40, [0, 1, 1, 3]),
}


async def play(env_id: str, store: TrajectoryStore, ticks: int, actions: list[int | None]) -> LiveEnv:
    """A real game of ``env_id`` recording into ``store``: every agent submits ``actions`` in turn,
    one a tick; then the researcher ends it (the last episode is interrupted, cut short)."""

    game = recorded_game(env_id, store, chunk_steps=25)
    await game.play(ticks, actions)
    return game.live


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[str, dict[str, list[str]]]:
    """Every game played at once into one store: its path, and each env's episode ids, oldest first."""
    path = str(tmp_path_factory.mktemp("replay") / "rec.db")
    store = TrajectoryStore.open(path)

    async def all_games() -> None:
        await asyncio.gather(*(play(env_id, store, ticks, actions) for env_id, (ticks, actions) in GAMES.items()))

    asyncio.run(all_games())
    episodes = {
        env_id: [doc["_id"] for doc in sorted(store.find_episodes({"env_id": env_id}), key=lambda doc: doc["started_at"]) if doc.get("steps", 1)]
        for env_id in GAMES
    }
    store.close()
    assert all(episodes.values()), episodes
    return path, episodes


@pytest.fixture
def data(recorded):
    with Dataset.open(recorded[0]) as dataset:
        yield dataset


def copy_episode(source: str, episode_id: str, target: TrajectoryStore) -> None:
    """One episode (document and chunks) into another store, to tamper with there."""
    original = TrajectoryStore.open(source)
    try:
        target.put_episode(episode_id, {key: value for key, value in original.episode(episode_id).items() if key != "_id"})
        for document in original.iter_chunks(episode_id):
            target.put_chunk(episode_id, document["seq"], document["data"], document["steps"])
    finally:
        original.close()


def tamper(store: TrajectoryStore, episode_id: str, step: int, change) -> None:
    """Apply ``change(columns, row)`` to the chunk holding ``step``."""
    for document in store.iter_chunks(episode_id):
        columns = {name: value.copy() if isinstance(value, np.ndarray) else value for name, value in unpack_chunk(document["data"]).items()}
        row = step - columns["first_step"]
        if 0 <= row < columns["steps"]:
            change(columns, row)
            store.put_chunk(episode_id, document["seq"], pack_chunk(columns), columns["steps"])
            return
    raise AssertionError(f"no chunk holds step {step}")


# ----------------------------------------------------------------- replays that match
@pytest.mark.parametrize("env_id", ["ReplayAcrobot", "ReplayLake", "ReplayDictLake", "ReplayKnights", "ReplayRelay", "SpaceInvaders"])
def test_every_recorded_episode_replays_exactly(data, recorded, env_id):
    ids = recorded[1][env_id]
    for episode_id in ids:
        report = replay_check(data, episode_id)
        assert report.status == MATCH and report.ok and report.exit_code == 0, report.summary()
        assert report.steps_checked == data.episode(episode_id)["steps"] > 0
        assert "replay matches" in report.summary()
    last = data.episode(ids[-1])
    assert last["status"] == "interrupted"  # cut short: the loader marks its last step truncated
    assert data.load(ids[-1], observations=None).agents[last["agents"][0]].truncations[-1]


def test_the_games_played_what_the_checks_rely_on(data, recorded):
    """FrozenLake (slippery, wait_for_key) ended episodes by itself, so its later episodes replay
    from the next seeds; the Relay's first runner was done after 5 steps and kept its
    observation while the other ran on; Knights, Archers, Zombies observes floats."""
    lake = [data.episode(episode_id) for episode_id in recorded[1]["ReplayLake"]]
    assert len(lake) >= 2 and lake[0]["status"] == "complete" and lake[1]["seed"] == lake[0]["seed"] + 1
    relay = data.load(recorded[1]["ReplayRelay"][0])
    done = relay.agents["runner_0"].observations
    assert relay.steps > 10 and np.array_equal(done[6:], np.broadcast_to(done[5], done[6:].shape))
    assert not np.array_equal(relay.agents["runner_1"].observations[6], relay.agents["runner_1"].observations[7])
    assert np.all(relay.agents["runner_0"].rewards[5:] == 0.0)
    knights_episode = data.load(recorded[1]["ReplayKnights"][0])
    assert knights_episode.agents["archer_0"].observations.dtype == np.float64 and len(knights_episode.agents) == 4
    dict_lake = data.load(recorded[1]["ReplayDictLake"][0])
    assert dict_lake.meta["reset_options"] == {"unused": 1}
    assert set(dict_lake.agents["agent_0"].observations) == {"cell", "where", "tuple"}


# ----------------------------------------------------------------- not replayable
@pytest.mark.parametrize("env_id, reason", [
    ("ReplayDiceReset", "two resets with seed 7 give different results (agent agent_0: observation first ["),
    ("ReplayDiceStep", "two replays with seed 7 and the same actions differ at step 0 (agent agent_0: observation first ["),
    ("ReplayDeclared", "environment 'ReplayDeclared' declares itself nondeterministic: it reads a sensor"),
])
def test_a_nondeterministic_environment_is_not_replayable(data, recorded, env_id, reason):
    report = replay_check(data, recorded[1][env_id][0])
    assert report.status == NOT_REPLAYABLE and not report.ok and report.exit_code == 3
    assert reason in report.reason, report.reason
    assert report.summary().startswith(f"{report.episode_id}: not replayable: ")


def test_a_later_episode_of_an_environment_whose_reset_keeps_state_is_not_replayable(data, recorded):
    first, *later = recorded[1]["ReplayForgetful"]
    assert later and data.episode(first)["status"] == "complete"
    assert replay_check(data, first).ok  # recorded on a fresh environment, like the replay
    report = replay_check(data, later[0])
    assert report.status == NOT_REPLAYABLE and report.exit_code == 3
    assert report.reason.startswith(
        "the recording is episode 1 of its game, played on an environment that had played the episodes before, "
        "and this environment's reset(seed) does not clear all of its state (a replay after another differs at reset: "
    ), report.reason


def test_an_old_recording_without_seed_or_observations_is_not_replayable(recorded, tmp_path):
    store = TrajectoryStore.open(str(tmp_path / "old.db"))
    [first, second] = recorded[1]["ReplayAcrobot"][:1] + recorded[1]["ReplayRelay"][:1]
    copy_episode(recorded[0], first, store)
    copy_episode(recorded[0], second, store)
    store.put_episode(first, {"observation_spaces": None})
    store.put_episode(second, {"seed": None})
    with Dataset(store) as data:
        report = replay_check(data, first)
        assert report.status == NOT_REPLAYABLE and "no observations of the environment's own" in report.reason
        report = replay_check(data, second)
        assert report.status == NOT_REPLAYABLE and report.reason == "the recording has no seed (recorded before seeds were kept)"
        store.put_episode(second, {"seed": 7, "env_id": "NotRegisteredHere"})
        assert "environment 'NotRegisteredHere' is not registered here" in replay_check(data, second).reason


# ----------------------------------------------------------------- tampered recordings
def test_a_tampered_reward_or_observation_is_a_mismatch_naming_the_step_agent_and_leaf(recorded, tmp_path):
    store = TrajectoryStore.open(str(tmp_path / "tampered.db"))
    acrobot, dict_lake, relay = recorded[1]["ReplayAcrobot"][0], recorded[1]["ReplayDictLake"][0], recorded[1]["ReplayRelay"][0]
    for episode_id in (acrobot, dict_lake, relay):
        copy_episode(recorded[0], episode_id, store)
    with Dataset(store) as data:
        # A reward: that step only.
        tamper(store, acrobot, 30, lambda columns, row: columns["reward/agent_0"].__setitem__(row, 5.0))
        report = replay_check(data, acrobot)
        assert report.status == MISMATCH and report.exit_code == 1
        assert report.reward_mismatches == [30] and not report.observation_mismatches and not report.frame_mismatches
        assert report.first_divergence == "step 30, agent agent_0: reward recorded 5.0, replayed -1.0"
        assert "first divergence at step 30, agent agent_0: reward" in report.summary()

        # A float observation beyond the tolerance (within it passes): that observation only.
        steps = data.episode(acrobot)["steps"]
        original = data.load(acrobot).agents["agent_0"].observations[41].copy()
        nudge = np.float32(original[4] * (1 + FLOAT_RTOL / 10) + FLOAT_ATOL / 10) - original[4]
        tamper(store, acrobot, 30, lambda columns, row: columns["reward/agent_0"].__setitem__(row, -1.0))
        tamper(store, acrobot, 40, lambda columns, row: columns["obs/agent_0"].__setitem__((row, 4), columns["obs/agent_0"][row, 4] + nudge))
        assert replay_check(data, acrobot).ok
        tamper(store, acrobot, 40, lambda columns, row: columns["obs/agent_0"].__setitem__((row, 4), columns["obs/agent_0"][row, 4] + 0.01))
        report = replay_check(data, acrobot)
        assert report.status == MISMATCH and report.observation_mismatches == [40] and report.steps_checked == steps
        assert report.first_divergence.startswith("step 40, agent agent_0: observation recorded [")

        # A leaf of a nested Dict observation, and the reset's observation.
        tamper(store, dict_lake, 3, lambda columns, row: columns["obs/agent_0/where/row_col"].__setitem__((row, 1), 3 - columns["obs/agent_0/where/row_col"][row, 1]))
        report = replay_check(data, dict_lake)
        assert report.status == MISMATCH and report.observation_mismatches == [3]
        assert report.first_divergence.startswith("step 3, agent agent_0: observation 'where/row_col' recorded [")
        tamper(store, dict_lake, 0, lambda columns, row: columns["obs0/agent_0/tuple/1"].__setitem__(0, 1 - columns["obs0/agent_0/tuple/1"][0]))
        report = replay_check(data, dict_lake)
        assert report.observation_mismatches == [RESET, 3]
        assert report.first_divergence.startswith("reset, agent agent_0: observation 'tuple/1' recorded ")

        # A multi-agent recording: the agent named; an action changed diverges from there on.
        tamper(store, relay, 8, lambda columns, row: columns["reward/runner_1"].__setitem__(row, 99.0))
        report = replay_check(data, relay)
        assert report.reward_mismatches == [8] and report.first_divergence.startswith("step 8, agent runner_1: reward recorded 99.0")
        tamper(store, relay, 2, lambda columns, row: columns["action/runner_1"].__setitem__(row, 2 - columns["action/runner_1"][row]))
        report = replay_check(data, relay)
        assert report.status == MISMATCH and report.observation_mismatches[0] == 2 and report.frame_mismatches
        assert report.first_divergence.startswith("step 2, agent runner_1: observation")


def test_a_tampered_atari_recording_is_still_a_mismatch(recorded, tmp_path):
    store = TrajectoryStore.open(str(tmp_path / "tampered.db"))
    [episode_id] = recorded[1]["SpaceInvaders"]
    copy_episode(recorded[0], episode_id, store)
    tamper(store, episode_id, 10, lambda columns, row: columns["reward/agent_0"].__setitem__(row, 50.0))
    with Dataset(store) as data:
        report = replay_check(data, episode_id)
    assert report.status == MISMATCH and report.reward_mismatches == [10] and report.exit_code == 1
    assert report.first_divergence == "step 10, agent agent_0: reward recorded 50.0, replayed 0.0"


# ----------------------------------------------------------------- the command line
def test_the_command_line_exit_codes_and_no_traceback(recorded, tmp_path):
    path, episodes = recorded
    tampered = str(tmp_path / "tampered.db")
    store = TrajectoryStore.open(tampered)
    copy_episode(path, episodes["ReplayKnights"][0], store)
    tamper(store, episodes["ReplayKnights"][0], 5, lambda columns, row: columns["obs/knight_1"].__setitem__((row, 0, 1), columns["obs/knight_1"][row, 0, 1] + 0.25))
    store.close()
    environment = {**os.environ, "CROWDPLAY_PLUGINS": "tests.test_replay_any_env", "PYTHONPATH": str(ROOT)}

    def check(store_path: str, episode_id: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "crowdplay", "data", "--store", store_path, "replay-check", episode_id],
            capture_output=True, text=True, timeout=300, cwd=ROOT, env=environment,
        )
        assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
        return done

    matched = check(path, episodes["ReplayKnights"][0])
    assert matched.returncode == 0 and "replay matches" in matched.stdout, matched.stdout + matched.stderr[-2000:]
    mismatched = check(tampered, episodes["ReplayKnights"][0])
    assert mismatched.returncode == 1 and "first divergence at step 5, agent knight_1: observation differs in 1 of 135 values, first at [0, 1]: recorded" in mismatched.stdout, mismatched.stdout
    unreplayable = check(path, episodes["ReplayDiceStep"][0])
    assert unreplayable.returncode == 3 and ": not replayable: two replays with seed 7" in unreplayable.stdout, unreplayable.stdout
    missing = check(path, "no-such-episode")
    assert missing.returncode == 2 and "no episode 'no-such-episode'" in missing.stderr
    assert "ALE episode" not in subprocess.run(
        [sys.executable, "-m", "crowdplay", "data", "replay-check", "--help"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=environment,
    ).stdout
