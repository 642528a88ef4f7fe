"""Two-player Atari through PettingZoo + multi-agent-ale-py (ROMs from ale-py), behind the same
adapter shape as single-agent games: stepping, snapshots, and a recorded two-agent episode."""

from __future__ import annotations

import asyncio
from functools import partial

import numpy as np

from crowdplay.config import Settings
from crowdplay.controllers import Human
from crowdplay.data import Dataset, replay_check
from crowdplay.environments import EnvSpec, register_env
from crowdplay.environments.parallel_adapter import ParallelEnvAdapter, make_pettingzoo_atari
from crowdplay.inputs import ParticipantInput
from crowdplay.realtime import LiveEnv
from crowdplay.recording.recorder import ChunkBatcher, Recorder
from crowdplay.recording.store import TrajectoryStore

SPEC = EnvSpec("SpaceInvadersTwoPlayerTest", "Space Invaders (2 players)", "test", partial(make_pettingzoo_atari, "space_invaders_v2"))


def play(adapter: ParallelEnvAdapter, actions: list[dict[str, int]]) -> list[np.ndarray]:
    screens = []
    for step in actions:
        adapter.step(step)
        screens.append(adapter.screen().copy())
    return screens


def test_each_player_controls_their_own_cannon_and_snapshots_replay_exactly():
    adapter = ParallelEnvAdapter(SPEC)
    adapter.reset(0)
    assert adapter.agents == ("first_0", "second_0") and adapter.screen().shape == (210, 160)
    assert adapter.keymaps["second_0"].resolve(("ArrowLeft",)) == adapter.action_meanings.index("LEFT")
    play(adapter, [{"first_0": 0, "second_0": 0}] * 140)  # the attract phase
    state = adapter.snapshot()
    first_moves = play(adapter, [{"first_0": 2, "second_0": 0}] * 40)
    adapter.restore(state)
    second_moves = play(adapter, [{"first_0": 0, "second_0": 2}] * 40)
    adapter.restore(state)
    again = play(adapter, [{"first_0": 2, "second_0": 0}] * 40)
    assert not np.array_equal(first_moves[-1], second_moves[-1])  # the two cannons are different objects
    assert all(np.array_equal(a, b) for a, b in zip(first_moves, again))  # restore is exact
    result = adapter.step({"first_0": 1, "second_0": 1})
    assert set(result.rewards) == {"first_0", "second_0"}
    adapter.close()


def test_a_two_player_session_records_both_agents(tmp_path):
    register_env(SPEC)
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))

    async def send(chunks):
        store.put_chunks(chunks)

    async def scenario():
        adapter = ParallelEnvAdapter(SPEC)
        batcher = ChunkBatcher(send)
        controllers = {"first_0": Human("p-a"), "second_0": Human("p-b")}
        recorder = Recorder("duo", adapter.agents, batcher.deliver, 50, controllers, adapter.snapshot, 600, {}, batcher.seal_later)
        live = LiveEnv(SPEC, 0, Settings(), adapter=adapter, recorder=recorder)
        frames = 0
        live.start()
        async for message in live.stream("second_0"):
            frames += isinstance(message, bytes)
            if frames == 150:
                live.submit("second_0", ParticipantInput.holding(["ArrowLeft"], frames, 1))
                live.submit("first_0", ParticipantInput.holding(["Space"], frames, 1))
            if frames == 220:
                break
        live.stop("over")
        await asyncio.sleep(0.5)

    asyncio.run(scenario())
    data = Dataset(store)
    [info] = data.episodes()
    assert info["participants"] == ["p-a", "p-b"] and info["agents"] == ["first_0", "second_0"]
    episode = data.load(info["_id"], observations="palette")
    left, fire = episode.agents["second_0"].actions, episode.agents["first_0"].actions
    assert 3 in left and 1 in fire and 3 not in fire
    assert replay_check(data, info["_id"]).ok
    store.close()
