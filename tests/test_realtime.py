"""LiveEnv, the real-time loop inside every EnvActor, exercised directly on real ALE."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from crowdplay import codec
from crowdplay.config import Settings
from crowdplay.environments import EnvSpec, get_env, register_env
from crowdplay.environments.atari import make_ale
from crowdplay.environments.replay import replay_screens
from crowdplay.inputs import ParticipantInput
from crowdplay.realtime import Clocks, LiveEnv, SessionEnded

SHORT_PONG = register_env(
    replace(get_env("Pong"), id="PongShortEpisodes", make_env=partial(make_ale, "Pong", max_num_frames_per_episode=40))
)


def run(coroutine):
    return asyncio.run(coroutine)


async def collect(live: LiveEnv, frames: int, delay_s: float = 0.0):
    """Read the stream like a client that needs ``delay_s`` per message."""
    decoder = codec.FrameDecoder(live.latest.screen.pixels.shape)
    received, events = [], []
    live.start()
    async for message in live.stream("agent_0"):
        if isinstance(message, str):
            events.append(json.loads(message))
            continue
        header, screen = decoder.decode(message)
        received.append((header, screen.copy()))
        if len(received) >= frames:
            break
        if delay_s:
            await asyncio.sleep(delay_s)
    return received, events


def test_ticks_stay_on_the_fps_grid():
    async def scenario():
        live = LiveEnv(get_env("SpaceInvaders"), 0, Settings())
        live.start()
        await asyncio.sleep(2.0)
        live.stop("test over")
        return live

    live = run(scenario())
    # Deadlines sit on t0 + n/fps: the frame id is the grid position and tracks wall time (2 s at 60 fps);
    # executed plus skipped ticks account for every grid position (the clock's, which may have
    # skipped past the last executed tick).
    assert 114 <= live.frame_id <= 126
    assert live.ticks + live.ticks_late == live.clock.n


def test_sessions_sharing_a_clock_tick_together_and_number_frames_on_its_grid():
    async def scenario():
        clocks = Clocks()
        first = LiveEnv(get_env("Pong"), 0, Settings(), clocks.at(60))
        first.start()
        await asyncio.sleep(0.5)
        second = LiveEnv(get_env("Breakout"), 0, Settings(), clocks.at(60))
        frames, _ = await collect(second, 30)
        first.stop("test over")
        second.stop("test over")
        return first, second, frames, clocks.at(60)

    first, second, frames, clock = run(scenario())
    assert first.clock is second.clock is clock
    assert frames[0][0].frame_id >= 25  # the newcomer starts where the shared grid is, not at 0
    ids = [header.frame_id for header, _ in frames]
    assert ids == sorted(set(ids)) and frames[-1][0].env_step - frames[0][0].env_step == 29
    assert clock.members == []


def test_first_frame_is_a_keyframe_and_frames_equal_the_emulator_screens():
    async def scenario():
        live = LiveEnv(get_env("SpaceInvaders"), 11, Settings())
        received, _ = await collect(live, 90)
        record = live.episodes[-1]
        live.stop("test over")
        return received, record

    received, record = run(scenario())
    assert received[0][0].keyframe and received[0][0].frame_id == 0
    replayed = list(replay_screens("SpaceInvaders", record.seed, record.actions["agent_0"], record.start_state))
    for header, screen in received:
        assert np.array_equal(screen, replayed[header.env_step])


def test_a_slow_client_gets_the_newest_frame_not_a_backlog():
    async def scenario():
        live = LiveEnv(get_env("Breakout"), 5, Settings())
        received, _ = await collect(live, 12, delay_s=0.1)
        stats, record = live.stats(), live.episodes[-1]
        live.stop("test over")
        return received, stats, record

    received, stats, record = run(scenario())
    ids = [header.frame_id for header, _ in received]
    assert ids == sorted(ids)
    assert ids[-1] - ids[0] > 3 * len(ids)  # frames were skipped, not queued
    assert stats["subscribers"][0]["frames_dropped"] > 0
    replayed = list(replay_screens("Breakout", record.seed, record.actions["agent_0"], record.start_state))
    for header, screen in received:  # deltas against the client's own last frame stay lossless
        assert np.array_equal(screen, replayed[header.env_step])


def test_inputs_apply_on_the_next_tick_and_the_noop_before_any_key():
    async def scenario():
        live = LiveEnv(get_env("SpaceInvaders"), 0, Settings())
        live.start()
        decoder_frames = []
        async for message in live.stream("agent_0"):
            if isinstance(message, bytes):
                header, _ = codec.parse_header(message)
                decoder_frames.append(header)
                if len(decoder_frames) == 10:
                    action = live.submit("agent_0", ParticipantInput.holding(["Space"], frame=header.frame_id, seq=1))
                if len(decoder_frames) == 14:
                    break
        log, record = list(live.input_log), live.episodes[-1]
        live.stop("test over")
        return decoder_frames, action, log, record

    frames, action, log, record = run(scenario())
    assert action == 1  # FIRE
    assert record.actions["agent_0"][:5].tolist() == [0] * 5
    (entry,) = log
    assert entry.applied_tick == entry.received_tick + 1
    assert entry.applied_frame > entry.received_frame
    assert entry.input.frame == frames[9].frame_id
    assert record.actions["agent_0"][entry.env_step] == 1
    assert frames[-1].input_seq == 1


def test_later_episodes_start_from_a_recorded_state_that_replays_exactly():
    async def scenario():
        live = LiveEnv(SHORT_PONG, 3, Settings())
        received, _ = await collect(live, 100)
        records = {record.episode: record for record in live.episodes}
        live.stop("test over")
        return received, records

    received, records = run(scenario())
    episode, checked = -1, 0
    replayed: list = []
    for header, screen in received:
        if header.new_episode:
            episode += 1
            record = records[episode]
            assert record.start_state
            replayed = list(replay_screens("PongShortEpisodes", record.seed, record.actions["agent_0"], record.start_state))
        if episode >= 1:  # later episodes continue the emulator: only the start state replays them
            assert np.array_equal(screen, replayed[header.env_step])
            checked += 1
    assert episode >= 2 and checked > 40


def test_episodes_end_restart_and_are_announced():
    async def scenario():
        live = LiveEnv(SHORT_PONG, 100, Settings())
        received, events = await collect(live, 60)
        episodes = list(live.episodes)
        live.stop("test over")
        return received, events, episodes

    received, events, episodes = run(scenario())
    assert events and events[0]["type"] == "episode_end" and events[0]["truncated"]
    assert [e.seed for e in episodes[:2]] == [100, 101]
    restarted = [h for h, _ in received if h.new_episode and h.frame_id > 0]
    assert restarted and restarted[0].env_step == 0


def test_stopping_ends_streams_and_refuses_input():
    async def scenario():
        live = LiveEnv(get_env("Pong"), 0, Settings())
        live.start()
        stream = live.stream("agent_0")
        await stream.__anext__()  # the first frame: the stream is under way
        live.stop("researcher stopped the study")
        rest = [m async for m in stream]
        return live, rest

    live, rest = run(scenario())
    assert json.loads(rest[-1]) == {"type": "end", "reason": "researcher stopped the study"}
    with pytest.raises(SessionEnded):
        live.submit("agent_0", ParticipantInput.holding(["Space"], 0, 1))


def test_spec_validation_names_the_environment():
    with pytest.raises(ValueError, match="'bad id'"):
        EnvSpec(id="bad id", title="", description="", make_env=lambda: None)
    with pytest.raises(ValueError, match="fps"):
        EnvSpec(id="slow", title="", description="", make_env=lambda: None, fps=0)


def test_turn_based_modes_step_on_a_press_or_while_a_key_is_held():
    async def play(mode: str, script) -> LiveEnv:
        live = LiveEnv(replace(get_env("SpaceInvaders"), id=f"Turns-{mode}", mode=mode), 1, Settings())
        live.start()
        await script(live)
        live.stop("done")
        return live

    async def presses(live: LiveEnv) -> None:
        await asyncio.sleep(0.3)  # nobody presses: nothing happens
        assert live.episodes.steps == 0
        for seq in range(1, 4):
            live.submit("agent_0", ParticipantInput.holding(["Space"], 0, 2 * seq - 1))  # a press is one turn
            await asyncio.sleep(0.05)
            live.submit("agent_0", ParticipantInput.holding([], 0, 2 * seq))  # releasing is not
            await asyncio.sleep(0.05)
        live.submit("agent_0", ParticipantInput.choosing(0, 0, 7))  # an explicit action is a turn, even the no-op
        await asyncio.sleep(0.05)

    async def holding(live: LiveEnv) -> None:
        await asyncio.sleep(0.2)
        assert live.episodes.steps == 0
        live.submit("agent_0", ParticipantInput.holding(["ArrowLeft"], 0, 1))
        await asyncio.sleep(0.5)  # held: steps at fps
        live.submit("agent_0", ParticipantInput.holding([], 0, 2))
        await asyncio.sleep(0.05)
        held_steps = live.episodes.steps
        await asyncio.sleep(0.3)  # released: paused
        assert live.episodes.steps == held_steps and 20 <= held_steps <= 40

    assert run(play("wait_for_key", presses)).episodes.steps == 4
    held = run(play("hold_keys", holding)).episodes[-1].actions["agent_0"]
    assert len(set(held)) == 1 and held[0] != 0  # every step it took was LEFT, the key held
