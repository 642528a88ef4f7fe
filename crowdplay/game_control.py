"""What the manager does to running games once they are seated: watch, ask, end, and lose them.

A game ends in one of three ways: its lineup decides so (an ``ended`` event from its process),
someone ends it (the researcher, a shutdown, an AI-only game that turned out not to be), or its
process dies. Each way must leave the same state behind: the game and its sessions out of the
``SessionTable``, its slot given back to the ``HostPool``, and, for a process that died, the
participants told why and the game's episodes marked interrupted in the store. ``GameControl``
is the one place that does that, so the three cannot drift apart.

Ray-free: a game's process is reached through ``HostCalls`` (the manager's ``EnvActorCalls``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from crowdplay.background import Background
from crowdplay.environments import get_env
from crowdplay.hosts import Host, HostPool
from crowdplay.matchmaking import GameHosts, HostDied
from crowdplay.session_table import Game, SessionTable
from crowdplay.vocabulary import GameEvent

log = logging.getLogger(__name__)

#: What the participants of a game whose process died (crashed, killed, or its node left) are told.
HOST_LOST = "the game server stopped unexpectedly; please start again"

#: Marks a lost game's episodes interrupted in the store: (game id, reason).
MarkInterrupted = Callable[[str, str], Coroutine[Any, Any, None]]


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

    async def stop(self, host: Host, game_id: str, reason: str) -> None:
        """End the game there; ``HostDied`` if the process is gone."""

    async def participant_statistics(self, host: Host, game_id: str, session_id: str, finish: bool) -> dict[str, Any]:
        """A seated participant's statistics ({} if gone); ``finish`` gives up their seat too."""

    async def drain(self, host: Host, timeout_s: float) -> bool:
        """Wait until all the process recorded is acknowledged by the writer."""

    async def until_dead(self, host: Host) -> bool:
        """Wait until the process stops: True if it died, False if it stopped on purpose."""


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
            if self.table.lose(game_id, HOST_LOST) is not None and self.mark_interrupted is not None:
                self.background.start(self.mark_interrupted(game_id, HOST_LOST), f"marking lost game {game_id} interrupted")
            host.games.discard(game_id)

    # ----------------------------------------------------------------- what games report
    def event(self, game_id: str, event: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """What a game's lineup decided (``SessionTable.apply_event``); an ended game's slot goes
        back to the pool. Returns the departed sessions' final statistics, by session id."""
        game = self.table.games.get(game_id)
        departed = self.table.apply_event(game_id, event)
        if event["event"] == GameEvent.ENDED and game is not None and game.host is not None:
            self.pool.release(game.host, game_id)
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
