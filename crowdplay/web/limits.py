"""The largest request body each route takes, in one table.

The handlers read their limits from here, docs/protocol.md lists the same table (Request bodies;
tests/unit/test_bodies.py compares the two) and tests/test_request_bodies.py sends every route a
body of its limit and one byte more through a real deployment. A route not listed reads no body.
"""

from __future__ import annotations

#: Bytes of body each route reads at most, by ``"<METHOD> <path>"``: one byte more is answered
#: 413 ``body_too_large`` without reading the rest. The largest request any page sends is well
#: under a kilobyte; a note's text (feedback, a report) is bounded by its body alone.
BODY_LIMITS: dict[str, int] = {
    "POST /api/sessions": 4096,
    "POST /api/feedback": 4096,
    "POST /api/report": 4096,
    "POST /api/admin/games": 1024,
}

#: The largest of ``BODY_LIMITS``: no request anywhere needs a longer body.
LARGEST_BODY = max(BODY_LIMITS.values())
