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

import logging
import math
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
from crowdplay.config import Settings
from crowdplay.environments import EnvironmentFailed, UnknownEnvironment, get_env, list_envs
from crowdplay.manager import NoCapacity, TaskClosed, TooManyStarts
from crowdplay.web.backend import SessionBackend
from crowdplay.web.bodies import BadBody, json_object
from crowdplay.web.clients import client_address
from crowdplay.web.errors import error, message_of, original
from crowdplay.web.study_routes import study_routes
from crowdplay.web.websocket import play, served_by, watch

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 4096
MAX_FIELD_CHARS = 256
MAX_PARAMS = 32
#: URL parameters that identify a person (crowd platforms' worker ids): never stored raw.
PARTICIPANT_ID_PARAMS = ("participant", "PROLIFIC_PID", "workerId", "worker_id")


def participant_details(body: dict[str, Any], user_agent: str) -> dict[str, Any]:
    """The optional participant fields of a session request, checked: ``participant`` (an id such
    as a crowd-worker id; stored only pseudonymised), ``params`` (the page's URL parameters, string
    to string), ``consented_at`` (epoch seconds)."""
    details: dict[str, Any] = {"user_agent": user_agent[:MAX_FIELD_CHARS]}
    participant = body.get("participant")
    if participant is not None:
        if not isinstance(participant, str) or not 0 < len(participant) <= MAX_FIELD_CHARS:
            raise ValueError(f"'participant' must be a non-empty string of at most {MAX_FIELD_CHARS} characters")
        details["id"] = participant
    params = body.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
        raise ValueError("'params' must be an object of string values (the page's URL parameters)")
    if len(params) > MAX_PARAMS or any(len(k) + len(v) > MAX_FIELD_CHARS for k, v in params.items()):
        raise ValueError(f"'params' takes at most {MAX_PARAMS} entries of at most {MAX_FIELD_CHARS} characters")
    resume = body.get("resume")
    if resume is not None:
        if not isinstance(resume, str) or len(resume) > MAX_FIELD_CHARS:
            raise ValueError(f"'resume' must be the string the session's first answer gave (at most {MAX_FIELD_CHARS} characters)")
        details["resume"] = resume
    if "id" not in details:
        given = next((params[key] for key in PARTICIPANT_ID_PARAMS if params.get(key)), None)  # the first one given wins
        if given is not None:
            details["id"] = given
    details["params"] = {key: value for key, value in params.items() if key not in PARTICIPANT_ID_PARAMS}
    consented_at = body.get("consented_at")
    if consented_at is not None:
        if not isinstance(consented_at, (int, float)) or isinstance(consented_at, bool):
            raise ValueError("'consented_at' must be a time in seconds since the epoch")
        details["consented_at"] = float(consented_at)
    return details


def create_app(backend: SessionBackend, settings: Settings) -> Starlette:
    """The participant app over ``backend`` (Ray's EnvsManager, or the in-process baseline): the routes
    listed above, with session starts rate-limited per client."""
    starts = ClientStarts(settings.session_starts_per_client_per_min, settings.session_starts_per_client_burst)

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    async def environments(request: Request) -> JSONResponse:
        return JSONResponse({"environments": [spec.public() for spec in list_envs()]})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "served_by": served_by()})

    async def create_session(request: Request) -> JSONResponse:
        try:
            data = await json_object(request, MAX_BODY_BYTES)
        except BadBody as bad:
            return error(bad.status, bad.kind, f"{bad.reason}; send JSON like {{\"task_id\": \"SpaceInvaders\"}}")
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
        client = client_address(request.headers, request.client.host if request.client else None, settings.forwarded_hops)
        try:
            starts.take(client)
            session = await backend.create_session(env_id, participant, client)
        except TooManyStarts as exc:
            wait_s = math.ceil(getattr(original(exc), "retry_after_s", 5.0))
            return error(429, "too_many_requests", message_of(exc), headers={"Retry-After": str(wait_s)}, retry_after_s=wait_s)
        except TaskClosed as exc:
            return error(409, "task_closed", message_of(exc))
        except EnvironmentFailed:
            log.exception("could not build the game for a session")
            return error(500, "environment_failed", f"the game {env_id!r} could not be built: its configuration is broken; the server's console says why")
        except NoCapacity as exc:
            return error(503, "no_capacity", f"{message_of(exc)}: the study is at capacity, please try again in a few minutes")
        except Exception:  # a placement or store failure: say so in JSON, keep serving
            log.exception("could not start a session")
            return error(503, "unavailable", "could not start a session right now, please retry")
        session["ws"] = f"/ws/{session['session_id']}?token={session['token']}"
        return JSONResponse(session, status_code=201)

    async def websocket(websocket: WebSocket) -> None:
        await play(websocket, backend, settings)

    async def watch_websocket(websocket: WebSocket) -> None:
        await watch(websocket, backend, settings)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, "http_error", str(exc.detail))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, "internal_error", "the server failed to answer this request; it has been logged")

    # Starlette types a handler as taking any Exception; http_error takes the HTTPException it is registered for.
    handlers: dict[Any, Any] = {HTTPException: http_error, Exception: internal_error}
    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/environments", environments),
            Route("/api/health", health),
            Route("/api/sessions", create_session, methods=["POST"]),
            WebSocketRoute("/ws/{session_id}", websocket),
            WebSocketRoute("/api/admin/games/{game_id}/watch", watch_websocket),
            *study_routes(backend, settings),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers=handlers,
    )
