"""Faults on a multi-node cluster: the EnvsManager crashes while games run."""

from __future__ import annotations

import asyncio
import time

import ray

from crowdplay.client import Participant
from crowdplay.manager import get_or_create_manager
from tests.cluster.conftest import SETTINGS


def test_a_crashed_envs_manager_restarts_adopts_the_running_games_and_takes_new_joins(multinode):
    manager = get_or_create_manager(SETTINGS)

    async def scenario():
        player = await Participant.join(multinode.base_url, "Pong", participant="FAULT-1")
        for _ in range(30):
            await player.next_frame()
        await asyncio.to_thread(ray.kill, manager, no_restart=False)  # Ray restarts it (max_restarts=-1)
        started, frames = time.monotonic(), 0
        while time.monotonic() - started < 3:  # the game plays on: frames never pass through the manager
            await player.next_frame()
            frames += 1
        sessions = await asyncio.to_thread(ray.get, manager.list_sessions.remote())
        again = await Participant.connect(multinode.base_url, player.session)  # the old token, checked by the new manager
        await again.next_frame()
        newcomer = await Participant.join(multinode.base_url, "Pong")
        await newcomer.next_frame()
        for participant in (again, newcomer, player):
            await participant.close()
        return player, frames, sessions, again, newcomer

    player, frames, sessions, again, newcomer = asyncio.run(scenario())
    assert frames >= 150  # ~60 fps through the crash
    assert player.session["session_id"] in {session["session_id"] for session in sessions}  # its table was rebuilt
    assert again.hello["session_id"] == player.session["session_id"] and again.hello["agent"] == player.hello["agent"]
    assert newcomer.session["session_id"] != player.session["session_id"]
