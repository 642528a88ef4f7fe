"""The study's HTTP API: the library and consent, a session's progress, finishing, completion,
feedback and problem reports, and the researcher's dashboard.

    GET  /api/study                          title, consent (HTML + version), assignment mode, tasks
    GET  /api/tasks/{task_id}/image          a task's library image (a file from the study config)
    GET  /api/sessions/{id}/summary?token=   statistics, progress, completion, bonus (+ ranking once finished)
    POST /api/sessions/{id}/finish?token=    stop playing; the summary with the ranking
    GET  /api/sessions/{id}/completion?token=  {"code"} or {"redirect"}; 403 until the requirements are met
    POST /api/feedback                       {"session_id", "token", "text"}
    POST /api/report                         {"text", "page", "session_id"?, "token"?}: works without a session
    GET  /admin                              the dashboard page (data only with the admin token)
    GET  /api/admin/overview                 Authorization: Bearer <admin token>
    POST /api/admin/sessions/{id}/end        end that session's game
    POST /api/admin/games                    {"env_id"}: start a game of an AI-only environment (to watch)
    GET  /metrics                            the overview as Prometheus metrics (same token)

The server decides completion from the statistics its EnvActors computed; nothing the page sends
can claim it.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from crowdplay.assignments import BadToken, NoCompletion, NotComplete, UnknownSession
from crowdplay.config import Settings
from crowdplay.environments import UnknownEnvironment
from crowdplay.manager import NotAIOnly
from crowdplay.study import current_study
from crowdplay.web.backend import StudyBackend
from crowdplay.web.bodies import BadBody, json_object
from crowdplay.web.errors import error, message_of, original
from crowdplay.web.metrics import exposition

MAX_NOTE_CHARS = 4000
log = logging.getLogger(__name__)
STATIC = os.path.join(os.path.dirname(__file__), "static")


async def _answer(work: Awaitable[object], status: int = 200) -> Response:
    """Run a manager call and turn the study's exceptions into JSON errors with fixed reasons (an
    exception's own text may name ids from the request; a failure's details go to the log)."""
    try:
        return JSONResponse(await work, status_code=status)
    except NotComplete as exc:
        progress = getattr(original(exc), "summary", {}).get("progress", {})
        return error(403, "not_complete", "the task's requirements are not met yet; keep playing", progress=progress)
    except BadToken:
        return error(403, "bad_token", "the token does not match this session")
    except UnknownSession:
        return error(404, "not_found", "no such session: it ended or never existed; start again from the study's page")
    except UnknownEnvironment:
        return error(404, "not_found", "no such task; GET /api/study lists the tasks")
    except NoCompletion as exc:
        return error(404, "no_completion", message_of(exc))
    except Exception:  # the manager or the store failed: keep serving, say so, log the details
        log.exception("a study request failed")
        return error(503, "unavailable", "the server could not answer right now; please retry in a moment")


def admin_token(settings: Settings) -> str:
    """The token the dashboard and admin API require: the study's, else ``CROWDPLAY_ADMIN_TOKEN``; empty
    disables them."""
    return current_study().admin_token or settings.admin_token


def study_routes(backend: StudyBackend, settings: Settings) -> list[Route]:
    """The study's and the dashboard's routes over ``backend`` (the EnvsManager's methods)."""

    async def study(request: Request) -> JSONResponse:
        current = current_study()
        counts = await backend.task_counts()
        now = time.time()
        return JSONResponse(
            {
                "title": current.title,
                "assignment": current.assignment,
                "consent": {"html": current.consent_html, "version": current.consent_version},
                "tasks": [task.public(counts.get(task.id, 0), now) for task in current.tasks.values()],
            }
        )

    async def task_image(request: Request) -> Response:
        task = current_study().tasks.get(request.path_params["task_id"])
        if task is None or task.image_file is None:
            return error(404, "not_found", "this task has no image file")
        return FileResponse(task.image_file)

    def session_call(method: Callable[[str, str], Awaitable[dict[str, Any]]]) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            token = request.query_params.get("token", "")
            return await _answer(method(request.path_params["session_id"], token))

        return handle

    async def note(request: Request, kind: str) -> Response:
        try:
            data = await json_object(request, 2 * MAX_NOTE_CHARS, empty={})
        except BadBody as bad:
            return error(bad.status, bad.kind, bad.reason)
        try:
            text = data.get("text")
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_NOTE_CHARS:
                raise ValueError(f"'text' must be a non-empty string of at most {MAX_NOTE_CHARS} characters")
            page = str(data.get("page", ""))[:200]
            session_id, token = data.get("session_id"), data.get("token")
            if kind == "feedback" and not isinstance(session_id, str):
                raise ValueError("feedback needs the 'session_id' and 'token' of the session it is about")
        except ValueError as exc:
            return error(400, "invalid_note", str(exc))
        return await _answer(backend.note(kind, text.strip(), page, session_id if isinstance(session_id, str) else None, token), status=201)

    async def feedback(request: Request) -> Response:
        return await note(request, "feedback")

    async def report(request: Request) -> Response:
        return await note(request, "report")

    def authorized(request: Request) -> JSONResponse | None:
        expected = admin_token(settings)
        if not expected:
            return error(403, "admin_disabled", "no admin token is configured (CROWDPLAY_ADMIN_TOKEN or the study's admin_token)")
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), expected.encode()):
            return error(401, "unauthorized", "send the admin token as 'Authorization: Bearer <token>'")
        return None

    async def admin_page(request: Request) -> FileResponse:
        return FileResponse(os.path.join(STATIC, "admin.html"))

    async def overview(request: Request) -> Response:
        return authorized(request) or JSONResponse(await backend.overview())

    async def metrics(request: Request) -> Response:
        refusal = authorized(request)
        if refusal is not None:
            return refusal
        body, content_type = exposition(await backend.overview(), request.headers.get("accept"))
        return Response(body, media_type=content_type)

    async def start_ai_game(request: Request) -> Response:
        refusal = authorized(request)
        if refusal is not None:
            return refusal
        try:
            data = await json_object(request, 1000)
        except BadBody as bad:
            return error(bad.status, bad.kind, bad.reason)
        env_id = data.get("env_id")
        if not isinstance(env_id, str):
            return error(400, "missing_env_id", "the body must contain a string 'env_id': an AI-only environment")
        try:
            return JSONResponse(await backend.start_ai_game(env_id), status_code=201)
        except UnknownEnvironment:
            return error(404, "not_found", f"no environment {env_id!r}")
        except NotAIOnly as exc:
            return error(409, "not_ai_only", message_of(exc))

    async def end_session(request: Request) -> Response:
        refusal = authorized(request)
        if refusal is not None:
            return refusal
        return await _answer(backend.end_participant_session(request.path_params["session_id"]))

    return [
        Route("/api/study", study),
        Route("/api/tasks/{task_id}/image", task_image),
        Route("/api/sessions/{session_id}/summary", session_call(backend.summary)),
        Route("/api/sessions/{session_id}/finish", session_call(backend.finish), methods=["POST"]),
        Route("/api/sessions/{session_id}/completion", session_call(backend.completion)),
        Route("/api/feedback", feedback, methods=["POST"]),
        Route("/api/report", report, methods=["POST"]),
        Route("/admin", admin_page),
        Route("/api/admin/overview", overview),
        Route("/api/admin/sessions/{session_id}/end", end_session, methods=["POST"]),
        Route("/api/admin/games", start_ai_game, methods=["POST"]),
        Route("/metrics", metrics),
    ]
