"""The Lineup's rules (the waiting room, the countdown, drops and reconnects, second tabs,
leaving) on a real LiveEnv of a small two-player environment, in one event loop: no Ray."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv

from crowdplay import protocol
from crowdplay.config import Settings
from crowdplay.controllers import Human, from_document
from crowdplay.data.loading import played_by_participant
from crowdplay.environments import EnvSpec, Keymap, register_env
from crowdplay.game_recording import NoRecording
from crowdplay.inputs import ParticipantInput
from crowdplay.lineup import COUNTDOWN, ENDED, PLAYING, WAITING, Lineup
from crowdplay.realtime import LiveEnv

GRACE_S = 0.05


class Corridor(ParallelEnv):
    """Two agents walking a corridor of ten squares; the episode ends when either reaches its end."""

    metadata = {"name": "corridor_v0", "render_modes": ["rgb_array"]}
    possible_agents = ["left", "right"]
    render_mode = "rgb_array"

    def __init__(self) -> None:
        self.agents: list[str] = []
        self.positions = {agent: 0 for agent in self.possible_agents}

    def observation_space(self, agent: str) -> gym.Space:
        return gym.spaces.Discrete(10)

    def action_space(self, agent: str) -> gym.Space:
        return gym.spaces.Discrete(2)

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.agents = list(self.possible_agents)
        self.positions = {agent: 0 for agent in self.agents}
        return dict(self.positions), {agent: {} for agent in self.agents}

    def step(self, actions: dict):
        for agent, action in actions.items():
            self.positions[agent] = min(9, self.positions[agent] + int(action))
        done = any(position == 9 for position in self.positions.values())
        observations = dict(self.positions)
        rewards = {agent: float(actions[agent]) for agent in self.agents}
        flags = {agent: done for agent in self.agents}
        infos = {agent: {} for agent in self.agents}
        if done:
            self.agents = []
        return observations, rewards, flags, {agent: False for agent in flags}, infos

    def render(self) -> np.ndarray:
        screen = np.zeros((8, 20, 3), np.uint8)
        screen[:4, self.positions["left"] * 2] = 255
        screen[4:, self.positions["right"] * 2] = 255
        return screen


CORRIDOR = register_env(EnvSpec(
    id="UnitCorridor", title="Corridor", description="Walk to the end.", make_env=Corridor, fps=60,
    agents=("left", "right"), keymap=Keymap({"ArrowRight": 1}, noop=0), reconnect_grace_s=GRACE_S,
))
SETTINGS = replace(Settings(), countdown_s=0.05, connect_timeout_s=1.0, record=False)


def game(seated: int = 0) -> tuple[LiveEnv, Lineup, list[dict]]:
    """A game of the corridor, its lineup, the events it sends the manager, and the first
    ``seated`` seats taken by sessions s1, s2 (not connected yet)."""
    events: list[dict] = []
    live = LiveEnv(CORRIDOR, seed=1, settings=SETTINGS)
    lineup = Lineup(live, SETTINGS, on_event=events.append)
    for number, agent in enumerate(CORRIDOR.agents[:seated], 1):
        lineup.take(agent, f"s{number}", Human(), {})
    return live, lineup, events


def kinds(subscriber) -> list[str]:
    return [json.loads(message)["type"] for message in subscriber.events]


def test_play_begins_once_everyone_is_connected_after_a_countdown():
    async def scenario():
        live, lineup, events = game(seated=2)
        first = lineup.connect("left", "s1")
        assert lineup.phase == WAITING and not live.running
        second = lineup.connect("right", "s2")
        assert lineup.phase == COUNTDOWN and {"event": "closed"} in events
        await asyncio.sleep(0.15)
        phase, running = lineup.phase, live.running
        live.stop("test over")
        return phase, running, kinds(first), kinds(second), lineup.phase

    phase, running, first, second, after = asyncio.run(scenario())
    assert phase == PLAYING and running and after == ENDED
    assert "countdown" in first and first.index("countdown") < first.index("play") and "play" in second


def test_play_due_while_the_process_builds_an_environment_begins_once_the_build_is_done():
    async def scenario():
        live, lineup, events = game(seated=2)
        build = asyncio.get_running_loop().create_future()
        lineup.hold = lambda: build if not build.done() else None
        lineup.connect("left", "s1")
        lineup.connect("right", "s2")
        await asyncio.sleep(0.15)  # the countdown is over
        held = (lineup.phase, live.running)
        build.set_result(None)
        await asyncio.sleep(0.01)
        playing = (lineup.phase, live.running)
        live.stop("test over")
        return held, playing, events

    held, playing, events = asyncio.run(scenario())
    assert held == (COUNTDOWN, False) and {"event": "closed"} in events  # the manager hears it began: it sends no more builds
    assert playing == (PLAYING, True)


def test_a_seat_left_in_the_waiting_room_reopens_after_the_grace():
    async def waiting_room():
        live, lineup, events = game(seated=2)
        right = lineup.connect("right", "s2")
        lineup.disconnect(right)
        await asyncio.sleep(GRACE_S * 3)
        released = [e for e in events if e["event"] == "seat_released"]
        return lineup.seats["right"].status, released, lineup.phase

    status, released, phase = asyncio.run(waiting_room())
    assert status == "open" and phase == WAITING
    assert released[0]["session_id"] == "s2" and released[0]["reopened"]


def test_a_participant_who_comes_back_within_the_grace_keeps_their_seat():
    async def scenario():
        live, lineup, events = game(seated=2)
        lineup.connect("left", "s1")
        right = lineup.connect("right", "s2")
        await asyncio.sleep(0.1)
        lineup.disconnect(right)
        back = lineup.connect("right", "s2")
        await asyncio.sleep(GRACE_S * 3)
        state = lineup.phase, lineup.seats["right"].session_id, [e["event"] for e in events]
        live.stop("test over")
        return state, kinds(back)

    (phase, session, seen), messages = asyncio.run(scenario())
    assert phase == PLAYING and session == "s2" and "seat_released" not in seen


def test_without_a_fallback_a_participant_who_stays_away_ends_the_game_for_everyone_with_why():
    async def scenario():
        live, lineup, events = game(seated=2)
        left = lineup.connect("left", "s1")
        right = lineup.connect("right", "s2")
        await asyncio.sleep(0.1)
        lineup.disconnect(right)
        await asyncio.sleep(GRACE_S * 3)
        return lineup.phase, live.stopped, events, kinds(left)

    phase, stopped, events, messages = asyncio.run(scenario())
    last = events[-1]
    assert phase == ENDED and stopped and "right" in stopped
    assert last["event"] == "ended" and set(last["statistics"]) == {"s1"}
    assert [(e["session_id"], "episodes" in e["statistics"]) for e in events if e["event"] == "seat_released"] == [("s2", True)]
    assert "player" in messages  # the other participant was told who left


def test_a_second_tab_replaces_the_first_which_is_told_why():
    async def scenario():
        live, lineup, _ = game()
        lineup.take("left", "s1", Human(), {})
        first = lineup.connect("left", "s1")
        second = lineup.connect("left", "s1")
        live.stop("test over")
        return first.final, lineup.seats["left"].subscriber is second

    final, replaced = asyncio.run(scenario())
    assert final is not None and json.loads(final)["code"] == protocol.CLOSE_REPLACED and replaced


def test_a_seat_that_is_not_open_cannot_be_taken_and_a_stranger_cannot_connect():
    import pytest

    from crowdplay.lineup import SeatUnavailable

    async def scenario():
        live, lineup, _ = game()
        lineup.take("left", "s1", Human(), {})
        with pytest.raises(SeatUnavailable):
            lineup.take("left", "s2", Human(), {})
        with pytest.raises(SeatUnavailable):
            lineup.connect("left", "s2")
        live.stop("test over")

    asyncio.run(scenario())


def test_a_withdrawn_request_gives_its_seat_up_at_once_and_a_game_nobody_is_left_in_ends():
    async def scenario():
        live, lineup, events = game(seated=2)
        lineup.connect("right", "s2")
        withdrawn = [lineup.withdraw("s1"), lineup.withdraw("s2"), lineup.withdraw("nobody")]
        left_alone = (lineup.seats["left"].status, lineup.phase)
        _, lonely, lonely_events = game(seated=1)
        lonely.withdraw("s1")
        live.stop("test over")
        return withdrawn, left_alone, events, lonely.phase, lonely_events

    withdrawn, left_alone, events, lonely_phase, lonely_events = asyncio.run(scenario())
    assert withdrawn == [True, False, False]  # s2 connected: its session stands
    assert left_alone == ("open", WAITING)
    assert [(e["session_id"], e["reopened"]) for e in events if e["event"] == "seat_released"] == [("s1", True)]
    assert lonely_phase == ENDED and any(e["event"] == "ended" for e in lonely_events)


class Steps(gym.Env):
    """One agent counting steps to 600: a game one person plays."""

    metadata = {"render_modes": ["rgb_array"]}
    observation_space = gym.spaces.Discrete(601)
    action_space = gym.spaces.Discrete(2)
    render_mode = "rgb_array"

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.count = 0
        return self.count, {}

    def step(self, action: int):
        self.count += 1
        return self.count, 1.0, self.count == 600, False, {}

    def render(self) -> np.ndarray:
        screen = np.zeros((4, 12, 3), np.uint8)
        screen[:, self.count % 12] = 255
        return screen


STEPS = register_env(EnvSpec(
    id="UnitSteps", title="Steps", description="Count to 600.", make_env=Steps, fps=60, keymap=Keymap({"ArrowRight": 1}, noop=0),
    reconnect_grace_s=5.0,
))


def sent(live: LiveEnv, subscriber) -> list[str]:
    """What the subscriber's frame channel would send now, as it does (``Fanout.next_message``)
    until it is up to date: each event's type, or "frame"."""
    kinds = []
    while (following := live.fanout.next_message(subscriber, live)) is not None:
        message, _ = following
        kinds.append("frame" if isinstance(message, bytes) else json.loads(message)["type"])
    return kinds


def test_a_one_person_game_sends_no_frame_before_play_even_while_its_start_waits_for_a_build():
    """docs/protocol.md's order for one person: hello, lobby, lobby, play, then the first frame.
    Before, a channel that drained between the lobby and ``play`` (a build under way in the
    process, or only the next turn of the event loop) sent the first screen ahead of ``play``."""
    async def scenario():
        live = LiveEnv(STEPS, seed=1, settings=SETTINGS)
        lineup = Lineup(live, SETTINGS, on_event=lambda event: None)
        build = asyncio.get_running_loop().create_future()
        lineup.hold = lambda: build if not build.done() else None
        lineup.take("agent_0", "s1", Human(), {})
        subscriber = lineup.connect("agent_0", "s1")
        before_the_turn = sent(live, subscriber)
        await asyncio.sleep(0.05)  # play is due; the build holds it
        while_held = sent(live, subscriber)
        build.set_result(None)
        await asyncio.sleep(0.01)
        once_playing = sent(live, subscriber)
        live.stop("test over")
        return before_the_turn, while_held, once_playing

    before_the_turn, while_held, once_playing = asyncio.run(scenario())
    assert before_the_turn == ["lobby", "lobby"] and while_held == []  # connected ("waiting"), "countdown": no frame
    assert once_playing[:2] == ["play", "frame"]


def test_people_waiting_for_each_other_see_the_waiting_screen():
    async def scenario():
        live, lineup, _ = game(seated=2)
        first = lineup.connect("left", "s1")
        waiting = sent(live, first)
        live.stop("test over")
        return waiting

    assert asyncio.run(scenario()) == ["lobby", "frame"]  # connected, the waiting screen


class Noted(NoRecording):
    """Keeps what the game tells its recording about who played and what happened on the pages."""

    def __init__(self) -> None:
        self.controllers: list[tuple[str, object]] = []
        self.page_events: list[tuple[str, str]] = []

    def set_controller(self, agent, controller, screen) -> None:
        self.controllers.append((agent, controller))

    def page_event(self, agent, event, page_frame, frame) -> None:
        self.page_events.append((agent, event))


def test_a_one_person_game_whose_participant_drops_steps_nothing_until_they_are_back():
    """Before, it played on with their last keys through the reconnect grace, and recorded those
    steps as theirs."""
    async def scenario():
        live = LiveEnv(STEPS, seed=1, settings=SETTINGS)
        live.recording = noted = Noted()
        lineup = Lineup(live, SETTINGS, on_event=lambda event: None)
        lineup.take("agent_0", "s1", Human("p-1"), {})
        first = lineup.connect("agent_0", "s1")
        await asyncio.sleep(0.1)
        lineup.disconnect(first)
        steps_when_gone = live.episodes.steps
        await asyncio.sleep(0.2)
        steps_while_gone = live.episodes.steps
        lineup.connect("agent_0", "s1")
        await asyncio.sleep(0.1)
        steps_once_back = live.episodes.steps
        live.stop("test over")
        return steps_when_gone, steps_while_gone, steps_once_back, noted

    when_gone, while_gone, once_back, noted = asyncio.run(scenario())
    assert when_gone > 0 and while_gone == when_gone and once_back > while_gone
    assert noted.page_events == [("agent_0", "disconnected"), ("agent_0", "reconnected")]
    assert noted.controllers[-2:] == [("agent_0", Human("p-1", away=True)), ("agent_0", Human("p-1"))]


def test_a_dropped_participant_s_agent_plays_its_no_op_as_nobody_s_choice_while_the_other_plays_on():
    async def scenario():
        live = LiveEnv(replace(CORRIDOR, reconnect_grace_s=5.0), seed=1, settings=SETTINGS)
        live.recording = noted = Noted()
        lineup = Lineup(live, SETTINGS, on_event=lambda event: None)
        lineup.take("left", "s1", Human("s1"), {})
        lineup.take("right", "s2", Human("s2"), {})
        left = lineup.connect("left", "s1")
        lineup.connect("right", "s2")
        await asyncio.sleep(0.15)  # the countdown is over: they play
        live.submit("left", ParticipantInput(keys=frozenset({"ArrowRight"}), action=None, frame=1, seq=1))
        await asyncio.sleep(0.03)
        held = live.inputs.action["left"]
        lineup.disconnect(left)  # with ArrowRight still held
        steps = live.episodes.steps
        await asyncio.sleep(0.1)
        playing_on, action_while_gone = live.episodes.steps > steps, live.inputs.action["left"]
        live.stop("test over")
        return held, playing_on, action_while_gone, noted

    held, playing_on, action_while_gone, noted = asyncio.run(scenario())
    assert held == 1 and playing_on and action_while_gone == 0  # the no-op, not the key they last held
    assert ("left", Human("s1", away=True)) in noted.controllers and noted.page_events == [("left", "disconnected")]


def test_a_step_whose_participant_was_away_is_nobody_s_in_the_data():
    assert played_by_participant(from_document(Human("p-1").document()))
    assert Human("p-1", away=True).document() == {"human": True, "participant": "p-1", "away": True}
    assert not played_by_participant(from_document(Human("p-1", away=True).document()))
    assert not played_by_participant(from_document({"human": False, "policy": "ppo"}))
