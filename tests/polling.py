"""Waiting, in a test's own event loop, for something other tasks bring about (a writer's answer,
a queue draining), without Ray or a server: tests in tests/unit use it too."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def settle(done: Callable[[], object], tries: int, every_s: float) -> None:
    """Return once ``done()`` is true, or after ``tries`` checks ``every_s`` apart: the test then
    asserts on what it finds, so a wait that ran out fails with the test's own message."""
    for _ in range(tries):
        if done():
            return
        await asyncio.sleep(every_s)
