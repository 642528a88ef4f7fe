"""Whether the client of a request is still there, so work for one that went away is given up.

A session request can wait a long time for its answer under a flood (in HAProxy's queue, in the
replica, in the EnvsManager's placement), and its client gives up long before. Fulfilled anyway,
it became a session and often a new game nobody would ever connect to. ASGI tells the app when
the client disconnects: once the body is read, the request's next message is ``http.disconnect``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request

T = TypeVar("T")
log = logging.getLogger(__name__)


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


#: Work whose client left, still finishing (a task only weakly referenced by the loop could be
#: collected before it ends).
_LEFT_TO_FINISH: set[asyncio.Future[Any]] = set()


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or ``ClientGone`` as soon as the client disconnects, also when it had
    disconnected already or left as the work finished. Work whose client left is not cancelled
    but left to finish, also when this request is cancelled: cancelling a call to an actor
    cancels it there, halfway through whatever it was doing; the caller withdraws what the work
    does instead. Only once the request's body has been read: this takes the request's next
    ASGI message."""
    task = asyncio.ensure_future(work)
    leaving = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, leaving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        leaving.cancel()
        if not task.done():
            _LEFT_TO_FINISH.add(task)
            task.add_done_callback(_finished)
    if not task.done() or (leaving.done() and not leaving.cancelled()):  # done or not, nobody is there to be told
        raise ClientGone()
    return task.result()


def _finished(task: asyncio.Future[Any]) -> None:
    _LEFT_TO_FINISH.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.info("a request whose client left failed as it finished: %s", task.exception())


async def _disconnect(request: Request) -> None:
    """Returns once the client has disconnected; never for a server that sends another message
    after the body instead, or fails to say (nothing says the client left: its request stands)."""
    try:
        message = await request.receive()
    except Exception:  # noqa: BLE001 - not knowing is not leaving
        message = {}
    if message.get("type") != "http.disconnect":
        await asyncio.Event().wait()
