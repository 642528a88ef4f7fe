"""How much feedback and how many problem reports the server stores, from whom.

Anyone may send a note (a problem report works even when no session could start), and each one
is stored for good: a client looping over ``POST /api/report`` filled the store at ~3 GB an hour.
Three bounds, checked in the EnvsManager so they hold across every ingress replica:

* per client address (``crowdplay.web.clients``): a token bucket, so a participant who writes a
  few notes is never refused but a loop is;
* overall: a token bucket over every client, so many addresses at once store no more than the
  study can read;
* per session: at most ``per_session`` notes about one session, however slowly they come.

A rate refusal says how long to wait (the HTTP answer is 429 with ``Retry-After``); a session at
its cap is refused for good (409). Ray-free.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from crowdplay.admission import retry_after
from crowdplay.bounded import forget_oldest
from crowdplay.rate_limit import BucketsByKey, OverLimit, TokenBucket

#: Sessions whose note counts are kept; beyond it the oldest are forgotten (and could store their
#: cap again): ~100 bytes each.
SESSIONS_COUNTED = 100_000


class TooManyNotes(OverLimit):
    """Storing this note now would exceed a rate; ``retry_after_s`` says when to try again."""


class NoteCapReached(RuntimeError):
    """The session has stored as many notes as one session may."""


class NoteLimits:
    """The three bounds of the module docstring; rates per minute, with bursts (``per_session`` 0:
    no cap)."""

    def __init__(
        self, per_client_per_min: float, per_client_burst: int, overall_per_min: float, overall_burst: int, per_session: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clients = BucketsByKey(per_client_per_min / 60.0, per_client_burst, clock=clock)
        self.overall = TokenBucket(overall_per_min / 60.0, overall_burst, clock)
        self.per_session = per_session
        self._by_session: OrderedDict[str, int] = OrderedDict()
        #: notes refused so far, by why (for operators and tests)
        self.refused = {"client": 0, "overall": 0, "session": 0}

    def admit(self, client: str) -> None:
        """Count one note from ``client`` against the rates, or raise ``TooManyNotes`` (nothing counted)."""
        bucket = self.clients[client or "unknown"]
        if not bucket.allow():
            self.refused["client"] += 1
            raise TooManyNotes("too many notes from your address; please wait", retry_after(bucket.wait_s()))
        if not self.overall.allow():
            bucket.give_back()
            self.refused["overall"] += 1
            raise TooManyNotes("the server is taking too many notes right now; please wait", retry_after(self.overall.wait_s()))

    def charge(self, session_id: str) -> None:
        """Count one note about ``session_id`` (its token checked: no one else can use up its cap),
        or raise ``NoteCapReached``."""
        stored = self._by_session.pop(session_id, 0)
        self._by_session[session_id] = stored  # the most recently used: kept longest
        if self.per_session and stored >= self.per_session:
            self.refused["session"] += 1
            raise NoteCapReached(f"this session has sent the {self.per_session} notes one session may send")
        self._by_session[session_id] = stored + 1
        forget_oldest(self._by_session, SESSIONS_COUNTED)
