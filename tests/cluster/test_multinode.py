"""Matchmaking across a multi-node cluster: participants arriving through different ingress
replicas on different nodes share one game, and games spread over the nodes."""

from __future__ import annotations

import asyncio

import ray

from crowdplay.client import Participant
from crowdplay.manager import get_or_create_manager
from tests.cluster.conftest import SETTINGS, MultiNode
from tests.conftest import run, wait_until


def test_participants_on_different_ingress_replicas_are_matched_into_one_game(multinode: MultiNode):
    async def pair_up():
        first = await Participant.join(multinode.base_url, "Pong2P")
        second = await Participant.join(multinode.base_url, "Pong2P")  # HAProxy: least connections
        await asyncio.gather(first.wait_for_event("play", timeout=20), second.wait_for_event("play", timeout=20))
        frames = await asyncio.gather(first.next_frame(), second.next_frame())
        await first.close()
        await second.close()
        return first, second, frames

    # Which replica a connection reaches is HAProxy's choice (least connections, counted afresh
    # at each of its reloads, and a replica briefly marked down gets none): pair up again until
    # the two arrive through different replicas, which is the case under test.
    for _ in range(5):
        first, second, frames = run(pair_up())
        if first.hello["served_by"]["replica"] != second.hello["served_by"]["replica"]:
            break
    assert first.hello["served_by"]["node"] != second.hello["served_by"]["node"]
    assert first.hello["served_by"]["replica"] != second.hello["served_by"]["replica"]
    assert {first.hello["served_by"]["node"], second.hello["served_by"]["node"]} == set(multinode.workers)
    assert first.session["game_id"] == second.session["game_id"]
    assert {first.session["agent"], second.session["agent"]} == {"first_0", "second_0"}
    assert len(frames) == 2


def test_games_spread_over_the_nodes_with_room(multinode: MultiNode):
    """The warm pool has a process on each worker: the first two games land on different nodes,
    and four games started one after another use both. An exact 2-2 split is not promised: a
    process whose game plays takes a new one only from its spares (none, when it built its first
    game itself), and a game goes to a process on a busier node that can open it at once rather
    than wait for a process to boot on the least-loaded one (``HostPool.place``)."""
    manager = get_or_create_manager(SETTINGS)
    wait_until(lambda: not ray.get(manager.list_games.remote()), "the earlier test's games to end", timeout=30)

    async def scenario():
        players = [await Participant.join(multinode.base_url, "SpaceInvaders") for _ in range(4)]
        await asyncio.gather(*(player.wait_for_event("play", timeout=20) for player in players))
        games = {game["game_id"]: game for game in ray.get(manager.list_games.remote())}
        nodes = [games[player.session["game_id"]]["node_id"] for player in players]
        for player in players:
            await player.close()
        return nodes

    nodes = run(scenario())
    assert nodes[0] != nodes[1]
    assert set(nodes) == set(multinode.workers)  # both workers host games; the head (no env_slots) none
