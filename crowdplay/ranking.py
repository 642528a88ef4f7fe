"""Where a finished participant's score stands among the task's other finishers, for the score page.

A percentile among two people says little and can read as a verdict, so it is given only once
``percentile_from`` others have finished (a study setting). The histogram's bins have round widths
(1, 2, 2.5 or 5 times a power of ten) and whole-number widths for whole-number scores, so its
labels read as a person would write them, with one participant or ten thousand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: About this many bins over the range of scores.
TARGET_BINS = 10
_ROUND_STEPS = (1.0, 2.0, 2.5, 5.0, 10.0)
#: Empty bins shown either side of a single score's bin (none below zero for scores that are never negative).
SINGLE_BIN_MARGIN = 2


def round_step(rough: float) -> float:
    """The round width (1, 2, 2.5 or 5 times a power of ten) nearest to ``rough`` by ratio."""
    if not rough > 0 or not math.isfinite(rough):
        return 1.0
    power = 10.0 ** math.floor(math.log10(rough))
    return min((step * power for step in _ROUND_STEPS), key=lambda step: max(step / rough, rough / step))


def bin_edges(scores: Sequence[float]) -> list[float]:
    """Edges of round-width bins covering ``scores`` (at least one score): every score falls in
    ``[edge_i, edge_i+1)``; a single distinct score gets a bin of a width fit for its size, with
    empty bins beside it."""
    low, high = min(scores), max(scores)
    span = high - low
    step = round_step(span / TARGET_BINS if span > 0 else max(abs(low), 1.0) / 5)
    if all(float(score).is_integer() for score in scores):
        step = max(1.0, math.ceil(step))
    first = math.floor(low / step) * step
    count = max(1, math.floor((high - first) / step) + 1)
    if count == 1:  # one bar filling the chart says nothing: show it among empty bins either side
        below = min(SINGLE_BIN_MARGIN, math.floor(first / step)) if low >= 0 else SINGLE_BIN_MARGIN
        first -= below * step
        count = 1 + below + SINGLE_BIN_MARGIN
    return [round(first + index * step, 9) for index in range(count + 1)]


def rank(own: float, others: Sequence[float], percentile_from: int) -> dict[str, Any]:
    """The score page's ranking: the participant's score, how many others finished, their
    percentile among them (share scoring lower, ties counting half; None below
    ``percentile_from`` others), and the histogram of everyone's scores with the participant's bin."""
    below = sum(score < own for score in others) + 0.5 * sum(score == own for score in others)
    everyone = [*others, own]
    edges = bin_edges(everyone)
    counts, _ = np.histogram(everyone, bins=edges)
    own_bin = min(int(np.searchsorted(edges, own, side="right")) - 1, len(edges) - 2)
    return {
        "score": own,
        "others": len(others),
        "participants": len(everyone),
        "percentile": round(100.0 * below / len(others), 1) if others and len(others) >= percentile_from else None,
        "histogram": {"edges": edges, "counts": [int(count) for count in counts], "own_bin": own_bin},
    }
