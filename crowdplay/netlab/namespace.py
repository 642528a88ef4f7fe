"""Entering a network namespace from Python: ``setns`` moves only the calling thread, so sockets a
thread opens (and processes it starts) while inside belong to that namespace's network."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run the body with this thread in ``namespace`` (a name under /run/netns), then come back."""
    home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/run/netns/{namespace}", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        os.close(home)
        raise FileNotFoundError(f"no network namespace {namespace!r} (is the lab up? python -m crowdplay.netlab up)") from None
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def run_inside(namespace: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine ``work()`` on an event loop of its own, in a thread inside ``namespace``:
    every connection it opens starts from there."""
    result: list[T] = []
    failure: list[BaseException] = []

    def thread() -> None:
        try:
            with inside(namespace):
                result.append(asyncio.run(work()))  # type: ignore[arg-type]
        except BaseException as error:  # handed to the caller
            failure.append(error)

    runner = threading.Thread(target=thread, name=f"in-{namespace}")
    runner.start()
    runner.join()
    if failure:
        raise failure[0]
    return result[0]
