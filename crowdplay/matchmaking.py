"""Seating a participant: a waiting game's open seat on any node, else a new game on a host.

A join reserves its seat in the ``SessionTable`` first (no await between choosing and taking, so
concurrent joins never share a seat), then waits for the game to open (placed by the
``HostPool``, its environment built in the host's process) and takes the seat there. A game can
begin or end while a join is on its way (the seat is then freed and the join tries another
game), and a host process can die (the join tries another host): both are retried a bounded
number of times, never seating anyone twice. A join whose Start is given up on its way
(``give_up``) takes no seat, and a game every join of which was given up is not built: under a
flood of requests whose clients had left, their games were built behind playing games for
nobody.

Ray-free: the host processes are reached through ``GameHosts``; the manager's implementation
turns Ray's actor errors into ``HostDied``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from crowdplay.controllers import Controller
from crowdplay.environments import EnvironmentFailed, EnvSpec
from crowdplay.hosts import Host, HostPool
from crowdplay.lineup import SeatUnavailable
from crowdplay.problem_reports import ProblemReports
from crowdplay.session_table import Game, SessionEntry, SessionTable
from crowdplay.spares import WouldStall

#: A join tries this many host processes before giving up (one may have died).
START_ATTEMPTS = 3
#: A join gives up after finding this many seats gone (games that started or ended under it).
SEAT_ATTEMPTS = 10


class HostDied(RuntimeError):
    """The host's process is gone (crashed, killed, or its node left)."""

class SeatGone(LookupError):
    """The game began or ended before the participant reached their seat."""


class JoinGivenUp(RuntimeError):
    """The join's Start was given up (its requester left) before it took its seat."""


class GameDeserted(JoinGivenUp):
    """Every join that reserved a seat in the game was given up before it was built."""


class GameHosts(Protocol):
    """What matchmaking asks of a host's process."""

    async def open_game(self, host: Host, game_id: str, env_id: str, seed: int, behind_play: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        """Build the game's environment there: (hello info, frame channel address); ``behind_play``:
        even behind games playing there."""

    async def take_seat(self, host: Host, game: Game, agent: str, session_id: str, controller: Controller, details: dict[str, Any], token: str) -> None:
        """Seat the session in the game (``SeatGone`` if the game began or ended)."""


class Matchmaker:
    """Seats joins in games; opens new games on the pool's hosts."""

    def __init__(
        self, table: SessionTable, pool: HostPool, hosts: GameHosts, problems: ProblemReports, host_lost: Callable[[Host], None],
        deserted: Callable[[Game], None] = lambda game: None,
    ) -> None:
        """``host_lost(host)``: a host's process died (its games end; see the manager);
        ``deserted(game)``: every seat reserved in a game was given up before anyone took it."""
        self.table = table
        self.pool = pool
        self.hosts = hosts
        self.problems = problems
        self.host_lost = host_lost
        self.deserted = deserted
        #: the sessions being seated now -> whether their Start was given up meanwhile
        self._joining: dict[str, bool] = {}

    def give_up(self, session_id: str) -> bool:
        """The Start of ``session_id`` was given up: its join takes no seat, and a game nobody
        else joins is not built. False when no join of that session is under way."""
        if session_id not in self._joining:
            return False
        self._joining[session_id] = True
        return True

    async def seat(self, spec: EnvSpec, session_id: str, controller: Controller, details: dict[str, Any]) -> SessionEntry:
        """The session seated in a game of ``spec`` (watching one of its own if it is AI-only),
        with a fresh token. ``details["participant"]``: who sits there (a pseudonym).
        ``JoinGivenUp`` if its Start is given up before it takes the seat (``give_up``)."""
        self._joining[session_id] = False
        try:
            return await self._seat(spec, session_id, controller, details)
        finally:
            del self._joining[session_id]

    async def _seat(self, spec: EnvSpec, session_id: str, controller: Controller, details: dict[str, Any]) -> SessionEntry:
        failures = seats_gone = 0
        started = time.perf_counter()
        while True:
            game, agent = await self.reserve(spec, session_id)
            try:
                await asyncio.shield(self._opening(game))
                if self._joining[session_id]:
                    raise JoinGivenUp("the Start was given up before it took its seat")
                opened = time.perf_counter()
                token = secrets.token_urlsafe(24)
                if agent is not None:
                    assert game.host is not None  # an opened game has its host
                    await self.hosts.take_seat(game.host, game, agent, session_id, controller, details, token)
                entry = SessionEntry(session_id, token, game, agent or "", details["participant"])
                entry.start_ms = {**game.opened_ms, "opening_wait": _ms(opened - started), "seat": _ms(time.perf_counter() - opened)}
                self.table.add(entry)
                return entry
            except SeatGone:
                self.table.seat_gone(game, agent, session_id)
                seats_gone += 1
                if seats_gone >= SEAT_ATTEMPTS:
                    raise SeatUnavailable(f"no seat of {spec.id!r} could be taken in {SEAT_ATTEMPTS} tries: games began or ended under each") from None
            except HostDied:
                if game.host is not None:
                    self.host_lost(game.host)
                failures += 1
                if failures >= START_ATTEMPTS:
                    raise
            except BaseException:  # given up, cancelled or failed: its reservation goes with it
                if self.table.release(game, agent, session_id):
                    self.deserted(game)
                raise

    async def reserve(self, spec: EnvSpec, session_id: str) -> tuple[Game, str | None]:
        """A seat reserved for the session (agent None: an AI-only game, watched)."""
        while True:
            game, agent = self.table.reserve(spec, session_id, self.start_opening)
            if game.seats is not None:
                return game, agent
            try:
                await asyncio.shield(self._opening(game))  # its agents are learnt as it opens
            except BaseException:
                if not game.seated():
                    self.deserted(game)
                raise
            if game.seats == {}:
                return game, None

    def new_game(self, env_id: str) -> Game:
        """A game nobody joins (an AI-only one the dashboard starts), opening."""
        return self.table.new_game(env_id, None, self.start_opening, joinable=False)

    @staticmethod
    def _opening(game: Game) -> asyncio.Future[None]:
        assert game.opening is not None  # every listed game is opening or open
        return game.opening

    def start_opening(self, game: Game) -> asyncio.Task[None]:
        """Open ``game`` in the background (the task the table keeps as the game's ``opening``)."""
        return asyncio.get_running_loop().create_task(self.open(game))

    async def open(self, game: Game) -> None:
        """Place the game on a host and build its environment there (elsewhere if the host died).
        A game that cannot be built is reported once (``ProblemReports``) and fails its joins."""
        try:
            started = time.perf_counter()
            deaths = 0
            while True:
                self._unless_deserted(game)
                host = game.host = await self.pool.place(game.game_id, game.env_id)
                placed = time.perf_counter()
                try:
                    self._unless_deserted(game)  # placement can wait seconds for room
                    behind_play = self.pool.may_build_behind_play(game.game_id)
                    game.info, game.channel = await self.hosts.open_game(host, game.game_id, game.env_id, secrets.randbelow(2**31), behind_play)
                    game.opened_ms = {"placement": _ms(placed - started), "env_build": _ms(time.perf_counter() - placed)}
                    break
                except EnvironmentFailed as failure:
                    self.problems.environment_failed(failure)
                    raise
                except WouldStall:  # a game began there before the pool heard of it: elsewhere
                    self.pool.unplace(host, game.game_id, game.env_id)
                except HostDied:
                    host.games.discard(game.game_id)
                    self.host_lost(host)
                    deaths += 1
                    if deaths == START_ATTEMPTS:
                        raise
        except BaseException:
            dropped = self.table.drop(game.game_id)
            if dropped is not None and dropped.host is not None:
                self.pool.release(dropped.host, game.game_id)
            raise
        self.table.learn_agents(game, list(game.info["humans"]))

    def _unless_deserted(self, game: Game) -> None:
        """``GameDeserted`` when nobody wants ``game`` any more: joinable, with seats, and every
        seat reserved in it (if any) held by a join that was given up. A game whose agents are not
        known yet, or that nobody joins (AI-only, watched), is always built."""
        if game.joinable and game.seats and all(self._joining.get(session_id, False) for session_id in game.seated_sessions()):
            raise GameDeserted(f"every Start for game {game.game_id} was given up before it was built")


def _ms(seconds: float) -> float:
    """A duration as the Start's timing reports it."""
    return round(seconds * 1000, 2)
