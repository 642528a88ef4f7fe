"""What the web layer needs from the session machinery, and its Ray implementation.

The Starlette app only talks to a ``SessionBackend`` (typed methods, one per manager call it
makes); ``RaySessions`` asks the EnvsManager for
sessions and reaches each session's EnvActor over its frame channel (``crowdplay.channel``).
Keeping the seam this narrow lets the same app run without Ray (``crowdplay.web.local``) as the
baseline that measures what the actor path costs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from ray.actor import ActorHandle

from crowdplay.channel import ChannelClient, ChannelStalled
from crowdplay.config import Settings
from crowdplay.engagement import PageReport
from crowdplay.inputs import ParticipantInput


class Attachment(Protocol):
    """One participant's connection to one agent of a running session."""

    agent: str
    hello: dict[str, Any]

    def frames(self) -> AsyncIterator[bytes | str]:
        """The game's stream for this connection: frames (bytes) and events (JSON text) until it ends."""

    async def submit(self, given: ParticipantInput) -> None:
        """The participant's input (held keys, or an action chosen by number) for their agent; the
        game checks it (InvalidAction, SessionEnded)."""

    async def note_page(self, event: PageReport) -> None:
        """A change on the participant's page (hidden, unfocused, a slow connection), for the game
        to record and, if its task says so, pause on, or a round trip the page measured, for the
        game to record; SessionEnded once the game stopped."""

    async def close(self) -> None:
        """The participant's connection ended; the seat is kept for the reconnect grace."""


class StudyBackend(Protocol):
    """What the study's routes and the dashboard ask (``crowdplay.web.study_routes``)."""

    async def task_counts(self) -> dict[str, int]:
        """Completed assignments per task."""

    async def summary(self, session_id: str, token: str) -> dict[str, Any]:
        """The score page's statistics, progress and (once finished) ranking."""

    async def finish(self, session_id: str, token: str) -> dict[str, Any]:
        """The participant is done: their seat is given up; the summary with the ranking."""

    async def completion(self, session_id: str, token: str) -> dict[str, Any]:
        """The completion code or URL once the task's requirements are met."""

    async def note(self, kind: str, text: str, page: str, session_id: str | None, token: str | None, client: str = "") -> None:
        """Store feedback or a problem report from ``client``'s address (within ``crowdplay.note_limits``)."""

    async def overview(self) -> dict[str, Any]:
        """Everything the dashboard and /metrics show."""

    async def start_ai_game(self, env_id: str) -> dict[str, Any]:
        """Start an AI-only game for the dashboard to watch."""

    async def end_participant_session(self, session_id: str) -> dict[str, Any]:
        """The dashboard ends a participant's game."""


class SessionBackend(StudyBackend, Protocol):
    """Everything the participant app asks of the session machinery: sessions, their connections and
    the study's calls."""

    async def create_session(self, env_id: str, participant: dict[str, Any] | None = None, client: str = "", start_id: str = "") -> dict[str, Any]:
        """``client``: the requester's address (``crowdplay.web.clients``), for rate limits;
        ``start_id``: the name to withdraw the request by (``StartWithdrawn`` if it was)."""

    def withdraw_start(self, start_id: str) -> None:
        """The client of the session request ``start_id`` went away before its answer: it is not
        fulfilled, and a session it got already gives up its seat (not waited for)."""

    async def attach(self, session_id: str, token: str) -> Attachment:
        """The connection to a session's seat; UnknownSession, BadToken or SessionLost when there is none to give."""

    async def watch(self, game_id: str) -> Attachment:
        """A read-only view of a running game for the dashboard (``UnknownGame`` if none)."""


class RayAttachment:
    """A participant's channel to their seat, or (``agent`` "") a watcher's read-only one, whose
    inputs go nowhere."""

    def __init__(self, manager: ActorHandle[Any], session_id: str, agent: str, hello: dict[str, Any], channel: ChannelClient) -> None:
        self._manager = manager
        self._session_id = session_id
        self._channel = channel
        self.agent = agent
        self.hello = hello

    async def frames(self) -> AsyncIterator[bytes | str]:
        """The frame channel's messages; a stalled channel is reported to the EnvsManager (its
        node takes no new games until it answers) before ``ChannelStalled`` goes on up."""
        try:
            async for message in self._channel.messages():
                yield message
        except ChannelStalled:
            if self._session_id:
                self._manager.channel_stalled.remote(self._session_id)
            raise

    async def submit(self, given: ParticipantInput) -> None:
        """Sent to the game over the channel, which answers a refused input with an ``error`` event in
        the stream; a watcher's inputs go nowhere."""
        if self.agent:
            await self._channel.send_input(given)

    async def note_page(self, event: PageReport) -> None:
        """Sent to the game over the channel; a watcher's page changes go nowhere."""
        if self.agent:
            await self._channel.send_page(event)

    async def close(self) -> None:
        """The game notices the channel closing and keeps the seat for the reconnect grace."""
        await self._channel.close()


class RaySessions:
    """Sessions managed by the cluster's EnvsManager."""

    def __init__(self, manager: ActorHandle[Any], settings: Settings) -> None:
        self.manager = manager
        self.settings = settings

    async def create_session(self, env_id: str, participant: dict[str, Any] | None = None, client: str = "", start_id: str = "") -> dict[str, Any]:
        """Forwarded to the EnvsManager, which places the session and gives it a seat."""
        return await self.manager.create_session.remote(env_id, participant, client, start_id)  # type: ignore[no-any-return]

    def withdraw_start(self, start_id: str) -> None:
        """Told to the EnvsManager, not waited for (``SessionBackend.withdraw_start``)."""
        self.manager.withdraw_start.remote(start_id)

    async def task_counts(self) -> dict[str, int]:
        """Forwarded to the EnvsManager (``StudyBackend.task_counts``)."""
        counts: dict[str, int] = await self.manager.task_counts.remote()
        return counts

    async def summary(self, session_id: str, token: str) -> dict[str, Any]:
        """Forwarded to the EnvsManager (``StudyBackend.summary``)."""
        return await self.manager.summary.remote(session_id, token)  # type: ignore[no-any-return]

    async def finish(self, session_id: str, token: str) -> dict[str, Any]:
        """Forwarded to the EnvsManager (``StudyBackend.finish``)."""
        return await self.manager.finish.remote(session_id, token)  # type: ignore[no-any-return]

    async def completion(self, session_id: str, token: str) -> dict[str, Any]:
        """Forwarded to the EnvsManager (``StudyBackend.completion``)."""
        return await self.manager.completion.remote(session_id, token)  # type: ignore[no-any-return]

    async def note(self, kind: str, text: str, page: str, session_id: str | None, token: str | None, client: str = "") -> None:
        """Forwarded to the EnvsManager (``StudyBackend.note``)."""
        await self.manager.note.remote(kind, text, page, session_id, token, client)

    async def overview(self) -> dict[str, Any]:
        """Forwarded to the EnvsManager (``StudyBackend.overview``)."""
        return await self.manager.overview.remote()  # type: ignore[no-any-return]

    async def start_ai_game(self, env_id: str) -> dict[str, Any]:
        """Forwarded to the EnvsManager (``StudyBackend.start_ai_game``)."""
        return await self.manager.start_ai_game.remote(env_id)  # type: ignore[no-any-return]

    async def end_participant_session(self, session_id: str) -> dict[str, Any]:
        """Forwarded to the EnvsManager (``StudyBackend.end_participant_session``)."""
        return await self.manager.end_participant_session.remote(session_id)  # type: ignore[no-any-return]

    async def attach(self, session_id: str, token: str) -> RayAttachment:
        """The seat's address from the EnvsManager, then a frame channel to its EnvActor."""
        agent, hello, address = await self.manager.attach.remote(session_id, token)
        try:
            channel = await ChannelClient.connect(
                address["host"], address["port"], address["secret"], agent, session_id, address.get("watch"), self.settings.channel_stall_s,
            )
        except ChannelStalled:
            self.manager.channel_stalled.remote(session_id)
            raise
        return RayAttachment(self.manager, session_id, agent, hello, channel)

    async def watch(self, game_id: str) -> RayAttachment:
        """A watcher's frame channel to the game's EnvActor, at the address the EnvsManager gives."""
        hello, address = await self.manager.watch_game.remote(game_id)
        channel = await ChannelClient.connect(address["host"], address["port"], address["secret"], "", "", address["watch"], self.settings.channel_stall_s)
        return RayAttachment(self.manager, "", "", hello, channel)
