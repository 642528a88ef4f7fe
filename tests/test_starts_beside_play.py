"""Games starting beside a game already playing take nothing from it: against ``crowdplay serve``
with the shipped settings, twenty participants start at once while one plays, and the playing
participant's frames keep coming at 60 fps without a gap (measured at its client, from the burst
until the warm pool has been refilled behind it)."""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import os
import time

from crowdplay.client import Participant
from crowdplay.config import NO_START_LIMITS, free_port, setting_variable
from tests.conftest import crowdplay_serve, fresh_environment, run

BURST = 20
#: The target is no gap over 50 ms: met in 16 of 18 runs on a 2-core machine that also runs the
#: 21 clients (27-48 ms; 61 and 76 ms in the others, both while the warm pool booted a process
#: after the burst). The test allows twice that, as machines here differ by 2x from run to run;
#: the code before this change gave gaps of 280-357 ms and 43 fps.
GAP_LIMIT_MS = 100
#: After the burst: the warm pool refills then (one boot at a time, ~1 s after the last start).
AFTERWARDS_S = 3.0


def burst(url: str, go, answers) -> None:
    """The newcomers, in a process of their own at the lowest priority (people elsewhere, not a
    core of the server's): all ask for a session at once, connect, and stay a few seconds."""
    os.nice(19)

    async def join_all() -> None:
        go.wait()
        started = time.monotonic()
        joined = await asyncio.gather(*(Participant.join(url, "SpaceInvaders", decode=False) for _ in range(BURST)), return_exceptions=True)
        answers.put({"took_s": time.monotonic() - started, "failed": [repr(error) for error in joined if isinstance(error, BaseException)]})
        await asyncio.sleep(AFTERWARDS_S + 2)
        for participant in joined:
            if isinstance(participant, Participant):
                await participant.close()

    asyncio.run(join_all())


def test_twenty_games_starting_at_once_leave_a_playing_game_at_60_fps_without_a_gap(tmp_path):
    env = fresh_environment(
        CROWDPLAY_NAMESPACE="crowdplay-burst-test", CROWDPLAY_STORE_URI=str(tmp_path / "recordings.db"), CROWDPLAY_SPOOL_DIR=str(tmp_path / "spool"),
        **{setting_variable(name): str(value) for name, value in NO_START_LIMITS.items()},  # all twenty come from 127.0.0.1
    )
    with crowdplay_serve(free_port(), env) as url:
        context = multiprocessing.get_context("spawn")
        go, answers = context.Event(), context.Queue()
        newcomers = context.Process(target=burst, args=(url, go, answers))
        newcomers.start()

        async def play_through_the_burst() -> tuple[list[float], dict, float]:
            async with await Participant.join(url, "SpaceInvaders", decode=False) as player:
                await asyncio.sleep(4)  # playing; the warm processes stock spares of the game meanwhile
                gc.disable()  # this client's own collections are not the server's gaps
                try:
                    began = time.perf_counter()
                    go.set()
                    outcome = await asyncio.to_thread(answers.get, True, 60)
                    await asyncio.sleep(AFTERWARDS_S)
                    ended = time.perf_counter()
                finally:
                    gc.enable()
                arrivals = [frame.received_at for frame in player.timings if began <= frame.received_at <= ended]
                return arrivals, outcome, ended - began

        try:
            arrivals, outcome, window_s = run(play_through_the_burst())
        finally:
            newcomers.join(timeout=30)
            newcomers.kill()
    gaps_ms = [(later - earlier) * 1000 for earlier, later in zip(arrivals, arrivals[1:])]
    fps = len(arrivals) / window_s
    worst = sorted(((gap, arrivals[index] - arrivals[0]) for index, gap in enumerate(gaps_ms)), reverse=True)[:4]
    print(json.dumps({"burst": outcome, "fps": round(fps, 1), "max_gap_ms": round(max(gaps_ms), 1), "window_s": round(window_s, 2), "worst_ms_at_s": [(round(g), round(t, 2)) for g, t in worst]}))
    assert outcome["failed"] == [], outcome
    assert max(gaps_ms) <= GAP_LIMIT_MS, sorted(gaps_ms)[-10:]
    assert fps >= 58, fps
