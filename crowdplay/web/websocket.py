"""The participant's websocket: hello, then frames down and input up until either side ends.

Two tasks share the socket: one forwards the EnvActor's stream (frames and events) and one reads
the participant's input. Any bad message ends the connection with an ``error`` message and a close
code; nothing a client sends can raise past this handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from crowdplay import protocol
from crowdplay.channel import ChannelStalled
from crowdplay.config import Settings
from crowdplay.engagement import PageEvent
from crowdplay.environments import InvalidAction
from crowdplay.inputs import ParticipantInput
from crowdplay.manager import HOST_LOST, SERVER_UNREACHABLE, BadToken, SessionLost, UnknownGame, UnknownSession
from crowdplay.rate_limit import TokenBucket
from crowdplay.realtime import SessionEnded
from crowdplay.web.backend import Attachment, SessionBackend
from crowdplay.web.metrics import BROWSER_LATENCY
from crowdplay.web.study_routes import admin_token
from crowdplay.web.tcp import set_nodelay_for

log = logging.getLogger(__name__)


async def close_with_error(websocket: WebSocket, reason: str, code: int) -> None:
    """Tell the page why (an ``error`` message) and close with ``code``, if the socket is still open."""
    if websocket.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await websocket.send_text(protocol.text("error", reason=reason, code=code))
            await websocket.close(code, reason[:120])


@functools.cache
def served_by() -> dict[str, Any]:
    """Which replica and node serve this connection (for operators, and for tests that check
    participants on different replicas share a game)."""
    try:
        import ray
        from ray import serve

        return {"replica": serve.get_replica_context().replica_tag, "node": ray.get_runtime_context().get_node_id()}
    except Exception:  # not inside a Serve replica (the in-process baseline)
        return {"replica": "local", "node": None}


def origin_allowed(websocket: WebSocket, settings: Settings) -> bool:
    """A browser's websocket must come from the study's own page (same host) or a configured
    origin, so another site cannot open a participant's session in their browser. Clients
    without an Origin header are not browsers and are judged by their token alone."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    allowed = {entry.strip().rstrip("/") for entry in settings.allowed_origins.split(",") if entry.strip()}
    if origin.rstrip("/") in allowed or "*" in allowed:
        return True
    host = websocket.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host


async def play(websocket: WebSocket, backend: SessionBackend, settings: Settings) -> None:
    """The play websocket's handler: check the origin and the session's token, send the hello, then
    forward frames and input until either side ends."""
    await websocket.accept()
    set_nodelay_for(websocket.scope)
    session_id = websocket.path_params["session_id"]
    if not origin_allowed(websocket, settings):
        await close_with_error(websocket, "this page's origin may not open game sessions", protocol.CLOSE_UNAUTHORIZED)
        return
    try:
        attachment = await backend.attach(session_id, websocket.query_params.get("token", ""))
    except SessionLost as lost:  # its game server died: say so, the page offers a new start
        await close_with_error(websocket, lost.reason, protocol.CLOSE_SESSION_ENDED)
        return
    except UnknownSession:
        await close_with_error(websocket, f"no running session {session_id!r}", protocol.CLOSE_UNKNOWN_SESSION)
        return
    except BadToken:
        await close_with_error(websocket, "the session token is missing or wrong", protocol.CLOSE_UNAUTHORIZED)
        return
    except ChannelStalled:  # its machine stopped answering (the backend told the EnvsManager)
        await close_with_error(websocket, SERVER_UNREACHABLE, protocol.CLOSE_SERVER_UNREACHABLE)
        return
    await _converse(websocket, attachment, {"session_id": session_id}, functools.partial(_read_input, websocket, attachment, settings))


def hello_fields(attachment: Attachment) -> dict[str, Any]:
    """The game's description for this connection: its agent (None and ``watching`` for a
    read-only view) and that agent's instructions (a watcher gets the first agent's)."""
    instructions = attachment.hello["instructions"]
    agent = attachment.agent or None
    text = instructions.get(agent, "") if agent else next(iter(instructions.values()), "")
    return {**attachment.hello, "agent": agent, "watching": agent is None, "instructions": text}


async def watch(websocket: WebSocket, backend: SessionBackend, settings: Settings) -> None:
    """The dashboard's read-only view of a running game (``?token=`` the admin token: a browser
    cannot set headers on a websocket): ``hello`` with ``watching``, then the game's frames and
    events. Nothing the viewer sends reaches the game."""
    await websocket.accept()
    set_nodelay_for(websocket.scope)
    expected = admin_token(settings)
    given = websocket.query_params.get("token", "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        await close_with_error(websocket, "watching a game needs the admin token (?token=)", protocol.CLOSE_UNAUTHORIZED)
        return
    game_id = websocket.path_params["game_id"]
    try:
        attachment = await backend.watch(game_id)
    except UnknownGame:
        await close_with_error(websocket, f"no running game {game_id!r}", protocol.CLOSE_UNKNOWN_SESSION)
        return
    except ChannelStalled:
        await close_with_error(websocket, SERVER_UNREACHABLE, protocol.CLOSE_SERVER_UNREACHABLE)
        return
    except (ConnectionError, OSError):
        await close_with_error(websocket, "the game ended", protocol.CLOSE_SESSION_ENDED)
        return
    await _converse(websocket, attachment, {"session_id": None, "game_id": game_id}, functools.partial(_ignore_input, websocket))


async def _converse(websocket: WebSocket, attachment: Attachment, opening: dict[str, Any], receive: Callable[[], Awaitable[None]]) -> None:
    """The part a player's and a watcher's connection share once attached: the hello (``opening``
    first, then who serves it and the game's description), then the game's stream forwarded while
    ``receive`` reads the socket; when either side ends, the stream stops and the attachment closes."""
    try:
        await websocket.send_text(protocol.text("hello", **opening, served_by=served_by(), **hello_fields(attachment)))
        forwarder = asyncio.create_task(_forward_frames(websocket, attachment))
        try:
            await receive()
        finally:
            forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await forwarder
    finally:
        await attachment.close()


async def _ignore_input(websocket: WebSocket) -> None:
    """A watcher's socket is read only to notice it closing: a viewer has nothing to say to the game."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _forward_frames(websocket: WebSocket, attachment: Attachment) -> None:
    try:
        async for message in attachment.frames():
            if isinstance(message, bytes):
                await websocket.send_bytes(message)
                continue
            await websocket.send_text(message)
            event = json.loads(message)
            if event["type"] == "end":
                await websocket.close(protocol.CLOSE_SESSION_ENDED, "session ended")
                return
            if event["type"] == "error":  # the EnvActor refused an input
                await websocket.close(event["code"], event["reason"][:120])
                return
    except ChannelStalled as stalled:
        # Its machine stopped answering without closing anything (a partition, a stuck VM): say
        # so now rather than wait for Ray to declare the node dead (the backend told the EnvsManager).
        log.warning("frame channel stalled: %s", stalled)
        await close_with_error(websocket, SERVER_UNREACHABLE, protocol.CLOSE_SERVER_UNREACHABLE)
        return
    except Exception as error:
        if websocket.application_state != WebSocketState.CONNECTED or websocket.client_state != WebSocketState.CONNECTED:
            return  # the participant went away while we were sending
        log.warning("frame stream ended abnormally: %s", type(error).__name__)
    # The stream failed, or ended without the game's "end" (a killed process's socket just closes):
    # the EnvActor is gone. Tell the participant instead of going silent.
    await close_with_error(websocket, HOST_LOST, protocol.CLOSE_INTERNAL_ERROR)


async def _read_input(websocket: WebSocket, attachment: Attachment, settings: Settings) -> None:
    # A browser sends a message per key change (tens a second at most).
    limit = TokenBucket(settings.max_messages_per_s, 2 * settings.max_messages_per_s)
    while True:
        event = await websocket.receive()
        if event["type"] == "websocket.disconnect":
            return
        if not limit.allow():
            await close_with_error(websocket, f"more than {settings.max_messages_per_s:.0f} messages a second", protocol.CLOSE_POLICY_VIOLATION)
            return
        raw: str | bytes = event["text"] if event.get("text") is not None else event.get("bytes", b"")
        try:
            message = protocol.parse_client_message(raw, settings.max_message_bytes)
            if isinstance(message, ParticipantInput):
                await attachment.submit(dataclasses.replace(message, ingress_at=time.time()))
            elif isinstance(message, PageEvent):  # hidden, unfocused, a slow connection: the game records it and may pause
                await attachment.note_page(message)
            elif isinstance(message, protocol.LatencyReport):  # the page's key-to-frame delays, for the dashboard
                BROWSER_LATENCY.observe(message.key_to_frame_ms, served_by())
            else:
                await websocket.send_text(protocol.text("pong", t=message.t))
                if message.round_trip is not None:  # the page's previous round trip, for the game to record
                    await attachment.note_page(message.round_trip)
        except protocol.ProtocolError as error:
            await close_with_error(websocket, error.reason, error.close_code)
            return
        except InvalidAction as error:
            await close_with_error(websocket, str(error), protocol.CLOSE_POLICY_VIOLATION)
            return
        except SessionEnded:
            await close_with_error(websocket, "the session has ended", protocol.CLOSE_SESSION_ENDED)
            return
        except ChannelStalled:  # the stream's side tells the participant and the EnvsManager
            return
        except (ConnectionError, OSError):
            await close_with_error(websocket, HOST_LOST, protocol.CLOSE_INTERNAL_ERROR)
            return
