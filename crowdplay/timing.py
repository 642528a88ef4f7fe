"""This process's frame intervals and input latency since it started, as Prometheus histograms.

The dashboard draws the latest minute (the clocks' and games' recent samples); Prometheus needs
counters that only grow, with an exact sum, so ``rate()`` and ``histogram_quantile()`` work across
scrapes. The clock and the game loop observe into these as the events happen, and the
EnvsManager's overview carries each process's figures to ``/metrics`` (``crowdplay.web.metrics``).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from prometheus_client import Histogram

#: Bucket edges (ms) of the dashboard's histograms; the last bucket is open-ended. The same
#: edges, without the 0 and the open end, bound the Prometheus buckets.
TIMING_EDGES_MS: dict[str, list[float]] = {
    "frame_interval_ms": [0, 5, 10, 14, 15.5, 16.2, 17.2, 18, 20, 25, 33.4, 50, 100, 1e9],
    "input_latency_ms": [0, 1, 2, 4, 6, 8, 10, 12, 16.7, 20, 33.4, 50, 100, 1e9],
}


def _histogram(name: str, help_text: str) -> Histogram:
    """A histogram on ``name``'s edges, in no registry: this process does not serve metrics
    itself, it answers ``process_histograms`` to the EnvsManager."""
    return Histogram(f"crowdplay_{name}", help_text, buckets=TIMING_EDGES_MS[name][1:-1], registry=None)


#: Time between a tick clock's ticks, in ms (``TickClock`` observes each tick).
FRAME_INTERVAL_MS = _histogram("frame_interval_ms", "Interval between a game process's ticks (frames offered to participants), in ms.")
#: Delay from an input's arrival to the tick that applies it, in ms (``LiveEnv.tick`` observes each).
INPUT_LATENCY_MS = _histogram("input_latency_ms", "Delay from a participant's input to its game step, in ms.")

HISTOGRAMS: dict[str, Histogram] = {"frame_interval_ms": FRAME_INTERVAL_MS, "input_latency_ms": INPUT_LATENCY_MS}

#: Applied inputs' delays (ms) kept for the dashboard's recent histogram, across every game this
#: process has hosted: a game's own input log goes when its game ends, and a dashboard that drew
#: only the running games' logs showed nothing once a session was over (as many as the tick
#: intervals a clock keeps: a minute of one key a tick).
RECENT_INPUT_SAMPLES = 3600
RECENT_INPUT_LATENCY_MS: deque[float] = deque(maxlen=RECENT_INPUT_SAMPLES)


def observe_input_latency(delay_ms: float) -> None:
    """An input applied ``delay_ms`` after it arrived: counted for Prometheus and kept for the
    dashboard's recent histogram."""
    INPUT_LATENCY_MS.observe(delay_ms)
    RECENT_INPUT_LATENCY_MS.append(delay_ms)


def recent_input_latencies() -> list[float]:
    """The kept delays (ms), oldest first. Read through this function, not the deque: Ray pickles
    the EnvActor class by value, and a module global its methods named would be a copy, forever
    empty, in the actor's process."""
    return list(RECENT_INPUT_LATENCY_MS)


def process_histograms() -> dict[str, dict[str, Any]]:
    """Each histogram's cumulative buckets (``[le, count]`` pairs ending with ``+Inf``), exact
    sum and count, as plain JSON for the overview (bucket bounds are the library's strings, so
    ``+Inf`` survives JSON)."""
    return {key: histogram_figures(histogram) for key, histogram in HISTOGRAMS.items()}


def histogram_figures(histogram: Histogram) -> dict[str, Any]:
    """One unlabelled histogram's cumulative buckets, exact sum and count as plain JSON (also the
    ingress's key-to-frame histogram, ``crowdplay.web.metrics``)."""
    (metric,) = histogram.collect()
    samples = metric.samples
    buckets = [[sample.labels["le"], int(sample.value)] for sample in samples if sample.name.endswith("_bucket")]
    total = next(sample.value for sample in samples if sample.name.endswith("_sum"))
    return {"buckets": buckets, "sum": total, "count": buckets[-1][1]}
