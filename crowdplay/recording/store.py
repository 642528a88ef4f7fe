"""The trajectory store: one code path over pymongo's API, two backends.

Deployments give a MongoDB URI (``CROWDPLAY_STORE_URI``, the one setting the server, its Ray
processes and the data tools read) and get ``pymongo.MongoClient``; a single machine with no server gets ``litemongo``, a pymongo-compatible store in one SQLite file
(measured: 30/30 API checks, no acknowledged write lost when SIGKILLed). Everything above this
module talks to ``TrajectoryStore`` only.

Writes are idempotent: a chunk is keyed by ``(episode_id, seq)`` and written with an upsert, so a
chunk resent after a writer restart replaces itself instead of duplicating. Chunks and episode
documents, and assignments, live in the ``chunks``, ``episodes`` and ``assignments`` collections on
MongoDB and in SQLite tables of their own in the embedded store (``crowdplay.recording.chunk_table``
and ``document_table``: the embedded document layer would hold an index of every chunk, episode
and assignment in the writer's memory).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from crowdplay.config import STORE_URI_VARIABLE, store_uri_from_environment
from crowdplay.recording.chunk_table import Chunks, CollectionChunks, TableChunks
from crowdplay.recording.document_table import CollectionDocuments, Documents, TableDocuments
from crowdplay.recording.episode_document import interrupted_fields
from crowdplay.recording.status import INTERRUPTED

DEFAULT_EMBEDDED_PATH = Path("data") / "crowdplay.db"
#: The episode fields the dataset API filters by (indexed in MongoDB).
EPISODE_FILTER_FIELDS = ("task_id", "env_id", "participants", "started_at", "human_only", "status")
DATABASE = "crowdplay"
MONGO_TIMEOUTS_MS = {"serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 5000, "socketTimeoutMS": 10000}


def store_uri(uri: str | None = None) -> str:
    """The URI in effect: the one given, else ``CROWDPLAY_STORE_URI``, else ``data/crowdplay.db``:
    the same store the server records into (``Settings.store_uri``) wherever it is asked for."""
    return uri or store_uri_from_environment() or str(DEFAULT_EMBEDDED_PATH)


def store_origin(uri: str | None = None) -> str:
    """Where ``store_uri(uri)`` takes the store from, for people: ``crowdplay data`` says it, so
    that reading an empty local store by mistake shows at once."""
    if uri:
        return "given"
    if os.environ.get(STORE_URI_VARIABLE, "").strip():
        return STORE_URI_VARIABLE
    return f"the default; set {STORE_URI_VARIABLE} or --store for another"


def absolute_store_uri(uri: str | None = None) -> str:
    """``store_uri(uri)`` with an embedded store's path made absolute here: the server's Ray
    processes may run in another working directory (on a cluster, wherever Ray was started), and
    must record where this process says, and ``crowdplay data`` run here reads."""
    uri = store_uri(uri)
    path = embedded_path(uri)
    return uri if path is None else str(path.resolve())


def embedded_path(uri: str | None = None) -> Path | None:
    """The embedded store's directory for this URI; None for a MongoDB URI."""
    uri = store_uri(uri)
    if uri.startswith(("mongodb://", "mongodb+srv://")):
        return None
    return Path(uri.removeprefix("embedded://"))


def open_client(uri: str | None = None) -> Any:
    """A pymongo-compatible client: MongoDB for ``mongodb://``/``mongodb+srv://`` URIs, else the
    embedded store at the given path (default ``CROWDPLAY_STORE_URI``, else ``data/crowdplay.db``)."""
    uri = store_uri(uri)
    if embedded_path(uri) is None:
        import pymongo

        # Bounded waits everywhere: a hung server must turn into an error the writer can spool on.
        # Options given in the URI win over these defaults.
        options: dict[str, Any] = {name: value for name, value in MONGO_TIMEOUTS_MS.items() if name.lower() not in uri.lower()}
        return pymongo.MongoClient(uri, **options)
    import litemongo

    path = embedded_path(uri)
    assert path is not None  # not a MongoDB URI, so a store file
    path.parent.mkdir(parents=True, exist_ok=True)
    return litemongo.connect(str(path))


def pseudonymise(key: bytes, participant: str) -> str:
    """A participant's stable pseudonym: an HMAC under the store's secret key, so the raw id (a
    crowd-worker id, say) is never stored, yet the same person maps to the same pseudonym and can be
    found again to delete their data."""
    return "p-" + hmac.new(key, participant.encode(), hashlib.sha256).hexdigest()[:20]


def describe_uri(uri: str | None = None) -> str:
    """Where ``open_client`` would store, for people (credentials hidden)."""
    uri = store_uri(uri)
    path = embedded_path(uri)
    if path is None:
        scheme, rest = uri.split("://", 1)
        return f"MongoDB at {scheme}://{rest.rsplit('@', 1)[-1]}"
    return f"the embedded store {path.resolve()}"


class TrajectoryStore:
    """Episodes (metadata documents) and their chunks (compressed step data); the study's
    assignments (one per participant session: task, statistics, completion) and notes (feedback
    and problem reports)."""

    def __init__(
        self, client: Any, database: str = DATABASE, chunks: Chunks | None = None, indexed: bool = True,
        episodes: Documents | None = None, assignments: Documents | None = None, directory: Path | None = None,
    ) -> None:
        """``chunks``, ``episodes`` and ``assignments``: where they live (default: the database's
        collections). ``directory``: the embedded store's, whose files ``data_volume`` counts
        (None: the database reports its own size).

        ``indexed``: declare indexes on the fields the dataset API filters by. MongoDB keeps them
        on the server. The embedded store would keep them as hash tables in the memory of every
        process that queries, rebuilt by a full scan at its first query: the writer grew ~2 KB
        per stored episode for them (measured), so the embedded store has none and scans."""
        self.client = client
        self.directory = directory
        db = client[database]
        self.episodes = episodes or CollectionDocuments(db["episodes"], "started_at")
        self.assignments = assignments or CollectionDocuments(db["assignments"], "created_at")
        self.chunks = chunks or CollectionChunks(db["chunks"])
        self.meta = db["meta"]
        self.notes = db["notes"]
        if indexed:
            db["assignments"].create_index([("task_id", 1)])
            for field in EPISODE_FILTER_FIELDS:
                db["episodes"].create_index([(field, 1)])

    @classmethod
    def open(cls, uri: str | None = None) -> TrajectoryStore:
        """The store at ``uri`` (default: ``store_uri``'s, resolved once, so a deprecated
        variable warns once)."""
        uri = store_uri(uri)
        client = open_client(uri)
        path = embedded_path(uri)
        if path is None:
            return cls(client)
        return cls(
            client, chunks=TableChunks(path / "chunks.sqlite"), indexed=False, directory=path,
            episodes=TableDocuments(path / "episodes.sqlite", "episodes", "started_at"),
            assignments=TableDocuments(path / "assignments.sqlite", "assignments", "created_at"),
        )

    def put_chunk(self, episode_id: str, seq: int, blob: bytes, steps: int) -> None:
        """Store one chunk; writing the same (episode, seq) again is a no-op replacement."""
        self.chunks.put_many([(episode_id, seq, blob, steps)])

    def put_chunks(self, chunks: Sequence[tuple[str, int, bytes, int, Mapping[str, Any]]]) -> None:
        """Store a batch of ``(episode_id, seq, blob, steps, episode_fields)`` in two round trips:
        the chunks, then the fields merged into their episodes (chunks first, so an episode
        document never announces data that is not there)."""
        if not chunks:
            return
        self.chunks.put_many([(e, q, b, n) for e, q, b, n, _ in chunks])
        self.episodes.merge([(e, fields) for e, _, _, _, fields in chunks if fields])

    def put_episode(self, episode_id: str, fields: Mapping[str, Any]) -> None:
        """Create or update an episode's metadata (fields are merged)."""
        self.episodes.merge([(episode_id, fields)])

    def interrupt_game(self, game_id: str, reason: str, status: str = INTERRUPTED) -> int:
        """Mark a game's episodes that never ended as ``status`` (interrupted, or server_unreachable),
        with ``reason``: its process died before it could seal them (their last chunk, up to a second
        of play, died with it). Returns how many were marked."""
        return self.episodes.update_where(
            {"game_id": game_id, "status": {"$exists": False}},
            interrupted_fields(reason, time.time(), status),
        )

    # ----------------------------------------------------------------- participants
    def pseudonym(self, participant: str) -> str:
        """The participant's pseudonym under this store's key: what episodes and assignments record."""
        return pseudonymise(self.pseudonym_key(), participant)

    def pseudonym_key(self) -> bytes:
        """This store's secret pseudonym key, created on first use (never exported)."""
        self.meta.update_one({"_id": "pseudonym_key"}, {"$setOnInsert": {"key": secrets.token_hex(32)}}, upsert=True)
        return bytes.fromhex(self.meta.find_one({"_id": "pseudonym_key"})["key"])

    def delete_participant(self, pseudonym: str) -> list[str]:
        """Remove every episode the participant played in (with all its chunks); returns their ids."""
        episode_ids = [doc["_id"] for doc in self.episodes.find({"participants": pseudonym}, {"_id": 1})]
        for episode_id in episode_ids:
            self.chunks.delete_episode(episode_id)
            self.episodes.delete(episode_id)
        return episode_ids

    def episode(self, episode_id: str) -> dict[str, Any] | None:
        """The episode's document, or None if it is not stored."""
        return self.episodes.get(episode_id)

    def find_episodes(self, query: Mapping[str, Any] | None = None, projection: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
        """Episodes matching a MongoDB query, oldest first; ``projection`` as MongoDB's."""
        return list(self.episodes.find(dict(query or {}), projection))

    def iter_chunks(self, episode_id: str) -> Iterator[dict[str, Any]]:
        """The episode's chunks in order."""
        yield from self.chunks.of_episode(episode_id)

    # ----------------------------------------------------------------- the study
    def put_assignment(self, document: Mapping[str, Any]) -> None:
        """Create or replace an assignment (``_id`` is the participant's session id)."""
        self.assignments.replace(document)

    def find_assignments(self, query: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Assignments matching a MongoDB query, oldest first."""
        return list(self.assignments.find(dict(query or {})))

    def put_note(self, document: Mapping[str, Any]) -> None:
        """Store a note. One with an ``_id`` replaces itself when written again: the EnvsManager
        saves notes in the background and retries a save whose answer it did not get."""
        document = dict(document)
        if "_id" in document:
            self.notes.replace_one({"_id": document["_id"]}, document, upsert=True)
        else:
            self.notes.insert_one(document)

    def find_notes(self, query: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Notes matching a MongoDB ``query`` (all when None), oldest first."""
        return list(self.notes.find(dict(query or {}), sort=[("created_at", 1)]))

    def data_volume(self) -> dict[str, Any]:
        """Episodes and chunks stored, and the bytes they take (the database's data size)."""
        size = None
        if self.directory is not None:
            size = sum(path.stat().st_size for path in self.directory.rglob("*") if path.is_file())
        else:
            with contextlib.suppress(Exception):  # the size stays unknown where the server refuses dbStats (a user without the privilege)
                size = int(self.client[self.meta.database.name].command("dbstats")["dataSize"])
        return {"episodes": self.episodes.count(), "chunks": self.chunks.count(), "bytes": size}

    def close(self) -> None:
        """Close the chunk, episode and assignment tables and the client."""
        self.chunks.close()
        self.episodes.close()
        self.assignments.close()
        self.client.close()
