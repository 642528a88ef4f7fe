"""Token buckets: ``rate`` events a second on average, bursts of up to ``burst``."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from crowdplay.bounded import forget_oldest


class OverLimit(RuntimeError):
    """A request beyond a rate; ``retry_after_s`` says when to try again (HTTP: 429 with
    ``Retry-After``). Crosses Ray calls with its fields."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[type[OverLimit], tuple[str, float]]:
        return (type(self), (self.reason, self.retry_after_s))


class TokenBucket:
    """``rate`` events a second on average and bursts of up to ``burst``, starting full; ``clock`` is
    injectable for tests."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.updated = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def allow(self) -> bool:
        """Take a token if there is one."""
        self._refill()
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def give_back(self) -> None:
        """Return a token taken for an event that did not happen after all."""
        self.tokens = min(self.burst, self.tokens + 1)

    def wait_s(self) -> float:
        """Seconds until the next token."""
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate if self.rate > 0 else float("inf")

    @property
    def full(self) -> bool:
        """Whether the bucket has refilled to ``burst`` (nothing taken recently)."""
        self._refill()
        return self.tokens >= self.burst


class BucketsByKey:
    """One bucket per key (a client's address), the least recently used forgotten past ``kept``.
    A forgotten key starts again with a full bucket, so ``kept`` must exceed the number of clients
    that can be active within one refill time."""

    def __init__(self, rate: float, burst: float, kept: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.kept, self.clock = rate, burst, kept, clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __getitem__(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self.clock)
            forget_oldest(self._buckets, self.kept)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)
