"""Maps that keep only their newest entries (``crowdplay.bounded``)."""

from __future__ import annotations

from collections import OrderedDict

from crowdplay.bounded import forget_oldest, remember


def test_the_oldest_entries_go_first_and_a_key_set_again_counts_as_new():
    kept: OrderedDict[str, int] = OrderedDict()
    for index, key in enumerate(["a", "b", "c"]):
        remember(kept, key, index, bound=3)
    remember(kept, "a", 10, bound=3)  # "a" is the newest now: "b" is the oldest
    remember(kept, "d", 4, bound=3)
    assert list(kept.items()) == [("c", 2), ("a", 10), ("d", 4)]


def test_forgetting_trims_to_the_bound_and_leaves_a_small_map_alone():
    kept = OrderedDict((str(n), n) for n in range(5))
    forget_oldest(kept, 2)
    assert list(kept) == ["3", "4"]
    forget_oldest(kept, 10)
    assert list(kept) == ["3", "4"]
