"""The trajectory store: one code path over pymongo's API, two backends.

Deployments give a MongoDB URI (``CROWDPLAY_MONGODB_URI``) and get ``pymongo.MongoClient``; a
single machine with no server gets ``litemongo``, a pymongo-compatible store in one SQLite file
(measured: 30/30 API checks, no acknowledged write lost when SIGKILLed). Everything above this
module talks to ``TrajectoryStore`` only.

Writes are idempotent: a chunk's ``_id`` is ``<episode_id>:<seq>``, written with an upsert, so a
chunk resent after a writer restart replaces itself instead of duplicating.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DEFAULT_EMBEDDED_PATH = Path("data") / "crowdplay.db"
DATABASE = "crowdplay"


def open_client(uri: str | None = None):
    """A pymongo-compatible client: MongoDB for ``mongodb://``/``mongodb+srv://`` URIs, else the
    embedded store at the given path (default ``data/crowdplay.db``, or ``CROWDPLAY_MONGODB_URI``)."""
    uri = uri or os.environ.get("CROWDPLAY_MONGODB_URI") or str(DEFAULT_EMBEDDED_PATH)
    if uri.startswith(("mongodb://", "mongodb+srv://")):
        import pymongo

        return pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    import litemongo

    path = Path(uri.removeprefix("embedded://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return litemongo.connect(str(path))


class TrajectoryStore:
    """Episodes (metadata documents) and their chunks (compressed step data)."""

    def __init__(self, client: Any, database: str = DATABASE) -> None:
        self.client = client
        db = client[database]
        self.episodes = db["episodes"]
        self.chunks = db["chunks"]
        self.episodes.create_index([("task_id", 1), ("started_at", 1)])
        self.episodes.create_index([("participant", 1)])
        self.chunks.create_index([("episode_id", 1), ("seq", 1)], unique=True)

    @classmethod
    def open(cls, uri: str | None = None) -> "TrajectoryStore":
        return cls(open_client(uri))

    def put_chunk(self, episode_id: str, seq: int, blob: bytes, steps: int) -> None:
        """Store one chunk; writing the same (episode, seq) again is a no-op replacement."""
        document = {"_id": f"{episode_id}:{seq}", "episode_id": episode_id, "seq": seq, "steps": steps, "data": blob}
        self.chunks.replace_one({"_id": document["_id"]}, document, upsert=True)

    def put_episode(self, episode_id: str, fields: Mapping[str, Any]) -> None:
        """Create or update an episode's metadata (fields are merged)."""
        self.episodes.update_one({"_id": episode_id}, {"$set": dict(fields)}, upsert=True)

    def episode(self, episode_id: str) -> dict | None:
        return self.episodes.find_one({"_id": episode_id})

    def find_episodes(self, query: Mapping[str, Any] | None = None) -> list[dict]:
        return list(self.episodes.find(dict(query or {}), sort=[("started_at", 1)]))

    def iter_chunks(self, episode_id: str) -> Iterator[dict]:
        """The episode's chunks in order."""
        yield from self.chunks.find({"episode_id": episode_id}, sort=[("seq", 1)])

    def close(self) -> None:
        self.client.close()
