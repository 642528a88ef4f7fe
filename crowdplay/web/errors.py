"""The one shape of every HTTP error: ``{"error": <kind>, "reason": <what to do about it>}``."""

from __future__ import annotations

from starlette.responses import JSONResponse


def error(status: int, kind: str, reason: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": kind, "reason": reason, **extra}, status_code=status)
