"""Assignments: each participant session's work on a task, judged for completion by the server.

The EnvsManager keeps one ``Assignment`` per session and writes each change to the store's
``assignments`` collection, from which completions per task, rankings and the dashboard's timeline
are read back, also after a restart. In memory are the playing sessions' assignments and the
latest ``ASSIGNMENTS_KEPT`` others (kept for ever, they grew the manager by ~0.6 KB per session:
traced in a soak); an older one (or one from before a manager restart) is read back from the
store when its participant asks for their score or completion code, its token checked against
the SHA-256 digest stored with it (the token itself is never stored).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from crowdplay.ranking import rank
from crowdplay.study import Task

log = logging.getLogger(__name__)

#: Assignments of sessions that no longer play kept in memory (~0.6 KB each), the latest first; the
#: store answers for older ones (a read by id). Few: their participants ask for a score or code
#: within seconds of finishing, and a larger bound took a soak's whole 10 minutes to fill (256:
#: still filling after 150 sessions, read as growth).
ASSIGNMENTS_KEPT = 32
#: The participant name of a session that gave no crowd-worker id (followed by its session id).
ANONYMOUS = "anonymous-"


class NotComplete(PermissionError):
    """The task's requirements are not met yet (so no completion code or redirect)."""

    def __init__(self, summary: dict[str, Any]) -> None:
        super().__init__("the task's requirements are not met yet")
        self.summary = summary


class NoCompletion(LookupError):
    """The task has no completion code or URL (a game outside the study)."""


class BadToken(PermissionError):
    """The token does not belong to the session."""


class UnknownSession(LookupError):
    """No session with this id (never created, or already ended)."""


class SessionLost(UnknownSession):
    """The session's game ended without it (its game server died); ``reason`` says so."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Assignment:
    """One participant session's assignment to a task: who, with what parameters, their consent, play
    statistics and when they finished and completed; stored as one document."""

    session_id: str
    task_id: str
    participant: str
    params: dict[str, Any]
    token: str
    created_at: float = field(default_factory=time.time)
    #: when the participant agreed to the consent text (epoch seconds, from their page), if they did
    consented_at: float | None = None
    #: {"values": session totals, "episode": current episode, "episodes": finished episodes}
    statistics: dict[str, Any] = field(default_factory=dict)
    finished_at: float | None = None
    completed_at: float | None = None
    #: when the participant first connected to their game (None: never; the session was a request
    #: nobody played)
    connected_at: float | None = None

    @property
    def values(self) -> dict[str, float]:
        """The session's statistic values so far, by name."""
        return dict(self.statistics.get("values", {}))

    def document(self) -> dict[str, Any]:
        """What the store keeps: everything but the token, of which only its digest."""
        document = asdict(self)
        document["_id"] = document.pop("session_id")
        document["token_sha256"] = token_digest(document.pop("token"))
        return document

    @classmethod
    def from_document(cls, document: dict[str, Any], token: str) -> Assignment:
        """An assignment read back from its stored ``document``, given the session's ``token`` (stored only as a digest)."""
        fields = {name: document[name] for name in cls.__dataclass_fields__ if name in document}
        return cls(**{**fields, "session_id": document["_id"], "token": token})


def token_digest(token: str) -> str:
    """The digest of a session token stored instead of the token."""
    return hashlib.sha256(str(token).encode()).hexdigest()


class AssignmentStore(Protocol):
    """The two things the book asks of the store, stated here so the book reads without the writer
    and is tested over a dict (``StudyStore`` answers them in the manager)."""

    async def save_assignment(self, document: dict[str, Any]) -> None:
        """Store ``document`` (an assignment's, by its ``_id``), replacing any older version; raises if it cannot."""

    async def assignments(self, query: dict[str, Any], held: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The stored assignment documents equal to ``query`` on its fields (``{}``: all of them).
        ``held`` are the book's own documents in memory, for a store that answers from what it
        knows while its writer is late: a read must never undo a save not stored yet."""


class AssignmentBook:
    """The manager's assignments, completions per task, and what the score page shows."""

    def __init__(self, store: AssignmentStore, is_playing: Callable[[str], bool] = lambda session_id: False, kept: int | None = ASSIGNMENTS_KEPT) -> None:
        """``store`` keeps the assignments' documents; ``is_playing(session_id)``: the session
        still plays (its assignment is never forgotten); beyond ``kept`` assignments (None: no
        limit, for a server that stores nothing) the oldest of the others are forgotten, to be
        read back from the store."""
        self.store = store
        self.is_playing = is_playing
        self.kept = kept
        self.assignments: dict[str, Assignment] = {}
        self.completed: Counter[str] = Counter()
        self.completions: list[tuple[float, str]] = []
        #: participants per task since this manager started, counted when they first connected to
        #: their game (a request that never did is nobody): crowd workers by pseudonym (a study pays
        #: a bounded crowd), anonymous sessions counted (each one is a participant of its own)
        self._named: defaultdict[str, set[str]] = defaultdict(set)
        self._anonymous: Counter[str] = Counter()
        #: sessions started per task since this manager started, whether anyone came to play or not
        self.started: Counter[str] = Counter()
        #: sessions per task whose participant connected
        self.played: Counter[str] = Counter()

    async def load(self) -> None:
        """Completions so far, from the store (they count toward each task's target)."""
        documents = await self.store.assignments({}, self._held())
        self.completed = Counter(doc["task_id"] for doc in documents if doc.get("completed_at"))
        self.completions = sorted((doc["completed_at"], doc["task_id"]) for doc in documents if doc.get("completed_at"))

    def open(self, session_id: str, task_id: str, participant: str, params: dict[str, Any], token: str, consented_at: float | None = None) -> Assignment:
        """A new assignment for ``session_id``, counted as a start of its task (its participant
        counts once they connect: ``connected``)."""
        before = self.assignments.get(session_id)
        if before is None:
            self.started[task_id] += 1
        assignment = self.assignments[session_id] = Assignment(session_id, task_id, participant, dict(params), token, consented_at=consented_at)
        assignment.connected_at = before.connected_at if before is not None else None
        self._forget_oldest()
        return assignment

    def _held(self) -> list[dict[str, Any]]:
        """The documents of the assignments in memory, handed to every read (see ``AssignmentStore``)."""
        return [assignment.document() for assignment in list(self.assignments.values())]

    def _forget_oldest(self) -> None:
        """Forget the oldest assignments of sessions that no longer play, beyond ``kept`` (their
        documents stay in the store)."""
        excess = len(self.assignments) - self.kept if self.kept is not None else 0
        if excess <= 0:
            return
        forgotten: list[str] = []
        for session_id in self.assignments:  # oldest first
            if len(forgotten) == excess:
                break
            if not self.is_playing(session_id):
                forgotten.append(session_id)
        for session_id in forgotten:
            del self.assignments[session_id]

    def connected(self, session_id: str) -> None:
        """The session's participant connected to their game for the first time: they count among
        its task's participants (anonymous ones by number, crowd workers once by pseudonym)."""
        assignment = self.assignments.get(session_id)
        if assignment is None or assignment.connected_at is not None:
            return
        assignment.connected_at = time.time()
        self.played[assignment.task_id] += 1
        if assignment.participant.startswith(ANONYMOUS):
            self._anonymous[assignment.task_id] += 1
        else:
            self._named[assignment.task_id].add(assignment.participant)

    def participants(self, task_id: str | None = None) -> int:
        """Participants of a task (of every task if None) since this manager started: people who
        connected to a game, not requests."""
        if task_id is not None:
            return len(self._named[task_id]) + self._anonymous[task_id]
        return len(set().union(*self._named.values())) + sum(self._anonymous.values())

    async def get(self, session_id: str, token: str) -> Assignment:
        """The session's assignment, from memory or else from the store; BadToken unless
        ``token`` is the session's (compared in constant time)."""
        assignment = self.assignments.get(session_id)
        if assignment is None:
            return await self._read_back(session_id, token)
        if not hmac.compare_digest(assignment.token.encode(), str(token).encode()):
            raise BadToken("the token does not match this session")
        return assignment

    async def _read_back(self, session_id: str, token: str) -> Assignment:
        documents = await self._stored(session_id)
        if not documents or "token_sha256" not in documents[0]:
            raise UnknownSession(f"no session {session_id!r}")
        if not hmac.compare_digest(documents[0]["token_sha256"], token_digest(token)):
            raise BadToken("the token does not match this session")
        assignment = self.assignments[session_id] = Assignment.from_document(documents[0], str(token))
        self._forget_oldest()
        return assignment

    async def _stored(self, session_id: str) -> list[dict[str, Any]]:
        """The session's stored document, if any. A store that cannot answer is logged and the
        session treated as unknown for now: its participant asks again, and the score page must
        not fail harder than for a session never created."""
        if self.kept is None:  # nothing is stored, so nothing was forgotten
            return []
        try:
            return await self.store.assignments({"_id": session_id}, self._held())
        except Exception as error:
            log.warning("reading back assignment %s: %s: %s (answered as unknown until the store answers)", session_id, type(error).__name__, error)
            return []

    async def save(self, assignment: Assignment) -> None:
        """Store the assignment's document (raises if the store fails: the caller decides what a failed save means)."""
        await self.store.save_assignment(assignment.document())

    async def complete(self, assignment: Assignment, task: Task, secret: bytes) -> dict[str, Any]:
        """The completion (a code, or the URL to go to) once the requirements are met."""
        summary = task.summary(assignment.values)
        if not summary["complete"]:
            raise NotComplete(summary)
        if task.completion_code is None and task.completion_url is None:
            raise NoCompletion(f"task {task.id!r} has no completion code or URL")
        if assignment.completed_at is None:
            assignment.completed_at = time.time()
            self.completed[task.id] += 1
            self.completions.append((assignment.completed_at, task.id))
            await self.save(assignment)
        if task.completion_url is not None:
            return {"redirect": task.completion_url}
        return {"code": task.code_for(assignment.session_id, secret)}

    async def ranking(self, assignment: Assignment, percentile_from: int) -> dict[str, Any]:
        """Where the participant's score stands among everyone else who finished the task
        (``crowdplay.ranking.rank``: a percentile from ``percentile_from`` others on, a histogram)."""
        documents = await self.store.assignments({"task_id": assignment.task_id}, self._held())
        scores = [float(doc.get("statistics", {}).get("values", {}).get("score", 0.0)) for doc in documents if doc.get("finished_at")]
        own = float(assignment.values.get("score", 0.0))
        others = list(scores)
        if assignment.finished_at is not None and own in others:
            others.remove(own)  # the participant's own finished assignment is among them
        return rank(own, others, percentile_from)
