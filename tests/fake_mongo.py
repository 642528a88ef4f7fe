"""A scripted MongoDB for tests: real pymongo talks to a ``mockupdb`` wire-protocol server.

``FakeMongo`` answers the handshake (maxWireVersion 17), ``createIndexes``, ``update`` (replace or
``$set`` upserts, applied to an in-memory copy of the collections) and ``ping``, and can inject a
fault into chosen ``update`` commands: ``hangup`` (close the socket), ``error`` (a command error)
or ``stall`` (never answer, so the client times out); ``outage(seconds)`` stalls every ``update``
for that long (the server answers its heartbeats but no write), then serves normally again.
"""

from __future__ import annotations

import threading
import time

from mockupdb import MockupDB

HANDSHAKE = {"ismaster": True, "isWritablePrimary": True, "minWireVersion": 0, "maxWireVersion": 17, "maxBsonObjectSize": 16 * 2**20}


class FakeMongo:
    def __init__(self) -> None:
        self.server = MockupDB(auto_ismaster=HANDSHAKE)
        self.server.autoresponds("hello", **HANDSHAKE)
        self.server.autoresponds("ping")
        self.server.autoresponds("endSessions")
        self.collections: dict[str, dict] = {}
        self.faults: dict[int, str] = {}
        self.updates_seen = 0
        self.faults_injected: list[str] = []
        self._stop = threading.Event()
        self._stalled: list = []
        self.lock = threading.Lock()
        self.outage_until = 0.0
        self.updates_stalled_by_outage = 0

    def outage(self, seconds: float) -> None:
        self.outage_until = time.monotonic() + seconds

    @property
    def uri(self) -> str:
        return self.server.uri + "/?socketTimeoutMS=1500&serverSelectionTimeoutMS=1500&connectTimeoutMS=1500"

    def __enter__(self) -> FakeMongo:
        self.server.run()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.server.stop()

    def documents(self, collection: str) -> dict:
        with self.lock:
            return dict(self.collections.get(collection, {}))

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                request = self.server.receives(timeout=0.2)
            except AssertionError:
                continue  # nothing arrived within the timeout
            name = request.command_name
            if name == "update" and time.monotonic() < self.outage_until:
                self.updates_stalled_by_outage += 1
                self._stalled.append(request)  # never answered
                continue
            if name == "update":
                self.updates_seen += 1
                fault = self.faults.pop(self.updates_seen, None)
                if fault is not None:
                    self.faults_injected.append(fault)
                    if fault == "hangup":
                        request.hangup()
                    elif fault == "error":
                        request.command_err(code=91, errmsg="injected: shutdown in progress")
                    else:
                        self._stalled.append(request)  # never answered
                    continue
                request.replies(self._apply(request.doc))
            elif name == "createIndexes":
                request.replies({"ok": 1, "numIndexesBefore": 1, "numIndexesAfter": 2})
            else:
                request.command_err(code=59, errmsg=f"FakeMongo does not implement {name}")

    def _apply(self, command: dict) -> dict:
        collection = command["update"]
        upserted = []
        with self.lock:
            documents = self.collections.setdefault(collection, {})
            for index, update in enumerate(command["updates"]):
                key = update["q"]["_id"]
                change = update["u"]
                if key not in documents:
                    upserted.append({"index": index, "_id": key})
                if "$set" in change:
                    documents.setdefault(key, {"_id": key}).update(change["$set"])
                else:
                    documents[key] = dict(change)
        count = len(command["updates"])
        return {"ok": 1, "n": count, "nModified": count - len(upserted), "upserted": upserted}
