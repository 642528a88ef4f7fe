"""LiveEnv: one environment instance running in real time, with subscribers watching it.

This is the heart of an EnvActor, kept free of Ray so it reads (and tests) on its own:

* a deadline-based ``TickClock`` ticks at the environment's fps; deadlines sit on a fixed grid
  ``t0 + n / fps`` so the rate does not drift, and ticks that cannot be met are skipped, not bunched.
  A frame's id is its tick's position ``n`` on that grid, so a client knows when every frame was
  due and a skipped tick shows as a gap in the ids. All sessions of one process at the same fps
  share one clock: one wake-up per tick for all of them, not one each;
* every tick applies the latest action of each agent (the no-op until the first key); while
  no mapped key is held an agent plays what its ``EnvSpec.idle`` says (the no-op, its last action
  again, or nothing: the game waits rather than invent an action, see ``_undecided``); in the
  turn-based modes (``EnvSpec.mode``) a tick steps only on a key press (``wait_for_key``) or while
  a key is held (``hold_keys``), and the game otherwise waits;
* every tick's screen is offered to each subscriber; a subscriber still busy with an older frame
  simply gets the newest one next (delta-encoded against what it last received), so slow clients
  drop frames instead of queueing them;
* an episode that ends is reported to the subscribers and the next one starts at once;
* agents played by AI are shown every tick's screen and play their policy's newest answer, which
  may come from a policy actor a moment later: the clock never waits for a policy.

Who plays which agent, and when play begins, is decided by the session's ``Lineup``
(``crowdplay.lineup``); a LiveEnv only steps once ``start`` is called.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from array import array
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from crowdplay import codec, protocol
from crowdplay.ai.agent import PolicyAgent, policy_observation
from crowdplay.config import Settings
from crowdplay.environments import EnvAdapter, EnvSpec, InvalidAction, make_adapter
from crowdplay.environments.adapter import StepResult
from crowdplay.environments.spaces import ObservationOutsideSpace, json_part
from crowdplay.environments.spec import for_agent
from crowdplay.fanout import Fanout, Subscriber, Tick
from crowdplay.recording.recorder import Recorder
from crowdplay.statistics import StatisticsTracker
from crowdplay.timing import FRAME_INTERVAL_MS, INPUT_LATENCY_MS

log = logging.getLogger(__name__)
#: Applied inputs kept per game for the dashboard's delay histogram and for tests: the newest
#: 500, two to three minutes of presses (10,000 dict entries grew an EnvActor hosting
#: 15 games by ~3 MB a minute for the best part of an hour in the soak).
INPUT_LOG_LENGTH = 500
EPISODES_KEPT = 4
#: Participants' statistics go to their pages every two seconds, each game at its own phase: sent
#: by every game on the same tick, they made that tick's frames late (measured: key-to-frame p99
#: 25 -> 31 ms at 40 sessions when all games sent once a second on the same tick).
STATS_EVERY_TICKS = 120
#: Tick intervals kept per clock for the dashboard (a minute at 60 fps).
TIMING_SAMPLES = 3600


@dataclass
class PendingInput:
    """The input waiting for the next tick of one agent: its action and keys, the page's frame and
    sequence number, and when (time, frame, tick) it arrived."""

    #: None: no mapped key is held and the agent's idle choice is "repeat" or "wait"
    action: int | None
    keys: tuple[str, ...]
    client_frame: int
    seq: int
    received_at: float
    received_frame: int
    received_tick: int
    #: an action sent as a number (not keys): a turn of its own in turn-based modes
    explicit: bool = False


@dataclass(frozen=True, slots=True)
class AppliedInput:
    """One participant input as the tick applied it, with when it arrived and when it took effect."""

    agent: str
    #: the action in effect from this input on (None: the agent waits for a mapped key)
    action: int | None
    keys: tuple[str, ...]
    seq: int
    client_frame: int
    received_frame: int
    applied_frame: int
    received_tick: int
    applied_tick: int
    env_step: int
    apply_delay_s: float

    def as_dict(self) -> dict:
        """The input as a JSON-able dict (the EnvActor hands out its input log this way)."""
        return {name: getattr(self, name) for name in self.__slots__} | {"keys": list(self.keys)}


@dataclass
class EpisodeRecord:
    """The seed or start state and the actions applied: enough to replay an episode exactly.

    One action and one client frame per step and agent, in typed arrays (10 bytes a step, not the
    ~50 of a list of ints): the record grows for as long as its episode runs.
    """

    episode: int
    seed: int
    start_state: bytes | None
    actions: dict[str, array]
    client_frames: dict[str, array]

    @classmethod
    def begin(cls, episode: int, seed: int, start_state: bytes | None, agents: Iterable[str]) -> EpisodeRecord:
        """A new record for ``agents``, with no action applied yet."""
        agents = list(agents)
        return cls(episode, seed, start_state, {a: array("H") for a in agents}, {a: array("q") for a in agents})

    def as_dict(self) -> dict:
        """Plain lists, for callers outside the process."""
        return {
            "episode": self.episode,
            "seed": self.seed,
            "start_state": self.start_state,
            "actions": {agent: values.tolist() for agent, values in self.actions.items()},
            "client_frames": {agent: values.tolist() for agent, values in self.client_frames.items()},
        }


class SessionEnded(Exception):
    """Raised to inputs arriving after the session stopped."""


class TickClock:
    """Ticks its members on the grid ``t0 + n / fps`` while it has any."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self.n = 0  # the grid position of the latest tick
        self.members: list[LiveEnv] = []
        self.ticks_late = 0
        #: seconds between the latest ticks (the dashboard's frame-interval histogram)
        self.intervals: deque[float] = deque(maxlen=TIMING_SAMPLES)
        self._task: asyncio.Task | None = None

    def add(self, live: "LiveEnv") -> None:
        """Tick ``live`` with the others from the next tick on; the clock starts with its first member."""
        self.members.append(live)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def remove(self, live: "LiveEnv") -> None:
        """Stop ticking ``live``; the clock stops once it has no members."""
        if live in self.members:
            self.members.remove(live)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time() - self.n * self.period  # a restarted clock continues its grid numbering
        try:
            last = loop.time() - self.period
            while self.members:
                now = loop.time()
                self.intervals.append(now - last)
                FRAME_INTERVAL_MS.observe((now - last) * 1000)
                last = now
                self.n += 1
                for live in list(self.members):
                    try:
                        live.tick(self.n)
                    except ObservationOutsideSpace as error:  # the researcher's env broke its own space
                        log.error("session stopped: environment %r: %s", live.spec.id, error)
                        live.stop(f"the environment failed: environment {live.spec.id!r}, {error}")
                    except Exception:  # a failing environment ends its own session, not the clock
                        log.exception("session stopped: its environment failed to step")
                        live.stop("the environment failed")
                behind = loop.time() - (t0 + self.n * self.period)
                if behind > self.period:
                    skipped = int(behind / self.period)
                    self.ticks_late += skipped
                    for live in self.members:
                        live.ticks_late += skipped
                    self.n += skipped
                await asyncio.sleep(max(0.0, t0 + self.n * self.period - loop.time()))
        finally:
            self._task = None


class Clocks:
    """One TickClock per frame rate, shared by every LiveEnv of this process."""

    def __init__(self) -> None:
        self._clocks: dict[float, TickClock] = {}

    def all(self) -> list[TickClock]:
        """Every clock of this process (their frame intervals feed the timing histograms)."""
        return list(self._clocks.values())

    def at(self, fps: float) -> TickClock:
        """The clock for ``fps``, created on first use."""
        clock = self._clocks.get(fps)
        if clock is None:
            clock = self._clocks[fps] = TickClock(fps)
        return clock


class GameListener(Protocol):
    """Who a ``LiveEnv`` tells about itself beyond its frames (the ``Lineup``)."""

    def statistics_due(self) -> None:
        """Every ``STATS_EVERY_TICKS`` ticks while the game plays."""

    def stopped(self, reason: str) -> None:
        """Once, when the game stops, whoever stopped it."""


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
        ``recorder`` receives every step for storage."""
        self.spec = spec
        self.recorder = recorder
        self.clock = clock or TickClock(spec.fps)
        self.settings = settings
        self.adapter = adapter or make_adapter(spec)
        self.agents = self.adapter.agents
        self.base_seed = seed
        self.episode = 0
        self.frame_id = 0
        self.env_step = 0
        self.ticks = 0
        self.ticks_late = 0
        self.stopped: str | None = None
        #: who hears of the game's statistics being due and of its end (``listen``)
        self._listener: GameListener | None = None
        #: each participant's statistics (``crowdplay.statistics``), by agent (``track``)
        self.trackers: dict[str, StatisticsTracker] = {}
        self._stats_phase = random.randrange(STATS_EVERY_TICKS)
        self._policies: dict[str, PolicyAgent] = {}
        self._answers_applied: dict[str, int] = {}  # per AI agent, the count of answers applied so far
        #: each agent's action from now on; None (no no-op, no key yet, or idle "wait") holds the game
        self._action: dict[str, int | None] = {agent: self.adapter.keymaps[agent].noop for agent in self.agents}
        self._pending: dict[str, PendingInput] = {}
        self._held = {agent: False for agent in self.agents}  # holds a key (or a non-no-op action)
        self._applied_seq = {agent: 0 for agent in self.agents}
        self._client_frame = {agent: 0 for agent in self.agents}
        self._returns = {agent: 0.0 for agent in self.agents}
        self.fanout = Fanout(settings.keyframe_interval)
        self.input_log: deque[AppliedInput] = deque(maxlen=INPUT_LOG_LENGTH)
        self.episodes: deque[EpisodeRecord] = deque(maxlen=EPISODES_KEPT)
        self.running = False
        self._begin_episode()

    # ----------------------------------------------------------------- description
    def describe(self) -> dict:
        """What a client needs before the first frame (sent as ``hello``)."""
        screen = self.latest.screen.pixels
        return {
            "env": self.spec.public(),
            "agents": list(self.agents),
            "width": int(screen.shape[1]),
            "height": int(screen.shape[0]),
            "channels": 1 if screen.ndim == 2 else int(screen.shape[2]),
            "palette": protocol.encode_palette(self.adapter.palette),
            "fps": self.spec.fps,
            "keymaps": {agent: self.adapter.keymaps[agent].to_json() for agent in self.agents},
            "noop_actions": {agent: self.adapter.keymaps[agent].noop for agent in self.agents},
            "action_meanings": self.adapter.action_meanings,
            "action_labels": dict(self.adapter.action_labels),
            "idle": dict(self.adapter.idle),
            "instructions": {agent: for_agent(self.spec.instructions, agent, "") for agent in self.agents},
            "humans": self.spec.human_agents(self.agents),
        }

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
        recorder and the statistics, begin the next episode when this one ended, show the AI
        agents the new screen, and wake the subscribers to send the frame ``next_frame``."""
        now = time.monotonic()
        self.ticks += 1
        human_inputs = set(self._pending) if self.trackers else set()
        pressed = self._apply_inputs(next_frame, now)
        if not self._turn_due(pressed) or self._undecided():
            return  # turn-based, or an agent without an action: the game waits for the participant
        if self._policies:
            self._apply_ai_answers()
        previous, result = self.latest.screen, self._step(next_frame)
        self._observe_step(next_frame, result, previous, human_inputs)
        if result.terminated or result.truncated:
            self._end_episode(result)
        if self._policies:
            self._show_ai(self._policies.values())
        self.fanout.wake_all()

    def _apply_inputs(self, next_frame: int, now: float) -> bool:
        """The participants' inputs since the last tick become their agents' actions (recorded,
        logged with their latency); returns whether any of them pressed something."""
        recorder = self.recorder
        for agent, pending in self._pending.items():
            if recorder is not None:
                received_at = time.time() - (now - pending.received_at)
                recorder.input(agent, pending.keys, pending.seq, pending.client_frame, received_at)
            if pending.action is not None or self.adapter.idle[agent] == "wait":
                self._action[agent] = pending.action  # "repeat" keeps the action in effect
            self._applied_seq[agent] = pending.seq
            self._client_frame[agent] = pending.client_frame
            self.input_log.append(
                AppliedInput(
                    agent, self._action[agent], pending.keys, pending.seq, pending.client_frame, pending.received_frame,
                    next_frame, pending.received_tick, self.ticks, self.env_step, now - pending.received_at,
                )
            )
            INPUT_LATENCY_MS.observe((now - pending.received_at) * 1000)
        pressed = any(pending.keys or pending.explicit for pending in self._pending.values())
        for agent, pending in self._pending.items():
            self._held[agent] = bool(pending.keys) or (pending.explicit and pending.action != self.adapter.keymaps[agent].noop)
        self._pending.clear()
        return pressed

    def _step(self, next_frame: int) -> StepResult:
        """Step the environment with every agent's action; the new screen becomes the latest tick."""
        record = self.episodes[-1]
        for agent in self.agents:
            record.actions[agent].append(self._action[agent])
            record.client_frames[agent].append(self._client_frame[agent])
        result = self.adapter.step(dict(self._action))
        for agent, reward in result.rewards.items():
            self._returns[agent] += reward
        self.frame_id = next_frame
        self.env_step += 1
        self.latest = Tick(next_frame, self.env_step, self.episode, codec.Screen(self.adapter.screen()), dict(self._returns))
        self.fanout.new_tick()
        return result

    def _observe_step(self, next_frame: int, result: StepResult, previous: codec.Screen, human_inputs: set[str]) -> None:
        """The step reaches those who keep it: the recorder (with the frame's delta, shared with
        the stream), each participant's statistics, and every few seconds the listener."""
        recorder = self.recorder
        ram = self.adapter.ram() if recorder is not None or self.trackers else None
        if recorder is not None:
            screen = self.latest.screen
            delta = self.fanout.cached(("delta", next_frame), lambda: codec.delta_payload(screen, previous))
            recorder.step(
                next_frame, self._action, result.rewards, result.terminated, result.truncated,
                self._client_frame, screen, delta, ram, self.adapter_observations(),
            )
        if self.trackers:
            ram_array = np.frombuffer(ram, np.uint8) if ram is not None else None
            for agent, tracker in self.trackers.items():
                tracker.step(self._action[agent], result.rewards.get(agent, 0.0), ram_array, agent in human_inputs)
        if self._statistics_due() and self._listener is not None:
            self._listener.statistics_due()

    def _statistics_due(self) -> bool:
        """Every ``STATS_EVERY_TICKS`` ticks at this game's own phase (so games spread over the
        clock), and never within the first period: a tick's events go out before its frame, and
        the page's first frame must come before its first statistics."""
        return self.ticks >= STATS_EVERY_TICKS and (self.ticks + self._stats_phase) % STATS_EVERY_TICKS == 0

    def _end_episode(self, result: StepResult) -> None:
        """The environment ended the episode: it is stored "complete", everyone is told, and the
        next one begins at once."""
        statistics = {agent: tracker.end_episode() for agent, tracker in self.trackers.items()}
        if self.recorder is not None:
            self.recorder.end_episode("complete", {**self._episode_summary(result.terminated, result.truncated), "statistics": statistics})
        self.fanout.queue(
            protocol.text("episode_end", episode=self.episode, steps=self.env_step, returns=self._returns, truncated=result.truncated, statistics=statistics)
        )
        self.episode += 1
        self._begin_episode()

    def _turn_due(self, pressed: bool) -> bool:
        """Whether this tick steps: always in real time; on a key press (or an explicit action)
        in ``wait_for_key``; while a participant holds a key in ``hold_keys``."""
        mode = self.spec.mode
        if mode == "wait_for_key":
            return pressed
        if mode == "hold_keys":
            return any(self._held.values())
        return True

    def _undecided(self) -> bool:
        """Whether an agent has no action to play: its keymap has no no-op and its participant
        holds no mapped key (idle "wait", or "repeat" before the first key), or its policy has not
        answered yet. The game then waits: nothing is stepped or recorded, no action is invented."""
        for agent, action in self._action.items():
            if action is None:
                policy = self._policies.get(agent)
                if policy is None or policy.action is None:
                    return True
        return False

    def _apply_ai_answers(self) -> None:
        """Each AI-played agent plays its policy's newest answer; a new one is recorded with the
        frame it was computed from."""
        for agent, policy in self._policies.items():
            if policy.action is None:  # no answer (yet) and no no-op: the agent's last action goes on
                continue
            self._action[agent] = policy.action
            if policy.answers != self._answers_applied.get(agent):
                self._answers_applied[agent] = policy.answers
                self._client_frame[agent] = policy.observed_frame
                if self.recorder is not None and (policy.observed_frame >= 0 or policy.substitute is not None):
                    self.recorder.ai_action(agent, policy.action, policy.observed_frame, policy.latency_s, policy.substitute)

    def _show_ai(self, policies: Iterable[PolicyAgent]) -> None:
        """Show AI agents the newest screen, RAM or their agent's own observation ("env"); their
        answers are applied when they arrive."""
        screen = self.latest.screen.pixels
        palette = self.adapter.palette

        @functools.cache
        def rgb() -> np.ndarray:  # computed once per tick, for the policies that look at the screen
            return palette[screen] if palette is not None else screen

        for policy in policies:
            policy.observe(self.latest.frame_id, policy_observation(self.adapter, policy.observation, policy.agent, rgb))

    def set_controller(self, agent: str, controller: dict, policy: PolicyAgent | None = None) -> None:
        """From the next tick ``agent`` is played by ``policy`` (AI) or, without one, by a participant."""
        self._check_agent(agent)
        if policy is None:
            self._policies.pop(agent, None)
        else:
            self._policies[agent] = policy
            self._pending.pop(agent, None)
            self._show_ai([policy])  # the first answer comes from the screen as it is now
        if self.recorder is not None:
            self.recorder.set_controller(agent, controller, self.latest.screen)

    def listen(self, listener: GameListener) -> None:
        """``listener`` hears when statistics are due and when the game stops (one listener)."""
        self._listener = listener

    def track(self, agent: str, tracker: StatisticsTracker, details: dict[str, Any]) -> None:
        """A participant sits at ``agent``: their statistics are kept by ``tracker`` and who they
        are (``details``) is stored with this and every later episode."""
        self.trackers[agent] = tracker
        if self.recorder is not None:
            self.recorder.describe_agent(agent, details)

    def note_watcher(self, who: str, watching: bool) -> None:
        """Someone began (or stopped) watching read-only: noted in the recording only."""
        if self.recorder is not None:
            self.recorder.note_watcher(who, watching)

    def restamp_start(self) -> None:
        """Play begins now: the episode opened while the game waited counts from here."""
        if self.recorder is not None:
            self.recorder.restamp_start()

    def _begin_episode(self) -> None:
        seed = self.base_seed + self.episode
        options = dict(self.spec.reset_options) if self.spec.reset_options is not None else None
        self.adapter.reset(seed, options)
        self.env_step = 0
        self._returns = {agent: 0.0 for agent in self.agents}
        start_state = self.adapter.snapshot()
        self.episodes.append(EpisodeRecord.begin(self.episode, seed, start_state, self.agents))
        self.latest = Tick(self.frame_id, 0, self.episode, codec.Screen(self.adapter.screen()), dict(self._returns))
        self.fanout.new_tick()
        for policy in self._policies.values():
            policy.reset()
        if self.recorder is not None:
            fields = {
                "env_id": self.spec.base_env or self.spec.id,
                "seed": seed,
                "start_state": start_state,
                "agents": list(self.agents),
                "screen_shape": list(self.latest.screen.pixels.shape),
                "palette": "ntsc" if self.adapter.palette is not None else None,
                "action_counts": {agent: self.adapter.action_count for agent in self.agents},
                "action_meanings": self.adapter.action_meanings,
                "action_labels": dict(self.adapter.action_labels),
                "idle": dict(self.adapter.idle),
                "fps": self.spec.fps,
                "reset_options": options,
                "env_origin": self.adapter.origin(),
            }
            observed = self.adapter.observation_spaces
            if observed is not None:
                fields["observation_spaces"] = observed
                fields["reset_infos"] = {agent: json_part(self.adapter.infos.get(agent)) or {} for agent in self.agents}
            try:
                self.recorder.begin_episode(self.episode, self.latest.screen, fields, self.adapter_observations())
            except ObservationOutsideSpace as error:
                raise ObservationOutsideSpace(f"environment {self.spec.id!r}, {error}") from None

    def adapter_observations(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The environment's latest observations and infos per agent, when they are recorded
        (not for ALE, whose observation is the screen)."""
        if self.adapter.observation_spaces is None:
            return None
        return self.adapter.observations, self.adapter.infos

    def _episode_summary(self, terminated: bool, truncated: bool) -> dict:
        return {"steps": self.env_step, "returns": dict(self._returns), "terminated": terminated, "truncated": truncated}

    # ----------------------------------------------------------------- input
    def submit_keys(self, agent: str, keys: Iterable[str], client_frame: int, seq: int) -> int | None:
        """Queue the held keys' action; with no mapped key held, the no-op for idle "noop" and
        None (keep the last action, or wait) for "repeat" and "wait"."""
        held = tuple(sorted(keys))
        keymap = self.adapter.keymaps[self._check_human(agent)]
        action = keymap.match(held)
        if action is None and self.adapter.idle[agent] == "noop":
            action = keymap.noop
        return self._submit(agent, action, held, client_frame, seq)

    def submit_action(self, agent: str, action: int, client_frame: int, seq: int) -> int:
        """Queue an action chosen by number (a turn of its own in turn-based modes); InvalidAction if
        outside the space. Returns the action."""
        self.adapter.check_action(self._check_human(agent), action)
        return self._submit(agent, action, (), client_frame, seq, explicit=True)

    def _check_human(self, agent: str) -> str:
        if self._check_agent(agent) in self._policies:
            raise InvalidAction(f"agent {agent!r} is played by AI")
        return agent

    def _check_agent(self, agent: str) -> str:
        if self.stopped is not None:
            raise SessionEnded(self.stopped)
        if agent not in self.agents:
            raise InvalidAction(f"unknown agent {agent!r}")
        return agent

    def _submit(self, agent: str, action: int | None, keys: tuple[str, ...], client_frame: int, seq: int, explicit: bool = False) -> int | None:
        """Queue an input for the next tick; a later input before that tick replaces it."""
        self._pending[agent] = PendingInput(action, keys, client_frame, seq, time.monotonic(), self.frame_id, self.ticks, explicit)
        return action

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
        return self._applied_seq[agent]

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
        if self.recorder is not None:
            statistics = {agent: tracker.episode_values() for agent, tracker in self.trackers.items()}
            self.recorder.end_episode(status, {**self._episode_summary(False, False), "reason": reason, "statistics": statistics})
            self.recorder.close()
        self.fanout.wake_all()
        self.adapter.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stopped(reason)  # the listener (the lineup) holds this LiveEnv: let go of it
            # so the ended game is freed by reference counting at once, not by a full collection later

    def stats(self) -> dict:
        """Frame id, ticks, episode, late ticks, whether it runs, and the subscribers' counts, for the EnvActor's stats."""
        return {
            "frame_id": self.frame_id,
            "ticks": self.ticks,
            "episode": self.episode,
            "ticks_late": self.ticks_late,
            "running": self.running and self.stopped is None,
            "subscribers": self.fanout.counts(),
        }
