"""Frame fan-out: each tick's screen and the game's events, to every subscriber of one game.

A subscriber still busy with an older frame simply gets the newest one next, delta-encoded against
what it last received, so slow clients drop frames instead of queueing them; a keyframe goes out
every ``keyframe_interval`` frames and to newcomers. The keyframe and the delta from the previous
tick are encoded once per tick and shared by every subscriber that is up to date (and with the
recorder, which stores the same delta). Events (JSON text) are queued per subscriber and sent
before the next frame.

A subscriber is served one of two ways: pulled, by iterating ``Fanout.stream`` (which waits on its
``woken`` event), or pushed, by a ``notify`` callback that sends ``next_message`` at once from
whatever woke it (the frame channel: no task wakes per frame, the tick writes the frame itself).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from crowdplay import codec, protocol


@dataclass(frozen=True)
class Tick:
    """What one tick produced: the screen after the step and the running returns."""

    frame_id: int
    env_step: int
    episode: int
    screen: codec.Screen
    returns: dict[str, float]


@dataclass(eq=False)
class Subscriber:
    """One connection's view of the game: its queued events and what it was last sent."""

    agent: str
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    #: when set, called instead of setting ``woken``: the subscriber sends what is new itself, now
    notify: Callable[[], None] | None = None
    events: deque[str] = field(default_factory=deque)
    last_id: int | None = None
    last_screen: codec.Screen | None = None
    last_episode: int = -1
    last_keyframe_id: int = 0
    frames_sent: int = 0
    frames_dropped: int = 0
    #: when set, the stream sends its queued events and then this message, and ends
    final: str | None = None

    def wake(self) -> None:
        """Something new is there for this subscriber (a frame, an event, the end)."""
        if self.notify is not None:
            self.notify()
        else:
            self.woken.set()


class FrameSource(Protocol):
    """The game a fan-out streams: its newest tick, whether it stopped, and each agent's newest
    applied input (echoed in every frame so the page can time its keys)."""

    latest: Tick
    stopped: str | None

    @property
    def screen_shown(self) -> bool:
        """Whether its screen goes out yet: a game several people wait for shows its first screen
        in the waiting room; a game one person plays shows nothing before ``play`` (docs/protocol.md)."""

    def applied_seq(self, agent: str) -> int:
        """The sequence number of ``agent``'s newest input the game has applied."""


class Fanout:
    """The subscribers of one game and the frames and events they are sent."""

    def __init__(self, keyframe_interval: int) -> None:
        self.keyframe_interval = keyframe_interval
        self.subscribers: set[Subscriber] = set()
        self._cache: dict[tuple[str, int], codec.Payload] = {}

    def new_tick(self) -> None:
        """The previous tick's encodings are no longer anyone's newest frame."""
        self._cache.clear()

    def cached(self, key: tuple[str, int], make: Callable[[], codec.Payload]) -> codec.Payload:
        """An encoding of this tick's screen, made once for everyone who needs it."""
        payload = self._cache.get(key)
        if payload is None:
            payload = self._cache[key] = make()
        return payload

    async def stream(self, subscriber: Subscriber, source: FrameSource) -> AsyncIterator[bytes | str]:
        """Events (JSON text) and frames (bytes) of ``source`` for one subscriber, newest frame
        first, until the game stops or the subscriber is dismissed. (The source is held only while
        a stream runs: the fan-out keeps no reference to its game, so an ended game is freed by
        reference counting at once.)"""
        self.subscribers.add(subscriber)
        try:
            while True:
                following = self.next_message(subscriber, source)
                if following is None:
                    await subscriber.woken.wait()
                    subscriber.woken.clear()
                    continue
                message, last = following
                yield message
                if last:
                    return
        finally:
            self.subscribers.discard(subscriber)

    @contextmanager
    def pushing(self, subscriber: Subscriber, notify: Callable[[], None]) -> Iterator[None]:
        """Serve ``subscriber`` by push while the block runs: ``notify`` is called, instead of its
        stream waking, whenever there is something new for it (``next_message`` gives it)."""
        subscriber.notify = notify
        self.subscribers.add(subscriber)
        try:
            yield
        finally:
            subscriber.notify = None
            self.subscribers.discard(subscriber)

    def next_message(self, subscriber: Subscriber, source: FrameSource) -> tuple[bytes | str, bool] | None:
        """The subscriber's next message and whether it is its last, or None while it is up to
        date: its queued events first, then its dismissal or the game's end, else the newest frame
        if it has not had it and the game shows its screen."""
        if subscriber.events:
            return subscriber.events.popleft(), False
        if subscriber.final is not None:
            return subscriber.final, True
        if source.stopped is not None:
            return protocol.text("end", reason=source.stopped), True
        tick = source.latest
        if source.screen_shown and tick.frame_id != subscriber.last_id:
            return self.frame_for(subscriber, tick, source.applied_seq(subscriber.agent)), False
        return None

    def frame_for(self, subscriber: Subscriber, tick: Tick, input_seq: int) -> bytes:
        """The tick's frame for this subscriber: a keyframe, the shared delta, or its own delta
        after drops; ``input_seq``: the subscriber's newest input the game has applied."""
        previous, last_id = subscriber.last_screen, subscriber.last_id
        if previous is None or last_id is None or tick.frame_id - subscriber.last_keyframe_id >= self.keyframe_interval:
            subscriber.last_keyframe_id = tick.frame_id
            payload = self.cached(("key", tick.frame_id), lambda: codec.keyframe_payload(tick.screen))
        elif last_id == tick.frame_id - 1:
            payload = self.cached(("delta", tick.frame_id), lambda: codec.delta_payload(tick.screen, previous))
        else:
            subscriber.frames_dropped += tick.frame_id - last_id - 1
            payload = codec.delta_payload(tick.screen, previous)
        subscriber.last_id = tick.frame_id
        subscriber.last_screen = tick.screen
        subscriber.frames_sent += 1
        new_episode = tick.episode != subscriber.last_episode
        subscriber.last_episode = tick.episode
        return codec.frame_message(
            payload,
            flags=codec.FLAG_NEW_EPISODE if new_episode else 0,
            frame_id=tick.frame_id,
            env_step=tick.env_step,
            score=tick.returns[subscriber.agent],
            input_seq=input_seq,
        )

    def queue(self, message: str) -> None:
        """An event for every subscriber, sent when they next wake."""
        for subscriber in self.subscribers:
            subscriber.events.append(message)

    def announce(self, message: str) -> None:
        """An event for every subscriber, now."""
        self.queue(message)
        self.wake_all()

    @staticmethod
    def tell(subscriber: Subscriber, message: str) -> None:
        """An event for one subscriber, now."""
        subscriber.events.append(message)
        subscriber.wake()

    @staticmethod
    def dismiss(subscriber: Subscriber, message: str) -> None:
        """End one subscriber's stream with ``message`` (e.g. it was replaced by a newer tab)."""
        subscriber.final = message
        subscriber.wake()

    def wake_all(self) -> None:
        """Let every subscriber's stream send what is new (a tick's frame, events, the end)."""
        for subscriber in list(self.subscribers):  # a copy: no notify callback can change the set under this loop
            subscriber.wake()

    def counts(self) -> list[dict[str, int | str]]:
        """Frames sent and dropped per subscriber (for ``LiveEnv.stats``)."""
        return [{"agent": s.agent, "frames_sent": s.frames_sent, "frames_dropped": s.frames_dropped} for s in self.subscribers]
