"""Watching a game read-only, and AI-only games (every agent played by AI), without Ray: a
watched game keeps its frame rate and records what it would have recorded unwatched, plus a note
of who watched when; an AI-only game begins when it is first watched and ends once nobody has
watched it for the reconnect grace."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import numpy as np
import pytest

from crowdplay.config import Settings
from crowdplay.controllers import Human
from crowdplay.environments import get_env
from crowdplay.environments.parallel_adapter import make_adapter
from crowdplay.lineup import Lineup, SeatUnavailable
from crowdplay.realtime import Clocks, LiveEnv
from crowdplay.recording.chunk import unpack_chunk
from crowdplay.recording.recorder import Recorder
from tests.conftest import run

SETTINGS = Settings(countdown_s=0.0)


def ai_game(game_id: str, clock, delivered: list, grace_s: float = 1.0) -> Lineup:
    """TestAIPong (both paddles played by a deterministic bot) recording into ``delivered``; it
    ends once nobody has watched it for ``grace_s``."""

    async def deliver(episode_id, seq, blob, steps, fields):
        delivered.append((unpack_chunk(blob), dict(fields)))

    spec = replace(get_env("TestAIPong"), reconnect_grace_s=grace_s)
    adapter = make_adapter(spec)
    controllers = {agent: Human() for agent in adapter.agents}
    recorder = Recorder(game_id, adapter.agents, deliver, 60, controllers)
    return Lineup(LiveEnv(spec, 11, SETTINGS, clock, adapter, recorder), SETTINGS)


def comparable(chunk: dict) -> dict:
    """A chunk's columns but the wall-clock times of its ticks."""
    return {name: value for name, value in chunk.items() if name != "tick_time"}


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


def test_a_watched_game_keeps_its_frame_rate_and_records_what_an_unwatched_one_records():
    watched_chunks, plain_chunks = [], []

    async def scenario():
        clock = Clocks().at(60)  # one clock: both games tick together, frame ids alike
        watched, plain = ai_game("watched", clock, watched_chunks, 30), ai_game("plain", clock, plain_chunks, 30)
        plain.begin_unwatched()
        viewer = watched.watch("researcher@dashboard")  # begins the game: an AI-only game starts when watched
        frames, started = 0, time.monotonic()
        async for message in watched.live.stream(viewer.agent, viewer):
            frames += isinstance(message, bytes)
            if time.monotonic() - started > 3.0:
                break
        watched.unwatch(viewer)
        await asyncio.sleep(0.2)
        watched.end("done")
        plain.end("done")
        await asyncio.sleep(0.3)
        return watched.live, plain.live, frames, time.monotonic() - started

    watched, plain, frames, elapsed = run(scenario())
    assert watched.ticks >= 0.9 * 60 * 3 and watched.ticks_late <= 6 and plain.ticks_late <= 6  # 60 fps, watched or not
    assert frames >= 0.9 * 60 * 3  # the viewer saw the game at its frame rate
    common = min(len(watched_chunks), len(plain_chunks)) - 1  # full chunks both recorded (the last ones end differently)
    assert common >= 2
    for (mine, _fields), (theirs, _their_fields) in zip(watched_chunks[:common], plain_chunks[:common]):
        assert same(comparable(mine), comparable(theirs))  # frames, actions, rewards, AI answers, controllers: identical
    first_fields = watched_chunks[0][1]
    notes = [fields["watched"] for _, fields in watched_chunks if "watched" in fields]
    assert notes and notes[0][0]["who"] == "researcher@dashboard" and notes[0][0]["until"] is None  # noted in the first chunk's episode fields
    assert notes[-1][0]["until"] is not None  # and when they stopped, with the episode's end
    assert all("watched" not in fields for _, fields in plain_chunks)
    assert first_fields["game_id"] == "watched"
    assert {answer[1] for chunk, _ in watched_chunks for answer in chunk["ai_actions"]} == {"first_0", "second_0"}


def test_an_ai_only_game_waits_to_be_watched_and_ends_when_nobody_watches():
    async def scenario():
        lineup = ai_game("demo", Clocks().at(60), [])
        await asyncio.sleep(0.3)
        waiting = lineup.phase, lineup.live.ticks
        viewer = lineup.watch("participant-1")
        await asyncio.sleep(0.5)
        playing = lineup.phase, lineup.live.ticks
        lineup.unwatch(viewer)
        second = lineup.watch("participant-1")  # back within the grace: it goes on
        await asyncio.sleep(1.2)
        still = lineup.live.stopped
        lineup.unwatch(second)
        await asyncio.sleep(1.5)  # the grace (1 s) passes with nobody watching
        with pytest.raises(SeatUnavailable):
            lineup.watch("late")
        return waiting, playing, still, lineup.live.stopped

    waiting, playing, still, stopped = run(scenario())
    assert waiting == ("waiting", 0)
    assert playing[0] == "playing" and playing[1] > 10
    assert still is None and stopped == "nobody is watching this AI-only game any more"
