"""Fire-and-forget work that is neither forgotten nor silent.

An ``asyncio`` task nobody references can be garbage-collected before it finishes, and one whose
exception nobody retrieves fails without a trace. ``Background`` keeps every task it starts until
it is done and logs each failure with what the task was for, so a component can start work it
does not wait on (a process boot, a retried save, a host's retirement) and still have its failure
reach the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Background:
    """The tasks a component started and does not await, each with a description for its log line."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, coroutine: Coroutine[Any, Any, T], what: str) -> asyncio.Task[T]:
        """Run ``coroutine`` on the running loop; a failure is logged as "``what`` failed: ...".
        The task is returned for callers that do want its result later."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(done, what))
        return task

    def _finished(self, task: asyncio.Task[Any], what: str) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._log.warning("%s failed: %s: %s", what, type(error).__name__, error)

    def __len__(self) -> int:
        return len(self._tasks)
