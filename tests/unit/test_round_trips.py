"""Round trips: the ping that reports one is checked like any other input, the summary a session
keeps, the samples an episode lists (bounded), and the reference client's measuring, without a server."""

from __future__ import annotations

import asyncio
import json

import pytest

from crowdplay import protocol
from crowdplay.engagement import Attention, PageEvent, page_report
from crowdplay.recording.episode_document import EpisodeDocument
from crowdplay.round_trips import CONNECTION_VALUES, MAX_SAMPLES_KEPT, MAX_SESSION_SAMPLES, RoundTrip, RoundTrips, connection, summary
from tests.unit.test_client import participant

LIMIT = 2048


def test_a_ping_reports_the_previous_round_trip_with_the_frame_shown_then() -> None:
    parsed = protocol.parse_client_message('{"type":"ping","t":1.5,"rtt_ms":48.25,"frame":1234}', LIMIT)
    assert parsed == protocol.PingMessage(1.5, RoundTrip(48.25, 1234))
    assert protocol.parse_client_message('{"type":"ping","t":2,"rtt_ms":0}', LIMIT) == protocol.PingMessage(2.0, RoundTrip(0.0, 0))
    assert protocol.parse_client_message('{"type":"ping","t":2,"rtt_ms":null}', LIMIT) == protocol.PingMessage(2.0)  # nothing to report
    message = protocol.ping_message(3.25, RoundTrip(61.5, 9))
    assert json.loads(message) == {"type": "ping", "t": 3.25, "rtt_ms": 61.5, "frame": 9}
    assert protocol.parse_client_message(message, LIMIT) == protocol.PingMessage(3.25, RoundTrip(61.5, 9))
    assert json.loads(protocol.ping_message(4.0)) == {"type": "ping", "t": 4.0}


@pytest.mark.parametrize(
    "fields",
    ['"rtt_ms":"48"', '"rtt_ms":true', '"rtt_ms":-1', '"rtt_ms":60001', '"rtt_ms":NaN', '"rtt_ms":Infinity', '"rtt_ms":[48]',
     '"rtt_ms":48,"frame":-1', '"rtt_ms":48,"frame":1.5', '"rtt_ms":48,"frame":4294967296'],
)
def test_a_bad_round_trip_closes_the_connection_as_other_bad_input_does(fields: str) -> None:
    with pytest.raises(protocol.ProtocolError) as refused:
        protocol.parse_client_message(f'{{"type":"ping","t":1,{fields}}}', LIMIT)
    assert refused.value.close_code == protocol.CLOSE_POLICY_VIOLATION
    assert ("'rtt_ms'" in refused.value.reason) != ("'frame'" in refused.value.reason)


def test_the_frame_channel_carries_page_events_and_round_trips_apart() -> None:
    assert page_report(RoundTrip(12.5, 7).to_wire()) == RoundTrip(12.5, 7)
    assert page_report(PageEvent("hidden", 7).to_wire()) == PageEvent("hidden", 7)


def test_a_summary_gives_the_median_the_95th_percentile_and_the_largest() -> None:
    samples = [float(ms) for ms in range(1, 101)]  # 1..100 ms: numpy's linear percentiles, to 0.1 ms
    assert summary(samples) == {"rtt_p50_ms": 50.5, "rtt_p95_ms": 95.0, "rtt_max_ms": 100.0, "rtt_count": 100}
    assert summary([]) == {}
    assert list(summary([40.0])) == list(CONNECTION_VALUES)


def test_a_session_keeps_its_round_trips_up_to_a_bound_and_counts_every_one() -> None:
    trips = RoundTrips()
    assert trips.values() == {}
    for _ in range(MAX_SESSION_SAMPLES):
        trips.add(20.0)
    trips.add(900.0)  # past the bound: counted, and the largest, but not in the percentiles
    assert trips.values() == {"rtt_p50_ms": 20.0, "rtt_p95_ms": 20.0, "rtt_max_ms": 900.0, "rtt_count": MAX_SESSION_SAMPLES + 1}


def test_attention_adds_the_summary_to_the_engagement_values_once_measured() -> None:
    attention = Attention(clock=lambda: 0.0)
    assert not set(CONNECTION_VALUES) & set(attention.values())  # no measurement: no value, rather than a perfect 0 ms
    for ms in (30.0, 50.0, 40.0):
        attention.round_trips.add(ms)
    values = attention.values()
    assert values["time_hidden"] == 0 and {name: values[name] for name in CONNECTION_VALUES} == {
        "rtt_p50_ms": 40.0, "rtt_p95_ms": 49.0, "rtt_max_ms": 50.0, "rtt_count": 3,
    }


def test_a_row_without_measurements_reads_none_and_zero() -> None:
    assert connection({"score": 3.0}) == {"rtt_p50_ms": None, "rtt_p95_ms": None, "rtt_max_ms": None, "rtt_count": 0}
    assert connection(None) == connection({})
    assert connection(summary([10.0, 30.0])) == {"rtt_p50_ms": 20.0, "rtt_p95_ms": 29.0, "rtt_max_ms": 30.0, "rtt_count": 2}


def test_an_episode_lists_its_samples_up_to_a_bound_and_counts_the_rest() -> None:
    document = EpisodeDocument("game", clock=lambda: 1000.0)
    document.begin(0, {}, {})
    document.note_round_trip("agent_0", 48.5, 120, 131)
    first = document.first_chunk_fields()
    assert first["rtt_samples"] == [{"agent": "agent_0", "rtt_ms": 48.5, "page_frame": 120, "frame": 131, "at": 1000.0}]
    for frame in range(MAX_SAMPLES_KEPT + 2):
        document.note_round_trip("agent_0", 30.0, frame, frame)
    assert len(first["rtt_samples"]) == 1  # a sealed chunk's copy keeps its own list
    closed = document.close("complete", {}, 3)
    assert len(closed["rtt_samples"]) == MAX_SAMPLES_KEPT and closed["rtt_samples_dropped"] == 3


def test_the_client_reports_each_round_trip_with_its_next_ping_and_keeps_other_pongs_as_events() -> None:
    client, socket = participant()

    async def two_pings() -> None:
        await client.ping()
        t = socket.sent[0]["t"]
        client._event({"type": "pong", "t": t}, t + 0.048)
        client._event({"type": "pong", "t": 12345.0}, t + 1)  # not ours (a test's own ping): an event
        await client.ping()

    asyncio.run(two_pings())
    assert client.rtt_ms == pytest.approx(48.0) and client.rtt_samples == [client.rtt_ms]
    assert set(socket.sent[0]) == {"type", "t"}
    assert socket.sent[1]["rtt_ms"] == client.rtt_ms and socket.sent[1]["frame"] == 41
    assert client.events == [{"type": "pong", "t": 12345.0}]
    parsed = protocol.parse_client_message(json.dumps(socket.sent[1]), LIMIT)
    assert isinstance(parsed, protocol.PingMessage) and parsed.round_trip == RoundTrip(client.rtt_ms, 41)
