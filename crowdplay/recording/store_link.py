"""StoreLink: the EnvsManager's calls to the TrajectoryWriter, none of which a participant or the
dashboard waits on for long.

Measured: with the writer process stopped (SIGSTOP) for 45 s, the dashboard's overview timed out
(5 s) and a participant's Finish timed out (10 s), while play went on: both awaited writer calls
that could not be answered. Here every call the manager makes on their behalf is bounded, and
nothing is lost for it:

- **Saves** (assignments, notes) are kept here, the latest version per key, and retried until the
  writer acknowledges them (writes are idempotent upserts). The caller waits for its save at most
  ``save_wait_s`` (so a healthy writer has stored it when Finish answers) and then goes on; the
  save goes on in the background. One call per key is out at a time: a stopped writer does not
  collect a call per change.
- **Reads** wait at most a bound, then raise ``WriterLate``; one call per question is out at a
  time and everyone asking it waits on that one. Reads of assignments are overlaid with the saves
  the writer has not stored yet (or stored after the read was sent), so a read never undoes a save.
- **Probes** (the writer's stats, the data volume) answer with the writer's answer if it comes
  within the bound, else with the last answer and how old it is.
- The writer counts as **late** once a save or a probe has been out longer than ``late_after_s``;
  then nobody waits for it at all (the first request of an outage pays the bounds, the next ones
  nothing) until it answers again.

A manager that dies loses the saves still waiting here, as it lost the assignments it held in
memory before: they are rebuilt from the EnvActors (sessions) and the participants' next requests.

No Ray here: ``call(method, *args)`` awaits a writer method (``WriterClient.call``), and the link is
tested on its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

Call = Callable[..., Awaitable[Any]]

#: A caller waits this long for its save before going on (the save goes on in the background).
SAVE_WAIT_S = 0.2
#: A participant's read (an assignment read back, the ranking's scores) waits this long.
READ_WAIT_S = 0.3
#: A probe (the dashboard's writer stats and data volume) waits this long for a fresh answer.
PROBE_WAIT_S = 0.5
#: A save or probe out this long marks the writer late: nobody waits for it until it answers (a
#: probe that was not answered within its wait is evidence enough).
LATE_AFTER_S = PROBE_WAIT_S
#: Seconds between tries of a save whose call failed (the writer restarting), the last repeated.
SAVE_RETRY_DELAYS_S = (0.5, 1, 2, 5, 10)


class WriterLate(TimeoutError):
    """The writer did not answer within the wait (the call goes on; nothing is cancelled)."""


@dataclass
class _Save:
    """The latest unsaved version of one key's document, and who waits for it."""

    method: str
    args: tuple[Any, ...]
    version: int
    since: float  # time.time() of the oldest change not stored yet
    done: asyncio.Future[Any]
    task: asyncio.Task[Any] | None = None
    sent_at: float = 0.0  # time.monotonic() the latest attempt was sent (reads overlay later ones)


@dataclass
class _Landed:
    """A save the writer acknowledged, kept while a read sent before it may still answer."""

    method: str
    args: tuple[Any, ...]
    sent_at: float


@dataclass
class Probe:
    """What the writer last said to a question, and how fresh that is."""

    state: str  # "ok" (answered within the wait), "late" (a call is out), "unavailable" (it failed), "unknown"
    value: Any = None
    answered_at: float | None = None  # time.time() of the answer ``value`` is from
    error: str | None = None

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """The probe for the dashboard: state, when the writer answered, how old that answer is (at ``now``) and the error."""
        now = time.time() if now is None else now
        age = None if self.answered_at is None else max(0.0, now - self.answered_at)
        return {"state": self.state, "answered_at": self.answered_at, "age_s": age, "error": self.error}


@dataclass
class _Shared:
    """One call out to the writer, awaited by everyone asking the same question."""

    future: asyncio.Future[Any]
    sent_at: float  # time.monotonic()
    counts_as_late: bool = field(default=True)


@dataclass(eq=False)
class StoreLink:
    """Bounded, retried calls to the writer for the EnvsManager (see the module docstring): the
    writer's ``call`` and the bounds are given, the rest is the link's own state."""

    call: Call
    save_wait_s: float = SAVE_WAIT_S
    read_wait_s: float = READ_WAIT_S
    probe_wait_s: float = PROBE_WAIT_S
    late_after_s: float = LATE_AFTER_S
    retry_delays_s: tuple[float, ...] = SAVE_RETRY_DELAYS_S
    saves_failed: int = field(default=0, init=False)
    last_save_error: str | None = field(default=None, init=False)
    _versions: Iterator[int] = field(default_factory=lambda: itertools.count(1), init=False, repr=False)
    _saves: dict[Hashable, _Save] = field(default_factory=dict, init=False, repr=False)
    _landed: dict[Hashable, _Landed] = field(default_factory=dict, init=False, repr=False)
    _shared: dict[tuple[Hashable, ...], _Shared] = field(default_factory=dict, init=False, repr=False)
    #: key -> time.monotonic() its save's call was sent
    _saves_out: dict[Hashable, float] = field(default_factory=dict, init=False, repr=False)
    #: probe method -> (time.time(), answer)
    _known: dict[str, tuple[float, Any]] = field(default_factory=dict, init=False, repr=False)
    _probe_errors: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    #: callers inside ``assignments`` (landed saves are kept for them, see ``_keep_landed``)
    _reading: int = field(default=0, init=False, repr=False)
    #: task -> finished participants' scores by session, from the last ranking read (a late
    #: writer's ranking is computed from them)
    _scores: dict[str, dict[str, float]] = field(default_factory=dict, init=False, repr=False)

    # ----------------------------------------------------------------- health
    def late(self) -> bool:
        """A save or a probe has been out longer than ``late_after_s``: the writer is stopped,
        overloaded or its store hangs."""
        threshold = time.monotonic() - self.late_after_s
        if any(sent_at < threshold for sent_at in self._saves_out.values()):
            return True
        return any(shared.counts_as_late and shared.sent_at < threshold for shared in self._shared.values())

    def _wait(self, wait_s: float) -> float:
        """No waiting at all while the writer is known to be late."""
        return 0.0 if self.late() else wait_s

    def pending(self, now: float | None = None) -> dict[str, Any]:
        """Saves the writer has not acknowledged yet: how many, and since when the oldest waits."""
        now = time.time() if now is None else now
        oldest = min((save.since for save in self._saves.values()), default=None)
        return {
            "saves": len(self._saves),
            "oldest_at": oldest,
            "oldest_age_s": None if oldest is None else max(0.0, now - oldest),
            "failed_attempts": self.saves_failed,
            "last_error": self.last_save_error,
        }

    # ----------------------------------------------------------------- saves
    async def save(self, key: Hashable, method: str, *args: Any) -> bool:
        """Store ``args`` with the writer's ``method`` (the latest call per ``key`` wins), retried
        until acknowledged. True if stored within the wait, False if it goes on in the background."""
        loop = asyncio.get_running_loop()
        save = self._saves.get(key)
        if save is None:
            save = self._saves[key] = _Save(method, args, next(self._versions), time.time(), loop.create_future())
        else:
            save.method, save.args, save.version = method, args, next(self._versions)
        if save.task is None or save.task.done():
            save.task = loop.create_task(self._save_until_stored(key))
        wait_s = self._wait(self.save_wait_s)
        if wait_s <= 0:
            return save.done.done()
        try:
            await asyncio.wait_for(asyncio.shield(save.done), wait_s)
            return True
        except TimeoutError:
            return False

    async def _save_until_stored(self, key: Hashable) -> None:
        """Send the key's latest version until the writer acknowledges it and none newer came."""
        attempt = 0
        while True:
            save = self._saves[key]
            version, method, args = save.version, save.method, save.args
            save.sent_at = time.monotonic()
            self._saves_out[key] = save.sent_at
            try:
                await self.call(method, *args)
            except Exception as error:  # the writer restarting or its store failing: keep it, try again
                self.saves_failed += 1
                self.last_save_error = f"{type(error).__name__}: {error}"[:300]
                self._saves_out.pop(key, None)
                await asyncio.sleep(self.retry_delays_s[min(attempt, len(self.retry_delays_s) - 1)])
                attempt += 1
                continue
            self._saves_out.pop(key, None)
            attempt = 0
            if self._keep_landed():  # a read sent before this save may answer without it
                self._landed[key] = _Landed(method, args, save.sent_at)
            if save.version == version:
                del self._saves[key]
                if not save.done.done():
                    save.done.set_result(True)
                return

    # ----------------------------------------------------------------- reads and probes
    def _share(self, method: str, args: tuple[Any, ...], counts_as_late: bool) -> _Shared:
        """The call out for this question, or a new one."""
        key = (method, json.dumps(args, sort_keys=True, default=str))
        shared = self._shared.get(key)
        if shared is None:
            future = asyncio.ensure_future(self.call(method, *args))
            shared = self._shared[key] = _Shared(future, time.monotonic(), counts_as_late)
            future.add_done_callback(lambda done: self._answered(key, method, done))
        return shared

    def _answered(self, key: tuple[Hashable, ...], method: str, future: asyncio.Future[Any]) -> None:
        del self._shared[key]
        if not future.cancelled():
            error = future.exception()  # retrieved: nobody may be waiting any more
            if error is None:
                self._known[method] = (time.time(), future.result())
                self._probe_errors.pop(method, None)
            else:
                self._probe_errors[method] = f"{type(error).__name__}: {error}"[:300]
        if not self._keep_landed():
            self._landed.clear()

    def _keep_landed(self) -> bool:
        """Saves the writer acknowledged must be remembered while a read of assignments is out or
        being answered: it may have been sent before them, and its answer lacks them."""
        return self._reading > 0 or any(key[0] == "assignments" for key in self._shared)

    async def read(self, method: str, *args: Any, wait_s: float | None = None) -> Any:
        """The writer's answer within ``wait_s`` (default ``read_wait_s``; ``math.inf``: for as
        long as it takes; no wait at all while the writer is late), else ``WriterLate``."""
        shared = self._share(method, args, counts_as_late=False)
        return await self._await(shared, self._read_wait(wait_s), method)

    def _read_wait(self, wait_s: float | None) -> float:
        wait = self.read_wait_s if wait_s is None else wait_s
        return wait if wait == float("inf") else self._wait(wait)

    async def _await(self, shared: _Shared, wait_s: float, method: str) -> Any:
        if wait_s == float("inf"):
            return await asyncio.shield(shared.future)
        if wait_s <= 0 and not shared.future.done():
            raise WriterLate(f"the writer is late; {method} not answered")
        try:
            return await asyncio.wait_for(asyncio.shield(shared.future), max(wait_s, 0.0))
        except TimeoutError:
            raise WriterLate(f"the writer did not answer {method} within {wait_s:.2f} s") from None

    async def probe(self, method: str, *args: Any, counts_as_late: bool = True) -> Probe:
        """The writer's answer now if it comes within ``probe_wait_s`` (a little while it is known
        late), else the last answer and its time; never raises. ``counts_as_late``: this call out
        too long marks the writer late (not for a question that may take long, the data volume)."""
        shared = self._share(method, args, counts_as_late=counts_as_late)
        wait = self.probe_wait_s if not self.late() else min(self.probe_wait_s, 0.05)
        try:
            value = await asyncio.wait_for(asyncio.shield(shared.future), wait)
            return Probe("ok", value, time.time())
        except TimeoutError:
            state, error = "late", f"no answer for {time.monotonic() - shared.sent_at:.1f} s"
        except Exception as failure:
            state, error = "unavailable", f"{type(failure).__name__}: {failure}"[:300]
        answered_at, value = self._known.get(method, (None, None))
        return Probe(state if answered_at is not None or state == "unavailable" else "unknown", value, answered_at, error)

    # ----------------------------------------------------------------- assignments
    async def assignments(self, query: Mapping[str, Any], held: Iterable[Mapping[str, Any]] = (), wait_s: float | None = None) -> list[dict[str, Any]]:
        """Assignment documents matching ``query`` (equality on top-level fields, as the book asks),
        with the saves the writer has not stored overlaid.

        When the writer is late (``WriterLate``) or failing: a task's documents (the ranking's
        query) come from the scores of the last answer for it plus ``held`` (the manager's own
        documents); one session's document from the unsaved saves, else none; the whole
        collection (``{}``, the book's load) only from the writer, so that raises."""
        query = dict(query)
        self._reading += 1
        try:
            shared = self._share("assignments", (query,), counts_as_late=False)
            sent_at = shared.sent_at
            try:
                documents = await self._await(shared, self._read_wait(wait_s), "assignments")
            except Exception:
                if not query:
                    raise
                documents, sent_at = self._remembered(query, held), float("-inf")
            else:
                if set(query) == {"task_id"}:
                    self._scores[query["task_id"]] = {doc["_id"]: score_of(doc) for doc in documents if doc.get("finished_at")}
            return self._overlay(documents, query, sent_at)
        finally:
            self._reading -= 1
            if not self._keep_landed():
                self._landed.clear()

    def _remembered(self, query: dict[str, Any], held: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        documents: dict[Any, dict[str, Any]] = {}
        if set(query) == {"task_id"}:
            for session_id, score in self._scores.get(query["task_id"], {}).items():
                documents[session_id] = {"_id": session_id, "task_id": query["task_id"], "finished_at": True, "statistics": {"values": {"score": score}}}
        for document in held:
            if matches(document, query):
                documents[document["_id"]] = dict(document)
        return list(documents.values())

    def _overlay(self, documents: list[dict[str, Any]], query: dict[str, Any], read_sent_at: float) -> list[dict[str, Any]]:
        """The answer with every assignment save it may lack: unsaved ones, and saved ones sent
        after the read (the writer ran them after it)."""
        newer: dict[Any, dict[str, Any]] = {}
        for landed in self._landed.values():
            if landed.method == "save_assignment" and landed.sent_at >= read_sent_at:
                newer[landed.args[0]["_id"]] = landed.args[0]
        for save in self._saves.values():
            if save.method == "save_assignment":
                newer[save.args[0]["_id"]] = save.args[0]
        newer = {key: document for key, document in newer.items() if matches(document, query)}
        if not newer:
            return documents
        merged = [newer.pop(doc["_id"], doc) for doc in documents]
        return merged + list(newer.values())


def matches(document: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    """MongoDB's equality match on top-level fields (the only queries the assignment book makes)."""
    return all(document.get(name) == value for name, value in query.items())


def score_of(document: Mapping[str, Any]) -> float:
    """The score the ranking compares (``AssignmentBook.ranking`` reads the same field)."""
    return float(document.get("statistics", {}).get("values", {}).get("score", 0.0))


#: Book-keeping waits of the EnvsManager: completions loaded from the store (they count from memory
#: meanwhile) and the pseudonym key (fetched once; a Start with a crowd-worker id needs it).
BOOK_WAIT_S = 0.3
KEY_WAIT_S = 10.0


def recording_overview(
    stats: Probe | BaseException | None, volume: Probe | BaseException | None, processes: list[dict[str, Any]], pending: dict[str, Any], now: float
) -> dict[str, Any]:
    """The dashboard's ``recording`` section from what the writer said (``stats`` and ``volume``
    probes; None: nothing is recorded), the EnvActors' ``recording()`` answers and the manager's
    unsaved saves. When the writer is late the store and spool are what it last said, marked
    ``stale`` with the age of that answer. ``data_volume`` is taken out by the caller (totals)."""
    if stats is None:
        off = {"state": "off"}
        return {"data_volume": {}, "writer": off, "store": off, "spool": {"batches": 0, "bytes": 0, "oldest_at": None, "oldest_age_s": None},
                "unacked": unacked_totals([]), "pending_saves": pending or {"saves": 0, "oldest_at": None, "oldest_age_s": None}}
    stats = _as_probe(stats)
    volume = _as_probe(volume)
    known: dict[str, Any] = stats.value or {}
    probe = stats.as_dict(now)
    writer = {**probe, **{name: known.get(name) for name in ("pid", "started_at", "chunks_written", "chunks_spooled")}}
    stale = stats.state != "ok"
    last_error = known.get("last_error")
    if last_error:
        last_error = {**last_error, "age_s": max(0.0, now - last_error["at"]) if last_error.get("at") else None}
    store = {
        "state": known.get("store_state", "unknown") if known else "unknown",
        "stale": stale,
        "as_of_age_s": probe["age_s"],
        "errors": known.get("store_errors", 0),
        "last_error": last_error,
        "last_ok_at": known.get("last_ok_at"),
    }
    oldest_at = known.get("spool_oldest_at")
    spool = {
        "batches": known.get("spooled_batches", 0),
        "bytes": known.get("spool_bytes", 0),
        "oldest_at": oldest_at,
        "oldest_age_s": None if oldest_at is None else max(0.0, now - oldest_at),
        "stale": stale,
    }
    data = volume.value or {}
    return {
        "data_volume": data,
        "data": volume.as_dict(now),
        "writer": writer,
        "store": store,
        "spool": spool,
        "unacked": unacked_totals(processes),
        "pending_saves": pending,
    }


def unacked_totals(processes: list[dict[str, Any]]) -> dict[str, Any]:
    """The EnvActors' unacknowledged chunks summed, with each process's own figures."""
    ages = [process["oldest_age_s"] for process in processes if process.get("oldest_age_s") is not None]
    return {
        "chunks": sum(process.get("chunks", 0) for process in processes),
        "memory_bytes": sum(process.get("memory_bytes", 0) for process in processes),
        "disk_bytes": sum(process.get("disk_bytes", 0) for process in processes),
        "disk_chunks": sum(process.get("disk_chunks", 0) for process in processes),
        "oldest_age_s": max(ages, default=None),
        "processes": [
            {name: process.get(name) for name in (
                "actor_id", "node_id", "pid", "chunks", "memory_chunks", "memory_bytes", "disk_chunks", "disk_bytes",
                "oldest_age_s", "memory_limit_bytes", "calls_out", "spill_failures",
            )}
            for process in processes
        ],
    }


def _as_probe(answer: Probe | BaseException | None) -> Probe:
    if isinstance(answer, Probe):
        return answer
    if answer is None:
        return Probe("unknown")
    return Probe("unavailable", error=f"{type(answer).__name__}: {answer}"[:300])
