"""A participant's Start (``POST /api/sessions``): from the request to a seat and an assignment.

A Start passes, in this order: admission (per-client and cluster-wide start rates, sessions not
yet connected), the study (is the task open; "auto" picks one), the participant's identity (a
pseudonym under the store's key, never the raw id), a second tab's resume (the same session back
with a new token), then matchmaking (a seat) and the study's assignment. Each step can refuse
the Start with its own error before the next touches anything, so a refused Start leaves nothing
behind. Ray-free.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

from crowdplay.admission import Admission
from crowdplay.assignments import ANONYMOUS
from crowdplay.controllers import Human
from crowdplay.environments import EnvSpec, get_env
from crowdplay.game_control import HostCalls
from crowdplay.matchmaking import Matchmaker
from crowdplay.session_table import SessionEntry, SessionTable, resume_secret
from crowdplay.study_service import StudyService


class Arrivals:
    """Admits, identifies and seats participants (see the module docstring)."""

    def __init__(
        self,
        table: SessionTable,
        matchmaker: Matchmaker,
        study: StudyService,
        admission: Admission,
        hosts: HostCalls,
        connect_timeout_s: float,
        on_task: Callable[[str], None] = lambda env_id: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``on_task(env_id)`` hears of every environment a Start is admitted to (the launcher
        prepares spares of recent ones); ``connect_timeout_s``: how long a new session counts as
        waiting for its participant's connection (``Admission``)."""
        self.table = table
        self.matchmaker = matchmaker
        self.study = study
        self.admission = admission
        self.hosts = hosts
        self.connect_timeout_s = connect_timeout_s
        self._on_task = on_task
        self._clock = clock

    async def start(self, env_id: str, participant: dict[str, Any] | None, client: str) -> dict[str, Any]:
        """Seat a participant in a game of ``env_id`` (a waiting game's open seat on any node, else
        a new game). Returns the session's id, token, game and agent, and with a participant id
        its resume secret. ``participant`` (all optional): ``id`` (stored only as a pseudonym),
        ``params``, ``user_agent``, ``consented_at``, ``resume`` (the secret of their session in a
        game of ``env_id``, to get that seat back from a second tab). ``client``: the requester's
        address, for ``Admission``."""
        self.admission.admit(client, self.table.unconnected_since(self._clock() - self.connect_timeout_s))
        spec = get_env(await self.study.open_task(env_id))
        self._on_task(spec.id)
        participant = dict(participant or {})
        session_id = uuid.uuid4().hex
        raw_id, resume = participant.pop("id", None), participant.pop("resume", None)
        if not raw_id:
            entry = await self._seat(spec, session_id, f"{ANONYMOUS}{session_id}", participant)
            return {**entry.answer(), "task_id": spec.id}
        pseudonym, key = await self.study.pseudonym(raw_id), await self.study.secret_key()
        resumed = self.table.resumable(pseudonym, spec.id, key, resume)
        if resumed is not None:
            return {**self.retoken(resumed), "task_id": spec.id, "resume": resume}
        entry = await self._seat(spec, session_id, pseudonym, participant)
        return {**entry.answer(), "task_id": spec.id, "resume": resume_secret(key, session_id)}

    async def _seat(self, spec: EnvSpec, session_id: str, pseudonym: str, participant: dict[str, Any]) -> SessionEntry:
        """A seat through matchmaking, then the participant's assignment (saved in the background)."""
        details = {**participant, "participant": pseudonym, "created_at": self._clock()}
        entry = await self.matchmaker.seat(spec, session_id, Human(pseudonym), details)
        assignment = self.study.book.open(session_id, spec.id, pseudonym, participant.get("params", {}), entry.token, participant.get("consented_at"))
        assignment.statistics = {"values": {}}
        self.study.save_later(assignment)
        return entry

    def retoken(self, entry: SessionEntry) -> dict[str, Any]:
        """A second tab takes its session back with a new token (the old tab is told it was
        replaced when this one connects)."""
        entry.token = secrets.token_urlsafe(24)
        if entry.game.host is not None:
            self.hosts.retoken(entry.game.host, entry.session_id, entry.token)
        assignment = self.study.book.assignments.get(entry.session_id)
        if assignment is not None:
            assignment.token = entry.token
            self.study.save_later(assignment)  # the new token's digest
        return entry.answer()
