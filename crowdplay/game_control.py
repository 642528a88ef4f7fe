"""What the manager does to running games once they are seated: watch, ask, end, and lose them.

A game ends in one of four ways: its lineup decides so (an ``ended`` event from its process),
someone ends it (the researcher, a shutdown, an AI-only game that turned out not to be), its
process dies, or its machine stops answering. Each way must leave the same state behind: the game
and its sessions out of the ``SessionTable``, its slot given back to the ``HostPool``, and, for a
process that died, the participants told why and the game's episodes marked interrupted in the
store. ``GameControl`` is the one place that does that, so the four cannot drift apart.

A machine that stops answering (a partition, a stuck VM) is reported by the ingress whose frame
channel went silent (``channel_stalled``), long before Ray declares the node dead. Its game is
lost at once (its participants were told, and are offered a new game), and the node takes no new
game; the game's slot stays taken until the game is over there. Then exactly one of two things
ends it: the node answers again (a probe of its frame channel), and the game is stopped there with
status ``server_unreachable``; or Ray declares the process dead, and its episodes are marked
``server_unreachable`` in the store, kept up to the last chunk the writer acknowledged.

Ray-free: a game's process is reached through ``HostCalls`` (the manager's ``EnvActorCalls``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from crowdplay.background import Background
from crowdplay.environments import get_env
from crowdplay.hosts import Host, HostPool
from crowdplay.matchmaking import GameHosts, HostDied
from crowdplay.recording.status import INTERRUPTED
from crowdplay.recording.status import SERVER_UNREACHABLE as UNREACHABLE_STATUS
from crowdplay.session_table import Game, SessionTable
from crowdplay.vocabulary import GameEvent

log = logging.getLogger(__name__)

#: What the participants of a game whose process died (crashed, killed, or its node left) are told.
HOST_LOST = "the game server stopped unexpectedly; please start again"

#: What the participants of a game whose machine stopped answering are told, and its episodes' reason.
SERVER_UNREACHABLE = "your game server stopped answering (its machine cannot be reached); please start a new game"

#: Marks a lost game's unended episodes in the store: (game id, reason, status).
MarkInterrupted = Callable[[str, str, str], Coroutine[Any, Any, None]]

#: Seconds between probes of a node whose machine stopped answering, and each probe's wait.
PROBE_INTERVAL_S = 0.5
PROBE_TIMEOUT_S = 1.0


class UnknownGame(LookupError):
    """No running game has this id (it ended, or never existed)."""


class NotAIOnly(ValueError):
    """Only an environment whose every agent is played by AI can run without participants."""


class HostCalls(GameHosts, Protocol):
    """Everything the manager's parts ask of a game's process, besides opening and seating."""

    def retoken(self, host: Host, session_id: str, token: str) -> None:
        """Tell the process a session's new token (not waited for)."""

    async def begin_unwatched(self, host: Host, game_id: str) -> None:
        """Start an AI-only game nobody watches yet."""

    async def stop(self, host: Host, game_id: str, reason: str, status: str = INTERRUPTED) -> None:
        """End the game there, its episode stored with ``status``; ``HostDied`` if the process is gone."""

    async def channel_answers(self, channel: dict[str, Any]) -> bool:
        """Whether the machine behind a game's frame channel answers a probe within ``PROBE_TIMEOUT_S``."""

    async def participant_statistics(self, host: Host, game_id: str, session_id: str, finish: bool) -> dict[str, Any]:
        """A seated participant's statistics ({} if gone); ``finish`` gives up their seat too."""

    async def withdraw(self, host: Host, game_id: str, session_id: str) -> bool:
        """Give up a session's seat unless it connected (False then, or if the game is gone)."""

    async def drain(self, host: Host, timeout_s: float) -> bool:
        """Wait until all the process recorded is acknowledged by the writer."""

    async def until_dead(self, host: Host) -> bool:
        """Wait until the process stops: True if it died, False if it stopped on purpose."""


#: Why a game whose every seat was given up before anyone took it ends (``end_if_nobody_comes``).
NOBODY_CAME = "nobody took a seat in this game"


@dataclass(eq=False)
class GameControl:
    """The running games' lifecycle after matchmaking (see the module docstring), over the
    manager's parts it is given."""

    table: SessionTable
    pool: HostPool
    hosts: HostCalls
    background: Background
    #: ``open_unjoinable(env_id)``: a new game nobody joins, opening (``Matchmaker.new_game``)
    open_unjoinable: Callable[[str], Game]
    #: None: nothing is recorded, so nothing is marked
    mark_interrupted: MarkInterrupted | None
    #: games lost because their machine stopped answering, with their host: their slot is given
    #: back once they are over there (stopped when the node answers, or their process died)
    unreachable: dict[str, Host] = field(default_factory=dict)
    probe_interval_s: float = PROBE_INTERVAL_S

    # ----------------------------------------------------------------- processes dying
    def watch_host(self, host: Host) -> None:
        """Notice a host's death at once (a crash, a kill, its node leaving), not at the next call;
        a host retired on purpose was taken out of the pool before its kill."""
        async def watch() -> None:
            if await self.hosts.until_dead(host) and host in self.pool.hosts:
                self.host_lost(host)
        self.background.start(watch(), f"watching game process on node {host.node_id}")

    def host_lost(self, host: Host) -> None:
        """Its games end; their participants' tokens hear ``HOST_LOST``; their episodes are marked
        interrupted in the store."""
        log.warning("game process on node %s stopped with %d game(s)", host.node_id, len(host.games))
        self.pool.forget(host)
        for game_id in list(host.games):
            if self.table.lose(game_id, HOST_LOST) is not None:
                self._mark(game_id, HOST_LOST, INTERRUPTED)
            elif self.unreachable.pop(game_id, None) is not None:  # its participants were told already
                self._mark(game_id, SERVER_UNREACHABLE, UNREACHABLE_STATUS)
            host.games.discard(game_id)

    def _mark(self, game_id: str, reason: str, status: str) -> None:
        if self.mark_interrupted is not None:
            self.background.start(self.mark_interrupted(game_id, reason, status), f"marking lost game {game_id} {status}")

    # ----------------------------------------------------------------- machines not answering
    def channel_stalled(self, session_id: str) -> None:
        """An ingress heard nothing on this session's frame channel within its stall deadline: the
        game is lost (its participants are told ``SERVER_UNREACHABLE`` when they reconnect), and
        its node takes nothing new (its waiting games included) until a probe of the game's channel
        is answered. A session no longer seated (reported twice, or its game ended) changes nothing."""
        entry = self.table.sessions.get(session_id)
        if entry is None or entry.game.host is None:
            return
        game, host = entry.game, entry.game.host
        log.warning("game %s on node %s stopped answering (session %s's frame channel stalled)", game.game_id, host.node_id, session_id)
        self.table.lose(game.game_id, SERVER_UNREACHABLE)
        self.unreachable[game.game_id] = host
        for other in self.table.games.values():
            if other.host is not None and other.host.node_id == host.node_id:
                other.joinable = False
        if self.pool.suspect(host.node_id):
            self.background.start(self._probe(host.node_id, dict(game.channel)), f"probing node {host.node_id}")

    async def _probe(self, node_id: str, channel: dict[str, Any]) -> None:
        """Probe the node until it answers (then trust it and stop its lost games) or its last
        process is gone (Ray declared it dead: ``host_lost`` marked the games)."""
        while self.pool.on_node(node_id):
            if await self.hosts.channel_answers(channel):
                log.warning("node %s answers again: it takes games again", node_id)
                self.pool.trust(node_id)
                await self._stop_unreachable(node_id)
                return
            await asyncio.sleep(self.probe_interval_s)
        self.pool.trust(node_id)  # no process of it is left: nothing to keep off

    async def _stop_unreachable(self, node_id: str) -> None:
        """The node answers again: end its lost games there, stored as ``server_unreachable``
        (their participants left with the message; nothing resumes them), and give their slots back."""
        for game_id, host in list(self.unreachable.items()):
            if host.node_id != node_id:
                continue
            try:
                await self.hosts.stop(host, game_id, SERVER_UNREACHABLE, UNREACHABLE_STATUS)
            except HostDied:
                self.host_lost(host)
                continue
            if self.unreachable.pop(game_id, None) is not None:
                self.pool.release(host, game_id)

    # ----------------------------------------------------------------- what games report
    def event(self, game_id: str, event: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """What a game's lineup decided (``SessionTable.apply_event``); an ended game's slot goes
        back to the pool. Returns the departed sessions' final statistics, by session id."""
        game = self.table.games.get(game_id)
        departed = self.table.apply_event(game_id, event)
        if event["event"] == GameEvent.CLOSED and game is not None and game.host is not None:
            self.pool.game_began(game.host)
        if event["event"] == GameEvent.ENDED:
            host = game.host if game is not None else self.unreachable.pop(game_id, None)
            if host is not None:
                self.pool.release(host, game_id)
        return departed

    async def ask(self, session_id: str, what: str) -> dict[str, Any]:
        """The participant's statistics from their game (``what``: "statistics", or "finish" to
        give up their seat too); {} if they no longer play (``StudyService``'s ``AskGame``)."""
        entry = self.table.sessions.get(session_id)
        if entry is None or entry.game.host is None:
            return {}
        return await self.hosts.participant_statistics(entry.game.host, entry.game.game_id, session_id, finish=what == "finish")

    # ----------------------------------------------------------------- AI-only games
    async def start_ai_game(self, env_id: str) -> dict[str, Any]:
        """Start a game of an AI-only environment before anyone watches it (it ends once nobody
        has watched it for its reconnect grace); ``NotAIOnly`` for an environment people play."""
        spec = get_env(env_id)
        people = spec.human_agents(spec.agents) if spec.agents is not None else []
        if not people:
            game = self.open_unjoinable(env_id)
            assert game.opening is not None  # a new game is opening
            await asyncio.shield(game.opening)
            people = list(game.seats or ())
            if not people:
                assert game.host is not None  # an opened game has its host
                await self.hosts.begin_unwatched(game.host, game.game_id)
                return {"game_id": game.game_id, "env_id": env_id}
            await self.end(game.game_id, "not an AI-only game")
        raise NotAIOnly(f"environment {env_id!r} has agents people play ({people}): only an AI-only game runs without participants")

    async def watch(self, game_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(hello info, frame channel) to watch a running game read-only from the dashboard."""
        game = self.table.games.get(game_id)
        if game is None or game.opening is None:
            raise UnknownGame(f"no running game {game_id!r}")
        await asyncio.shield(game.opening)
        return game.info, {**game.channel, "watch": "dashboard"}

    # ----------------------------------------------------------------- ending
    async def end(self, game_id: str, reason: str) -> None:
        """End the game for everyone in it and forget it; nothing if it is unknown. Its process is
        told to stop it with ``reason``; a process found dead is lost (``host_lost``)."""
        game = self.table.drop(game_id)
        if game is None or game.host is None:
            return
        self.pool.release(game.host, game_id)
        try:
            await self.hosts.stop(game.host, game_id, reason)
        except HostDied:
            self.host_lost(game.host)

    def end_if_nobody_comes(self, game: Game) -> None:
        """Every Start that reserved a seat in ``game`` was given up before its session was
        recorded (withdrawn, cancelled, failed): once the game has opened it ends, unless someone
        took a seat meanwhile. Left open, it waited for its waiting room's limit (minutes) with
        nobody on the way."""
        self.background.start(self._end_if_empty(game), f"ending the empty game {game.game_id}")

    async def _end_if_empty(self, game: Game) -> None:
        if game.opening is not None:
            await asyncio.wait({game.opening})
            if not game.opening.cancelled():
                game.opening.exception()  # taken: a failure is the opening's to report, and a deserted game's is no failure
        if self.table.games.get(game.game_id) is game and game.joinable and not game.seated() and not game.watchers:
            game.joinable = False  # before any await: no Start reserves a seat in it from now on
            await self.end(game.game_id, NOBODY_CAME)

    async def end_of_session(self, session_id: str, reason: str) -> None:
        """End the game this session plays in, for everyone in it (their clients get ``end``)."""
        entry = self.table.sessions.get(session_id)
        if entry is not None:
            await self.end(entry.game.game_id, reason)

    async def shutdown(self, reason: str, timeout_s: float) -> int:
        """End every game and wait until the writer has acknowledged all they recorded (a clean
        stop loses no play); returns how many sessions were ended."""
        hosts, ended = list(self.pool.hosts), len(self.table.sessions)
        stopped = await asyncio.gather(*(self.end(game_id, reason) for game_id in list(self.table.games)), return_exceptions=True)
        drained = await asyncio.gather(*(self.hosts.drain(host, timeout_s) for host in hosts), return_exceptions=True)
        for failure in (result for result in [*stopped, *drained] if isinstance(result, BaseException)):
            # the other games and processes still stop: one failure must not hold the rest up
            log.warning("shutting down: %s: %s", type(failure).__name__, failure)
        return ended
