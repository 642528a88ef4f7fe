"""Play statistics: the registry, the generic statistics step by step, and the Space Invaders RAM
statistics of a recorded episode against the same numbers computed over the recorded RAM at once."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from crowdplay import statistics
from crowdplay.config import Settings
from crowdplay.controllers import Human
from crowdplay.data import Dataset
from crowdplay.environments import EnvAdapter, get_env
from crowdplay.inputs import ParticipantInput
from crowdplay.realtime import LiveEnv
from crowdplay.recording.recorder import ChunkBatcher, Recorder
from crowdplay.recording.store import TrajectoryStore
from crowdplay.statistics import Statistic, StatisticsTracker, UnknownStatistic, check_statistic, register_statistic, registered_statistics

ROWS = [f"si_aliens_hit_row_{row}" for row in range(1, 7)]
INVADERS = ["si_time_left", "si_time_right", "si_shots", "si_hits", "si_accuracy", *ROWS]
BUILT_IN = ["time_played", "active_time", "score", *INVADERS]


class Steps(Statistic):
    def __init__(self, fps: float, agent_index: int) -> None:
        super().__init__(fps, agent_index)
        self.count = 0

    def step(self, action, reward, ram, human_input) -> None:
        self.count += 1

    def value(self) -> float:
        return float(self.count)


@pytest.fixture
def registry(monkeypatch):
    """Registrations made by a test disappear with it."""
    monkeypatch.setattr(statistics._STATISTICS, "_classes", dict(statistics._STATISTICS._classes))


# --------------------------------------------------------------------- registry
def test_the_decorator_returns_the_class_and_stacks(registry):
    decorated = register_statistic("test_a")(register_statistic("test_b")(Steps))
    assert decorated is Steps
    assert {"test_a", "test_b"} <= set(registered_statistics())
    assert register_statistic("test_a")(Steps) is Steps  # the same class again is harmless
    tracker = StatisticsTracker(["test_a", "test_b"], fps=60)
    tracker.step(0, 0.0, None, False)
    assert tracker.values() == {"test_a": 1.0, "test_b": 1.0}


def test_a_taken_name_and_an_unknown_name_are_errors(registry):
    assert set(BUILT_IN) <= set(registered_statistics())
    with pytest.raises(ValueError, match="already registered"):
        register_statistic("score")(Steps)
    with pytest.raises(ValueError):
        register_statistic("")
    assert check_statistic("score") == "score"
    with pytest.raises(UnknownStatistic) as raised:
        check_statistic("scroe")
    assert isinstance(raised.value, KeyError)
    message = str(raised.value)
    assert "'scroe'" in message and all(name in message for name in registered_statistics())
    with pytest.raises(UnknownStatistic):
        StatisticsTracker(["time_played", "scroe"], fps=60)
    with pytest.raises(ValueError):
        StatisticsTracker(["score", "score"], fps=60)


# --------------------------------------------------------------------- generic statistics
def test_time_active_time_and_score_step_by_step():
    # 2 fps: the activity window is 10 steps. Inputs on steps 0 and 4 (active 0..13), a reward on
    # 30 and an input on 35 (active 30..44), a negative reward on 45 (active 45..54); the episode
    # ends after step 39.
    tracker = StatisticsTracker(["time_played", "active_time", "score", *INVADERS], fps=2)
    inputs, rewards = {0, 4, 35}, {30: 5.0, 45: -2.0}
    active_after: dict[int, float] = {}
    for step in range(60):
        if step == 40:
            first = tracker.end_episode()
        tracker.step(0, rewards.get(step, 0.0), None, step in inputs)
        active_after[step] = tracker.values()["active_time"]
    assert [active_after[step] for step in (12, 13, 14, 29, 30)] == [6.5, 7.0, 7.0, 7.0, 7.5]  # the window closes after step 13
    assert tracker.episodes == 1
    assert first == {"time_played": 20.0, "active_time": 12.0, "score": 5.0, **dict.fromkeys(INVADERS, 0.0)}  # no RAM: 0
    # The second episode starts without the input of step 35: its own window starts with the reward on 45.
    assert tracker.episode_values() == {"time_played": 10.0, "active_time": 5.0, "score": -2.0, **dict.fromkeys(INVADERS, 0.0)}
    session = tracker.values()
    assert session["time_played"] == 30.0 and session["score"] == 3.0
    assert session["active_time"] == (14 + 25) / 2  # 0..13 and 30..54: the window spans the episode's end
    assert tracker.end_episode()["score"] == -2.0 and tracker.episode_values()["time_played"] == 0.0


def test_invaders_statistics_of_other_agents_stay_zero():
    ram = np.zeros(128, np.uint8)
    tracker = StatisticsTracker(INVADERS, fps=60, agent_index=2)
    for alive in (36, 35, 34):
        ram[17], ram[85] = alive, 85
        tracker.step(1, 5.0, ram, True)
    assert set(tracker.values().values()) == {0.0}


# --------------------------------------------------------------------- Space Invaders, recorded
def play_invaders(store: TrajectoryStore, frames: int) -> StatisticsTracker:
    """Play Space Invaders in real time through the recording path: sweep right and left, tapping
    Space 3 frames on, 3 off (the game ignores input for its first ~127 frames). Returns the
    tracker the live game kept for the player."""
    presses = {}
    for frame in range(130, frames, 3):
        direction = "ArrowRight" if (frame - 130) // 120 % 2 == 0 else "ArrowLeft"
        presses[frame] = [direction, "Space"] if frame // 3 % 2 == 0 else [direction]

    async def send_batch(chunks):
        store.put_chunks(chunks)

    async def scenario() -> StatisticsTracker:
        adapter = EnvAdapter(get_env("SpaceInvaders"))
        batcher = ChunkBatcher(send_batch)
        recorder = Recorder(
            "s1", adapter.agents, batcher.deliver, 30, {"agent_0": Human("p")},
            adapter.snapshot, 600, {"task_id": "stats"}, batcher.seal_later,
        )
        live = LiveEnv(get_env("SpaceInvaders"), 0, Settings(), adapter=adapter, recorder=recorder)
        live.statistics.track("agent_0", tracker := StatisticsTracker(BUILT_IN, live.spec.fps))
        live.start()
        shown = 0
        async for message in live.stream("agent_0"):
            if isinstance(message, bytes):
                shown += 1
                if shown in presses:
                    live.submit("agent_0", ParticipantInput.holding(presses[shown], shown, shown))
                if shown >= frames:
                    break
        live.stop("done")
        await asyncio.sleep(1.2)
        return tracker

    return asyncio.run(scenario())


def invaders_reference(ram: np.ndarray, fps: float) -> dict[str, float]:
    """The si_* statistics of one episode from its whole RAM array at once (row i: after step i)."""
    centre = ram[:, 28].astype(int) + 2  # the cannon's centre column on the 160-column screen
    left = int(np.count_nonzero(centre < 80))
    missile = ram[:, 85].astype(int)
    before = np.concatenate([[246], missile[:-1]])
    launches = int(np.count_nonzero((missile != 246) & ((before == 246) | ((missile == 85) & (before != 85)))))
    per_row = np.unpackbits(ram[:, [23, 22, 21, 20, 19, 18]][:, :, None], axis=2).sum(axis=2).astype(int)  # row 1 first
    hit_rows = np.clip(per_row[:-1] - per_row[1:], 0, None).sum(axis=0)
    hits = int(hit_rows.sum())
    return {
        "si_time_left": left / fps,
        "si_time_right": (len(ram) - left) / fps,
        "si_shots": float(launches),
        "si_hits": float(hits),
        "si_accuracy": hits / launches if launches else 0.0,
        **{name: float(count) for name, count in zip(ROWS, hit_rows)},
    }


def generic_reference(rewards: np.ndarray, human: np.ndarray, fps: float) -> dict[str, float]:
    window = round(5 * fps)
    events = np.cumsum(human | (rewards != 0))
    recent = events - np.concatenate([np.zeros(window, int), events[:-window]])[: len(events)]  # events in the last `window` steps
    return {"time_played": len(rewards) / fps, "active_time": int(np.count_nonzero(recent)) / fps, "score": float(rewards.sum())}


def test_invaders_statistics_of_a_recorded_game_match_its_ram(tmp_path):
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))
    live_tracker = play_invaders(store, 1500)
    data = Dataset(store)
    infos = data.episodes()
    assert infos and all(info["env_id"] == "SpaceInvaders" for info in infos)  # one, unless the cannon ran out of lives

    tracker = StatisticsTracker(BUILT_IN, 60.0)
    fire_actions = {index for index, meaning in enumerate(EnvAdapter(get_env("SpaceInvaders")).action_meanings) if "FIRE" in meaning}
    totals = dict.fromkeys(BUILT_IN, 0.0)
    for number, info in enumerate(infos):
        trajectory = data.load(info["_id"], observations=None).agents["agent_0"]
        actions, rewards, ram = trajectory.actions, trajectory.rewards, trajectory.infos["ram"]
        assert ram.shape == (trajectory.steps, 128) and ram.dtype == np.uint8
        human = np.zeros(trajectory.steps, bool)
        human[[event["step"] for event in data.inputs(info["_id"])]] = True
        for step in range(trajectory.steps):
            tracker.step(int(actions[step]), float(rewards[step]), ram[step], bool(human[step]))
        values = tracker.end_episode() if number < len(infos) - 1 else tracker.episode_values()

        expected = {**generic_reference(rewards, human, 60.0), **invaders_reference(ram, 60.0)}
        assert values == expected
        for name in BUILT_IN:
            totals[name] += expected[name]

        # What the reference takes for granted, checked against the game itself: one player uses
        # the first missile slot only; a missile appears only on steps that fire; every alien hit
        # scores 5 points in the bottom row up to 30 in the top row, and lowers the alive count.
        assert np.all(ram[:, 86] == 246) and not np.any(ram[:, 24] & 0x04)
        missile = ram[:, 85].astype(int)
        launched = np.flatnonzero((missile != 246) & (np.concatenate([[246], missile[:-1]]) == 246))
        assert set(actions[launched].tolist()) <= fire_actions
        assert [values[name] for name in ROWS] == [float(np.count_nonzero(rewards == 5 * (7 - row))) for row in range(1, 7)]
        alive = ram[:, 17].astype(int)
        assert values["si_hits"] == np.clip(alive[:-1] - alive[1:], 0, None).sum()
        assert values["score"] == rewards.sum() >= 5 * values["si_hits"]

    session = tracker.values()
    assert session == live_tracker.values()  # the live game saw the same steps, inputs and RAM
    assert sum(session[name] > 0 for name in ROWS) >= 2 and session["si_hits"] >= 4  # the script hits aliens in several rows
    assert session["si_shots"] > session["si_hits"] > 0 and 0 < session["si_accuracy"] < 1
    assert session["si_time_left"] > 0 and session["si_time_right"] > 0
    for name in ("time_played", "score", "si_time_left", "si_time_right", "si_shots", "si_hits", *ROWS):
        assert session[name] == pytest.approx(totals[name])
    store.close()


def test_two_player_invaders_credit_each_cannon_with_its_own_shots_and_hits():
    """Both cannons fire at random; each hit scores for its shooter only (PettingZoo's rewards)."""
    from crowdplay.environments.parallel_adapter import make_adapter

    adapter = make_adapter(get_env("SpaceInvaders2P"))
    adapter.reset(0)
    trackers = [StatisticsTracker(INVADERS, 60.0, index) for index in (0, 1)]
    row_rewards = np.zeros((2, 6), int)
    rng = np.random.default_rng(0)
    for frame in range(6000):
        if frame % 8 == 0:
            actions = {agent: int(rng.choice([1, 4, 5, 1, 2, 3])) for agent in adapter.agents}  # mostly firing
        result = adapter.step(actions)
        ram = np.frombuffer(adapter.ram(), np.uint8)
        for index, agent in enumerate(adapter.agents):
            reward = result.rewards[agent]
            trackers[index].step(actions[agent], reward, ram, False)
            if reward in (5, 10, 15, 20, 25, 30):
                row_rewards[index, 6 - int(reward) // 5] += 1
        if result.terminated or result.truncated:
            adapter.reset(0)
    for index, tracker in enumerate(trackers):
        values = tracker.values()
        assert [values[name] for name in ROWS] == row_rewards[index].tolist()
        assert values["si_shots"] > values["si_hits"] >= 5
    assert trackers[0].values()["si_time_left"] > trackers[0].values()["si_time_right"]  # first_0 starts on the left,
    assert trackers[1].values()["si_time_right"] > trackers[1].values()["si_time_left"]  # second_0 on the right
