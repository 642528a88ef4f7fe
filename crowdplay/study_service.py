"""The study's side of the manager: assignments, scores, completion codes, notes, pseudonyms.

Every participant-facing answer here (a score page, a completion code, a Finish) must come back
quickly even when the TrajectoryWriter or its store is slow or down: writes go through a
``StoreLink`` (kept, retried, waited for only briefly), reads are bounded, and completions
counted so far are loaded once in the background. Ray-free: the writer is reached through a
``call(method, *args)`` coroutine function and a game's live statistics through ``ask_game``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from crowdplay.assignments import Assignment, AssignmentBook
from crowdplay.background import Background
from crowdplay.environments import get_env
from crowdplay.note_limits import NoteLimits
from crowdplay.recording.status import INTERRUPTED
from crowdplay.recording.store import pseudonymise
from crowdplay.recording.store_link import BOOK_WAIT_S, KEY_WAIT_S, Call, StoreLink
from crowdplay.study import current_study

log = logging.getLogger(__name__)

#: Seconds before each try to mark a lost game's episodes interrupted.
MARK_INTERRUPTED_DELAYS_S = (1, 2, 5, 10, 30, 60, 300)

#: Asks the game hosting a session for its participant's statistics: ("statistics" or "finish",
#: session id) -> statistics, {} when the session no longer plays.
AskGame = Callable[[str, str], Awaitable[dict[str, Any]]]


class TaskClosed(PermissionError):
    """The task takes no new participants now (not open yet, over, or at its target)."""


class RecordingUnavailable(RuntimeError):
    """The recording store has never been reachable, so a participant id cannot be stored safely."""


class StudyStore:
    """The manager's writer calls, each bounded as its caller needs (``StoreLink``); the
    ``AssignmentStore`` its assignment book keeps assignments in."""

    def __init__(self, call: Call, link: StoreLink | None = None) -> None:
        """``call(method, *args)`` awaits a writer method; ``link`` bounds those calls (one over
        ``call`` with the default bounds unless given, as a test gives shorter ones)."""
        self.call = call
        self.link = StoreLink(call) if link is None else link

    async def save_assignment(self, document: dict[str, Any]) -> None:
        """Save an assignment in the background; a newer version of the same one replaces it, retried until stored."""
        await self.link.save(("assignment", document["_id"]), "save_assignment", document)

    async def save_note(self, document: dict[str, Any]) -> None:
        """Its own ``_id``: a retried save replaces itself."""
        document = {"_id": uuid.uuid4().hex, **document}
        await self.link.save(("note", document["_id"]), "save_note", document)

    async def assignments(self, query: dict[str, Any], held: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
        """Assignments matching ``query``, ``held`` (the book's in memory) overlaid while the writer
        is late; the whole collection (the book's load) waits as long as it takes, since
        ``StudyService.load_book`` bounds its own wait."""
        query = dict(query)
        return await self.link.assignments(query, held, wait_s=None if query else float("inf"))

    async def pseudonym_key(self) -> bytes:
        """The store's pseudonym key; WriterLate if the writer does not answer within ``KEY_WAIT_S``."""
        key: bytes = await self.link.read("pseudonym_key", wait_s=KEY_WAIT_S)
        return key

    async def bring_up_writer(self) -> None:
        """Start the writer (and its store) before the first participant: its answer is unused."""
        await self.call("stats")

    async def mark_interrupted(self, game_id: str, reason: str, status: str = INTERRUPTED) -> None:
        """Mark a lost game's unended episodes ``status``, after each of ``MARK_INTERRUPTED_DELAYS_S``
        until the writer does it: chunks the game's process sent before it died reach the store
        first, and a store outage is waited out."""
        for delay in MARK_INTERRUPTED_DELAYS_S:
            await asyncio.sleep(delay)
            try:
                await self.call("interrupt_game", game_id, reason, status)
                return
            except Exception as error:
                log.info("marking lost game %s interrupted: %s (tried again later)", game_id, error)
        log.error("lost game %s could not be marked interrupted: its episodes stay unended", game_id)


class StudyService:
    """Assignments and what participants ask of the study, over the store and the running games."""

    def __init__(
        self, store: StudyStore, ask_game: AskGame, is_playing: Callable[[str], bool], record: bool, kept: int | None, background: Background,
        notes: NoteLimits | None = None,
    ) -> None:
        """``record`` False: a server that records no play neither loads completions nor saves an
        assignment on its own initiative (what a participant asks for still is); ``notes``: how
        many notes are stored, from whom (None: every one)."""
        self.store = store
        self.ask_game = ask_game
        self.record = record
        self.book = AssignmentBook(store, is_playing=is_playing, kept=kept if record else None)
        self._background = background
        self._book_loaded = False
        self._book_loading: asyncio.Task[None] | None = None
        self._key: bytes | None = None
        self.notes = notes

    # ----------------------------------------------------------------- loading and saving
    async def load_book(self) -> None:
        """Completions so far, from the store, once. Loaded in the background and waited for at
        most ``BOOK_WAIT_S``: a late writer holds up neither the dashboard nor a participant
        (counts come from memory until it answers; a failed load is tried again next time)."""
        if self._book_loaded or not self.record:
            return
        loading = self._book_loading
        if loading is None or loading.done():
            loading = self._book_loading = self._background.start(self._load_book_now(), "loading the study's assignments")
        await asyncio.wait({loading}, timeout=BOOK_WAIT_S)

    async def _load_book_now(self) -> None:
        try:
            await self.book.load()
            self._book_loaded = True
        except Exception as error:
            log.warning("the study's assignments could not be read yet (%s: %s); completions are counted from now", type(error).__name__, error)

    async def save(self, assignment: Assignment) -> None:
        """Persist an assignment: the link keeps it and retries until the writer acknowledges it,
        waited for only briefly; never raises (the save goes on)."""
        try:
            await self.book.save(assignment)
        except Exception as error:
            log.warning("saving assignment %s: %s: %s (kept, and retried)", assignment.session_id, type(error).__name__, error)

    def save_later(self, assignment: Assignment) -> None:
        """``save`` in the background (nothing when nothing is recorded)."""
        if self.record:
            self._background.start(self.save(assignment), f"saving assignment {assignment.session_id}")

    async def final_statistics(self, by_session: dict[str, dict[str, Any]]) -> None:
        """Departed participants' last statistics, saved with their assignments."""
        for session_id, statistics in by_session.items():
            assignment = self.book.assignments.get(session_id)
            if assignment is not None and statistics:
                assignment.statistics = statistics
                if assignment.finished_at is None:
                    assignment.finished_at = time.time()
                await self.save(assignment)

    async def open_task(self, env_id: str) -> str:
        """The environment a join asks for ("auto": the study's choice), if its task is open
        (``TaskClosed`` otherwise)."""
        study = current_study()
        await self.load_book()
        if env_id == "auto":
            task = study.choose_task(self.book.completed, time.time())
            if task is None:
                raise TaskClosed("no task takes new participants right now")
            env_id = task.id
        get_env(env_id)  # UnknownEnvironment before anything else is touched
        if env_id in study.tasks:
            closed = study.tasks[env_id].closed_reason(self.book.completed[env_id], time.time())
            if closed is not None:
                raise TaskClosed(f"task {env_id!r}: {closed}")
        return env_id

    # ----------------------------------------------------------------- pseudonyms
    async def secret_key(self) -> bytes:
        """The store's secret key (pseudonyms, completion codes, resume secrets): fetched once,
        then kept, so a store outage later does not stop participants from starting."""
        if self._key is None:
            try:
                self._key = await self.store.pseudonym_key()
            except Exception as error:
                raise RecordingUnavailable(f"participant ids cannot be pseudonymised yet: {error}") from error
        return self._key

    async def pseudonym(self, raw_id: str) -> str:
        """The participant's pseudonym under the store's key; RecordingUnavailable while that key cannot be fetched."""
        return pseudonymise(await self.secret_key(), str(raw_id))

    # ----------------------------------------------------------------- participants' requests
    async def _fresh(self, session_id: str, token: str) -> Assignment:
        """The session's assignment with its statistics as of now (asked from its game if it plays)."""
        assignment = await self.book.get(session_id, token)
        statistics = await self.ask_game(session_id, "statistics")
        if statistics:
            assignment.statistics = statistics
        return assignment

    async def summary(self, session_id: str, token: str) -> dict[str, Any]:
        """Statistics, progress, completion and (once finished) the ranking, for the page."""
        assignment = await self._fresh(session_id, token)
        task = current_study().task_for(assignment.task_id)
        summary = {
            "task_id": task.id,
            "title": task.title,
            "finished": assignment.finished_at is not None,
            "episodes": assignment.statistics.get("episodes", 0),
            "completion_kind": "url" if task.completion_url else "code" if task.completion_code else None,
            **task.summary(assignment.values),
        }
        if assignment.finished_at is not None:
            summary["ranking"] = await self.book.ranking(assignment, current_study().percentile_from)
        return summary

    async def finish(self, session_id: str, token: str) -> dict[str, Any]:
        """The participant is done playing: their seat is given up and the summary (with the
        ranking among everyone who finished the task) returned, never waiting on a late writer."""
        assignment = await self.book.get(session_id, token)
        statistics = await self.ask_game(session_id, "finish")
        if statistics:
            assignment.statistics = statistics
        if assignment.finished_at is None:
            assignment.finished_at = time.time()
        await self.save(assignment)
        return await self.summary(session_id, token)

    async def completion(self, session_id: str, token: str) -> dict[str, Any]:
        """The completion code or redirect URL, only once the server finds the requirements met
        (``NotComplete`` otherwise, with the progress)."""
        assignment = await self._fresh(session_id, token)
        task = current_study().task_for(assignment.task_id)
        return await self.book.complete(assignment, task, await self.secret_key())

    async def note(self, kind: str, text: str, page: str, session_id: str | None = None, token: str | None = None, client: str = "") -> None:
        """Store participant feedback or a problem report (with the session, if it proves its
        token), within the limits on notes from ``client`` and about the session (``NoteLimits``)."""
        if self.notes is not None:
            self.notes.admit(client)
        document: dict[str, Any] = {"kind": kind, "text": text, "page": page, "created_at": time.time(), "session_id": None, "task_id": None, "participant": None}
        if session_id is not None:
            assignment = await self.book.get(session_id, token or "")
            if self.notes is not None:
                self.notes.charge(session_id)
            document.update(session_id=session_id, task_id=assignment.task_id, participant=assignment.participant)
        await self.store.save_note(document)

    async def task_counts(self) -> dict[str, int]:
        """Completed assignments per task (a task at its target is closed)."""
        await self.load_book()
        return dict(self.book.completed)
