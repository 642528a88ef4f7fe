"""The one shape of every HTTP error: ``{"error": <kind>, "reason": <what to do about it>}``.

A reason is short and written for the person who sent the request. Exceptions that crossed a Ray
call carry the remote traceback in their text (paths, pids, node addresses, actor ids): only the
original exception's own message is ever shown, and only its first line; the details go to the
server's log.
"""

from __future__ import annotations

import math

from starlette.responses import JSONResponse

#: Longest reason an answer carries.
MAX_REASON_CHARS = 200


def error(status: int, kind: str, reason: str, headers: dict[str, str] | None = None, **extra: object) -> JSONResponse:
    """A JSON error response of the one shape; ``extra`` fields go beside ``error`` and ``reason``."""
    return JSONResponse({"error": kind, "reason": reason, **extra}, status_code=status, headers=headers)


def original(exc: BaseException) -> BaseException:
    """The exception raised inside an actor, for one that crossed a Ray call (Ray's wrapper is an
    instance of both ``RayTaskError`` and the original's class, and keeps the original as ``cause``)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def message_of(exc: BaseException) -> str:
    """An exception's own message, without the remote traceback Ray wraps around it."""
    raised = original(exc)
    text = str(raised.args[0]).strip() if raised.args else ""
    return (text.splitlines()[0] if text else type(raised).__name__)[:MAX_REASON_CHARS]


def too_many(exc: BaseException, default_wait_s: float) -> JSONResponse:
    """``429 too_many_requests`` for a refusal over a rate (``crowdplay.rate_limit.OverLimit``),
    with when to try again in ``Retry-After`` and ``retry_after_s`` (whole seconds)."""
    wait_s = math.ceil(getattr(original(exc), "retry_after_s", default_wait_s))
    return error(429, "too_many_requests", message_of(exc), headers={"Retry-After": str(wait_s)}, retry_after_s=wait_s)
