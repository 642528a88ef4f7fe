"""A participant away from their page: a one-player game pauses until they are back, a game several
people play plays on, and every change is recorded with its frame, on a real game recording into
a real store."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from crowdplay.engagement import PageEvent
from crowdplay.environments import get_env, register_env
from crowdplay.inputs import ParticipantInput
from crowdplay.recording.store import TrajectoryStore
from tests.recorded_games import recorded_game


def test_a_one_player_game_pauses_while_its_page_is_hidden_and_records_every_change(tmp_path):
    store = TrajectoryStore.open(str(tmp_path / "store.db"))

    async def scenario():
        game = recorded_game("SpaceInvaders", store)
        live, [agent] = game.live, game.agents
        live.submit(agent, ParticipantInput.holding(["Space"], live.frame_id, 1))
        await asyncio.sleep(0.5)
        live.note_page(agent, PageEvent("hidden", live.latest.frame_id))
        paused_at = live.episodes.steps
        await asyncio.sleep(0.5)
        steps_while_hidden = live.episodes.steps - paused_at
        live.note_page(agent, PageEvent("blur", live.latest.frame_id))  # still away
        live.note_page(agent, PageEvent("visible", live.latest.frame_id))
        await asyncio.sleep(0.2)
        steps_while_unfocused = live.episodes.steps - paused_at
        live.note_page(agent, PageEvent("focus", live.latest.frame_id))
        await asyncio.sleep(0.5)
        resumed_steps = live.episodes.steps - paused_at
        summary = live.statistics.summary(agent)
        await game.end()
        return steps_while_hidden, steps_while_unfocused, resumed_steps, summary

    hidden, unfocused, resumed, summary = asyncio.run(scenario())
    assert hidden == 0 and unfocused == 0 and resumed >= 15  # nothing stepped while away, then play goes on
    values = summary["values"]
    assert 0.45 <= values["time_hidden"] < 1.0 and values["time_unfocused"] >= 0.15 and values["pauses"] == 1 and values["time_paused"] >= 0.65
    [episode] = store.find_episodes({})
    assert [entry["event"] for entry in episode["page_events"]] == ["hidden", "pause", "blur", "visible", "focus", "resume"]
    assert all(entry["agent"] == "agent_0" and entry["frame"] > 0 and entry["at"] > 0 for entry in episode["page_events"])
    store.close()


def test_a_game_two_people_play_plays_on_while_one_page_is_hidden(tmp_path):
    store = TrajectoryStore.open(str(tmp_path / "store.db"))

    async def scenario():
        game = recorded_game("Pong2P", store)
        live = game.live
        await asyncio.sleep(0.3)
        live.note_page("first_0", PageEvent("hidden", live.latest.frame_id))
        before = live.episodes.steps
        await asyncio.sleep(0.5)
        played = live.episodes.steps - before
        await game.end()
        return played, live.statistics.summary("first_0")

    played, summary = asyncio.run(scenario())
    assert played >= 15 and summary["values"]["pauses"] == 0 and summary["values"]["time_hidden"] > 0.4
    [episode] = store.find_episodes({})
    assert [(entry["agent"], entry["event"]) for entry in episode["page_events"]] == [("first_0", "hidden")]
    store.close()


def test_a_task_that_ends_when_its_participant_leaves_the_page_gives_up_their_seat_at_once(tmp_path):
    register_env(replace(get_env("Breakout"), id="BreakoutEndsWhenAway", when_away="end"))
    store = TrajectoryStore.open(str(tmp_path / "store.db"))

    async def scenario():
        game = recorded_game("BreakoutEndsWhenAway", store)
        live, [agent] = game.live, game.agents
        await asyncio.sleep(0.3)
        live.note_page(agent, PageEvent("blur", live.latest.frame_id))
        stopped = live.stopped
        await game.end()
        return stopped

    assert asyncio.run(scenario()) is not None  # the game ended with the page's blur, not after a grace
    [episode] = store.find_episodes({})
    assert episode["status"] == "interrupted" and "left" in episode["reason"]
    assert [entry["event"] for entry in episode["page_events"]] == ["blur"]
    store.close()
