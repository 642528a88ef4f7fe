"""The study's HTTP API: the library and consent, a session's progress, finishing, completion,
feedback and problem reports, and the researcher's dashboard.

    GET  /api/study                          title, consent (HTML + version), assignment mode, tasks
    GET  /api/tasks/{task_id}/image          a task's library image (a file from the study config)
    GET  /api/tasks/{task_id}/controls       per agent: keys, action names, instructions (the task page, before Start)
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

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Awaitable
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from crowdplay import hello
from crowdplay.assignments import BadToken, NoCompletion, NotComplete, UnknownSession
from crowdplay.config import Settings
from crowdplay.environments import UnknownEnvironment
from crowdplay.manager import NotAIOnly
from crowdplay.note_limits import NoteCapReached, TooManyNotes
from crowdplay.study import current_study
from crowdplay.web.bodies import BadBody, json_object
from crowdplay.web.clients import requester
from crowdplay.web.context import context_of
from crowdplay.web.errors import error, message_of, original, too_many
from crowdplay.web.limits import BODY_LIMITS
from crowdplay.web.metrics import exposition, with_browser_latency

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
    except TooManyNotes as exc:
        return too_many(exc, 60.0)
    except NoteCapReached as exc:
        return error(409, "note_limit", message_of(exc))
    except Exception:  # the manager or the store failed: keep serving, say so, log the details
        log.exception("a study request failed")
        return error(503, "unavailable", "the server could not answer right now; please retry in a moment")


def admin_token(settings: Settings) -> str:
    """The token the dashboard and admin API require: the study's, else ``CROWDPLAY_ADMIN_TOKEN``; empty
    disables them."""
    return current_study().admin_token or settings.admin_token


async def study(request: Request) -> JSONResponse:
    """The study's page data: its title, consent and tasks (with their completed counts)."""
    current = current_study()
    counts = await context_of(request).backend.task_counts()
    now = time.time()
    return JSONResponse(
        {
            "title": current.title,
            "assignment": current.assignment,
            "titles": current.titles,
            "consent": {"html": current.consent_html, "version": current.consent_version, "by_language": current.consents},
            "touch": current.touch,
            "score_page": {"auto_continue_s": current.auto_continue_s, "percentile_from": current.percentile_from},
            "language": current.language,
            "languages": current.languages,
            "texts": current.texts,
            "tasks": [task.public(counts.get(task.id, 0), now) for task in current.tasks.values()],
        }
    )


async def task_controls(request: Request) -> Response:
    """A task's keys, action names and instructions per agent, for the task page before Start
    (``crowdplay.hello.task_controls``: the first answer builds the game once, off the event loop)."""
    task = current_study().tasks.get(request.path_params["task_id"])
    if task is None:
        return error(404, "not_found", "no such task")
    try:
        return JSONResponse(await asyncio.to_thread(hello.task_controls, task.spec))
    except Exception as failure:  # the researcher's environment failed to build: the page plays on without the list
        log.warning("controls of task %r: %s: %s", task.id, type(failure).__name__, failure)
        return error(503, "unavailable", f"the game of task {task.id!r} could not be built to list its controls")


async def task_image(request: Request) -> Response:
    """A task's library image, served from the file the study config names."""
    task = current_study().tasks.get(request.path_params["task_id"])
    if task is None or task.image_file is None:
        return error(404, "not_found", "this task has no image file")
    return FileResponse(task.image_file)


def session_of(request: Request) -> tuple[str, str]:
    """The session a participant's request is about and the token that proves it is theirs."""
    return request.path_params["session_id"], request.query_params.get("token", "")


async def summary(request: Request) -> Response:
    """The score page's statistics, progress and completion (``StudyBackend.summary``)."""
    return await _answer(context_of(request).backend.summary(*session_of(request)))


async def finish(request: Request) -> Response:
    """The participant stops playing (``StudyBackend.finish``)."""
    return await _answer(context_of(request).backend.finish(*session_of(request)))


async def completion(request: Request) -> Response:
    """The completion code or URL, once earned (``StudyBackend.completion``)."""
    return await _answer(context_of(request).backend.completion(*session_of(request)))


def note_fields(data: dict[str, Any], kind: str) -> tuple[str, str, str | None, Any]:
    """A note's text (stripped), page, session id and token, checked: ``ValueError`` names what is
    wrong. Feedback is about a session; a problem report may come from a page without one. The
    text's length is bounded by the body's (``crowdplay.web.limits``) alone."""
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("'text' must be a non-empty string")
    page = str(data.get("page", ""))[:200]
    session_id, token = data.get("session_id"), data.get("token")
    if kind == "feedback" and not isinstance(session_id, str):
        raise ValueError("feedback needs the 'session_id' and 'token' of the session it is about")
    return text.strip(), page, session_id if isinstance(session_id, str) else None, token


async def note(request: Request, kind: str) -> Response:
    """Store a note of ``kind`` ("feedback" or "report") from the request's JSON body."""
    try:
        data = await json_object(request, BODY_LIMITS[f"POST /api/{kind}"], context_of(request).settings.body_timeout_s, empty={})
    except BadBody as bad:
        return bad.answer()
    try:
        text, page, session_id, token = note_fields(data, kind)
    except ValueError as exc:
        return error(400, "invalid_note", str(exc))
    client = requester(request, context_of(request).settings.forwarded_hops)
    return await _answer(context_of(request).backend.note(kind, text, page, session_id, token, client), status=201)


async def feedback(request: Request) -> Response:
    """A participant's feedback on their session."""
    return await note(request, "feedback")


async def report(request: Request) -> Response:
    """A problem report, which works even when no session could start."""
    return await note(request, "report")


def refusal(request: Request) -> JSONResponse | None:
    """None when the request carries the admin token; else the 403 (no token configured) or 401
    (wrong or missing token) answer. Compared in constant time."""
    expected = admin_token(context_of(request).settings)
    if not expected:
        return error(403, "admin_disabled", "no admin token is configured (CROWDPLAY_ADMIN_TOKEN or the study's admin_token)")
    given = request.headers.get("authorization", "")
    if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), expected.encode()):
        return error(401, "unauthorized", "send the admin token as 'Authorization: Bearer <token>'")
    return None


async def admin_page(request: Request) -> FileResponse:
    """The dashboard page; it fetches its data with the admin token the researcher types in."""
    return FileResponse(os.path.join(STATIC, "admin.html"))


async def overview(request: Request) -> Response:
    """Everything the dashboard shows, for the admin."""
    return refusal(request) or JSONResponse(with_browser_latency(await context_of(request).backend.overview()))


async def metrics(request: Request) -> Response:
    """The overview as Prometheus metrics, for the admin's scraper."""
    refused = refusal(request)
    if refused is not None:
        return refused
    body, content_type = exposition(with_browser_latency(await context_of(request).backend.overview()), request.headers.get("accept"))
    return Response(body, media_type=content_type)


async def start_ai_game(request: Request) -> Response:
    """The admin starts a game of an AI-only environment, to watch it on the dashboard."""
    refused = refusal(request)
    if refused is not None:
        return refused
    try:
        data = await json_object(request, BODY_LIMITS["POST /api/admin/games"], context_of(request).settings.body_timeout_s)
    except BadBody as bad:
        return bad.answer()
    env_id = data.get("env_id")
    if not isinstance(env_id, str):
        return error(400, "missing_env_id", "the body must contain a string 'env_id': an AI-only environment")
    try:
        return JSONResponse(await context_of(request).backend.start_ai_game(env_id), status_code=201)
    except UnknownEnvironment:
        return error(404, "not_found", f"no environment {env_id!r}")
    except NotAIOnly as exc:
        return error(409, "not_ai_only", message_of(exc))


async def end_session(request: Request) -> Response:
    """The admin ends a participant's game from the dashboard."""
    refused = refusal(request)
    if refused is not None:
        return refused
    return await _answer(context_of(request).backend.end_participant_session(request.path_params["session_id"]))


def study_routes() -> list[Route]:
    """The study's and the dashboard's routes; their handlers use the app's backend
    (``crowdplay.web.context``)."""
    return [
        Route("/api/study", study),
        Route("/api/tasks/{task_id}/image", task_image),
        Route("/api/tasks/{task_id}/controls", task_controls),
        Route("/api/sessions/{session_id}/summary", summary),
        Route("/api/sessions/{session_id}/finish", finish, methods=["POST"]),
        Route("/api/sessions/{session_id}/completion", completion),
        Route("/api/feedback", feedback, methods=["POST"]),
        Route("/api/report", report, methods=["POST"]),
        Route("/admin", admin_page),
        Route("/api/admin/overview", overview),
        Route("/api/admin/sessions/{session_id}/end", end_session, methods=["POST"]),
        Route("/api/admin/games", start_ai_game, methods=["POST"]),
        Route("/metrics", metrics),
    ]
