"""Participants on real links to a cluster of real hosts (docs/netlab.md): the documented session,
play over a home-like link with the recording read back, a slow participant who slows only
themselves, and two participants reaching ingress replicas on different hosts sharing a game."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import yaml

from crowdplay.client import Participant
from crowdplay.data.dataset import Dataset
from crowdplay.netlab.cluster import ROOT, serve_deploy
from crowdplay.netlab.lab import Lab, pids_in
from crowdplay.netlab.namespace import run_inside
from crowdplay.netlab.shape import LinkShape
from tests.netlab.conftest import ByHand, in_thread_inside

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def test_the_documented_session_shapes_each_sites_link(by_hand: ByHand):
    outputs = list(by_hand.outputs.items())
    probes = [json.loads(out.strip().splitlines()[-1]) for command, out in outputs if " probe " in command]
    assert len(probes) == 2
    for probe in probes:  # both sites' links add 50 ms of round trip; the game plays across them
        assert probe["rtt_ms"]["p50"] >= 50 and probe["key_to_frame_ms"]["p50"] >= 50 and probe["fps"] > 30
        assert probe["server_ms"] is not None
    stats = json.loads(next(out for command, out in outputs if command.endswith(" stats")))
    assert stats["cpl-site1"]["shape"]["rate_kbit"] == 500 and stats["cpl-site1"]["shape"]["loss"] == 0.05
    assert stats["cpl-site0"]["shape"]["rtt_ms"] == 50 and stats["cpl-site0"]["shape"]["loss"] == 0.01
    lost = sum(stats[site][way]["lost"] for site in stats for way in ("up", "down"))
    assert lost > 0  # loss is real: packets were dropped, and TCP carried the game through


async def play_from_site(url: str, players: int, seconds: float, env_id: str = "SpaceInvaders") -> list[Participant]:
    """``players`` participants join, press keys for ``seconds`` and leave."""
    joined = [await Participant.join(url, env_id, decode=False) for _ in range(players)]
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        await asyncio.sleep(0.2)
        for index, player in enumerate(joined):
            await player.press(["ArrowLeft" if int(time.perf_counter() * 3 + index) % 2 else "ArrowRight", "Space"][: 1 + index % 2])
    await asyncio.sleep(0.5)
    for player in joined:
        await player.close()
    return joined


def frames_per_second(player: Participant, skip_s: float = 1.0) -> float:
    """Frames received per second after the first ``skip_s`` of play."""
    times = [timing.received_at for timing in player.timings]
    kept = [t for t in times if t >= times[0] + skip_s]
    return (len(kept) - 1) / (kept[-1] - kept[0]) if len(kept) > 1 else 0.0


def wait_for_episodes(lab: Lab, game_ids: set[str], timeout_s: float = 60) -> list[dict]:
    """The stored episodes of these games, once each has one that ended (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with Dataset.open(str(lab.workdir / "recordings.db")) as data:
            episodes = [episode for episode in data.episodes() if episode.get("game_id") in game_ids and episode.get("status")]
        if {episode["game_id"] for episode in episodes} == game_ids or time.monotonic() > deadline:
            return episodes
        time.sleep(1)


def test_participants_at_a_site_play_across_its_link_on_the_workers_and_every_game_is_recorded(lab: Lab):
    lab.shape("site0", LinkShape(rtt_ms=50, jitter_ms=5, loss=0.01))
    players = run_inside(lab.topology.site(0), lambda: play_from_site(lab.url, 4, 4.0))
    for player in players:
        keys_ms = sorted(latency * 1000 for _, latency in player.key_latencies)
        assert keys_ms and keys_ms[len(keys_ms) // 2] >= 50, keys_ms  # every key crossed the link both ways
        assert frames_per_second(player) > 30
        assert player.hello["served_by"]["node"]  # the head's ingress served it
    episodes = wait_for_episodes(lab, {player.session["game_id"] for player in players})
    assert len({episode["game_id"] for episode in episodes}) == 4
    assert all(episode.get("steps", 0) > 100 for episode in episodes), [(episode.get("steps"), episode.get("status")) for episode in episodes]


def ingress_and_haproxy_rss_mb(lab: Lab) -> dict[str, float]:
    """Resident memory of the head's ingress replica and HAProxy, by kind."""
    sizes: dict[str, float] = {"ingress": 0.0, "haproxy": 0.0}
    for pid in pids_in(lab.topology.head):
        try:
            process = psutil.Process(pid)
            line = " ".join(process.cmdline())
            kind = "ingress" if "Ingress" in process.name() + line else "haproxy" if "haproxy" in process.name() else None
            if kind:
                sizes[kind] += process.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return sizes


def slow_page(url: str, slow_down: Callable[[], None], playing: threading.Event, seconds: float) -> dict:
    """A participant's page at a site whose link turns slow once the page has loaded (at 24 kbit/s
    the page itself would take half a minute): plays ``seconds`` from its first frames, having set
    ``playing`` then; what it showed and counted."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(url, timeout=60_000)
            slow_down()
            page.click("button[data-env-id=SpaceInvaders]")
            page.click("#start")
            page.wait_for_function("window.crowdplay.framesDisplayed > 10", timeout=60_000)
            playing.set()
            told = False
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                told = told or page.is_visible("#connection-note")
                page.keyboard.down("Space")
                page.wait_for_timeout(300)
                page.keyboard.up("Space")
            return {"told": told, "note": page.inner_text("#connection-note"), "events": page.evaluate("window.crowdplay.pageEvents"),
                    "frames": page.evaluate("window.crowdplay.framesDisplayed")}
        finally:
            playing.set()  # a page that failed releases the others
            browser.close()


def test_a_participant_on_a_link_too_slow_for_the_game_is_told_and_slows_nobody_else(lab: Lab):
    """Others at a clean site keep their frame rate while one participant's link (5% loss, a rate
    below the game's stream) drops their frames at its small buffer; the ingress and HAProxy do
    not hold the frames that link cannot take, and the page tells the participant."""
    lab.shape("site0", LinkShape(rtt_ms=20))
    lab.shape("site1", LinkShape(rtt_ms=50))
    before = ingress_and_haproxy_rss_mb(lab)
    results: dict[str, object] = {}
    slow_playing = threading.Event()

    def others() -> None:  # play while the slow participant's game streams through their link
        slow_playing.wait(120)
        results["others"] = run_inside(lab.topology.site(0), lambda: play_from_site(lab.url, 3, 15.0))

    def slow_down() -> None:
        lab.shape("site1", LinkShape(rtt_ms=50, loss=0.05, rate_kbit=24, queue_bytes=4_000))

    clean = threading.Thread(target=others)
    clean.start()
    page = in_thread_inside(lab.topology.site(1), lambda: slow_page(lab.url, slow_down, slow_playing, 17.0))
    clean.join()
    after = ingress_and_haproxy_rss_mb(lab)
    others_played = results["others"]
    assert isinstance(others_played, list)
    for player in others_played:
        assert frames_per_second(player) >= 55, frames_per_second(player)
    assert page["told"] and "too slow" in page["note"] and "slow_connection" in page["events"]
    for kind in ("ingress", "haproxy"):
        assert after[kind] - before[kind] < 30, (before, after)
    stats = lab.link_stats()["cpl-site1"]["down"]
    assert stats["overflowed"] + stats["lost"] > 0
    lab.shape("site1", LinkShape(rtt_ms=50))


def replica_worker(lab: Lab, timeout_s: float = 120) -> str:
    """The worker Serve placed the second ingress replica on, once its proxy answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        for worker in ("w1", "w2"):
            try:
                lab.wait_until_served(timeout_s=0, host=worker)
                return worker
            except TimeoutError:
                continue
        assert time.monotonic() < deadline, "no worker's proxy served the second replica"
        time.sleep(1)


def test_participants_reaching_ingress_replicas_on_different_hosts_share_one_two_player_game(lab: Lab):
    """Two ingress replicas, at most one per host (``max_replicas_per_node``; ``ingress_on_head``
    off, so one may run on a worker), deployed like serve_config.yaml; one participant comes
    through the head's proxy, the other through the other replica's worker's, both from site0."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["applications"][0]["deployments"][0].update(num_replicas=2, max_replicas_per_node=1)
    config["applications"][0]["runtime_env"] = {"env_vars": {"CROWDPLAY_INGRESS_ON_HEAD": "0"}}
    two_replicas = lab.workdir / "serve_config_two_replicas.yaml"
    two_replicas.write_text(yaml.safe_dump(config))
    serve_deploy(lab.topology.head, lab.workdir, lab.settings, config=Path(two_replicas))
    lab.wait_until_served()
    worker = replica_worker(lab)
    head_url, worker_url = lab.url, lab.url.replace(lab.topology.address("head"), lab.topology.address(worker))
    lab.shape("site0", LinkShape(rtt_ms=30, jitter_ms=3))

    async def pair_up() -> dict:
        """Pair up until the two reach different replicas. Each host's HAProxy sends a connection
        to the replica with the fewest of its own connections (``leastconn``), ties to the first
        listed: with none open, both proxies pick the same one every time. So after a pair that
        met on one replica, a one-player game held open through the worker's proxy makes that
        replica the busier one there."""
        held: list[Participant] = []
        try:
            for _ in range(10):
                first = await Participant.join(head_url, "Pong2P")
                second = await Participant.join(worker_url, "Pong2P")
                if first.hello["served_by"]["replica"] != second.hello["served_by"]["replica"]:
                    await asyncio.gather(first.wait_for_event("play", timeout=30), second.wait_for_event("play", timeout=30))
                    await asyncio.gather(first.next_frame(), second.next_frame())
                    pair = {"served_by": [first.hello["served_by"], second.hello["served_by"]], "sessions": [first.session, second.session]}
                    await first.close()
                    await second.close()
                    return pair
                met_on = first.hello["served_by"]["replica"]
                await first.close()
                await second.close()
                occupant = await Participant.join(worker_url, "SpaceInvaders")
                held.append(occupant)
                if occupant.hello["served_by"]["replica"] != met_on:  # the tie went the other way: it makes no difference
                    await occupant.close()
                    held.remove(occupant)
                await asyncio.sleep(1)
            raise AssertionError("the two participants never reached different ingress replicas")
        finally:
            for occupant in held:
                await occupant.close()

    try:
        pair = run_inside(lab.topology.site(0), pair_up)
    finally:  # the lab as the document left it, for the tests after this one
        serve_deploy(lab.topology.head, lab.workdir, lab.settings)
        lab.wait_until_served()
    first, second = pair["sessions"]
    assert pair["served_by"][0]["node"] != pair["served_by"][1]["node"]
    assert first["game_id"] == second["game_id"]
    assert {first["agent"], second["agent"]} == {"first_0", "second_0"}
