"""A real game pressed by a script: Space Invaders on a tick clock of its own, for the tests of
what a game process measures about its inputs (``crowdplay.timing``)."""

from __future__ import annotations

import asyncio

from crowdplay.config import Settings
from crowdplay.environments import get_env
from crowdplay.inputs import ParticipantInput
from crowdplay.realtime import Clocks, LiveEnv


async def tap_space(changes: int) -> tuple[Clocks, LiveEnv]:
    """Press and release Space in turn, ``changes`` inputs 50 ms apart, then stop the game and let
    its clock's task see it gone."""
    clocks = Clocks()
    live = LiveEnv(get_env("SpaceInvaders"), 0, Settings(), clocks.at(60))
    live.start()
    for seq in range(1, changes + 1):
        await asyncio.sleep(0.05)
        live.submit("agent_0", ParticipantInput.holding(["Space"] if seq % 2 else [], frame=live.frame_id, seq=seq))
    await asyncio.sleep(0.05)
    live.stop("test over")
    await asyncio.sleep(0.05)
    return clocks, live
