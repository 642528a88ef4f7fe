"""The dashboard's two input-latency histograms, without Ray: the game process's receive-to-apply
delays outlive the game that measured them, and the pages' key-to-frame reports are checked by
the protocol and counted by the ingress (``crowdplay.web.metrics``)."""

from __future__ import annotations

import asyncio
import json

import pytest

from crowdplay import protocol
from crowdplay.realtime import LiveEnv
from crowdplay.timing import RECENT_INPUT_LATENCY_MS
from crowdplay.web.metrics import KEY_TO_FRAME, BrowserLatency, prometheus_text, with_browser_latency
from tests.tapping import tap_space

LIMIT = 2048


def test_applied_inputs_stay_in_the_recent_histogram_after_their_game_ended() -> None:
    async def scenario() -> LiveEnv:
        _, live = await tap_space(3)
        return live

    RECENT_INPUT_LATENCY_MS.clear()
    live = asyncio.run(scenario())
    delays = [entry.apply_delay_s * 1000 for entry in live.input_log]
    del live  # the game is gone, as the EnvActor forgets an ended game
    assert len(delays) == 3 and list(RECENT_INPUT_LATENCY_MS) == delays


# ---------------------------------------------------------------- the page's ``latency`` report


def test_a_latency_report_parses_to_its_samples() -> None:
    report = protocol.parse_client_message(json.dumps({"type": "latency", "key_to_frame_ms": [12.5, 40, 0, 60000]}), LIMIT)
    assert report == protocol.LatencyReport((12.5, 40.0, 0.0, 60000.0))
    assert protocol.parse_client_message('{"type": "latency", "key_to_frame_ms": []}', LIMIT) == protocol.LatencyReport(())
    full = json.dumps({"type": "latency", "key_to_frame_ms": [16.7] * protocol.MAX_LATENCY_SAMPLES})
    assert len(protocol.parse_client_message(full, LIMIT).key_to_frame_ms) == protocol.MAX_LATENCY_SAMPLES  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "samples",
    [
        None,  # missing
        "12.5",
        {"ms": 3},
        [16.7] * (protocol.MAX_LATENCY_SAMPLES + 1),
        ["12"],
        [True],
        [None],
        [-1],
        [protocol.MAX_LATENCY_MS + 1],
        [[5]],
    ],
)
def test_a_bad_latency_report_is_refused_with_a_reason(samples: object) -> None:
    message = {"type": "latency"} if samples is None else {"type": "latency", "key_to_frame_ms": samples}
    with pytest.raises(protocol.ProtocolError) as refused:
        protocol.parse_client_message(json.dumps(message), LIMIT)
    assert refused.value.close_code == protocol.CLOSE_POLICY_VIOLATION
    assert "'key_to_frame_ms' must be a list of at most 64 numbers in 0..60000" in refused.value.reason


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_latencies_are_refused(literal: str) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_client_message(f'{{"type": "latency", "key_to_frame_ms": [{literal}]}}', LIMIT)


# ---------------------------------------------------------------- the ingress's histogram


def test_the_ingress_adds_the_pages_reports_to_the_overview_and_to_metrics() -> None:
    latency = BrowserLatency()
    assert latency.figures()["samples"] == 0 and latency.figures()["processes"] == []
    latency.observe([5.0, 25.0, 25.0, 45.0, 2500.0], {"replica": "ingress#1", "node": "node-a"})
    figures = latency.figures()
    assert figures["samples"] == 5 and sum(figures["counts"]) == 5 and len(figures["edges"]) == len(figures["counts"]) + 1
    assert figures["p50"] == 30 and figures["p99"] == 2000  # upper edges; the open-ended bucket drawn to twice its start
    [replica] = figures["processes"]
    assert replica["replica"] == "ingress#1" and replica["node"] == "node-a"
    assert replica["count"] == 5 and replica["sum"] == 2600.0 and replica["buckets"][-1] == ["+Inf", 5]


def test_the_overview_carries_this_replicas_histogram_next_to_the_game_processes() -> None:
    overview = with_browser_latency({"tasks": [], "nodes": [], "totals": {}, "histograms": {"input_latency_ms": {"samples": 3}}})
    assert overview["histograms"]["input_latency_ms"] == {"samples": 3} and KEY_TO_FRAME in overview["histograms"]
    body = prometheus_text(overview)
    assert "# TYPE crowdplay_key_to_frame_ms histogram" in body.splitlines()
