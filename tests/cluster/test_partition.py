"""A worker whose link is cut rather than whose processes exit: the frame channel between the ingress
(on the head) and a game on a worker runs through a relay that is frozen (nothing forwarded,
nothing reset). The participant is told within 2 s, in every game state; the EnvsManager places
nothing more on that node; the game ends exactly once, stored as ``server_unreachable``: stopped
there when the link comes back (the node then takes games again), or marked when Ray declares the
node dead (its episode kept up to the last acknowledged chunk)."""

from __future__ import annotations

import asyncio
import json
import time

import ray

from crowdplay import protocol
from crowdplay.client import Participant, ServerError, http_json
from crowdplay.data import Dataset
from crowdplay.manager import get_or_create_manager
from tests.cluster.conftest import SETTINGS
from tests.relay import Relay, game_channel, route_game_through

#: The participant must hear within this of the link being cut.
TOLD_WITHIN_S = 2.0


async def nodes_of_games(manager) -> dict[str, str]:
    return {game["game_id"]: game["node_id"] for game in await asyncio.to_thread(ray.get, manager.list_games.remote())}


async def suspect_nodes(manager) -> set[str]:
    def suspects(self) -> set[str]:
        return set(self.pool.suspect_nodes)

    return await asyncio.to_thread(ray.get, manager.__ray_call__.remote(suspects))


async def join_through_relay(base_url: str, manager, name: str) -> tuple[Participant, Relay, str]:
    """A session whose frame channel runs through a relay of its own, connected and playing."""
    session = await asyncio.to_thread(http_json, f"{base_url}/api/sessions", {"env_id": "SpaceInvaders", "participant": name})
    channel = await asyncio.to_thread(game_channel, manager, session["game_id"])
    relay = Relay(channel["host"], channel["port"])
    await relay.start()
    await asyncio.to_thread(route_game_through, manager, session["game_id"], relay)
    player = await Participant.connect(base_url, session)
    node = (await nodes_of_games(manager))[session["game_id"]]
    return player, relay, node


async def told_after_freeze(player: Participant, relay: Relay) -> float:
    """Freeze the relay; seconds until the participant's page got the error message."""
    relay.freeze()
    frozen_at = time.monotonic()
    while not any(event.get("type") == "error" for event in player.events):
        assert time.monotonic() - frozen_at < 10, f"the participant was never told: {player.events[-5:]}"
        await asyncio.sleep(0.01)
    told = time.monotonic() - frozen_at
    await player.wait_closed(timeout=10)
    return told


def episodes_of(game_id: str) -> list[dict]:
    data = Dataset.open(SETTINGS.store_uri)
    try:
        return [doc for doc in data.episodes() if doc["game_id"] == game_id]
    finally:
        data.close()


def stored_seqs(episode_id: str) -> list[int]:
    from crowdplay.recording.store import TrajectoryStore

    store = TrajectoryStore.open(SETTINGS.store_uri)
    try:
        return [chunk["seq"] for chunk in store.iter_chunks(episode_id)]
    finally:
        store.close()


def wait_for_status(game_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        episodes = episodes_of(game_id)
        ended = [doc for doc in episodes if doc.get("status")]
        if ended and len(ended) == len(episodes):
            return ended[-1]
        assert time.monotonic() < deadline, episodes
        time.sleep(0.5)


def test_a_paused_game_whose_link_is_cut_and_comes_back_ends_once_and_its_node_takes_games_again(multinode_head_ingress):
    cluster = multinode_head_ingress
    manager = get_or_create_manager(SETTINGS)

    async def scenario():
        player, relay, node = await join_through_relay(cluster.base_url, manager, "PARTITION-PAUSED")
        for _ in range(120):  # two seconds of play: its first chunks are stored
            await player.next_frame()
        await player.send_raw(json.dumps({"type": "page", "event": "hidden", "frame": 0}))
        await player.wait_for_event("paused", timeout=10)
        await asyncio.sleep(2 * SETTINGS.channel_stall_s)  # paused: no frames, only heartbeats; nobody is told anything
        assert not any(event.get("type") == "error" for event in player.events), player.events[-3:]
        told = await told_after_freeze(player, relay)
        suspects_while_cut = await suspect_nodes(manager)
        await relay.thaw()
        deadline = time.monotonic() + 30
        while node in await suspect_nodes(manager):
            assert time.monotonic() < deadline, "the node never took games again"
            await asyncio.sleep(0.2)
        sessions = {s["session_id"] for s in await asyncio.to_thread(ray.get, manager.list_sessions.remote())}
        await relay.close()
        return player, node, told, suspects_while_cut, sessions

    player, node, told, suspects_while_cut, sessions = asyncio.run(scenario())
    print(f"paused game: participant told {told:.2f} s after the link was cut")
    error = [event for event in player.events if event.get("type") == "error"][-1]
    assert told < TOLD_WITHIN_S
    assert error["code"] == protocol.CLOSE_SERVER_UNREACHABLE and "stopped answering" in error["reason"]
    assert player.websocket.close_code == protocol.CLOSE_SERVER_UNREACHABLE
    assert node in suspects_while_cut and player.session["session_id"] not in sessions
    episode = wait_for_status(player.session["game_id"])
    assert episode["status"] == "server_unreachable" and "stopped answering" in episode["reason"]
    assert not episode.get("lost_last_chunk")  # the process sealed it: every chunk arrived
    assert stored_seqs(episode["_id"]) == list(range(episode["chunks"]))


def test_a_cut_worker_takes_no_new_game_and_its_game_is_marked_when_ray_declares_it_dead(multinode_head_ingress):
    cluster = multinode_head_ingress
    manager = get_or_create_manager(SETTINGS)

    async def scenario():
        player, relay, cut_node = await join_through_relay(cluster.base_url, manager, "PARTITION-CUT")
        [kept_node] = [node for node in cluster.workers if node != cut_node]
        for _ in range(120):
            await player.next_frame()
        told = await told_after_freeze(player, relay)
        newcomers = [await Participant.join(cluster.base_url, "SpaceInvaders", decode=False, participant=f"PARTITION-NEW-{i}") for i in range(3)]
        placed = await nodes_of_games(manager)
        newcomer_nodes = [placed[newcomer.session["game_id"]] for newcomer in newcomers]
        refused = None
        try:
            await Participant.connect(cluster.base_url, player.session)
        except ServerError as error:
            refused = error.body
        [node] = [n for n in cluster.cluster.worker_nodes if n.node_id == cut_node]
        await asyncio.to_thread(cluster.cluster.remove_node, node)  # Ray declares it dead; its processes go
        for newcomer in newcomers:
            await newcomer.close()
        await relay.close()
        return player, told, newcomer_nodes, kept_node, refused

    player, told, newcomer_nodes, kept_node, refused = asyncio.run(scenario())
    print(f"playing game: participant told {told:.2f} s after the link was cut")
    assert told < TOLD_WITHIN_S
    assert player.websocket.close_code == protocol.CLOSE_SERVER_UNREACHABLE
    assert newcomer_nodes == [kept_node] * 3, newcomer_nodes
    assert refused is not None and refused.get("code") == protocol.CLOSE_SESSION_ENDED and "stopped answering" in refused["reason"]
    episode = wait_for_status(player.session["game_id"], timeout_s=120)
    assert episode["status"] == "server_unreachable" and episode["lost_last_chunk"] is True
    seqs = stored_seqs(episode["_id"])
    assert seqs and seqs == list(range(len(seqs)))  # stored up to the last acknowledged chunk, no gap
