"""The link emulator's arithmetic: delay, jitter without reordering, loss, a rate with a bounded queue."""

from __future__ import annotations

import random
import statistics

import pytest

from crowdplay.netlab.shape import Direction, LinkShape


def test_each_direction_carries_half_the_round_trip():
    way = Direction(LinkShape(rtt_ms=50), random.Random(0))
    assert way.admit(10.0, 100) == pytest.approx(10.025)


def test_jitter_varies_the_delay_but_never_reorders():
    way = Direction(LinkShape(rtt_ms=40, jitter_ms=10), random.Random(1))
    departures = [way.admit(i * 0.001, 100) for i in range(2000)]
    assert all(b is not None and a is not None and b >= a for a, b in zip(departures, departures[1:]))
    delays = [d - i * 0.001 for i, d in enumerate(departures) if d is not None]
    assert 0.020 <= statistics.median(delays) <= 0.026 and max(delays) > 0.026


def test_loss_drops_its_fraction_and_counts_it():
    way = Direction(LinkShape(loss=0.05), random.Random(2))
    outcomes = [way.admit(0.0, 100) for _ in range(20_000)]
    lost = outcomes.count(None)
    assert 800 <= lost <= 1200 and way.counters()["lost"] == lost


def test_a_rate_spaces_packets_and_drops_beyond_the_queue_instead_of_queueing():
    way = Direction(LinkShape(rate_kbit=500, queue_bytes=10_000), random.Random(3))  # 62.5 bytes per ms
    first, second = way.admit(0.0, 1250), way.admit(0.0, 1250)
    assert first == pytest.approx(0.020) and second == pytest.approx(0.040)
    burst = [way.admit(0.0, 1250) for _ in range(20)]
    assert burst.count(None) == 14 and way.counters()["overflowed"] == 14  # 8 packets of 1,250 bytes fill 10,000
    assert way.admit(1.0, 1250) == pytest.approx(1.020)  # once the queue drained, packets pass again


def test_a_cut_link_drops_everything():
    way = Direction(LinkShape(rtt_ms=20, cut=True), random.Random(4))
    assert [way.admit(0.0, 100) for _ in range(10)] == [None] * 10


@pytest.mark.parametrize("field, value", [("rtt_ms", -1), ("loss", 1.0), ("loss", -0.1), ("rate_kbit", -5), ("queue_bytes", 100)])
def test_an_impossible_shape_names_its_field(field, value):
    with pytest.raises(ValueError, match=field):
        LinkShape(**{field: value})
