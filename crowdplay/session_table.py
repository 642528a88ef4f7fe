"""The cluster's games and participants' sessions, as matchmaking and the study need them.

A session is a participant's place: a seat (an agent) in a game, or a watcher's view of an AI-only
game, and the token that proves it is theirs. The table answers who plays where, checks tokens,
reserves seats, and remembers why a session whose game was lost ended (a page reconnecting with it
is told why, not that the session never existed).

Seats are reserved with no await between choosing and taking, so concurrent joins never take the
same seat; what happens inside a game once it is seated (the waiting room, disconnects, fallback
AI) is its ``Lineup``'s business, which reports back as events (``apply_event``). Ray-free.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from crowdplay.assignments import ANONYMOUS, BadToken, SessionLost, UnknownSession
from crowdplay.bounded import forget_oldest
from crowdplay.environments import EnvSpec
from crowdplay.hosts import Host
from crowdplay.vocabulary import GameEvent, Phase

#: Sessions whose game was lost are remembered (to tell a reconnecting page why) up to this many.
LOST_SESSIONS_KEPT = 10_000


class AIPlayed(Enum):
    """What a seat holds once AI plays it (no session, and no longer offered to newcomers): a value
    of its own type, so that it can never be taken for a session id, and the type checker makes
    every reader of a seat tell the two apart."""

    SEAT = "ai"


#: A seat handed to AI.
AI_PLAYED = AIPlayed.SEAT
#: Who holds a seat: a participant's session id, AI, or nobody yet (None: the seat is open).
SeatHolder = str | AIPlayed | None


@dataclass(eq=False)
class Game:
    """One running environment and its participants' seats, as far as matchmaking needs it.

    ``seats`` maps each agent a person plays to the session seated there (None: open;
    ``AI_PLAYED``: handed to AI). It is None until the first game of an environment that does not
    declare its agents has opened."""

    game_id: str
    env_id: str
    seats: dict[str, SeatHolder] | None
    host: Host | None = None
    info: dict[str, Any] = field(default_factory=dict)
    channel: dict[str, Any] = field(default_factory=dict)
    #: False once the game has begun (or is about to): newcomers go elsewhere
    joinable: bool = True
    #: sessions of participants who watch this (AI-only) game rather than play a seat
    watchers: set[str] = field(default_factory=set)
    #: placing the game and building its environment; done once it can take participants
    opening: asyncio.Future[None] | None = None
    created_at: float = field(default_factory=time.time)
    #: how long opening took, in ms: "placement" (a host with room, or waiting for one to boot)
    #: and "env_build" (the host building its environment, or taking a spare, and listening)
    opened_ms: dict[str, float] = field(default_factory=dict)

    def open_seats(self) -> list[str]:
        """The agents no one is seated at yet (none while ``seats`` is unknown)."""
        return [agent for agent, holder in (self.seats or {}).items() if holder is None]

    def seated(self) -> list[tuple[str, str]]:
        """(agent, session id) of each seat a participant plays here (not AI, not watchers)."""
        return [(agent, holder) for agent, holder in (self.seats or {}).items() if isinstance(holder, str) and holder]

    def seated_sessions(self) -> list[str]:
        """The sessions playing a seat here."""
        return [session_id for _, session_id in self.seated()]

    def seat_states(self) -> dict[str, str]:
        """Each seat as the dashboard shows it: open, ai or taken."""
        return {agent: "open" if holder is None else "ai" if holder is AI_PLAYED else "taken" for agent, holder in (self.seats or {}).items()}

    def seat_listing(self) -> dict[str, str | None]:
        """Each seat's session id for operators and tests: "ai" where AI plays it, None where open."""
        return {agent: AI_PLAYED.value if holder is AI_PLAYED else holder for agent, holder in (self.seats or {}).items()}


@dataclass
class SessionEntry:
    """One participant's place: a seat in a game (``agent`` "" for a watcher), and their token."""

    session_id: str
    token: str
    game: Game
    agent: str
    participant: str
    created_at: float = field(default_factory=time.time)
    #: the participant's websocket has reached the game at least once
    connected: bool = False
    #: where this Start's time went on the server, in ms (``Matchmaker.seat``)
    start_ms: dict[str, float] = field(default_factory=dict)

    def answer(self) -> dict[str, Any]:
        """The session as ``POST /api/sessions`` answers it."""
        return {
            "start_ms": self.start_ms,
            "session_id": self.session_id,
            "token": self.token,
            "env_id": self.game.env_id,
            "game_id": self.game.game_id,
            "agent": self.agent or None,
            "watching": not self.agent,
            "participant": self.participant,
        }


def resume_secret(key: bytes, session_id: str) -> str:
    """What only the browser that started a session holds (the page keeps it): a second request
    with the same participant id gets that session's seat back only with it. Participant ids are
    not secrets (crowd platforms show them in URLs); derived from the store's key, so a restarted
    manager recognises the secrets it handed out before."""
    return hmac.new(key, b"resume:" + session_id.encode(), hashlib.sha256).hexdigest()[:32]


def same_secret(held: str, offered: object) -> bool:
    """A constant-time comparison of a stored secret with what a request offered."""
    return hmac.compare_digest(held.encode(), str(offered).encode())


class SessionTable:
    """Every game and seated session, and the sessions lost with their game's process."""

    def __init__(self) -> None:
        self.games: dict[str, Game] = {}
        self.sessions: dict[str, SessionEntry] = {}
        #: session id -> (token, why its game ended without it), for games whose process died
        self._lost: OrderedDict[str, tuple[str, str]] = OrderedDict()
        #: the agents people play, per environment, learnt from its first game where not declared
        self._human_agents: dict[str, list[str]] = {}

    # ----------------------------------------------------------------- seats
    def reserve(self, spec: EnvSpec, session_id: str, open_game: Callable[[Game], asyncio.Future[None]]) -> tuple[Game, str | None]:
        """An open seat for ``session_id`` in a joinable game of ``spec``, taken at once; else a
        new game (``open_game`` starts opening it) whose seat is taken when its agents are known.
        Returns (game, agent), with agent None while the game's agents are unknown (await
        ``game.opening`` and reserve again) or for an AI-only game, which the session watches."""
        game = next((g for g in self.games.values() if g.env_id == spec.id and g.joinable and (g.seats is None or g.open_seats())), None)
        if game is None:
            humans = spec.human_agents(spec.agents) if spec.agents is not None else self._human_agents.get(spec.id)
            game = self.new_game(spec.id, dict.fromkeys(humans) if humans else None, open_game)
        if not game.seats:
            return game, None
        agent = game.open_seats()[0]
        game.seats[agent] = session_id
        return game, agent

    def new_game(self, env_id: str, seats: dict[str, SeatHolder] | None, open_game: Callable[[Game], asyncio.Future[None]], joinable: bool = True) -> Game:
        """A game listed at once (the next joiner sees it before it has opened), opening meanwhile."""
        game = Game(uuid.uuid4().hex, env_id, seats, joinable=joinable)
        self.games[game.game_id] = game
        game.opening = open_game(game)
        return game

    def learn_agents(self, game: Game, humans: list[str]) -> None:
        """An opened game told which agents people play (for environments that do not declare them)."""
        if game.seats is None:
            self._human_agents[game.env_id] = list(humans)
            game.seats = dict.fromkeys(humans)

    def seat_gone(self, game: Game, agent: str | None, session_id: str) -> None:
        """The game began or ended before ``session_id`` reached its seat: free it, offer the
        game to nobody else."""
        if agent is not None and game.seats and game.seats.get(agent) == session_id:
            game.seats[agent] = None
        game.joinable = False

    def release(self, game: Game, agent: str | None, session_id: str) -> bool:
        """A Start given up before its session was recorded: the seat it reserved is open again.
        True when nobody holds a seat of the game any more (reserved or seated)."""
        if agent is not None and game.seats and game.seats.get(agent) == session_id and session_id not in self.sessions:
            game.seats[agent] = None
        return not game.seated()

    def add(self, entry: SessionEntry) -> None:
        """Record a seated session; a watcher is also counted among its game's watchers."""
        self.sessions[entry.session_id] = entry
        if not entry.agent:
            entry.game.watchers.add(entry.session_id)

    def resumable(self, participant: str, env_id: str, key: bytes, resume: object) -> SessionEntry | None:
        """The participant's session in a game of ``env_id`` whose resume secret they sent."""
        if not isinstance(resume, str) or not resume:
            return None
        return next(
            (
                entry for entry in self.sessions.values()
                if entry.participant == participant and entry.game.env_id == env_id and same_secret(resume_secret(key, entry.session_id), resume)
            ),
            None,
        )

    def unconnected_since(self, since: float) -> int:
        """Sessions created after ``since`` whose participant has not connected yet."""
        return sum(1 for entry in self.sessions.values() if not entry.connected and entry.created_at > since)

    # ----------------------------------------------------------------- what games report
    def apply_event(self, game_id: str, event: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """What a game's lineup decided: "closed" (no newcomers), "seat_released" (a participant
        is gone; their seat reopens or AI plays it), "ended". Returns the departed sessions' final
        statistics, by session id, for their assignments."""
        game = self.games.get(game_id)
        if game is None:
            return {}
        kind = event["event"]
        if kind == GameEvent.CLOSED:
            game.joinable = False
        elif kind == GameEvent.SEAT_RELEASED:
            agent, session_id = event["agent"], event["session_id"]
            if game.seats and game.seats.get(agent) == session_id:
                game.seats[agent] = None if event["reopened"] else AI_PLAYED
            self.sessions.pop(session_id, None)
            return {session_id: event.get("statistics", {})}
        elif kind == GameEvent.ENDED:
            self.drop(game_id)
            return dict(event.get("statistics", {}))
        return {}

    def drop(self, game_id: str) -> Game | None:
        """Forget a game that ended, with its participants' sessions; returns it (None if unknown)."""
        game = self.games.pop(game_id, None)
        if game is None:
            return None
        for session_id in game.seated_sessions() + list(game.watchers):
            entry = self.sessions.get(session_id)
            if entry is not None and entry.game is game:
                del self.sessions[session_id]
        return game

    def lose(self, game_id: str, reason: str) -> Game | None:
        """The game's process died: its sessions go, each remembered with ``reason``."""
        game = self.games.get(game_id)
        for session_id in game.seated_sessions() if game else ():
            entry = self.sessions.get(session_id)
            if entry is not None:
                self._lost[session_id] = (entry.token, reason)
        forget_oldest(self._lost, LOST_SESSIONS_KEPT)
        return self.drop(game_id)

    # ----------------------------------------------------------------- tokens
    def check(self, session_id: str, token: str) -> SessionEntry:
        """The session whose token this is: ``SessionLost`` (with why) for a session whose game
        was lost, ``UnknownSession`` or ``BadToken`` otherwise."""
        entry = self.sessions.get(session_id)
        if entry is None:
            lost_token, reason = self._lost.get(session_id, ("", ""))
            if lost_token and same_secret(lost_token, token):
                raise SessionLost(reason)
            raise UnknownSession(f"no session {session_id!r}")
        if not same_secret(entry.token, token):
            raise BadToken("the token does not match this session")
        return entry

    def connect(self, session_id: str, token: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """A participant's websocket arrives: check its token (``check``), note the session as
        connected, and return (agent, hello info, frame channel). A watcher's channel shows the
        game read-only, noting who watches."""
        entry = self.check(session_id, token)
        entry.connected = True
        watch = {} if entry.agent else {"watch": entry.participant}
        return entry.agent, entry.game.info, {**entry.game.channel, **watch}

    def entry(self, session_id: str) -> SessionEntry:
        """The session's entry; UnknownSession if there is none."""
        try:
            return self.sessions[session_id]
        except KeyError:
            raise UnknownSession(f"no session {session_id!r}") from None

    # ----------------------------------------------------------------- for operators and tests
    def session_listing(self) -> list[dict[str, Any]]:
        """Every session with its game and seat, tokens left out."""
        return [{**entry.answer(), "created_at": entry.created_at, "token": None} for entry in self.sessions.values()]

    def game_listing(self) -> list[dict[str, Any]]:
        """Every game with its environment, node, seats and whether it takes newcomers."""
        return [
            {"game_id": g.game_id, "env_id": g.env_id, "node_id": g.host.node_id if g.host else None, "seats": g.seat_listing(), "joinable": g.joinable}
            for g in self.games.values()
        ]

    # ----------------------------------------------------------------- adoption
    def adopt(self, host: Host, state: dict[str, Any]) -> Iterator[SessionEntry]:
        """Take back what a host reported of its games and sessions (after a manager restart);
        yields each session re-entered."""
        for game_id, described in state["games"].items():
            seats: dict[str, SeatHolder] = dict(described["seats"])
            seats.update(dict.fromkeys(described["ai_seats"], AI_PLAYED))
            game = Game(game_id, described["env_id"], seats, host, described["info"], described["channel"], joinable=described["phase"] == Phase.WAITING)
            opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            opened.set_result(None)
            game.opening = opened
            self.games[game_id] = game
        for session_id, seat in state["sessions"].items():
            seated = self.games.get(seat["game_id"])
            if seated is None:
                continue
            entry = SessionEntry(session_id, seat["token"], seated, seat["agent"], seat["participant"] or f"{ANONYMOUS}{session_id}")
            self.sessions[session_id] = entry
            yield entry
