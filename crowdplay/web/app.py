"""The participant-facing Starlette app: static page, JSON API, and the play websocket.

Routes
    GET  /                       the single-page frontend
    GET  /static/...             its scripts and styles
    GET  /api/environments       the game library
    GET  /api/health             {"ok": true, "served_by": {replica, node}} for load-balancer checks
    POST /api/sessions           {"task_id" (or "env_id"; "auto": the server picks), "participant"?,
                                  "params"?, "consented_at"?, "resume"?}
                                 -> {"session_id", "token", "ws", "task_id", "participant" (pseudonym),
                                     "resume" (with a participant id: send it to get this seat back)}
                                 429 with Retry-After when a client or everyone starts too many
    WS   /ws/{session_id}?token= frames down, input up (docs/protocol.md)
    WS   /api/admin/games/{game_id}/watch?token=<admin token>  a game's frames, read-only (the dashboard)
    ...                          the study's routes: ``crowdplay.web.study_routes``

Every error is JSON: ``{"error": <kind>, "reason": <what to do about it>}``; the kinds are listed
in docs/protocol.md. An unexpected failure answers 500 ``internal_error`` and goes to the log.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from crowdplay.admission import ClientStarts
from crowdplay.arrivals import StartWithdrawn
from crowdplay.config import Settings
from crowdplay.environments import EnvironmentFailed, UnknownEnvironment, get_env, list_envs
from crowdplay.manager import NoCapacity, TaskClosed, TooManyStarts
from crowdplay.web.backend import SessionBackend
from crowdplay.web.bodies import BadBody, json_object
from crowdplay.web.clients import requester
from crowdplay.web.context import AppContext, attach_context, context_of
from crowdplay.web.departures import ClientGone, unless_client_leaves
from crowdplay.web.errors import error, message_of, too_many
from crowdplay.web.limits import BODY_LIMITS
from crowdplay.web.participants import participant_details
from crowdplay.web.study_routes import study_routes
from crowdplay.web.websocket import play, served_by, watch

log = logging.getLogger(__name__)
#: The answer to a session request whose client went away first (nobody reads it; logs and tests do).
GONE = error(499, "client_gone", "the request was given up before it was answered")
STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class SessionRequest:
    """A checked ``POST /api/sessions``: the task (or "auto"), the participant's details and the
    requester's address."""

    env_id: str
    participant: dict[str, Any]
    client: str


async def index(request: Request) -> FileResponse:
    """The single-page frontend."""
    return FileResponse(STATIC / "index.html")


async def environments(request: Request) -> JSONResponse:
    """The game library, for pages that list it."""
    return JSONResponse({"environments": [spec.public() for spec in list_envs()]})


async def health(request: Request) -> JSONResponse:
    """A load balancer's check; names the replica and node that answered, for tracing."""
    return JSONResponse({"ok": True, "served_by": served_by()})


async def create_session(request: Request) -> Response:
    """Start a session (rate-limited per client): its id, token and websocket address, or a JSON error."""
    checked = await read_session_request(request)
    if isinstance(checked, Response):
        return checked
    context, start_id = context_of(request), uuid.uuid4().hex
    try:
        session = await unless_client_leaves(request, start_session(context, checked, start_id))
    except (ClientGone, asyncio.CancelledError) as gone:  # cancelled: Serve gave the request up
        context.backend.withdraw_start(start_id)
        if isinstance(gone, asyncio.CancelledError):
            raise
        return GONE
    if isinstance(session, Response):
        return session
    session["ws"] = f"/ws/{session['session_id']}?token={session['token']}"
    return JSONResponse(session, status_code=201)


async def read_session_request(request: Request) -> SessionRequest | Response:
    """The session request's body checked (size, task, participant fields), or the 4xx answer saying
    what is wrong with it."""
    try:
        data = await json_object(request, BODY_LIMITS["POST /api/sessions"], context_of(request).settings.body_timeout_s)
    except BadBody as bad:
        return bad.answer('send JSON like {"task_id": "SpaceInvaders"}')
    env_id = data.get("task_id", data.get("env_id"))
    if not isinstance(env_id, str):
        return error(400, "missing_env_id", "the body must contain a string 'task_id' (or 'env_id')")
    try:
        if env_id != "auto":
            get_env(env_id)
    except UnknownEnvironment as exc:
        return error(404, "unknown_environment", f"{exc}; GET /api/study lists the tasks")
    try:
        participant = participant_details(data, request.headers.get("user-agent", ""))
    except ValueError as exc:
        return error(400, "invalid_participant", str(exc))
    return SessionRequest(env_id, participant, requester(request, context_of(request).settings.forwarded_hops))


async def start_session(context: AppContext, checked: SessionRequest, start_id: str = "") -> dict[str, Any] | Response:
    """The backend's new session for ``checked`` (``start_id``: to withdraw it by), or the JSON
    error that says why there is none (too many starts, the task closed, a broken game, no
    capacity, a failure elsewhere)."""
    try:
        context.starts.take(checked.client)
        return await context.backend.create_session(checked.env_id, checked.participant, checked.client, start_id)
    except StartWithdrawn:
        return GONE
    except TooManyStarts as exc:
        return too_many(exc, 5.0)
    except TaskClosed as exc:
        return error(409, "task_closed", message_of(exc))
    except EnvironmentFailed:
        log.exception("could not build the game for a session")
        return error(500, "environment_failed", f"the game {checked.env_id!r} could not be built: its configuration is broken; the server's console says why")
    except NoCapacity as exc:
        return error(503, "no_capacity", f"{message_of(exc)}: the study is at capacity, please try again in a few minutes")
    except Exception:  # a placement or store failure: say so in JSON, keep serving
        log.exception("could not start a session")
        return error(503, "unavailable", "could not start a session right now, please retry")


async def play_websocket(websocket: WebSocket) -> None:
    """A participant's play connection (``crowdplay.web.websocket.play``)."""
    context = context_of(websocket)
    await play(websocket, context.backend, context.settings)


async def watch_websocket(websocket: WebSocket) -> None:
    """The dashboard's read-only view of a game (``crowdplay.web.websocket.watch``)."""
    context = context_of(websocket)
    await watch(websocket, context.backend, context.settings)


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own refusals (unknown path, wrong method) in the app's JSON error shape."""
    return error(exc.status_code, "http_error", str(exc.detail))


async def internal_error(request: Request, exc: Exception) -> Response:
    """An unexpected failure: logged with its traceback, answered as JSON without its details."""
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error(500, "internal_error", "the server failed to answer this request; it has been logged")


def create_app(backend: SessionBackend, settings: Settings) -> Starlette:
    """The participant app over ``backend`` (Ray's EnvsManager, or the in-process baseline): the routes
    listed above, with session starts rate-limited per client."""
    # Starlette types a handler as taking any Exception; http_error takes the HTTPException it is registered for.
    handlers: dict[Any, Any] = {HTTPException: http_error, Exception: internal_error}
    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/environments", environments),
            Route("/api/health", health),
            Route("/api/sessions", create_session, methods=["POST"]),
            WebSocketRoute("/ws/{session_id}", play_websocket),
            WebSocketRoute("/api/admin/games/{game_id}/watch", watch_websocket),
            *study_routes(),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers=handlers,
    )
    starts = ClientStarts(settings.session_starts_per_client_per_min, settings.session_starts_per_client_burst)
    attach_context(app, AppContext(backend, settings, starts))
    return app
