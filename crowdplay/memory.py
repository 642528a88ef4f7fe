"""Giving freed memory back to the operating system, so a server that runs for days stays flat.

Two things keep memory a long-lived Python process has finished with from the OS:

* cyclic garbage that reached the collector's oldest generation (a websocket connection's
  protocol objects, a finished game's) waits for a full collection, and CPython runs one only
  once that generation has grown by a quarter since the last;
* glibc returns freed chunks only from the top of an arena; holes elsewhere stay in the
  process until ``malloc_trim`` gives back their pages.

Measured in the ingress replica: 500 websocket reconnections left it 5.4 MB larger, and one
``release_freed_memory`` gave all of it back. Every long-lived CrowdPlay process (the ingress
replicas, the EnvsManager, the TrajectoryWriter, the EnvActors, the policy actors) therefore
runs it every ``Settings.memory_release_interval_s`` on a thread of its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
import time
from typing import Any

_started = threading.Lock()


def libc_function(name: str) -> Any:
    """A function of the C library (glibc's ``malloc_trim``, ``mallinfo2``), or None where the
    library has none (musl, macOS, an older glibc)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


_malloc_trim = libc_function("malloc_trim")


def release_freed_memory() -> float:
    """Collect all generations, then return free heap pages to the OS; the seconds it took (the
    calling process holds the GIL meanwhile)."""
    began = time.perf_counter()
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    return time.perf_counter() - began


def freeze_startup_objects() -> None:
    """Move everything alive now (Ray, numpy, the emulator bindings, a store client: loaded once,
    kept for the process's life) out of the collector's reach, so that its full collections, ours
    included, scan only what came after. Call it before the first participant's objects exist:
    frozen objects are never freed; so only the first call in a process freezes."""
    if gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()


def release_freed_memory_every(interval_s: float) -> bool:
    """Start, once per process, a daemon thread releasing freed memory every ``interval_s``
    seconds (0 turns it off). True if this call started it."""
    if interval_s <= 0 or not _started.acquire(blocking=False):
        return False

    def keep_releasing() -> None:
        while True:
            time.sleep(interval_s)
            release_freed_memory()

    threading.Thread(target=keep_releasing, name="release-freed-memory", daemon=True).start()
    return True
