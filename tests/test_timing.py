"""The Prometheus histograms a game process keeps (``crowdplay.timing``), fed by a real LiveEnv
on a real tick clock: every tick interval and every applied input is counted once, with its
exact value in the sum, the same figures the dashboard's latest-minute histograms are drawn from."""

from __future__ import annotations

import asyncio
import math

from crowdplay.timing import TIMING_EDGES_MS, process_histograms
from tests.tapping import tap_space


def test_each_tick_and_each_applied_input_is_observed_once_with_its_exact_value() -> None:
    async def scenario() -> tuple[list[float], list[float]]:
        clocks, live = await tap_space(5)
        return list(clocks.at(60).intervals), [entry.apply_delay_s for entry in live.input_log]

    before = process_histograms()
    intervals, delays = asyncio.run(scenario())
    after = process_histograms()

    frames, inputs = after["frame_interval_ms"], after["input_latency_ms"]
    assert len(intervals) > 10 and frames["count"] - before["frame_interval_ms"]["count"] == len(intervals)
    assert math.isclose(frames["sum"] - before["frame_interval_ms"]["sum"], sum(intervals) * 1000, rel_tol=1e-9)
    assert len(delays) == 5 and inputs["count"] - before["input_latency_ms"]["count"] == 5
    assert math.isclose(inputs["sum"] - before["input_latency_ms"]["sum"], sum(delays) * 1000, rel_tol=1e-9, abs_tol=1e-9)


def test_buckets_are_cumulative_on_the_dashboards_edges_and_end_at_the_count() -> None:
    for name, figures in process_histograms().items():
        bounds = [le for le, _ in figures["buckets"]]
        assert bounds == [repr(float(edge)) for edge in TIMING_EDGES_MS[name][1:-1]] + ["+Inf"]
        counts = [count for _, count in figures["buckets"]]
        assert counts == sorted(counts) and counts[-1] == figures["count"]
