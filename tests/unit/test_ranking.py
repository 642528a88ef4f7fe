"""The score page's ranking: round bins that read well from one finisher to ten thousand, and a
percentile only once enough others have finished."""

from __future__ import annotations

import random

import pytest

from crowdplay.ranking import bin_edges, rank, round_step

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("rough", "step"), [(0.3, 0.25), (1.0, 1.0), (1.2, 1.0), (2.2, 2.0), (3.0, 2.5), (7.5, 10.0), (42.0, 50.0), (180.0, 200.0), (0.0, 1.0)])
def test_a_round_step_is_the_nearest_1_2_2_5_or_5_times_a_power_of_ten(rough, step):
    assert round_step(rough) == pytest.approx(step)


def test_one_finisher_gets_their_bar_among_empty_bins_either_side():
    ranking = rank(75.0, [], percentile_from=10)
    edges = ranking["histogram"]["edges"]
    assert ranking["percentile"] is None and ranking["others"] == 0 and ranking["participants"] == 1
    own = ranking["histogram"]["own_bin"]
    assert ranking["histogram"]["counts"] == [0, 0, 1, 0, 0] and edges[own] <= 75 < edges[own + 1]
    assert rank(0.0, [0.0, 0.0], percentile_from=10)["histogram"]["counts"] == [3, 0, 0]  # never below zero


def test_ten_thousand_whole_number_scores_get_about_ten_round_whole_number_bins():
    generator = random.Random(3)
    others = [float(generator.randrange(0, 3001, 5)) for _ in range(9_999)]
    ranking = rank(1234.0, others, percentile_from=10)
    edges, counts = ranking["histogram"]["edges"], ranking["histogram"]["counts"]
    widths = {round(b - a, 6) for a, b in zip(edges, edges[1:])}
    assert widths == {500.0} or widths == {250.0} or widths == {200.0}, widths  # one round width
    assert 8 <= len(counts) <= 16 and sum(counts) == 10_000
    assert edges[0] <= min(others) and max(others) < edges[-1]
    own = ranking["histogram"]["own_bin"]
    assert edges[own] <= 1234 < edges[own + 1]
    assert 35 < ranking["percentile"] < 48


def test_whole_number_scores_never_get_bins_narrower_than_one():
    edges = bin_edges([3.0, 4.0, 5.0])
    assert all(b - a >= 1 for a, b in zip(edges, edges[1:]))


def test_fractional_scores_get_fractional_round_bins():
    edges = bin_edges([0.12, 0.5, 0.93])
    assert edges[0] <= 0.12 and 0.93 < edges[-1] and round(edges[1] - edges[0], 9) in {0.1, 0.05}


def test_negative_scores_are_binned_too():
    ranking = rank(-21.0, [-21.0, -19.0, -5.0], percentile_from=1)
    edges = ranking["histogram"]["edges"]
    assert edges[0] <= -21 and -5 < edges[-1] and ranking["percentile"] == pytest.approx(100 * 0.5 / 3, abs=0.1)


def test_the_percentile_waits_for_enough_others_ties_counting_half():
    assert rank(10.0, [5.0, 10.0], percentile_from=3)["percentile"] is None
    assert rank(10.0, [5.0, 10.0, 20.0], percentile_from=3)["percentile"] == 50.0
