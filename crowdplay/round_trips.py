"""The connection's round-trip time (RTT), as the participant's page measures it.

The page (and ``crowdplay.client``) sends a ``ping`` carrying its own clock and the ingress answers
``pong`` at once, so ping to pong is the round trip between the participant and the web server:
their network, any proxy on the way (HAProxy) and the ingress's event loop. Only the page can
time it, so it reports each round trip with its next ping (docs/protocol.md); the ingress hands
the report to the game over the frame channel, as it does page events, and the game keeps it
twice: every sample in the episode's document (``rtt_samples``, to see when the connection was
bad) and a summary per participant session among its statistics values (``CONNECTION_VALUES``,
to filter sessions by connection quality).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: A reported round trip longer than this (ms) is refused: a connection that slow is not playing.
MAX_RTT_MS = 60_000
#: Samples listed per episode document (an hour of one participant's pings, one every 2 s);
#: beyond it they are counted in ``rtt_samples_dropped``, as page events are.
MAX_SAMPLES_KEPT = 2000
#: Samples a session keeps for its percentiles (11 hours at one every 2 s); later ones still
#: count towards ``rtt_count`` and ``rtt_max_ms``.
MAX_SESSION_SAMPLES = 20_000
#: A session's connection summary among its statistics values: the median, 95th percentile and
#: largest round trip (ms), and how many were measured. A session without any measurement has
#: none of them, rather than zeros that would read as a perfect connection.
CONNECTION_VALUES = ("rtt_p50_ms", "rtt_p95_ms", "rtt_max_ms", "rtt_count")


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """One round trip the page measured, with the frame it was showing when the pong arrived."""

    rtt_ms: float
    frame: int = 0

    def to_wire(self) -> dict[str, Any]:
        """As the frame channel carries it (JSON), and as the ping message spells its fields."""
        return {"rtt_ms": self.rtt_ms, "frame": self.frame}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> RoundTrip:
        """``to_wire``'s inverse."""
        return cls(float(data["rtt_ms"]), int(data["frame"]))


def summary(samples: Sequence[float], largest: float | None = None, count: int | None = None) -> dict[str, float]:
    """``CONNECTION_VALUES`` of ``samples`` (ms; rounded to 0.1 ms), or nothing without samples.
    ``largest`` and ``count`` stand in for the samples' own when more were measured than kept."""
    if not len(samples):
        return {}
    values = np.asarray(samples, dtype=np.float64)
    p50, p95 = np.percentile(values, [50, 95])
    return {
        "rtt_p50_ms": round(float(p50), 1),
        "rtt_p95_ms": round(float(p95), 1),
        "rtt_max_ms": round(float(values.max() if largest is None else largest), 1),
        "rtt_count": len(values) if count is None else count,
    }


class RoundTrips:
    """One participant session's round trips, summarised on demand (``values``)."""

    def __init__(self) -> None:
        self._samples = array("d")
        self._largest = 0.0
        self.count = 0

    def add(self, rtt_ms: float) -> None:
        """One more measurement."""
        self.count += 1
        self._largest = max(self._largest, rtt_ms)
        if len(self._samples) < MAX_SESSION_SAMPLES:
            self._samples.append(rtt_ms)

    def values(self) -> dict[str, float]:
        """The session's ``CONNECTION_VALUES`` so far (empty before the first measurement)."""
        return summary(self._samples, self._largest, self.count)


def connection(values: Mapping[str, Any] | None) -> dict[str, float | None]:
    """The ``CONNECTION_VALUES`` out of a session's statistics values: None for a percentile the
    session has not measured (it played before round trips were measured, or its page never
    reported one), and 0 samples, so a table reads it without a special case."""
    values = values or {}
    return {name: values.get(name, 0 if name == "rtt_count" else None) for name in CONNECTION_VALUES}
