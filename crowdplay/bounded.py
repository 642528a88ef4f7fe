"""Maps that remember only their newest entries: per-client, per-session and per-stream state that
strangers can create at will must not grow without bound. Ray-free."""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def forget_oldest(kept: OrderedDict[K, V], bound: int) -> None:
    """Drop the entries inserted (or moved to the end) longest ago until ``bound`` are left."""
    while len(kept) > bound:
        kept.popitem(last=False)


def remember(kept: OrderedDict[K, V], key: K, value: V, bound: int) -> None:
    """Set ``key`` as the newest entry, then keep at most ``bound``."""
    kept[key] = value
    kept.move_to_end(key)
    forget_oldest(kept, bound)
