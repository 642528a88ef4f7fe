"""Where chunks are kept: a MongoDB collection, or a plain SQLite table in the embedded store.

Chunks are opaque blobs keyed by (episode, seq), written once (a resend replaces the same bytes)
and read back only by episode, in order. In MongoDB they are documents of the ``chunks``
collection. In the embedded store the document layer (litemongo) would keep an in-memory hash
index over every stored document to find them (measured: ~1.3 KB of writer memory per chunk, so a
study's writer grows by ~160 MB an hour at 30 sessions); a SQLite table with a primary key on
(episode, seq) answers both from disk, and the writer's memory stays flat.

Both answer the same calls with the same documents (``chunk_document``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

ChunkRow = tuple[str, int, bytes, int]  # episode id, seq, blob, steps


def chunk_key(episode_id: str, seq: int) -> str:
    """The ``_id`` of chunk ``seq`` of an episode in MongoDB, unique per (episode, seq)."""
    return f"{episode_id}:{seq}"


def chunk_document(episode_id: str, seq: int, blob: bytes, steps: int) -> dict[str, Any]:
    """A chunk as both stores hand it back: its key, episode, seq, step count and the blob as ``data``."""
    return {"_id": chunk_key(episode_id, seq), "episode_id": episode_id, "seq": seq, "steps": steps, "data": blob}


class Chunks(Protocol):
    """What the writer and the data tools need of a chunk store, met by a MongoDB collection and by a
    SQLite table alike."""

    def put_many(self, rows: list[ChunkRow]) -> None:
        """Store each ``(episode, seq, blob, steps)`` row; a row already stored is replaced."""

    def of_episode(self, episode_id: str) -> Iterator[dict[str, Any]]:
        """The episode's chunks as ``chunk_document`` dicts, in ``seq`` order."""

    def delete_episode(self, episode_id: str) -> None:
        """Remove every chunk of the episode."""

    def count(self) -> int:
        """How many chunks there are."""

    def close(self) -> None:
        """Release the store's connection."""


class InCollection:
    """A store kept in a (pymongo-compatible) collection, counted by the collection and closed
    with the MongoDB client that owns it (the base of ``CollectionChunks`` and
    ``CollectionDocuments``)."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection

    def count(self) -> int:
        """A ``count_documents`` over the whole collection."""
        count: int = self.collection.count_documents({})
        return count

    def close(self) -> None:
        """Nothing: the MongoDB client owns the connection."""


class CollectionChunks(InCollection):
    """Chunks as documents of a (pymongo-compatible) collection."""

    def __init__(self, collection: Any) -> None:
        super().__init__(collection)
        # (episode_id, seq) is unique through _id = "<episode_id>:<seq>"; a second, compound unique
        # index would only repeat that check.
        collection.create_index([("episode_id", 1)])

    def put_many(self, rows: list[ChunkRow]) -> None:
        """One unordered bulk write of upserts."""
        from pymongo import ReplaceOne

        self.collection.bulk_write(
            [ReplaceOne({"_id": chunk_key(e, q)}, chunk_document(e, q, b, n), upsert=True) for e, q, b, n in rows], ordered=False
        )

    def of_episode(self, episode_id: str) -> Iterator[dict[str, Any]]:
        """A query on ``episode_id``, sorted by ``seq``."""
        yield from self.collection.find({"episode_id": episode_id}, sort=[("seq", 1)])

    def delete_episode(self, episode_id: str) -> None:
        """A ``delete_many`` on ``episode_id``."""
        self.collection.delete_many({"episode_id": episode_id})


#: SQLite's page cache per connection to one of the embedded store's table files (KiB).
PAGE_CACHE_KIB = 64


def open_table_file(path: Path) -> sqlite3.Connection:
    """A connection to one of the embedded store's own SQLite files, shared by the threads of a
    process, with a write-ahead log (a killed process loses no committed row; commits are cheap)
    and a small page cache: the operating system caches the file anyway. SQLite fills a
    connection's cache as its file grows, so a larger one reads as growth for as long as the
    files are young: the default, 2 MB, filled over the first ~15,000 chunks written (+1.8 MB in
    a writing process); 256 KB per file over the first ~500 episodes (+0.6 MB, still filling ten
    minutes into a soak); 64 KB within the first 100 (+0.1 MB), and chunk writes are as fast."""
    connection = sqlite3.connect(path, check_same_thread=False, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
    return connection


class TableChunks:
    """Chunks as rows of a SQLite table (write-ahead log: a killed process loses no committed row)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # one connection, shared by the threads of one process
        self._connection = open_table_file(self.path)
        with self._connection:
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS chunks (episode_id TEXT NOT NULL, seq INTEGER NOT NULL, steps INTEGER NOT NULL,"
                " data BLOB NOT NULL, PRIMARY KEY (episode_id, seq))"
            )

    def put_many(self, rows: list[ChunkRow]) -> None:
        """One transaction; a resent chunk overwrites its row."""
        with self._lock, self._connection:
            self._connection.executemany(
                "INSERT INTO chunks (episode_id, seq, data, steps) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (episode_id, seq) DO UPDATE SET data = excluded.data, steps = excluded.steps",
                rows,
            )

    def of_episode(self, episode_id: str, page: int = 256) -> Iterator[dict[str, Any]]:
        """In pages, so a long episode is never all in memory and writers are not held up."""
        after = -1
        while True:
            with self._lock:
                rows = self._connection.execute(
                    "SELECT seq, data, steps FROM chunks WHERE episode_id = ? AND seq > ? ORDER BY seq LIMIT ?", (episode_id, after, page)
                ).fetchall()
            for seq, blob, steps in rows:
                yield chunk_document(episode_id, seq, bytes(blob), steps)
            if len(rows) < page:
                return
            after = rows[-1][0]

    def delete_episode(self, episode_id: str) -> None:
        """One transaction."""
        with self._lock, self._connection:
            self._connection.execute("DELETE FROM chunks WHERE episode_id = ?", (episode_id,))

    def count(self) -> int:
        """A ``count(*)`` over the table."""
        with self._lock:
            count: int = self._connection.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return count

    def close(self) -> None:
        """Close this process's connection to the file."""
        with self._lock:
            self._connection.close()
