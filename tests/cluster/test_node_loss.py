"""A worker node leaves the cluster mid-game: the games it hosted end with a message to their
participants (and their episodes are marked interrupted); games on the other node play on
untouched; new participants are matched onto the node that remains."""

from __future__ import annotations

import asyncio
import time

import ray

from crowdplay import protocol
from crowdplay.client import Participant
from crowdplay.data import Dataset
from crowdplay.manager import get_or_create_manager
from tests.cluster.conftest import SETTINGS


async def games_by_node(manager) -> dict[str, str]:
    return {game["game_id"]: game["node_id"] for game in await asyncio.to_thread(ray.get, manager.list_games.remote())}


async def seat_one_per_node(base_url: str, manager, workers: list[str]) -> dict[str, Participant]:
    """Join until a game runs on each worker node (the manager spreads games; the warm pool's
    processes may start on one node first)."""
    seated: dict[str, Participant] = {}
    extra: list[Participant] = []
    for index in range(6):
        player = await Participant.join(base_url, "Pong", participant=f"NODE-LOSS-{index}")
        node = (await games_by_node(manager))[player.session["game_id"]]
        if node in seated:
            extra.append(player)
        else:
            seated[node] = player
        if set(seated) == set(workers):
            break
    for player in extra:
        await player.close()
    assert set(seated) == set(workers), f"games did not reach both worker nodes: {await games_by_node(manager)}"
    return seated


def test_a_lost_worker_node_ends_its_games_with_a_message_and_the_rest_play_on(multinode_head_ingress):
    cluster = multinode_head_ingress
    manager = get_or_create_manager(SETTINGS)
    lost_node, kept_node = cluster.workers

    async def scenario():
        seated = await seat_one_per_node(cluster.base_url, manager, cluster.workers)
        lost, kept = seated[lost_node], seated[kept_node]
        for _ in range(120):  # two seconds: the lost game's first chunks reach the store
            await lost.next_frame()
            await kept.next_frame()
        [node] = [node for node in cluster.cluster.worker_nodes if node.node_id == lost_node]
        removal = asyncio.create_task(asyncio.to_thread(cluster.cluster.remove_node, node))

        # The participant on the kept node plays on: frames keep coming at ~60 fps.
        started, frames, longest_gap, last = time.monotonic(), 0, 0.0, time.monotonic()
        while time.monotonic() - started < 5:
            await kept.next_frame()
            now = time.monotonic()
            longest_gap, last, frames = max(longest_gap, now - last), now, frames + 1
        await removal

        # The participant on the lost node was told, and the connection closed.
        await lost.wait_closed(timeout=30)
        # The manager notices the dead processes: the session is gone, and its old token hears why.
        deadline = time.monotonic() + 60
        while lost.session["session_id"] in {s["session_id"] for s in await asyncio.to_thread(ray.get, manager.list_sessions.remote())}:
            assert time.monotonic() < deadline, "the lost game's session was never freed"
            await asyncio.sleep(0.5)
        refused = None
        try:
            await Participant.connect(cluster.base_url, lost.session)
        except Exception as error:  # the server answers with an error message instead of hello
            refused = error

        # Matchmaking continues, on the node that remains.
        newcomer = await Participant.join(cluster.base_url, "Pong", participant="NODE-LOSS-NEW")
        await newcomer.next_frame()
        newcomer_node = (await games_by_node(manager))[newcomer.session["game_id"]]
        await kept.next_frame()
        for player in (kept, newcomer):
            await player.close()
        return lost, kept, frames, longest_gap, refused, newcomer_node

    lost, kept, frames, longest_gap, refused, newcomer_node = asyncio.run(scenario())
    assert frames >= 240 and longest_gap < 0.5, (frames, longest_gap)  # untouched
    errors = [event for event in lost.events if event.get("type") == "error"]
    assert errors and "game server stopped" in errors[-1]["reason"], lost.events
    assert lost.websocket.close_code == protocol.CLOSE_INTERNAL_ERROR
    assert refused is not None and "game server stopped" in str(refused), refused
    assert newcomer_node == kept_node

    # The lost game's episode is marked as interrupted, with why.
    data = Dataset.open(SETTINGS.store_uri)
    deadline = time.monotonic() + 30
    while True:
        episodes = [doc for doc in data.episodes() if doc["game_id"] == lost.session["game_id"]]
        if episodes and episodes[0].get("status") == "interrupted":
            break
        assert time.monotonic() < deadline, episodes
        time.sleep(0.5)
    assert "game server stopped" in episodes[0]["reason"]
    data.close()
