"""A worker whose cable is pulled (docs/netlab.md's ``cut``: its packets and those to it vanish,
its processes run on): participants whose games it hosts are told within 2 s and offered a new
game, the others play on, newcomers land on the other worker; the cut games' servers, hearing
nothing from the ingress, note the link lost and pause; once the cable is back the cut games end
exactly once, stored ``server_unreachable`` with every chunk, and the node takes games again."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter

from crowdplay import protocol
from crowdplay.client import Participant
from crowdplay.data.dataset import Dataset
from crowdplay.netlab.cluster import node_environment
from crowdplay.netlab.lab import Lab
from crowdplay.netlab.namespace import run_inside
from crowdplay.netlab.shape import LinkShape
from crowdplay.recording.store import TrajectoryStore
from tests.netlab.test_links import wait_for_episodes

#: The participant must hear within this of the cable being pulled.
TOLD_WITHIN_S = 2.0

#: Run inside the head's namespace: where each game is (its node's address) and which nodes the
#: EnvsManager holds suspect, as a Ray driver on the head sees them.
PLACEMENT = """
import json, sys
import ray
from crowdplay.config import Settings
settings = Settings.from_env()
ray.init(address=sys.argv[1] + ":6379", logging_level="ERROR", log_to_driver=False)
manager = ray.get_actor(settings.manager_name, namespace=settings.namespace)
address = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
games = {game["game_id"]: address.get(game["node_id"]) for game in ray.get(manager.list_games.remote())}
suspects = ray.get(manager.__ray_call__.remote(lambda self: sorted(self.pool.suspect_nodes)))
print(json.dumps({"games": games, "suspect": [address.get(node) for node in suspects]}))
"""


def placement(lab: Lab) -> dict:
    """Games by node address, and the suspect nodes' addresses."""
    head = lab.topology.head
    done = subprocess.run(["ip", "netns", "exec", head, sys.executable, "-c", PLACEMENT, lab.topology.address("head")],
                          env=node_environment(lab.workdir, "head", lab.settings), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def told_within(player: Participant, since: float, limit_s: float = 10.0) -> float:
    """Seconds from ``since`` until the participant got the error message."""
    while not any(event.get("type") == "error" for event in player.events):
        assert time.monotonic() - since < limit_s, f"the participant was never told: {player.events[-5:]}"
        await asyncio.sleep(0.01)
    return time.monotonic() - since


def test_a_cut_worker_tells_its_participants_within_2_s_and_its_games_end_once_when_it_returns(lab: Lab):
    lab.shape("site0", LinkShape(rtt_ms=20))

    async def join(count: int, prefix: str) -> list[Participant]:
        return [await Participant.join(lab.url, "SpaceInvaders", decode=False, participant=f"{prefix}-{i}") for i in range(count)]

    async def play(players: list[Participant], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for player in players:
                await player.press(["Space"] if int(time.monotonic() * 4) % 2 else [])
            await asyncio.sleep(0.1)

    async def scenario() -> dict:
        """At the site, in one event loop (the participants' connections live in it)."""
        players = await join(4, "CUT")
        await play(players, 2.0)  # the first chunks are stored
        games_on = (await asyncio.to_thread(placement, lab))["games"]
        cut_address = games_on[players[0].session["game_id"]]
        cut_off = [player for player in players if games_on[player.session["game_id"]] == cut_address]
        playing_on = [player for player in players if player not in cut_off]
        cut_host = next(f"w{index}" for index in (1, 2) if lab.topology.address(f"w{index}") == cut_address)
        lab.cut(cut_host)
        cut_at = time.monotonic()
        told = await asyncio.gather(*(told_within(player, cut_at) for player in cut_off))
        frames_before = [len(player.timings) for player in playing_on]
        await play(playing_on, 2.0)
        frames = [(before, len(player.timings)) for before, player in zip(frames_before, playing_on)]
        newcomers = await join(3, "NEW")
        during = await asyncio.to_thread(placement, lab)
        lab.heal(cut_host)
        healed_at = time.monotonic()
        while cut_address in (await asyncio.to_thread(placement, lab))["suspect"]:
            assert time.monotonic() - healed_at < 60, "the node never took games again"
            await asyncio.sleep(1)
        for player in playing_on + newcomers:
            await player.close()
        return {"cut_off": cut_off, "playing_on": playing_on, "told": told, "frames": frames, "newcomers": newcomers,
                "during": during, "cut_address": cut_address}

    seen = run_inside(lab.topology.site(0), scenario)
    cut_address, during = seen["cut_address"], seen["during"]
    [kept_address] = {lab.topology.address("w1"), lab.topology.address("w2")} - {cut_address}
    print(f"cut worker: participants told {', '.join(f'{s:.2f}' for s in seen['told'])} s after its cable was pulled")
    assert seen["cut_off"] and max(seen["told"]) < TOLD_WITHIN_S
    for player in seen["cut_off"]:
        error = next(event for event in player.events if event.get("type") == "error")
        assert error["code"] == protocol.CLOSE_SERVER_UNREACHABLE and "stopped answering" in error["reason"]
        assert player.websocket.close_code == protocol.CLOSE_SERVER_UNREACHABLE
    for before_count, after_count in seen["frames"]:  # the other worker's games played on: ~60 fps
        assert after_count - before_count > 60, seen["frames"]
    assert cut_address in during["suspect"]
    assert [during["games"][player.session["game_id"]] for player in seen["newcomers"]] == [kept_address] * 3

    cut_games = {player.session["game_id"] for player in seen["cut_off"]}
    episodes = wait_for_episodes(lab, cut_games | {player.session["game_id"] for player in seen["playing_on"]})
    ended = Counter(episode["game_id"] for episode in episodes)
    assert all(ended[game] == 1 for game in cut_games), ended  # each ended once
    store = TrajectoryStore.open(str(lab.workdir / "recordings.db"))
    try:
        for episode in episodes:
            if episode["game_id"] not in cut_games:
                assert episode["status"] == "interrupted", episode
                continue
            assert episode["status"] == "server_unreachable" and "stopped answering" in episode["reason"], episode
            assert not episode.get("lost_last_chunk")  # the process sealed it once it could be reached
            assert [chunk["seq"] for chunk in store.iter_chunks(episode["_id"])] == list(range(episode["chunks"]))
            with Dataset.open(str(lab.workdir / "recordings.db")) as data:
                events = [(event["event"], event["step"]) for event in data.page_events(episode["_id"])]
            # the game server noted its participant's link lost and paused there: nothing played unattended
            [(_, lost_at)] = [event for event in events if event[0] == "link_lost"]
            assert ("pause", lost_at) in events and episode["steps"] <= lost_at + 1, (events, episode["steps"])
    finally:
        store.close()
