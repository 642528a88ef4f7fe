"""A participant's Start (``POST /api/sessions``): from the request to a seat and an assignment.

A Start passes, in this order: admission (per-client and cluster-wide start rates, sessions not
yet connected), the study (is the task open; "auto" picks one), the participant's identity (a
pseudonym under the store's key, never the raw id), a second tab's resume (the same session back
with a new token), then matchmaking (a seat) and the study's assignment. Each step can refuse
the Start with its own error before the next touches anything, so a refused Start leaves nothing
behind.

A Start whose requester has gone (the ingress saw its client disconnect before the answer:
``withdraw``) is not fulfilled: given up before it began, it does nothing; given up while it
waits for its game, it takes no seat and a game nobody else joins is not built
(``Matchmaker.give_up``); given up after, its seat is given up at once unless someone connected
to it, and a game nobody is left in ends (``Lineup.withdraw``). Under a flood, requests whose
clients had timed out were otherwise seated 35-100 s later, filling the server again after the
flood. Ray-free.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from crowdplay.admission import Admission
from crowdplay.assignments import ANONYMOUS
from crowdplay.bounded import remember
from crowdplay.controllers import Human
from crowdplay.environments import EnvSpec, get_env
from crowdplay.game_control import HostCalls
from crowdplay.matchmaking import JoinGivenUp, Matchmaker
from crowdplay.session_table import SessionEntry, SessionTable, resume_secret
from crowdplay.study_service import StudyService

#: Starts remembered as given up, or as begun with their session: enough for every Start under
#: way at once, by a wide margin.
STARTS_REMEMBERED = 10_000


class StartWithdrawn(RuntimeError):
    """The Start's requester went away before it was answered: nothing was kept for it."""

    def __init__(self, reason: str = "the request was given up before it was answered") -> None:
        super().__init__(reason)


class Withdrawals:
    """Which Starts were given up (by the id the ingress gave each one), and the sessions of the
    recent ones that began, so that a withdrawal finds its session whichever comes first."""

    def __init__(self, remembered: int = STARTS_REMEMBERED) -> None:
        self.remembered = remembered
        self._given_up: OrderedDict[str, None] = OrderedDict()
        self._sessions: OrderedDict[str, str] = OrderedDict()
        #: Starts withdrawn so far (for operators and tests)
        self.count = 0

    def given_up(self, start_id: str) -> bool:
        """Whether the Start was withdrawn already."""
        return bool(start_id) and start_id in self._given_up

    def withdraw(self, start_id: str) -> str | None:
        """Note the Start as given up; its session if it already has one (to give up its seat)."""
        if not start_id or start_id in self._given_up:
            return None
        self.count += 1
        remember(self._given_up, start_id, None, self.remembered)
        return self._sessions.pop(start_id, None)

    def began(self, start_id: str, session_id: str) -> None:
        """The Start is under way for ``session_id``: remembered for a later withdrawal."""
        if start_id:
            remember(self._sessions, start_id, session_id, self.remembered)


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
        self.withdrawals = Withdrawals()

    async def start(self, env_id: str, participant: dict[str, Any] | None, client: str, start_id: str = "") -> dict[str, Any]:
        """``_start`` for a Start the ingress named ``start_id`` (empty: one that cannot be
        withdrawn); ``StartWithdrawn`` if it was withdrawn before it began or while under way."""
        if self.withdrawals.given_up(start_id):
            raise StartWithdrawn()
        session_id = uuid.uuid4().hex
        self.withdrawals.began(start_id, session_id)
        try:
            answer = await self._start(env_id, participant, client, session_id)
        except JoinGivenUp:
            raise StartWithdrawn() from None
        if self.withdrawals.given_up(start_id):
            await self.withdraw_session(answer["session_id"])
            raise StartWithdrawn()
        return answer

    async def withdraw(self, start_id: str) -> None:
        """The Start's requester went away before its answer: a join under way takes no seat
        (``Matchmaker.give_up``), a seat taken already is given up (``Lineup.withdraw``), and a
        Start not begun is not fulfilled when it gets there."""
        session_id = self.withdrawals.withdraw(start_id)
        if session_id is not None and not self.matchmaker.give_up(session_id):
            await self.withdraw_session(session_id)

    async def withdraw_session(self, session_id: str) -> None:
        """Give up a withdrawn Start's seat unless its participant connected after all (a resumed
        session, someone's own seat, stands either way)."""
        entry = self.table.sessions.get(session_id)
        if entry is not None and not entry.connected and entry.game.host is not None:
            await self.hosts.withdraw(entry.game.host, entry.game.game_id, session_id)

    async def _start(self, env_id: str, participant: dict[str, Any] | None, client: str, session_id: str) -> dict[str, Any]:
        """Seat a participant in a game of ``env_id`` (a waiting game's open seat on any node, else
        a new game). Returns the session's id, token, game and agent, and with a participant id
        its resume secret. ``participant`` (all optional): ``id`` (stored only as a pseudonym),
        ``params``, ``user_agent``, ``consented_at``, ``resume`` (the secret of their session in a
        game of ``env_id``, to get that seat back from a second tab). ``client``: the requester's
        address, for ``Admission``; ``session_id``: the new session's (a resumed one keeps its own)."""
        self.admission.admit(client, self.table.unconnected_since(self._clock() - self.connect_timeout_s))
        spec = get_env(await self.study.open_task(env_id))
        self._on_task(spec.id)
        participant = dict(participant or {})
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
