"""Games starting beside a game already playing take nothing from it: against ``crowdplay serve``
with the shipped settings, twenty participants start at once while one plays. No game is built in
a process where games play, and the playing participant's frames keep coming without a stall
(measured at its client, from the burst until the warm pool has been refilled behind it).

The target, no gap over 50 ms, is the ``burst`` benchmark's (``python -m crowdplay.bench burst``):
on a 2-core machine that also runs the 21 clients it held in 16 of 18 runs here, and CI's machine
once saw 155 ms while the warm pool booted a process after the burst. The test bounds stalls at
five times the target: the code before builds were kept away from playing games gave gaps of
280-357 ms and 43 fps.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from crowdplay.bench.burst import play_through_a_burst
from crowdplay.config import NO_START_LIMITS, free_port, setting_variable
from tests.conftest import crowdplay_serve, fresh_environment

BURST = 20
STALL_LIMIT_MS = 250
MIN_FPS = 45
#: After the burst: the warm pool refills then (one boot at a time, ~1 s after the last start).
AFTERWARDS_S = 3.0
ADMIN_TOKEN = "burst-test-token"


def totals(url: str) -> dict[str, Any]:
    """The overview's totals, as the dashboard reads them."""
    request = urllib.request.Request(f"{url}/api/admin/overview", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)["totals"]


def test_twenty_games_starting_at_once_are_built_away_from_a_playing_game_which_does_not_stall(tmp_path):
    env = fresh_environment(
        CROWDPLAY_NAMESPACE="crowdplay-burst-test", CROWDPLAY_STORE_URI=str(tmp_path / "recordings.db"), CROWDPLAY_SPOOL_DIR=str(tmp_path / "spool"),
        CROWDPLAY_ADMIN_TOKEN=ADMIN_TOKEN, **{setting_variable(name): str(value) for name, value in NO_START_LIMITS.items()},  # all twenty come from 127.0.0.1
    )
    with crowdplay_serve(free_port(), env) as url:
        window = play_through_a_burst(url, BURST, AFTERWARDS_S)
        after = totals(url)
    figures = window.figures()
    print(json.dumps(figures))
    assert window.burst["failed"] == [], window.burst
    assert after["builds_behind_play"] == 0, after
    assert figures["max_gap_ms"] <= STALL_LIMIT_MS, figures
    assert figures["fps"] >= MIN_FPS, figures
