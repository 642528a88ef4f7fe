"""UnackedChunks: an EnvActor process's chunks that the writer has not acknowledged yet.

A chunk is kept until the writer acknowledges it, so a writer restart loses nothing. While the
writer does not answer (stopped, restarting, slow), every session keeps producing ~7 KB of packed
chunks a second and all of it waits here: measured, an EnvActor grew 29 KB per playing session a
second while the writer process was stopped. So the buffer is bounded: up to ``memory_limit_bytes``
(``Settings.unacked_memory_mb``) per process stays in memory; every chunk beyond it is written to a
file of its own in a private directory (under the system temp dir, one per process) and read back
each time it is resent. Nothing is dropped: a chunk leaves only when it is acknowledged.

The files are not a durability layer (the writer's spool is): they hold what this process would
otherwise hold in memory, and a crash of the process loses them just as it would lose its memory.
The directory is removed whenever its last file goes (a drained process leaves nothing behind) and
when the process exits normally. A spill that fails (a full disk) keeps the chunk in memory instead.

No Ray here: the Recorders of a process share one instance, and it is tested on its own.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Key = tuple[str, int]
#: The chunk as the writer takes it, minus its key: (packed columns, steps, episode fields).
Held = tuple[bytes, int, dict[str, Any]]
#: Directories are named with this prefix, then the process id (``crowdplay-unacked-<pid>-...``).
DIRECTORY_PREFIX = "crowdplay-unacked-"


@dataclass
class _Entry:
    """One unacknowledged chunk: in memory (``blob`` set) or in its file (``path`` set)."""

    steps: int
    fields: dict[str, Any]
    size: int
    sealed_at: float  # time.time(): the dashboard shows how long the oldest has waited
    blob: bytes | None = None
    path: Path | None = None


class UnackedChunks:
    """A process's unacknowledged chunks by ``(episode_id, seq)``: in memory up to a byte limit,
    in files beyond it. Insertion order is seal order, so the first entry is the oldest."""

    def __init__(self, memory_limit_bytes: int | None = None, spill_root: str | os.PathLike[str] | None = None) -> None:
        """``memory_limit_bytes``: packed bytes kept in memory before chunks go to files (None: no
        limit, never spill); ``spill_root``: where this process's directory is made (default: the
        system temp dir)."""
        self.memory_limit_bytes = memory_limit_bytes
        self.spill_root = Path(spill_root) if spill_root else Path(tempfile.gettempdir())
        self._entries: dict[Key, _Entry] = {}
        self._directory: Path | None = None
        self._files = 0
        self._cleanup_registered = False
        self.memory_bytes = 0
        self.disk_bytes = 0
        #: chunks ever written to a file / spills that failed and stayed in memory instead
        self.spilled = 0
        self.spill_failures = 0

    # ----------------------------------------------------------------- the chunks
    def put(self, key: Key, blob: bytes, steps: int, fields: dict[str, Any]) -> None:
        """Hold a sealed chunk until ``discard``: in memory while under the limit, else in a file."""
        self.discard(key)  # a chunk put twice replaces itself (never happens in a Recorder, but cheap)
        entry = _Entry(steps, fields, len(blob), time.time())
        over = self.memory_limit_bytes is not None and self.memory_bytes + entry.size > self.memory_limit_bytes
        if over and self._spill(key, entry, blob):
            self.disk_bytes += entry.size
        else:
            entry.blob = blob
            self.memory_bytes += entry.size
        self._entries[key] = entry

    def get(self, key: Key) -> Held:
        """The chunk, read back from its file if it was spilled (KeyError if not held)."""
        entry = self._entries[key]
        if entry.blob is not None:
            return entry.blob, entry.steps, entry.fields
        assert entry.path is not None  # a chunk not in memory was spilled to its file
        return entry.path.read_bytes(), entry.steps, entry.fields

    def size_of(self, key: Key) -> int:
        """The chunk's packed bytes, without reading a spilled one back."""
        return self._entries[key].size

    def discard(self, key: Key) -> None:
        """The writer acknowledged the chunk: let go of it (its file too)."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        if entry.blob is not None:
            self.memory_bytes -= entry.size
            return
        self.disk_bytes -= entry.size
        self._files -= 1
        assert entry.path is not None  # a chunk not in memory was spilled to its file
        try:
            entry.path.unlink()
        except OSError as error:
            log.warning("could not remove the spilled chunk %s: %s", entry.path, error)
        if self._files == 0:
            self._remove_directory()  # a drained process leaves nothing behind

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    # ----------------------------------------------------------------- the dashboard
    def oldest_sealed_at(self) -> float | None:
        """When the oldest unacknowledged chunk was sealed (epoch seconds), or None when none are held."""
        for entry in self._entries.values():
            return entry.sealed_at
        return None

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """Chunks and bytes held in memory and on disk, and how long the oldest has waited."""
        now = time.time() if now is None else now
        oldest = self.oldest_sealed_at()
        return {
            "chunks": len(self._entries),
            "memory_chunks": len(self._entries) - self._files,
            "memory_bytes": self.memory_bytes,
            "disk_chunks": self._files,
            "disk_bytes": self.disk_bytes,
            "oldest_sealed_at": oldest,
            "oldest_age_s": None if oldest is None else max(0.0, now - oldest),
            "memory_limit_bytes": self.memory_limit_bytes,
            "spilled": self.spilled,
            "spill_failures": self.spill_failures,
            "spill_directory": str(self._directory) if self._directory else None,
        }

    # ----------------------------------------------------------------- files
    def _spill(self, key: Key, entry: _Entry, blob: bytes) -> bool:
        """Write the chunk to a file of its own; False (and the chunk stays in memory) if that fails."""
        try:
            directory = self._ensure_directory()
            path = directory / f"{self.spilled:012d}.chunk"
            path.write_bytes(blob)
        except OSError as error:
            self.spill_failures += 1
            if self.spill_failures == 1 or self.spill_failures % 1000 == 0:
                log.warning("could not spill an unacknowledged chunk (%s: %s); keeping it in memory", type(error).__name__, error)
            return False
        entry.path = path
        self.spilled += 1
        self._files += 1
        return True

    def _ensure_directory(self) -> Path:
        if self._directory is None:
            self.spill_root.mkdir(parents=True, exist_ok=True)
            # mkdtemp: created 0700 under a name nobody else can have chosen first
            self._directory = Path(tempfile.mkdtemp(prefix=f"{DIRECTORY_PREFIX}{os.getpid()}-", dir=self.spill_root))
            if not self._cleanup_registered:
                atexit.register(self.close)
                self._cleanup_registered = True
        return self._directory

    def _remove_directory(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def close(self) -> None:
        """Remove this process's files (at exit: whatever is still unacknowledged dies with the
        process, as it would have in memory)."""
        self._remove_directory()
