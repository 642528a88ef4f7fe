"""Spool: a local directory that holds chunks while the store cannot take them.

The writer acknowledges a chunk only once it is durable, in the store or here. A batch is written
to a temporary file, fsynced, and renamed into place, so a crash leaves either a whole batch or
none; files are named by time so they drain in the order they arrived.

The spool keeps count of its batches and bytes as they come and go (``size``), so the dashboard
can show it every two seconds without listing a directory that may hold thousands of files.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import msgpack

Chunk = tuple[str, int, bytes, int, dict[str, Any]]


class Spool:
    """Chunk batches spooled to ``directory`` (created if missing); batches a previous run left there
    are counted and drained too."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._counter = 0
        # Batches written by the spool thread, removed by the drain on the event loop: one lock.
        self._lock = threading.Lock()
        #: file name -> bytes, for every batch spooled (a previous run's too)
        self._sizes: dict[str, int] = {}
        for path in self.files():
            try:
                self._sizes[path.name] = path.stat().st_size
            except OSError:
                continue

    def put(self, chunks: list[Chunk]) -> Path:
        """Persist a batch durably; returns its file."""
        self._counter += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._counter:06d}.spool"
        temporary = self.directory / (name + ".tmp")
        data = msgpack.packb([list(chunk) for chunk in chunks], use_bin_type=True)
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        final = self.directory / name
        # Counted before the rename: from then on the drain may store and remove the batch at any
        # moment, even before this method returns.
        with self._lock:
            self._sizes[name] = len(data)
        try:
            os.replace(temporary, final)
        except BaseException:
            with self._lock:
                self._sizes.pop(name, None)
            raise
        directory_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)  # the rename itself survives a crash
        finally:
            os.close(directory_fd)
        return final

    def files(self) -> list[Path]:
        """Spooled batches, oldest first (an interrupted write's ``.tmp`` was never acknowledged)."""
        return sorted(self.directory.glob("*.spool"))

    def load(self, path: Path) -> list[Chunk]:
        """The chunks of one spooled batch, as tuples again."""
        return [tuple(chunk) for chunk in msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)]

    def remove(self, path: Path) -> None:
        """Forget a batch once the store has it (a file already gone is fine)."""
        path.unlink(missing_ok=True)
        with self._lock:
            self._sizes.pop(path.name, None)

    def size(self) -> dict[str, Any]:
        """Batches and bytes spooled now, and when the oldest was spooled (epoch seconds, None if
        empty): from the file names, which start with the time in nanoseconds."""
        with self._lock:
            batches, total = len(self._sizes), sum(self._sizes.values())
            oldest = min(self._sizes, default=None)
        oldest_at = None
        if oldest is not None:
            try:
                oldest_at = int(oldest.split("-", 1)[0]) / 1e9
            except ValueError:  # a file someone named by hand
                oldest_at = None
        return {"batches": batches, "bytes": total, "oldest_at": oldest_at}

    def __len__(self) -> int:
        return len(self.files())
