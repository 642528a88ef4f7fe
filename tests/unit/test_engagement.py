"""A participant's attention to their game, from the page's events: time hidden and unfocused,
pauses, and which rule a task's ``when_away`` amounts to."""

from __future__ import annotations

import pytest

from crowdplay import protocol
from crowdplay.engagement import Attention, PageEvent, when_away_for
from tests.unit.fakes import FakeClock

pytestmark = pytest.mark.unit


def test_hidden_and_unfocused_time_add_up_across_changes_and_count_while_still_away():
    clock = FakeClock()
    attention = Attention(clock)
    assert attention.note("hidden") and attention.away
    clock.now += 4
    assert not attention.note("blur")  # still away: the window too
    clock.now += 1
    assert not attention.note("visible")
    clock.now += 2
    assert attention.note("focus") and not attention.away
    attention.note("hidden")
    clock.now += 0.5  # hidden now, counted so far
    values = attention.values()
    assert values["time_hidden"] == pytest.approx(5.5) and values["time_unfocused"] == pytest.approx(3.0)


def test_the_same_event_twice_counts_once():
    clock = FakeClock()
    attention = Attention(clock)
    attention.note("hidden")
    clock.now += 2
    attention.note("hidden")  # a reconnecting page says it again
    clock.now += 2
    attention.note("visible")
    assert attention.values()["time_hidden"] == pytest.approx(4.0)


def test_pauses_are_counted_and_timed():
    clock = FakeClock()
    attention = Attention(clock)
    attention.paused(True)
    clock.now += 3
    attention.paused(False)
    attention.paused(True)
    clock.now += 1
    attention.paused(False)
    values = attention.values()
    assert values["pauses"] == 2 and values["time_paused"] == pytest.approx(4.0)


def test_a_slow_connection_is_timed_but_is_not_away():
    clock = FakeClock()
    attention = Attention(clock)
    assert not attention.note("slow_connection") and not attention.away
    clock.now += 7
    attention.note("connection_ok")
    assert attention.values()["time_slow_connection"] == pytest.approx(7.0)


@pytest.mark.parametrize(
    ("given", "humans", "rule"),
    [(None, 1, "pause"), (None, 2, "play"), ("pause", 1, "pause"), ("pause", 2, "play"), ("play", 1, "play"), ("end", 2, "end"), (None, 0, "play")],
)
def test_a_game_several_people_play_never_pauses_for_one_of_them(given, humans, rule):
    assert when_away_for(given, humans) == rule


def test_the_page_message_is_checked_and_read():
    assert protocol.parse_client_message('{"type":"page","event":"hidden","frame":12}', 4096) == PageEvent("hidden", 12)
    for bad in ('{"type":"page","event":"asleep"}', '{"type":"page"}', '{"type":"page","event":"blur","frame":-1}'):
        with pytest.raises(protocol.ProtocolError) as refused:
            protocol.parse_client_message(bad, 4096)
        assert refused.value.close_code == protocol.CLOSE_POLICY_VIOLATION
    assert PageEvent.from_wire(PageEvent("blur", 3).to_wire()) == PageEvent("blur", 3)
    with pytest.raises(ValueError, match="unknown page event"):
        PageEvent("asleep")
