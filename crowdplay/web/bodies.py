"""Request bodies read with limits: size first, then nesting depth, then JSON.

Python's JSON parser recurses once per nesting level, so a few kilobytes of ``[[[[...`` raise
``RecursionError`` deep inside it (which is not a ``ValueError``, and became a plain-text 500). No
CrowdPlay request nests more than a few levels, so the depth is counted on the raw text before
parsing, which also keeps the work linear in the body's size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request

#: Deepest nesting of arrays and objects any request body may have (session requests use 2).
MAX_DEPTH = 8


class BadBody(ValueError):
    """The body cannot be used; ``status`` and ``kind`` say how the answer should look."""

    def __init__(self, status: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.kind, self.reason = status, kind, reason


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


async def json_object(request: Request, limit: int, empty: object = None) -> dict[str, Any]:
    """The request's body as a JSON object, within the limits (``BadBody`` otherwise)."""
    data = parse_json(await request.body(), limit, empty=empty)
    if not isinstance(data, dict):
        raise BadBody(400, "invalid_json", "the body must be a JSON object")
    return data
