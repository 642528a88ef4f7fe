"""Admission: whether a request for a new session may start one now.

Every session holds a seat, and a new game on an EnvActor, from the moment it is created until
its participant connects (or ``connect_timeout_s`` passes). A client that asks for sessions and
never plays would otherwise fill the cluster. Three bounds, checked in the EnvsManager (so they
hold across every ingress replica):

* per client (the address the ingress saw, ``crowdplay.web.clients``): a token bucket, so a
  participant who restarts a few times is never refused, but a loop is (each ingress replica
  checks it first on its own: ``ClientStarts``);
* overall: a token bucket over every client, so many addresses at once cannot start sessions
  faster than the cluster can host them;
* sessions created and not yet connected: at most ``max_unconnected`` at a time.

A refusal says how long to wait (the HTTP answer is 429 with ``Retry-After``). Nothing here
touches Ray.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from crowdplay.rate_limit import BucketsByKey, OverLimit, TokenBucket


class TooManyStarts(OverLimit):
    """Starting a session now would exceed a bound; ``retry_after_s`` says when to try again."""


#: What a client over its own bound is told.
CLIENT_OVER = "too many new sessions from your address; please wait"


class ClientStarts:
    """The per-client bound on its own. Each ingress replica keeps one as a first line, so a
    flood's refusals cost no call to the EnvsManager (measured: 32 connections flooding through
    one replica sent ~150 requests a second to the manager); the manager's ``Admission`` still
    holds the bound across replicas."""

    def __init__(self, per_min: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.buckets = BucketsByKey(per_min / 60.0, burst, clock=clock)
        self.refused = 0

    def take(self, client: str) -> TokenBucket:
        """Count one start for ``client`` (its bucket, to give the start back) or raise."""
        bucket = self.buckets[client or "unknown"]
        if not bucket.allow():
            self.refused += 1
            raise TooManyStarts(CLIENT_OVER, retry_after(bucket.wait_s()))
        return bucket


def retry_after(wait_s: float) -> float:
    """Whole seconds, at least one (``Retry-After`` takes integers)."""
    return max(1.0, math.ceil(wait_s))


class Admission:
    """The EnvsManager's three bounds on starting sessions (see the module docstring): per client, overall
    (rates per minute and per second, with bursts), and at most ``max_unconnected`` sessions waiting
    for a first connection (0: no bound)."""

    def __init__(
        self,
        per_client_per_min: float,
        per_client_burst: int,
        overall_per_s: float,
        overall_burst: int,
        max_unconnected: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clients = ClientStarts(per_client_per_min, per_client_burst, clock)
        self.overall = TokenBucket(overall_per_s, overall_burst, clock)
        self.max_unconnected = max_unconnected
        self.refused = 0

    def admit(self, client: str, unconnected: int) -> None:
        """Count one session start for ``client`` or raise ``TooManyStarts``; ``unconnected``:
        sessions now waiting for their participant's first connection."""
        try:
            bucket = self.clients.take(client)
        except TooManyStarts:
            self.refused += 1
            raise
        if not self.overall.allow():
            bucket.give_back()
            self._refuse("too many participants are starting right now; please wait", self.overall.wait_s())
        if unconnected >= self.max_unconnected > 0:
            bucket.give_back()
            self.overall.give_back()
            self._refuse("too many sessions are waiting for their participants to connect; please wait", 2.0)

    def _refuse(self, reason: str, wait_s: float) -> None:
        self.refused += 1
        raise TooManyStarts(reason, retry_after(wait_s))
