"""What every route handler of the participant app reads: the backend, the settings and the
per-client start limiter, kept on the Starlette app's ``state``.

Handlers are plain module-level functions (Starlette's style) rather than closures inside the app
factory, so each can be read, typed and tested on its own; they reach the app they serve through
the request, and this module gives that lookup one typed name.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from crowdplay.admission import ClientStarts
from crowdplay.config import Settings
from crowdplay.web.backend import SessionBackend


@dataclass(frozen=True)
class AppContext:
    """One app's collaborators: ``backend`` (Ray's EnvsManager, or the in-process baseline),
    ``settings``, and ``starts``, the per-client session-start limiter shared by all its requests."""

    backend: SessionBackend
    settings: Settings
    starts: ClientStarts


def attach_context(app: Starlette, context: AppContext) -> None:
    """Give ``app``'s handlers their collaborators."""
    app.state.crowdplay = context


def context_of(connection: HTTPConnection) -> AppContext:
    """The collaborators of the app serving ``connection`` (a request or a websocket)."""
    context = connection.app.state.crowdplay
    if not isinstance(context, AppContext):
        raise TypeError("this Starlette app was not built by crowdplay.web.app.create_app (no AppContext in its state)")
    return context
