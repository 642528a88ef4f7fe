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


def test_a_participant_whose_ingress_replica_dies_gets_their_seat_back_through_another(multinode):
    async def scenario():
        player = await Participant.join(multinode.base_url, "Pong", participant="FAULT-REPLICA")
        for _ in range(30):
            await player.next_frame()
        tag = player.hello["served_by"]["replica"]
        [name] = [entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True) if entry["name"].endswith(tag)]
        replica = ray.get_actor(name, namespace="serve")
        await asyncio.to_thread(ray.kill, replica, no_restart=True)  # Serve starts a replacement
        await player.wait_closed(timeout=10)
        started = time.monotonic()
        while True:  # within the seat's grace period, as the page's automatic reconnect does
            try:
                again = await Participant.connect(multinode.base_url, player.session)
                break
            except Exception:  # refused while HAProxy still points at the dead replica
                if time.monotonic() - started > SETTINGS.reconnect_grace_s - 1:
                    raise
                await asyncio.sleep(0.2)
        back_after = time.monotonic() - started
        for _ in range(30):
            await again.next_frame()
        await again.close()
        return player, again, back_after

    player, again, back_after = asyncio.run(scenario())
    assert again.hello["session_id"] == player.hello["session_id"] and again.hello["agent"] == player.hello["agent"]
    assert again.hello["served_by"]["replica"] != player.hello["served_by"]["replica"]
    assert back_after < SETTINGS.reconnect_grace_s
