"""LiveEnv: one environment instance running in real time, with subscribers watching it.

This is the heart of an EnvActor, kept free of Ray so it reads (and tests) on its own:

* the process's shared ``TickClock`` (``crowdplay.tick_clock``) ticks it at the environment's fps;
* every tick applies the participants' inputs (``crowdplay.game_inputs``: idle choices and the
  turn-based modes live there) and the AI agents' newest answers (``crowdplay.ai_seats``), steps
  the environment once, and tells the game's observers (``crowdplay.game_observers``: the
  recording, the statistics, the input log);
* every tick's screen is offered to each subscriber (``crowdplay.fanout``); a subscriber still busy
  with an older frame simply gets the newest one next, so slow clients drop frames instead of
  queueing them;
* an episode that ends is reported to the subscribers and the next one starts at once.

Who plays which agent, and when play begins, is decided by the session's ``Lineup``
(``crowdplay.lineup``); a LiveEnv only steps once ``start`` is called.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, Protocol, cast

from crowdplay import codec, protocol
from crowdplay.ai.agent import PolicyAgent
from crowdplay.ai_seats import AISeats
from crowdplay.config import Settings
from crowdplay.controllers import Controller, Human
from crowdplay.engagement import PageReport, WhenAway, when_away_for
from crowdplay.environments import EnvAdapter, EnvSpec, InvalidAction, make_adapter
from crowdplay.environments.adapter import StepResult
from crowdplay.episodes import Episodes
from crowdplay.fanout import Fanout, Subscriber, Tick
from crowdplay.game_inputs import AgentInputs, AppliedInput
from crowdplay.game_observers import EpisodeBegun, EpisodeEnded, GameObserver, GameStatistics, InputLog
from crowdplay.game_recording import GameRecording, NoRecording
from crowdplay.hello import hello_fields
from crowdplay.inputs import ParticipantInput
from crowdplay.recording.recorder import Recorder
from crowdplay.recording.step import Observed, Stepped
from crowdplay.round_trips import RoundTrip
from crowdplay.statistics import StatisticsTracker
from crowdplay.tick_clock import Clocks, TickClock

__all__ = ["AppliedInput", "Clocks", "GameListener", "LiveEnv", "ParticipantInput", "SessionEnded", "Subscriber", "TickClock"]

log = logging.getLogger(__name__)
#: Participants' statistics go to their pages every two seconds, each game at its own phase: sent
#: by every game on the same tick, they made that tick's frames late (measured: key-to-frame p99
#: 25 -> 31 ms at 40 sessions when all games sent once a second on the same tick).
STATS_EVERY_TICKS = 120


class SessionEnded(Exception):
    """Raised to inputs arriving after the session stopped."""


class GameListener(Protocol):
    """Who a ``LiveEnv`` tells about itself beyond its frames (the ``Lineup``)."""

    def statistics_due(self) -> None:
        """Every ``STATS_EVERY_TICKS`` ticks while the game plays."""

    def stopped(self, reason: str) -> None:
        """The game stopped (``reason`` as its subscribers were told)."""

    def left_page(self, agent: str) -> None:
        """The participant at ``agent`` left the game's page, and the task ends their part for it."""


def statistics_due(ticks: int, phase: int) -> bool:
    """Every ``STATS_EVERY_TICKS`` ticks at the game's own ``phase`` (so games spread over the
    clock), and never within the first period: a tick's events go out before its frame, and the
    page's first frame must come before its first statistics."""
    return ticks >= STATS_EVERY_TICKS and (ticks + phase) % STATS_EVERY_TICKS == 0


class LiveEnv:
    """An environment stepping in real time for its subscribers."""

    def __init__(
        self,
        spec: EnvSpec,
        seed: int,
        settings: Settings,
        clock: TickClock | None = None,
        adapter: EnvAdapter | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        """``adapter`` may be a freshly built, unused environment for ``spec`` (a host's spare);
        ``recorder`` receives every step for storage; ``settings`` gives the keyframe interval."""
        self.spec = spec
        self.clock = clock or TickClock(spec.fps)
        self.adapter = adapter or make_adapter(spec)
        self.agents = self.adapter.agents
        self.frame_id = self.ticks = self.ticks_late = 0
        self.stopped: str | None = None
        self.running = False
        #: several people wait for each other on the waiting screen; one person sees no frame before ``play``
        self._waiting_screen = len(spec.human_agents(self.agents)) > 1
        #: who hears of the game's statistics being due and of its end (``listen``)
        self._listener: GameListener | None = None
        self._stats_phase = random.randrange(STATS_EVERY_TICKS)
        self.inputs = AgentInputs(self.adapter.keymaps, self.adapter.idle, spec.mode)
        self.ai = AISeats()
        self.episodes = Episodes(spec, self.adapter, seed)
        self.fanout = Fanout(settings.keyframe_interval)
        self.statistics = GameStatistics()
        self.input_log = InputLog()
        self.recording = NoRecording() if recorder is None else GameRecording(recorder, spec, self.adapter, self.fanout)
        self._observers: list[GameObserver] = [self.statistics, self.input_log] if recorder is None else [self.recording, self.statistics, self.input_log]
        self.latest: Tick  # the newest screen, set by every reset and step
        #: what the game does while a participant is away from its page (``crowdplay.engagement``)
        self.when_away = when_away_for(cast(WhenAway | None, spec.when_away), len(spec.human_agents(self.agents)))
        #: the participant whose absence paused the game (None: it is not paused)
        self.paused_for: str | None = None
        #: who plays each agent a participant plays, and the agents whose participant's connection dropped
        self._participants: dict[str, Human] = {}
        self.away: set[str] = set()
        self._begin_episode()

    @property
    def name(self) -> str:
        """(``Ticked``) the environment's id, for the clock's log."""
        return self.spec.id

    def describe(self) -> dict[str, Any]:
        """What a client needs before the first frame (sent as ``hello``)."""
        return hello_fields(self.spec, self.adapter, self.latest.screen.pixels)

    @property
    def screen_shown(self) -> bool:
        """(``FrameSource``) whether subscribers are sent frames: once the game runs, and before
        that only as the waiting screen of a game several people play. A one-person game's channel
        drained between its ``lobby`` and a ``play`` held by a build would otherwise send the first
        screen ahead of ``play``, against the documented order."""
        return self.running or self._waiting_screen

    # ----------------------------------------------------------------- real-time loop
    def start(self) -> None:
        """Start ticking (idempotent); the lineup calls it once everyone is in."""
        if not self.running and self.stopped is None:
            self.running = True
            self.frame_id = self.clock.n  # frame ids continue the shared clock's grid
            self.latest = replace(self.latest, frame_id=self.frame_id)
            self.clock.add(self)

    def tick(self, next_frame: int) -> None:
        """One turn of the game loop: apply the inputs that arrived since the last tick, step the
        environment once (unless the game waits for a participant or a policy), tell the
        observers, begin the next episode when this one ended, show the AI agents the new screen,
        and wake the subscribers to send the frame ``next_frame``."""
        if self.paused_for is not None or self._nobody_connected():
            return  # its participants are away: nothing is stepped or recorded until one is back
        self.ticks += 1
        applied, pressed = self.inputs.apply(next_frame, self.ticks, self.episodes.steps, time.monotonic())
        self._observe_inputs(applied)
        if not self.inputs.turn_due(self.spec.mode, pressed) or self._undecided():
            return  # turn-based, or an agent without an action: the game waits for the participant
        if self.ai.policies:
            self.ai.apply_answers(self.inputs, self.recording.ai_answered)
        previous, result = self.latest.screen, self._step(next_frame)
        self._observe_step(next_frame, result, previous, frozenset(entry.agent for entry in applied))
        if result.terminated or result.truncated:
            self._end_episode(result)
        if self.ai.policies:
            self.ai.show(self.latest.frame_id, self.latest.screen, self.adapter)
        self.fanout.wake_all()  # pushed subscribers (the frame channels) are sent the frame now
        self.input_log.frames_sent()

    def _observe_inputs(self, applied: list[AppliedInput]) -> None:
        """The participants' inputs applied this tick reach the observers, with when they arrived."""
        wall = time.time()
        for entry in applied:
            for observer in self._observers:
                observer.input_applied(entry, wall - entry.apply_delay_s)

    def _undecided(self) -> bool:
        """Whether an agent has no action to play: its keymap has no no-op and its participant
        holds no mapped key (idle "wait", or "repeat" before the first key), or its policy has not
        answered yet. The game then waits: nothing is stepped or recorded, no action is invented."""
        return any(action is None and not self.ai.has_answer(agent) for agent, action in self.inputs.action.items())

    def _step(self, next_frame: int) -> StepResult:
        """Step the environment with every agent's action; the new screen becomes the latest tick."""
        result = self.episodes.step(cast(dict[str, int], self.inputs.action), self.inputs.client_frame)  # decided: ``_undecided`` was False
        self.frame_id = next_frame
        self.latest = Tick(next_frame, self.episodes.steps, self.episodes.number, codec.Screen(self.adapter.screen()), dict(self.episodes.returns))
        self.fanout.new_tick()
        return result

    def _observe_step(self, next_frame: int, result: StepResult, previous: codec.Screen, human_inputs: frozenset[str]) -> None:
        """The step reaches its observers, and every few seconds the listener."""
        keeps_ram = self.recording.keeps_ram or bool(self.statistics.trackers)
        step = Stepped(
            next_frame, cast(dict[str, int], self.inputs.action), result.rewards, result.terminated, result.truncated,
            self.inputs.client_frame, self.latest.screen, previous, self.adapter.ram() if keeps_ram else None,
            self.adapter_observations(), human_inputs,
        )
        for observer in self._observers:
            observer.stepped(step)
        if statistics_due(self.ticks, self._stats_phase) and self._listener is not None:
            self._listener.statistics_due()

    def _end_episode(self, result: StepResult) -> None:
        """The environment ended the episode: it is stored "complete", everyone is told, and the
        next one begins at once."""
        statistics = self.statistics.end_episode()
        ended = EpisodeEnded("complete", self.episodes.steps, dict(self.episodes.returns), result.terminated, result.truncated, statistics)
        for observer in self._observers:
            observer.episode_ended(ended)
        self.fanout.queue(
            protocol.text("episode_end", episode=self.episodes.number, steps=self.episodes.steps, returns=self.episodes.returns, truncated=result.truncated, statistics=statistics)
        )
        self.episodes.advance()
        self._begin_episode()

    def _begin_episode(self) -> None:
        """Reset the environment for the next episode and show its first screen."""
        record = self.episodes.reset()
        self.latest = Tick(self.frame_id, 0, self.episodes.number, codec.Screen(self.adapter.screen()), dict(self.episodes.returns))
        self.fanout.new_tick()
        self.ai.reset()
        keys_held = {agent: keys for agent, keys in self.inputs.keys_held.items() if keys}
        begun = EpisodeBegun(
            record.episode, record.seed, record.start_state, self.episodes.reset_options(), self.latest.screen, self.adapter_observations(), keys_held,
        )
        for observer in self._observers:
            observer.episode_began(begun)

    def adapter_observations(self) -> Observed:
        """The environment's latest observations and infos per agent, when they are recorded
        (not for ALE, whose observation is the screen)."""
        if self.adapter.observation_spaces is None:
            return None
        return self.adapter.observations, self.adapter.infos

    # ----------------------------------------------------------------- who plays (the lineup)
    def set_controller(self, agent: str, controller: Controller, policy: PolicyAgent | None = None) -> None:
        """From the next tick ``agent`` is played by ``policy`` (AI) or, without one, by a participant."""
        self._check_agent(agent)
        if policy is not None and self.paused_for == agent:
            self._pause(agent, False, 0)  # a policy plays for the absent participant now: no reason to wait
        self.ai.seat(agent, policy)
        self.away.discard(agent)
        if policy is None and isinstance(controller, Human):
            self._participants[agent] = controller
        else:
            self._participants.pop(agent, None)
        if policy is not None:
            self.inputs.discard(agent)
            self.ai.show(self.latest.frame_id, self.latest.screen, self.adapter, [policy])  # the first answer comes from the screen as it is now
        self.recording.set_controller(agent, controller, self.latest.screen)

    def participant_away(self, agent: str, away: bool) -> None:
        """``agent``'s participant's connection dropped (``away``), or they are back. Meanwhile
        their keys count as released, the agent's steps are recorded as nobody's choice
        (``Human.away``, with a ``disconnected`` and a ``reconnected`` page event), and a game none
        of whose participants is connected does not step at all."""
        participant = self._participants.get(agent)
        if participant is None or (agent in self.away) == away or self.stopped is not None:
            return
        if away:
            self.away.add(agent)
            self.inputs.release(agent)
        else:
            self.away.discard(agent)
        self.recording.page_event(agent, "disconnected" if away else "reconnected", self.frame_id, self.frame_id)
        self.recording.set_controller(agent, replace(participant, away=away), self.latest.screen)

    def _nobody_connected(self) -> bool:
        """Every agent a participant plays waits for its participant to come back (an AI-only
        game, which no participant plays, never does)."""
        return bool(self.away) and all(agent in self.away for agent in self._participants)

    def listen(self, listener: GameListener) -> None:
        """``listener`` hears when statistics are due and when the game stops (one listener)."""
        self._listener = listener

    def track(self, agent: str, tracker: StatisticsTracker, details: dict[str, Any]) -> None:
        """A participant sits at ``agent``: their statistics are kept by ``tracker`` and who they
        are (``details``) is stored with this and every later episode."""
        self.statistics.track(agent, tracker)
        self.recording.describe_agent(agent, details)

    def note_watcher(self, who: str, watching: bool) -> None:
        """Someone began (or stopped) watching read-only: noted in the recording only."""
        self.recording.note_watcher(who, watching)

    def restamp_start(self) -> None:
        """Play begins now: the episode opened while the game waited counts from here."""
        self.recording.restamp_start()

    # ----------------------------------------------------------------- input
    def submit(self, agent: str, given: ParticipantInput) -> int | None:
        """Queue a participant's input for the next tick (``AgentInputs.queue``) and return the action
        it resolves to. Every input reaches the game here, so this is where an action chosen by number
        is checked: InvalidAction outside the action space (or for an agent AI plays),
        SessionEnded once the game stopped."""
        self._check_human(agent)
        if given.action is not None:
            self.adapter.check_action(agent, given.action)
        return self.inputs.queue(agent, given, self.frame_id, self.ticks)

    # ----------------------------------------------------------------- the participant's page
    def note_page(self, agent: str, event: PageReport) -> None:
        """A change on the page of ``agent``'s participant (hidden, unfocused, a slow connection):
        recorded with the page's and the game's frame; a game that pauses when its participant is
        away waits until they are back, and one whose task ends then gives up their seat (not for a
        lost link, ``crowdplay.channel``: the ingress tells the participant itself). A round
        trip the page measured is only recorded (``crowdplay.round_trips``)."""
        self._check_human(agent)
        attention = self.statistics.attention(agent)
        if isinstance(event, RoundTrip):
            attention.round_trips.add(event.rtt_ms)
            self.recording.round_trip(agent, event.rtt_ms, event.frame, self.frame_id)
            return
        changed = attention.note(event.event)
        self.recording.page_event(agent, event.event, event.frame, self.frame_id)
        if changed and self.when_away == "pause":
            self._pause(agent, attention.away, event.frame)
        elif changed and attention.away and self.when_away == "end" and not attention.link_lost and self._listener is not None:
            self._listener.left_page(agent)

    def _pause(self, agent: str, away: bool, page_frame: int) -> None:
        """Pause for ``agent``'s absence, or resume on their return: recorded, and told to the page."""
        if away == (self.paused_for is not None):
            return
        self.paused_for = agent if away else None
        self.statistics.attention(agent).paused(away)
        self.recording.page_event(agent, "pause" if away else "resume", page_frame, self.frame_id)
        self.fanout.announce(protocol.text("paused" if away else "resumed", agent=agent))

    def _check_human(self, agent: str) -> str:
        if self._check_agent(agent) in self.ai:
            raise InvalidAction(f"agent {agent!r} is played by AI")
        return agent

    def _check_agent(self, agent: str) -> str:
        if self.stopped is not None:
            raise SessionEnded(self.stopped)
        if agent not in self.agents:
            raise InvalidAction(f"unknown agent {agent!r}")
        return agent

    # ----------------------------------------------------------------- output
    def subscribe(self, agent: str) -> Subscriber:
        """A subscriber that receives events from now on (its stream may start a moment later)."""
        subscriber = Subscriber(self._check_agent(agent))
        self.fanout.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop sending to ``subscriber`` (nothing if it was not subscribed)."""
        self.fanout.subscribers.discard(subscriber)

    def stream(self, agent: str, subscriber: Subscriber | None = None) -> AsyncIterator[bytes | str]:
        """Frames (bytes) and events (JSON text) for one participant, newest frame first; before
        ``start`` the first screen and the lineup's events (``Fanout.stream``)."""
        return self.fanout.stream(subscriber or Subscriber(self._check_agent(agent)), self)

    def applied_seq(self, agent: str) -> int:
        """(``FrameSource``) the agent's newest input applied, echoed in its frames."""
        return self.inputs.applied_seq[agent]

    def announce(self, message: str) -> None:
        """Send an event to every subscriber now."""
        self.fanout.announce(message)

    tell = staticmethod(Fanout.tell)
    dismiss = staticmethod(Fanout.dismiss)

    # ----------------------------------------------------------------- lifecycle
    def stop(self, reason: str, status: str = "interrupted") -> None:
        """End the session: subscribers get an ``end`` message, the loop and the env stop. The
        episode under way is stored with ``status`` (``crowdplay.recording.status``): "finished"
        when a participant's Finish ended it, else "interrupted"."""
        if self.stopped is not None:
            return
        self.stopped = reason
        self.clock.remove(self)
        ended = EpisodeEnded(status, self.episodes.steps, dict(self.episodes.returns), False, False, self.statistics.episode_so_far(), reason)
        for observer in self._observers:
            observer.episode_ended(ended)
        self.recording.close()
        self.fanout.wake_all()
        self.adapter.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stopped(reason)  # the listener (the lineup) holds this LiveEnv: let go of it
            # so the ended game is freed by reference counting at once, not by a full collection later

    def stats(self) -> dict[str, Any]:
        """Frame id, ticks, episode, late ticks, whether it runs, and the subscribers' counts, for the EnvActor's stats."""
        return {
            "frame_id": self.frame_id,
            "ticks": self.ticks,
            "episode": self.episodes.number,
            "ticks_late": self.ticks_late,
            "running": self.running and self.stopped is None,
            "subscribers": self.fanout.counts(),
        }
