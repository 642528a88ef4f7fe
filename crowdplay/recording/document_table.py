"""Where episode and assignment documents are kept: MongoDB collections, or SQLite tables in the
embedded store.

An episode document is created by its first chunk batch and has fields merged into it by every
later one (steps and chunks stored so far, then its final status); an assignment (one per
participant session) is replaced at each change of its statistics. In the embedded store the
document layer (litemongo) answers such an update through an in-memory hash index of every
document's ``_id``, built by the first query of each process and kept for its life: the writer
grew by ~0.7 KB per stored episode and ~0.6 KB per assignment for it (traced with tracemalloc in
soaks), for as long as the server runs. Here the same documents sit in a SQLite table keyed by id,
written and read from disk; queries scan the table in the documents' time order (as litemongo
without indexes did) and are matched with MongoDB's semantics (``crowdplay.recording.query``).

Both answer the same calls with the same documents.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import bson

from crowdplay.recording.chunk_table import InCollection, open_table_file
from crowdplay.recording.query import matches

#: Documents read per query round trip (a large store is never all in memory at once).
PAGE = 256
#: Where a document without a time sorts: first, as MongoDB sorts a missing field.
NO_TIME = -1e308


class Documents(Protocol):
    """What the writer and the data tools need of a document store, met by a MongoDB collection and by
    a SQLite table alike."""

    def merge(self, updates: list[tuple[str, Mapping[str, Any]]]) -> None:
        """Merge each ``(id, fields)`` into its document, creating it if new, in order."""

    def replace(self, document: Mapping[str, Any]) -> None:
        """Store ``document`` whole under its ``_id``, replacing any earlier one."""

    def find(self, query: Mapping[str, Any], projection: Mapping[str, int] | None = None) -> Iterator[dict[str, Any]]:
        """Documents matching ``query`` (MongoDB's semantics), oldest first; ``projection`` limits the fields."""

    def get(self, document_id: str) -> dict[str, Any] | None:
        """The document with ``document_id``, or None."""

    def update_where(self, query: Mapping[str, Any], fields: Mapping[str, Any]) -> int:
        """Set ``fields`` on every document matching ``query``; returns how many changed."""

    def delete(self, document_id: str) -> None:
        """Remove the document with ``document_id`` (nothing if there is none)."""

    def count(self) -> int:
        """How many documents there are."""

    def close(self) -> None:
        """Release the store's connection."""


class CollectionDocuments(InCollection):
    """Documents of a (pymongo-compatible) collection, in the order of their ``time_field``."""

    def __init__(self, collection: Any, time_field: str) -> None:
        super().__init__(collection)
        self.time_field = time_field

    def merge(self, updates: list[tuple[str, Mapping[str, Any]]]) -> None:
        """One upserting bulk write, in order."""
        from pymongo import UpdateOne

        if updates:
            self.collection.bulk_write([UpdateOne({"_id": d}, {"$set": dict(fields)}, upsert=True) for d, fields in updates], ordered=True)

    def replace(self, document: Mapping[str, Any]) -> None:
        """An upserting ``replace_one``."""
        self.collection.replace_one({"_id": document["_id"]}, dict(document), upsert=True)

    def find(self, query: Mapping[str, Any], projection: Mapping[str, int] | None = None) -> Iterator[dict[str, Any]]:
        """The collection's own query, sorted by ``time_field``."""
        yield from self.collection.find(dict(query), projection, sort=[(self.time_field, 1)])

    def get(self, document_id: str) -> dict[str, Any] | None:
        """A ``find_one`` by ``_id``."""
        document: dict[str, Any] | None = self.collection.find_one({"_id": document_id})
        return document

    def update_where(self, query: Mapping[str, Any], fields: Mapping[str, Any]) -> int:
        """An ``update_many`` with ``$set``."""
        modified: int = self.collection.update_many(dict(query), {"$set": dict(fields)}).modified_count
        return modified

    def delete(self, document_id: str) -> None:
        """A ``delete_one`` by ``_id``."""
        self.collection.delete_one({"_id": document_id})


class TableDocuments:
    """BSON documents in a SQLite table keyed by id, ordered by their ``time_field`` (write-ahead
    log: a killed process loses no committed row)."""

    def __init__(self, path: str | Path, table: str, time_field: str) -> None:
        if not table.isidentifier():
            raise ValueError(f"table name {table!r} is not an identifier")
        self.path = Path(path)
        self.table = table
        self.time_field = time_field
        self._lock = threading.RLock()  # one connection, shared by the threads of one process
        self._connection = open_table_file(self.path)
        with self._connection:  # (the time column keeps the name the first, episodes-only, version gave it)
            self._connection.execute(f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, started_at REAL NOT NULL, document BLOB NOT NULL)")
            self._connection.execute(f"CREATE INDEX IF NOT EXISTS {table}_by_start ON {table} (started_at)")

    def merge(self, updates: list[tuple[str, Mapping[str, Any]]]) -> None:
        """Fields merged into each document (created if new), all in one transaction."""
        with self._lock, self._connection:
            for document_id, fields in updates:
                self._write({**(self.get(document_id) or {"_id": document_id}), **fields})

    def replace(self, document: Mapping[str, Any]) -> None:
        """Written in its own transaction."""
        with self._lock, self._connection:
            self._write(dict(document))

    def _write(self, document: dict[str, Any]) -> None:
        moment = document.get(self.time_field)
        self._connection.execute(
            f"INSERT INTO {self.table} (id, started_at, document) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at, document = excluded.document",
            (document["_id"], moment if isinstance(moment, (int, float)) else NO_TIME, bson.encode(document)),
        )

    def find(self, query: Mapping[str, Any], projection: Mapping[str, int] | None = None) -> Iterator[dict[str, Any]]:
        """Matching documents oldest first, read a page at a time (a query by id alone: one
        read by key, as a participant's assignment is read back)."""
        query = dict(query)
        if set(query) == {"_id"} and isinstance(query["_id"], str):
            document = self.get(query["_id"])
            if document is not None:
                yield project(document, projection)
            return
        after: tuple[Any, ...] = (NO_TIME, -1)  # before every row
        while True:
            with self._lock:
                rows = self._connection.execute(
                    f"SELECT started_at, rowid, document FROM {self.table} WHERE (started_at, rowid) > (?, ?) ORDER BY started_at, rowid LIMIT ?",
                    (*after, PAGE),
                ).fetchall()
            for _, _, blob in rows:
                document = bson.decode(blob)
                if matches(document, query):
                    yield project(document, projection)
            if len(rows) < PAGE:
                return
            after = rows[-1][:2]

    def get(self, document_id: str) -> dict[str, Any] | None:
        """One read by key."""
        with self._lock:
            row = self._connection.execute(f"SELECT document FROM {self.table} WHERE id = ?", (document_id,)).fetchone()
        return bson.decode(row[0]) if row else None

    def update_where(self, query: Mapping[str, Any], fields: Mapping[str, Any]) -> int:
        """Fields set in every matching document, in one transaction; returns how many."""
        with self._lock, self._connection:
            matching = list(self.find(query))
            for document in matching:
                self._write({**document, **fields})
        return len(matching)

    def delete(self, document_id: str) -> None:
        """One delete by key."""
        with self._lock, self._connection:
            self._connection.execute(f"DELETE FROM {self.table} WHERE id = ?", (document_id,))

    def count(self) -> int:
        """A ``count(*)`` over the table."""
        with self._lock:
            count: int = self._connection.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0]
        return count

    def close(self) -> None:
        """Close this process's connection to the file."""
        with self._lock:
            self._connection.close()


def project(document: dict[str, Any], projection: Mapping[str, int] | None) -> dict[str, Any]:
    """MongoDB's two kinds of projection: the fields named with 1 (and ``_id``), or all but those
    named with 0."""
    if not projection:
        return document
    if any(projection.values()):
        return {k: v for k, v in document.items() if projection.get(k) or (k == "_id" and projection.get("_id", 1))}
    return {k: v for k, v in document.items() if k not in projection}
