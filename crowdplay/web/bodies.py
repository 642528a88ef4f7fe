"""Request bodies read with limits: size and time first, then nesting depth, then JSON.

A body is read as it arrives and no further than its route's limit (``crowdplay.web.limits``): one
announced longer (``Content-Length``) is refused before a byte of it is read, one sent longer
(chunked) as soon as the bytes pass the limit, and one that does not arrive within the deadline is
refused then: a body read whole before its size is checked costs the ingress replica its whole
size in memory (eight concurrent 100 MB uploads: ~860 MB), and one announced but never sent would
hold its connection unanswered. Such a refusal closes the connection it came on (``Connection:
close``), so the rest of the body is never read; the client's own connection, when HAProxy is in
front, is HAProxy's to close (``crowdplay.web.haproxy_bodies``).

Python's JSON parser recurses once per nesting level, so a few kilobytes of ``[[[[...`` raise
``RecursionError`` deep inside it (which is not a ``ValueError``, and became a plain-text 500). No
CrowdPlay request nests more than a few levels, so the depth is counted on the raw text before
parsing, which also keeps the work linear in the body's size.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from crowdplay.web.errors import error

#: Deepest nesting of arrays and objects any request body may have (session requests use 2).
MAX_DEPTH = 8


class BadBody(ValueError):
    """The body cannot be used; ``status`` and ``kind`` say how the answer should look, and
    ``unread`` that part of it was never read, so the answer must close the connection."""

    def __init__(self, status: int, kind: str, reason: str, unread: bool = False) -> None:
        super().__init__(reason)
        self.status, self.kind, self.reason, self.unread = status, kind, reason, unread

    @property
    def headers(self) -> dict[str, str] | None:
        """The answer's headers: ``Connection: close`` when part of the body is unread (else the
        server would go on reading it to reach the connection's next request)."""
        return {"Connection": "close"} if self.unread else None

    def answer(self, hint: str = "") -> JSONResponse:
        """The JSON error answer of this refusal, its reason followed by ``hint`` (what to send
        instead), closing the connection when part of the body is unread."""
        return error(self.status, self.kind, f"{self.reason}; {hint}" if hint else self.reason, headers=self.headers)


def too_large(limit: int) -> BadBody:
    """The refusal of a body longer than ``limit``, before all of it was read."""
    return BadBody(413, "body_too_large", f"request body exceeds {limit} bytes", unread=True)


def announced_length(headers: Mapping[str, str]) -> int | None:
    """The body's length as ``Content-Length`` announces it, or None (chunked, or no header).
    HAProxy and the server refuse a malformed one before any handler runs."""
    value = headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else None


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request's body, read as it arrives: ``BadBody`` 413 as soon as it is announced or read
    longer than ``limit`` bytes, 408 when it is not complete ``timeout_s`` after reading began
    (0: no deadline), 400 when the client went away before finishing it."""
    announced = announced_length(request.headers)
    if announced is not None and announced > limit:
        raise too_large(limit)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s or None):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_large(limit)
    except TimeoutError:
        raise BadBody(408, "request_timeout", f"the request body did not arrive within {timeout_s:g} s", unread=True) from None
    except ClientDisconnect:
        raise BadBody(400, "body_incomplete", "the connection closed before the request body was complete") from None
    return bytes(body)


def nesting_depth(text: str, stop_above: int) -> int:
    """The deepest nesting of ``[``/``{`` outside strings, counting no further than ``stop_above + 1``."""
    depth = deepest = 0
    for char in outside_strings(text):
        if char == "[" or char == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    return deepest
        elif char == "]" or char == "}":
            depth -= 1
    return deepest


def outside_strings(text: str) -> Iterator[str]:
    """``text``'s characters that are not inside a JSON string (nor its quotes), so that brackets in
    a string's content do not count as nesting; an unterminated string runs to the end."""
    in_string = escaped = False
    for char in text:
        if not in_string:
            if char == '"':
                in_string = True
            else:
                yield char
        elif escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            in_string = False


def parse_json(raw: bytes, limit: int, max_depth: int = MAX_DEPTH, empty: object = None) -> object:
    """Decode a JSON body of at most ``limit`` bytes and ``max_depth`` levels (``empty``: the value
    of an empty body; None: an empty body is refused)."""
    if len(raw) > limit:
        raise BadBody(413, "body_too_large", f"request body exceeds {limit} bytes")
    if not raw and empty is not None:
        return empty
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody(400, "invalid_json", "the body must be UTF-8 JSON") from None
    if nesting_depth(text, max_depth) > max_depth:
        raise BadBody(400, "too_deep", f"the body nests arrays and objects more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadBody(400, "invalid_json", "the body is not valid JSON") from None


async def json_object(request: Request, limit: int, timeout_s: float, empty: object = None) -> dict[str, Any]:
    """The request's body as a JSON object, within the limits (``BadBody`` otherwise)."""
    data = parse_json(await read_body(request, limit, timeout_s), limit, empty=empty)
    if not isinstance(data, dict):
        raise BadBody(400, "invalid_json", "the body must be a JSON object")
    return data
