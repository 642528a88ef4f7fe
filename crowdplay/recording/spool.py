"""Spool: a local directory that holds chunks while the store cannot take them.

The writer acknowledges a chunk only once it is durable, in the store or here. A batch is written
to a temporary file, fsynced, and renamed into place, so a crash leaves either a whole batch or
none; files are named by time so they drain in the order they arrived.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgpack

Chunk = tuple[str, int, bytes, int, dict]


class Spool:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._counter = 0

    def put(self, chunks: list[Chunk]) -> Path:
        """Persist a batch durably; returns its file."""
        self._counter += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._counter:06d}.spool"
        temporary = self.directory / (name + ".tmp")
        with open(temporary, "wb") as file:
            file.write(msgpack.packb([list(chunk) for chunk in chunks], use_bin_type=True))
            file.flush()
            os.fsync(file.fileno())
        final = self.directory / name
        os.replace(temporary, final)
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
        return [tuple(chunk) for chunk in msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)]

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self.files())
