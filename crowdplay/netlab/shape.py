"""What a link does to the packets crossing it: delay, jitter, loss and a rate with a bounded
queue, the way a home connection does. Pure arithmetic over a clock the caller gives, so that the
emulator's decisions can be tested without a network."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class LinkShape:
    """A link's properties in both directions; ``rtt_ms`` is split evenly between them.

    ``rate_kbit`` 0 means unlimited. ``queue_bytes`` is what the link's buffer holds before it
    drops (a home router's buffer is tens of kilobytes): a slow participant's packets are dropped,
    never queued without bound. ``cut`` drops everything: the link stops answering."""

    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    rate_kbit: float = 0.0
    queue_bytes: int = 64_000
    cut: bool = False

    def __post_init__(self) -> None:
        for name in ("rtt_ms", "jitter_ms", "rate_kbit"):
            if getattr(self, name) < 0:
                raise ValueError(f"link shape: {name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"link shape: loss must be in [0, 1), got {self.loss}")
        if self.queue_bytes < 1500:
            raise ValueError(f"link shape: queue_bytes must hold at least one packet (1500), got {self.queue_bytes}")

    @property
    def one_way_s(self) -> float:
        """Each direction's share of the round trip, in seconds."""
        return self.rtt_ms / 2000.0

    def to_dict(self) -> dict[str, float | int | bool]:
        """The shape as the emulator's control requests carry it."""
        return {"rtt_ms": self.rtt_ms, "jitter_ms": self.jitter_ms, "loss": self.loss, "rate_kbit": self.rate_kbit,
                "queue_bytes": self.queue_bytes, "cut": self.cut}


class Direction:
    """One direction of a link. ``admit`` says when a packet arriving now leaves the far end, or
    ``None`` when the link drops it. Departures never overtake each other (a home link does not
    reorder), so a jittered packet holds back the ones behind it, as a real queue does."""

    def __init__(self, shape: LinkShape, rng: random.Random) -> None:
        self.shape = shape
        self.rng = rng
        self._serialized_at = 0.0  # when the link finishes putting the last admitted packet on the wire
        self._last_departure = 0.0
        self.passed = 0
        self.lost = 0
        self.overflowed = 0

    def admit(self, now: float, size: int) -> float | None:
        """When a packet of ``size`` bytes arriving at ``now`` leaves the far end, or None if dropped."""
        shape = self.shape
        if shape.cut or (shape.loss and self.rng.random() < shape.loss):
            self.lost += 1
            return None
        start = max(now, self._serialized_at)
        if shape.rate_kbit:
            bytes_per_s = shape.rate_kbit * 125.0
            if (start - now) * bytes_per_s + size > shape.queue_bytes:
                self.overflowed += 1
                return None
            self._serialized_at = start + size / bytes_per_s
        else:
            self._serialized_at = start
        delay = shape.one_way_s
        if shape.jitter_ms:
            delay = max(0.0, delay + self.rng.gauss(0.0, shape.jitter_ms / 2000.0))
        departure = max(self._serialized_at + delay, self._last_departure)
        self._last_departure = departure
        self.passed += 1
        return departure

    def counters(self) -> dict[str, int]:
        """Packets passed, lost (loss or a cut link) and dropped at a full queue."""
        return {"passed": self.passed, "lost": self.lost, "overflowed": self.overflowed}
