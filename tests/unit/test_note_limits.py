"""Notes (feedback, problem reports) are bounded per client address, overall, and per session."""

from __future__ import annotations

import pytest

from crowdplay.note_limits import SESSIONS_COUNTED, NoteCapReached, NoteLimits, TooManyNotes
from tests.unit.fakes import FakeClock


def test_one_address_gets_its_burst_then_its_rate_while_another_address_is_admitted():
    clock = FakeClock()
    limits = NoteLimits(per_client_per_min=6, per_client_burst=3, overall_per_min=600, overall_burst=100, per_session=0, clock=clock)
    for _ in range(3):
        limits.admit("10.0.0.1")
    with pytest.raises(TooManyNotes) as refused:
        limits.admit("10.0.0.1")
    assert refused.value.retry_after_s == 10  # one note every 10 s at 6 a minute
    limits.admit("10.0.0.2")
    clock.now = 10.0
    limits.admit("10.0.0.1")
    assert limits.refused == {"client": 1, "overall": 0, "session": 0}


def test_everyone_together_is_bounded_and_an_overall_refusal_takes_no_clients_budget():
    clock = FakeClock()
    limits = NoteLimits(per_client_per_min=60, per_client_burst=2, overall_per_min=60, overall_burst=3, per_session=0, clock=clock)
    for address in ("a", "b", "c"):
        limits.admit(address)
    with pytest.raises(TooManyNotes) as refused:
        limits.admit("d")
    assert refused.value.retry_after_s == 1
    clock.now = 1.0
    limits.admit("d")  # its own bucket was given back when everyone's was empty
    assert limits.refused["overall"] == 1


def test_a_session_stores_at_most_its_cap_however_slowly_it_writes():
    clock = FakeClock()
    limits = NoteLimits(per_client_per_min=1e9, per_client_burst=1_000, overall_per_min=1e9, overall_burst=1_000, per_session=3, clock=clock)
    for _ in range(3):
        limits.charge("s1")
        clock.now += 3600
    with pytest.raises(NoteCapReached):
        limits.charge("s1")
    limits.charge("s2")
    assert limits.refused["session"] == 1


def test_the_oldest_sessions_counts_are_forgotten_beyond_the_bound():
    limits = NoteLimits(1e9, 1_000, 1e9, 1_000, per_session=1)
    limits.charge("first")
    for number in range(SESSIONS_COUNTED):
        limits.charge(f"s{number}")
    limits.charge("first")  # forgotten, so counted afresh
    with pytest.raises(NoteCapReached):
        limits.charge("s1")


def test_refusals_cross_ray_calls_with_their_wait():
    import pickle

    refused = pickle.loads(pickle.dumps(TooManyNotes("wait", 7.0)))
    assert (refused.reason, refused.retry_after_s) == ("wait", 7.0)
