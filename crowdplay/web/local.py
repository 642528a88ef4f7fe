"""Sessions hosted in the web process itself, without Ray: the baseline for the cost of Ray hops.

``python -m crowdplay.web.local --port 8001`` serves the same Starlette app as the Serve ingress,
with every LiveEnv running in the app's own event loop. It exists so the load benchmark can measure
what the actor path costs against the same code with no actor in between; deployments use Serve.
"""

from __future__ import annotations

import argparse
import hmac
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

from crowdplay.config import Settings
from crowdplay.engagement import PageReport
from crowdplay.environments import get_env
from crowdplay.inputs import ParticipantInput
from crowdplay.manager import BadToken, UnknownGame, UnknownSession
from crowdplay.realtime import LiveEnv


def no_study() -> UnknownSession:
    """What every study request gets from the baseline, which runs games without a study."""
    return UnknownSession("the local baseline keeps no assignments (it runs without a study)")


class LocalAttachment:
    """A participant's connection to an in-process game; closing it ends the game."""

    def __init__(self, sessions: LocalSessions, session_id: str, live: LiveEnv) -> None:
        self._sessions = sessions
        self._session_id = session_id
        self._live = live
        self.agent = live.agents[0]
        self.hello = live.describe()

    async def frames(self) -> AsyncIterator[bytes | str]:
        """Start the game (the baseline has no waiting room) and stream it."""
        self._live.start()  # the baseline has no waiting room: play begins on connecting
        async for message in self._live.stream(self.agent):
            yield message

    async def submit(self, given: ParticipantInput) -> None:
        """Straight to the LiveEnv."""
        self._live.submit(self.agent, given)

    async def note_page(self, event: PageReport) -> None:
        """Straight to the LiveEnv."""
        self._live.note_page(self.agent, event)

    async def close(self) -> None:
        """End the session: the baseline keeps no seat for a reconnect."""
        self._sessions.end(self._session_id)


class LocalSessions:
    """In-process sessions; a session ends when its participant disconnects."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions: dict[str, tuple[str, LiveEnv]] = {}

    async def create_session(self, env_id: str, participant: dict[str, Any] | None = None, client: str = "", start_id: str = "") -> dict[str, Any]:
        """(The baseline records nothing and limits nothing: ``participant`` and ``client`` are not kept.)"""
        session_id, token = uuid.uuid4().hex, secrets.token_urlsafe(24)
        live = LiveEnv(get_env(env_id), secrets.randbelow(2**31), self.settings)
        self.sessions[session_id] = (token, live)
        return {"session_id": session_id, "token": token, "env_id": env_id, "agent": live.agents[0]}

    def withdraw_start(self, start_id: str) -> None:
        """Nothing: the baseline answers at once, and holds a session that nobody joins as the
        in-memory game it is (it measures the play path, not admission)."""

    async def attach(self, session_id: str, token: str) -> LocalAttachment:
        """The session's game; UnknownSession or BadToken as for the Ray path."""
        if session_id not in self.sessions:
            raise UnknownSession(f"no session {session_id!r}")
        expected, live = self.sessions[session_id]
        if not hmac.compare_digest(expected.encode(), str(token).encode()):
            raise BadToken("the token does not match this session")
        return LocalAttachment(self, session_id, live)

    async def watch(self, game_id: str) -> LocalAttachment:
        """Always UnknownGame: the baseline has no dashboard."""
        raise UnknownGame("the in-process baseline has no dashboard to watch games from")

    # The baseline runs games without a study: no task is ever complete or closed, and it keeps
    # no assignments.
    async def task_counts(self) -> dict[str, int]:
        """None: the baseline runs no study."""
        return {}

    async def overview(self) -> dict[str, Any]:
        """An empty overview of the same shape, so the dashboard and /metrics still render."""
        return {"study": "local baseline", "generated_at": 0.0, "totals": {}, "tasks": [], "nodes": [], "games": [], "histograms": {}, "completions_timeline": []}

    async def summary(self, session_id: str, token: str) -> dict[str, Any]:
        """Refused: the baseline runs no study."""
        raise no_study()

    async def finish(self, session_id: str, token: str) -> dict[str, Any]:
        """Refused: the baseline runs no study."""
        raise no_study()

    async def completion(self, session_id: str, token: str) -> dict[str, Any]:
        """Refused: the baseline runs no study."""
        raise no_study()

    async def note(self, kind: str, text: str, page: str, session_id: str | None, token: str | None, client: str = "") -> None:
        """Refused: the baseline runs no study."""
        raise no_study()

    async def start_ai_game(self, env_id: str) -> dict[str, Any]:
        """Refused: the baseline runs no study."""
        raise no_study()

    async def end_participant_session(self, session_id: str) -> dict[str, Any]:
        """Refused: the baseline runs no study."""
        raise no_study()

    def end(self, session_id: str) -> None:
        """Stop the session's game and forget it (nothing if it already ended)."""
        _, live = self.sessions.pop(session_id, (None, None))
        if live is not None:
            live.stop("the participant left")


def main() -> None:
    """``python -m crowdplay.web.local``: serve the app with in-process sessions until interrupted."""
    import uvicorn

    from crowdplay.web.app import create_app

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    settings = Settings.from_env()
    uvicorn.run(create_app(LocalSessions(settings), settings), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
