"""Multi-agent games through the real system: matchmaking, the waiting room, human_timeout,
fallback AI on disconnect, the end of a game nobody can take over, second tabs and reconnects."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import ray

from crowdplay import protocol
from crowdplay.client import Participant, http_json
from tests.conftest import run, wait_until


async def play_frames(player: Participant, count: int) -> list:
    return [await player.next_frame() for _ in range(count)]


def actor_of(manager, session_id: str):
    return ray.get(manager.session_actor.remote(session_id))


def test_two_participants_share_a_game_and_a_third_gets_a_new_one(base_url, manager):
    async def scenario():
        first = await Participant.join(base_url, "SpaceInvaders2P")
        second = await Participant.join(base_url, "SpaceInvaders2P")
        third = await Participant.join(base_url, "SpaceInvaders2P")
        lobby = await third.wait_for_event("lobby")
        for player in (first, second):
            await player.wait_for_event("countdown")
            await player.wait_for_event("play")
        await asyncio.gather(play_frames(first, 140), play_frames(second, 140))  # past the game's ~130 frames of intro
        await first.press({"ArrowRight", "Space"})
        await second.press({"ArrowLeft"})
        await asyncio.gather(play_frames(first, 20), play_frames(second, 20))
        for player in (first, second, third):
            await player.close()
        return first, second, third, lobby

    first, second, third, lobby = run(scenario())
    assert first.session["game_id"] == second.session["game_id"] != third.session["game_id"]
    assert {first.hello["agent"], second.hello["agent"]} == {"first_0", "second_0"}
    assert "green" in first.hello["instructions"] and "yellow" in second.hello["instructions"]  # per-agent instructions
    assert lobby["phase"] == "waiting" and lobby["awaiting"] == ["second_0"]
    log = ray.get(actor_of(manager, first.session["session_id"]).input_log.remote(first.session["game_id"]))
    applied = {(entry["agent"], entry["action"]) for entry in log}
    assert ("first_0", 4) in applied and ("second_0", 3) in applied  # RIGHTFIRE and LEFT, each for its own cannon
    episode = ray.get(actor_of(manager, first.session["session_id"]).episodes.remote(first.session["game_id"]))[-1]
    assert 4 in episode["actions"]["first_0"] and 3 in episode["actions"]["second_0"]


def test_twenty_concurrent_joins_fill_ten_games_with_no_seat_taken_twice(base_url, manager):
    with ThreadPoolExecutor(20) as pool:
        sessions = list(pool.map(lambda _: http_json(f"{base_url}/api/sessions", {"env_id": "Pong2P"}), range(20)))
    by_game = defaultdict(list)
    for session in sessions:
        by_game[session["game_id"]].append(session["agent"])
    assert len(by_game) == 10
    assert all(sorted(agents) == ["first_0", "second_0"] for agents in by_game.values())
    games = {game["game_id"]: game for game in ray.get(manager.list_games.remote())}
    for game_id in by_game:
        seated = games[game_id]["seats"]
        assert sorted(seated) == ["first_0", "second_0"] and len(set(seated.values())) == 2 and None not in seated.values()
    for game_id in by_game:
        ray.get(manager.end_game.remote(game_id, "test over"))


def test_human_timeout_starts_the_game_with_ai_in_the_empty_seat(base_url, manager):
    async def scenario():
        async with await Participant.join(base_url, "TestDuoTimeout") as player:
            lobby = await player.wait_for_event("lobby")
            started = time.monotonic()
            await player.wait_for_event("play", timeout=10)
            waited = time.monotonic() - started
            await play_frames(player, 60)
            stats = ray.get(actor_of(manager, player.session["session_id"]).game_state.remote(player.session["game_id"]))
            episode = ray.get(actor_of(manager, player.session["session_id"]).episodes.remote(player.session["game_id"]))[-1]
            return lobby, waited, stats, episode

    lobby, waited, stats, episode = run(scenario())
    assert lobby["timeout_s"] is not None and 1.0 < lobby["timeout_s"] <= 2.0
    assert 1.0 < waited < 3.5
    assert stats["seats"] == {"first_0": "ready", "second_0": "ai"} and stats["running"]
    assert len(set(episode["actions"]["second_0"])) > 1  # the random fallback plays


def test_a_disconnect_hands_the_agent_to_the_fallback_and_the_game_goes_on(base_url, manager):
    async def scenario():
        stayer = await Participant.join(base_url, "TestDuoFallback")
        leaver = await Participant.join(base_url, "TestDuoFallback")
        await stayer.wait_for_event("play")
        await play_frames(stayer, 30)
        left_at = time.monotonic()
        await leaver.close()
        took_over = await stayer.wait_for_event("player", status="ai")
        handed_over_after = time.monotonic() - left_at
        before = stayer.last_frame_id
        await play_frames(stayer, 60)
        stats = ray.get(actor_of(manager, stayer.session["session_id"]).game_state.remote(stayer.session["game_id"]))
        await stayer.close()
        return took_over, handed_over_after, before, stayer, stats

    took_over, handed_over_after, before, stayer, stats = run(scenario())
    assert took_over["agent"] == "second_0" and took_over["policy"] == "noop"
    assert handed_over_after < 1.0  # grace 0.5 s, then the fallback at once
    assert stayer.last_frame_id > before and stats["running"]
    assert stats["seats"] == {"first_0": "ready", "second_0": "ai"}


def test_without_a_fallback_the_game_ends_for_the_others_with_a_reason(base_url, manager):
    async def scenario():
        stayer = await Participant.join(base_url, "TestDuoAlone")
        leaver = await Participant.join(base_url, "TestDuoAlone")
        await stayer.wait_for_event("play")
        await leaver.close()
        end = await stayer.wait_for_event("end", timeout=5)
        await stayer.wait_closed()
        return stayer, end

    stayer, end = run(scenario())
    assert "second_0 left" in end["reason"] and "no AI" in end["reason"]
    assert stayer.websocket.close_code == protocol.CLOSE_SESSION_ENDED
    game_id = stayer.session["game_id"]
    wait_until(lambda: game_id not in {game["game_id"] for game in ray.get(manager.list_games.remote())}, "the manager still lists the ended game")


def test_a_second_tab_replaces_the_first_and_a_dropped_connection_gets_its_seat_back(base_url, manager):
    async def scenario():
        partner = await Participant.join(base_url, "TestDuoFallback")
        first_tab = await Participant.join(base_url, "TestDuoFallback", participant="tab-worker")
        await first_tab.wait_for_event("play")
        second_tab = await Participant.join(base_url, "TestDuoFallback", participant="tab-worker", resume=first_tab.session["resume"])
        replaced = await first_tab.wait_for_event("error")
        await first_tab.wait_closed()
        await play_frames(second_tab, 10)
        # The connection drops and comes back within the grace period: same seat, game still on.
        second_tab.websocket.transport.abort()
        await second_tab.wait_closed()
        again = await Participant.connect(base_url, second_tab.session)
        back = await partner.wait_for_event("player", status="back")
        await play_frames(again, 10)
        stats = ray.get(actor_of(manager, partner.session["session_id"]).game_state.remote(partner.session["game_id"]))
        for player in (partner, again):
            await player.close()
        return first_tab, second_tab, again, replaced, back, stats

    first_tab, second_tab, again, replaced, back, stats = run(scenario())
    assert second_tab.session["session_id"] == first_tab.session["session_id"]
    assert second_tab.session["token"] != first_tab.session["token"]
    assert replaced["code"] == protocol.CLOSE_REPLACED and "another tab" in replaced["reason"]
    assert first_tab.websocket.close_code == protocol.CLOSE_REPLACED
    assert again.hello["agent"] == second_tab.hello["agent"] == back["agent"]
    assert stats["seats"] == {"first_0": "ready", "second_0": "ready"} and stats["running"]


def test_an_ai_partner_that_always_plays_starts_the_game_with_one_participant(base_url, manager):
    async def scenario():
        async with await Participant.join(base_url, "TestDuoWithAI") as player:
            await player.wait_for_event("play")
            await play_frames(player, 30)
            return player, ray.get(actor_of(manager, player.session["session_id"]).game_state.remote(player.session["game_id"]))

    player, stats = run(scenario())
    assert player.hello["humans"] == ["first_0"] and player.hello["agent"] == "first_0"
    assert stats["seats"] == {"first_0": "ready", "second_0": "ai"}
    assert not any(event["type"] == "countdown" for event in player.events)  # one person: no countdown
    assert Counter(event["type"] for event in player.events)["play"] == 1
