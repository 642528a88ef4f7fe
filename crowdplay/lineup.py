"""Lineup: who plays each agent of one running game, and when play begins.

A game waits in its *waiting room* until every agent has a player: participants take the seats
the EnvsManager gives them and connect; agents in ``ai_agent_map_always`` are AI from the start.
Once every participant is connected (or ``human_timeout`` runs out, and fallback AI takes the
still-empty seats) a countdown runs when several people play, and the LiveEnv starts ticking.

A participant whose connection drops keeps their seat for ``reconnect_grace_s`` (a second
connection to the same seat, e.g. a new tab, replaces the first and the first is told why).
When the grace runs out during play, the fallback policy in ``ai_agent_map_fallback`` takes over
that agent and the others play on; without a fallback the game ends for everyone with a message
that says why. In the waiting room the seat simply opens again. A seat whose participant never
connects is given up after ``connect_timeout_s``. A participant who presses Finish gives their seat
up at once the same way; a game that ends because of it stores its episode as ``finished``, not
``interrupted`` (``crowdplay.recording.status``).

Each participant's play statistics (the task's, ``crowdplay.study``) are kept from the moment they
take a seat, streamed to their page every two seconds (``stats``: values, progress toward each
requirement, the estimated bonus) and reported with the seat when they leave or the game ends.

The lineup decides; it reports what the EnvsManager must know (seats freed, the game closed to
newcomers, the game ended, each leaving participant's statistics) through ``on_event``. Nothing
here touches Ray.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from crowdplay import protocol
from crowdplay.ai.agent import PolicyAgent
from crowdplay.ai.remote import PolicyClient
from crowdplay.ai_players import AIPlayers
from crowdplay.audience import Audience
from crowdplay.config import Settings
from crowdplay.controllers import Controller
from crowdplay.engagement import engagement
from crowdplay.realtime import LiveEnv, Subscriber
from crowdplay.recording.status import FINISHED, INTERRUPTED
from crowdplay.statistics import StatisticsTracker
from crowdplay.study import Task, current_study
from crowdplay.vocabulary import GameEvent, Phase

WAITING, COUNTDOWN, PLAYING, ENDED = Phase.WAITING, Phase.COUNTDOWN, Phase.PLAYING, Phase.ENDED


class SeatUnavailable(LookupError):
    """The seat is not open (taken, played by AI) or the game no longer takes newcomers."""


@dataclass(eq=False)
class Seat:
    """One agent of the game: who plays it (a participant's session, an AI policy, or nobody yet) and
    that participant's connection and give-up timer."""

    agent: str
    #: the participant's session, None while the seat is open or played by AI
    session_id: str | None = None
    policy: PolicyAgent | None = None
    subscriber: Subscriber | None = None
    #: given up after this delay unless the participant (re)connects
    timer: asyncio.TimerHandle | None = None
    connected_once: bool = False

    def expire_after(self, delay_s: float, give_up: Callable[[Seat, str], None], reason: str) -> None:
        """``give_up(self, reason)`` after ``delay_s`` unless the participant (re)connects first."""
        self.cancel_timer()
        self.timer = asyncio.get_running_loop().call_later(delay_s, give_up, self, reason)

    def cancel_timer(self) -> None:
        """The participant is here (or the game ended): no give-up is pending."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    @property
    def status(self) -> str:
        """``ai``, ``open``, ``ready`` (the participant is connected) or ``joining``."""
        if self.policy is not None:
            return "ai"
        if self.session_id is None:
            return "open"
        return "ready" if self.subscriber is not None else "joining"


@dataclass
class Deadline:
    """A limit on waiting (the waiting room's ``human_timeout``): when it runs out, and its timer."""

    at: float | None = None
    timer: asyncio.TimerHandle | None = None

    def start(self, delay_s: float, callback: Callable[[], None]) -> None:
        """``callback`` in ``delay_s`` unless cancelled first."""
        self.at = time.monotonic() + delay_s
        self.timer = asyncio.get_running_loop().call_later(delay_s, callback)

    def remaining(self) -> float | None:
        """Seconds left (None: no limit)."""
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def cancel(self) -> None:
        """The wait is over (play began, or the game ended)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@dataclass
class Lineup:
    """Who plays each agent of one game and when play begins (see the module docstring); ``on_event``
    tells the EnvsManager what it must know."""

    live: LiveEnv
    settings: Settings
    #: receives {"event": GameEvent, ...} for the EnvsManager
    on_event: Callable[[dict[str, Any]], None] = lambda event: None
    #: where AI agents' policies run (None: inside this process)
    policies: PolicyClient | None = None
    #: what play waits for, if anything, when it is due (the process's environment builds: one
    #: holds its interpreter lock ~90 ms, so a game begins after them, not during one). The frame
    #: channel also waits for it before it connects a participant, so that a one-person game's
    #: messages keep their order (``play`` before the first frame) when a build was under way.
    hold: Callable[[], Awaitable[None] | None] = lambda: None
    phase: str = WAITING
    seats: dict[str, Seat] = field(default_factory=dict)
    #: the waiting room's limit (``EnvSpec.human_timeout``)
    _deadline: Deadline = field(default_factory=lambda: Deadline())

    def __post_init__(self) -> None:
        spec = self.live.spec
        self.task: Task = current_study().task_for(spec.id)
        self.seats = {agent: Seat(agent) for agent in self.live.agents}
        self.ai = AIPlayers(self.live, self.policies)
        self.ai.prepare()
        for agent, policy_id in spec.ai_agent_map_always.items():
            self.seats[agent].policy = self.ai.hand(agent, policy_id)
        self.live.listen(self)
        self.audience = Audience(self.live, self.ai_only, self.grace_s)
        if spec.human_timeout is not None:
            self._deadline.start(spec.human_timeout, self._human_timeout)

    @property
    def ai_only(self) -> bool:
        """Every agent is played by AI (``ai_agent_map_always``): a game to watch (a
        demonstration), which begins when it is first watched (or ``begin_unwatched``) and ends
        once nobody has watched it for the reconnect grace."""
        return not self.live.spec.human_agents(self.live.agents)

    @property
    def grace_s(self) -> float:
        """How long a participant whose connection dropped keeps their seat."""
        spec_grace = self.live.spec.reconnect_grace_s
        return spec_grace if spec_grace is not None else self.settings.reconnect_grace_s

    # ----------------------------------------------------------------- seats (from the manager)
    def humans(self) -> list[Seat]:
        """The seats held by participants (connected or not)."""
        return [seat for seat in self.seats.values() if seat.session_id is not None]

    def take(self, agent: str, session_id: str, controller: Controller, details: dict[str, Any]) -> None:
        """Give an open seat to a participant's session (they still have to connect)."""
        seat = self.seats.get(agent)
        if self.phase != WAITING or seat is None or seat.status != "open":
            raise SeatUnavailable(f"seat {agent!r} is not open")
        seat.session_id = session_id
        self.live.set_controller(agent, controller)
        self.live.track(agent, StatisticsTracker(self.task.statistics, self.live.spec.fps, list(self.live.agents).index(agent)), details)
        seat.expire_after(self.settings.connect_timeout_s, self._give_up, "you did not connect in time")
        self.live.announce(self._lobby_message())

    def connect(self, agent: str, session_id: str) -> Subscriber:
        """A participant's connection arrives; an older connection to the same seat is dismissed."""
        seat = self.seats.get(agent)
        if seat is None or seat.session_id != session_id or self.phase == ENDED:
            raise SeatUnavailable("your place in this game is no longer yours")
        subscriber = self.live.subscribe(agent)
        if seat.subscriber is not None:
            self.live.dismiss(
                seat.subscriber,
                protocol.text("error", reason="this game was opened in another tab or window", code=protocol.CLOSE_REPLACED),
            )
        returning = seat.connected_once and seat.subscriber is None and self.phase != WAITING
        seat.subscriber, seat.connected_once = subscriber, True
        seat.cancel_timer()
        if self.phase != WAITING:
            self.live.participant_away(agent, False)
        if returning:
            self.live.announce(protocol.text("player", agent=agent, status="back"))
        self.live.announce(self._lobby_message())
        self._begin_if_ready()
        return subscriber

    def disconnect(self, subscriber: Subscriber) -> None:
        """A connection closed; a replaced one changes nothing."""
        self.live.unsubscribe(subscriber)
        seat = self.seats.get(subscriber.agent)
        if seat is None or seat.subscriber is not subscriber or self.phase == ENDED:
            return
        seat.subscriber = None
        grace = self.grace_s
        seat.expire_after(grace, self._give_up, "you did not come back in time")
        if self.phase == WAITING:
            self.live.announce(self._lobby_message())
        else:
            self.live.participant_away(seat.agent, True)
            self.live.announce(protocol.text("player", agent=seat.agent, status="left", grace_s=grace))

    # ----------------------------------------------------------------- watching
    def watch(self, who: str) -> Subscriber:
        """A read-only view of the game for ``who`` (``crowdplay.audience``): its frames and events,
        never its inputs. The game is unaffected but for a note in the recording of who watched when."""
        if self.phase == ENDED:
            raise SeatUnavailable("this game has ended")
        subscriber = self.audience.watch(who, self._lobby_message())
        if self.ai_only:
            self._begin_if_ready()
        return subscriber

    def unwatch(self, subscriber: Subscriber) -> None:
        """A watcher left; an AI-only game nobody watches ends after the reconnect grace."""
        self.audience.unwatch(subscriber, None if self.phase == ENDED else self.end)

    def begin_unwatched(self) -> None:
        """Start an AI-only game before anyone watches it (from the dashboard): it still ends if
        nobody comes to watch within the reconnect grace."""
        self._begin_if_ready()
        if self.phase != ENDED:
            self.audience.end_when_unwatched(self.end)

    # ----------------------------------------------------------------- giving seats up
    def _give_up(self, seat: Seat, reason: str, finished: bool = False) -> None:
        """The seat's participant is gone for good: reopen it (waiting room), hand it to the
        fallback AI, or end the game when no fallback exists or nobody is left. ``finished``: they
        pressed Finish, so a game that ends for it ends as ``finished`` rather than ``interrupted``."""
        seat.timer = None
        session_id = seat.session_id
        if session_id is None or seat.subscriber is not None or self.phase == ENDED:
            return
        seat.session_id = None
        statistics = self.live.statistics.summary(seat.agent, forget=True)
        fallback = self.live.spec.ai_agent_map_fallback.get(seat.agent)
        status = FINISHED if finished else INTERRUPTED
        reopened = self.phase == WAITING
        self.on_event({"event": GameEvent.SEAT_RELEASED, "agent": seat.agent, "session_id": session_id, "reopened": reopened, "reason": reason, "statistics": statistics})
        if reopened:
            if self.humans():
                self.live.announce(self._lobby_message())
            else:
                self.end("everyone left the waiting room", status)
            return
        if fallback is None:  # their statistics went with the event above: the game's end has only the others'
            self.end(departure_reason(seat.agent, finished, others_left=bool(self.humans())), status)
            return
        seat.policy = self.ai.hand(seat.agent, fallback)
        self.live.announce(protocol.text("player", agent=seat.agent, status="ai", policy=fallback))
        if not self.humans():
            self.end("the last participant finished playing" if finished else "every participant has left the game", status)

    # ----------------------------------------------------------------- starting
    def _human_timeout(self) -> None:
        """Waited long enough: fallback AI takes the seats nobody took, and the game begins; a
        participant who took a seat but is not connected yet has the reconnect grace to arrive."""
        if self.phase != WAITING:
            return
        for seat in self.seats.values():
            if seat.status == "open":
                seat.policy = self.ai.hand(seat.agent, self.live.spec.ai_agent_map_fallback[seat.agent])
        for seat in self.seats.values():
            if seat.status == "joining":
                seat.expire_after(self.grace_s, self._give_up, "you did not connect in time")
                self.live.participant_away(seat.agent, True)  # not connected yet: their agent's steps are nobody's choice
        self._begin()

    def _begin_if_ready(self) -> None:
        if self.phase == WAITING and all(seat.status in ("ready", "ai") for seat in self.seats.values()):
            self._begin()

    def _begin(self) -> None:
        """Close the game to newcomers; count down when several people play, then start ticking
        (once the process's builds under way are done: ``hold``)."""
        self._deadline.cancel()
        self.on_event({"event": GameEvent.CLOSED})
        people = sum(1 for seat in self.seats.values() if seat.policy is None)
        countdown = self.settings.countdown_s if people > 1 else 0.0
        self.phase = COUNTDOWN
        self.live.announce(self._lobby_message())
        if countdown > 0:
            self.live.announce(protocol.text("countdown", seconds=countdown))
        asyncio.get_running_loop().call_later(countdown, self._play)

    def _play(self) -> None:
        if self.phase != COUNTDOWN:
            return
        held = self.hold()
        if held is not None:
            asyncio.ensure_future(self._play_after(held))
            return
        self.phase = PLAYING
        self.live.restamp_start()
        self.live.start()
        self.live.announce(protocol.text("play"))

    async def _play_after(self, held: Awaitable[None]) -> None:
        await held
        self._play()

    def _lobby_message(self) -> str:
        seats = {agent: seat.status for agent, seat in self.seats.items()}
        remaining = self._deadline.remaining() if self.phase == WAITING else None
        awaiting = [agent for agent, status in seats.items() if status in ("open", "joining")]
        return protocol.text("lobby", phase=self.phase, seats=seats, awaiting=awaiting, timeout_s=remaining)

    # ----------------------------------------------------------------- ending
    def end(self, reason: str, status: str = INTERRUPTED) -> None:
        """End the game for everyone (their streams get ``end`` with the reason); the episode under
        way is stored with ``status``."""
        self.live.stop(reason, status)

    def stopped(self, reason: str) -> None:
        """(``GameListener``) however the LiveEnv stopped (ended here, by the manager, or its environment failed)."""
        self.phase = ENDED
        statistics = {seat.session_id: self.live.statistics.summary(seat.agent) for seat in self.seats.values() if seat.session_id is not None}
        for seat in self.seats.values():
            seat.cancel_timer()
        self._deadline.cancel()
        self.audience.cancel()
        self.on_event({"event": GameEvent.ENDED, "reason": reason, "statistics": statistics})

    # ----------------------------------------------------------------- statistics
    def statistics(self, session_id: str) -> dict[str, Any]:
        """A seated participant's statistics so far (empty if the session sits nowhere here)."""
        seat = self._seat_of(session_id)
        return self.live.statistics.summary(seat.agent) if seat is not None else {}

    def engagement(self) -> dict[str, dict[str, float]]:
        """Every seated participant's engagement so far (``crowdplay.engagement.ENGAGEMENT_VALUES``),
        by session id: the dashboard shows it on each live session's row, asking each game
        process once rather than each session."""
        return {
            seat.session_id: engagement(self.live.statistics.summary(seat.agent).get("values"))
            for seat in self.seats.values() if seat.session_id is not None
        }

    def _seat_of(self, session_id: str) -> Seat | None:
        return next((seat for seat in self.seats.values() if seat.session_id == session_id), None)

    def statistics_due(self) -> None:
        """(``GameListener``) every two seconds of play: statistics to the pages, AI agents checked."""
        self._stream_statistics()
        self._check_ai_agents()

    def _check_ai_agents(self) -> None:
        """An AI agent whose policy is unavailable ends the game, or the participants are told
        and play on (``crowdplay.ai_players``)."""
        end_reason, messages = self.ai.check((seat.agent, seat.policy) for seat in self.seats.values() if seat.policy is not None)
        if end_reason is not None:
            self.end(end_reason)
        for message in messages:
            self.live.announce(message)

    def _stream_statistics(self) -> None:
        """Each connected participant's statistics, progress and estimated bonus, to their page."""
        for seat in self.seats.values():
            summary = self.live.statistics.summary(seat.agent)
            if summary and seat.subscriber is not None:
                self.live.tell(seat.subscriber, protocol.text("stats", **self.task.summary(summary["values"]), episode=summary["episode"]))

    def finish(self, session_id: str) -> dict[str, Any]:
        """The participant is done playing: their seat is given up at once (to the fallback, or the
        game ends); returns their final statistics."""
        seat = self._seat_of(session_id)
        if seat is None:
            return {}
        statistics = self.live.statistics.summary(seat.agent)
        if seat.subscriber is not None:
            self.live.dismiss(seat.subscriber, protocol.text("end", reason="you finished playing"))
            seat.subscriber = None
        self._give_up(seat, "finished", finished=True)
        return statistics

    def withdraw(self, session_id: str) -> bool:
        """The request that took this seat was given up before its answer reached anyone
        (``crowdplay.arrivals``): the seat is given up at once, as for a participant who never
        connects (reopened, or the game ends when nobody is left). False when someone connected
        to it after all: that session stands."""
        seat = self._seat_of(session_id)
        if seat is None or seat.connected_once or self.phase == ENDED:
            return False
        seat.cancel_timer()
        self._give_up(seat, WITHDRAWN)
        return True

    def left_page(self, agent: str) -> None:
        """(``GameListener``) the participant at ``agent`` left the page of a game whose task ends
        then (``when_away`` "end"): told so, and their seat is given up at once, as for someone
        gone for good (to the fallback, or the game ends)."""
        seat = self.seats.get(agent)
        if seat is None or seat.session_id is None or self.phase == ENDED:
            return
        if seat.subscriber is not None:
            self.live.dismiss(seat.subscriber, protocol.text("end", reason=LEFT_PAGE))
            seat.subscriber = None
        seat.cancel_timer()
        self._give_up(seat, LEFT_PAGE)

    def describe(self) -> dict[str, Any]:
        """The phase and each seat's status, for the EnvActor's stats and the dashboard."""
        return {"phase": self.phase, "seats": {agent: seat.status for agent, seat in self.seats.items()}}


#: Why a participant's part ended when the task ends it for leaving the game's page.
LEFT_PAGE = "you left the game's page"
#: Why a seat whose request was given up is released (``withdraw``).
WITHDRAWN = "the request for this seat was given up before it was answered"


def departure_reason(agent: str, finished: bool, others_left: bool) -> str:
    """Why a game without a fallback for ``agent`` ends when its participant goes: stored as the
    episode's ``reason`` and shown to whoever is still playing."""
    if not finished:
        return f"the participant playing {agent} left the game and no AI can take their place"
    if others_left:
        return f"the participant playing {agent} finished playing and no AI can take their place"
    return f"the participant playing {agent} finished playing"
