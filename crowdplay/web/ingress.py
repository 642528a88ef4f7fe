"""The Serve ingress deployment: the Starlette app bound to the cluster's EnvsManager."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application
from starlette.applications import Starlette

from crowdplay.config import LONG_LIVED_RUNTIME_ENV, ON_HEAD_NODE, Settings
from crowdplay.manager import get_or_create_manager
from crowdplay.memory import release_freed_memory_every
from crowdplay.plugins import load_plugins
from crowdplay.web.app import create_app
from crowdplay.web.backend import RaySessions


@serve.deployment(ray_actor_options={"num_cpus": 0, "runtime_env": LONG_LIVED_RUNTIME_ENV}, max_ongoing_requests=1000)
@serve.ingress()
class Ingress:
    """One replica serves many participants; every replica shares the one EnvsManager."""

    settings: Settings
    backend: RaySessions

    async def __init__(self, settings: Settings | None = None) -> None:  # type: ignore[misc]  # Ray Serve awaits an async constructor
        self.settings = settings or Settings.from_env()
        load_plugins(self.settings)
        release_freed_memory_every(self.settings.memory_release_interval_s)
        manager = get_or_create_manager(self.settings)
        await manager.ready.remote()
        self.backend = RaySessions(manager, self.settings)

    def __serve_build_asgi_app__(self) -> Starlette:
        return create_app(self.backend, self.settings)


def build_app(settings: Settings | None = None) -> Application:
    """The Serve application (``serve run serve_app:app`` and ``serve deploy serve_config.yaml``
    take the settings from the environment)."""
    placed = Ingress.options(ray_actor_options=replica_options(settings or Settings.from_env()))  # type: ignore[attr-defined]
    return placed.bind(settings)  # type: ignore[no-any-return]


def replica_options(settings: Settings) -> dict[str, Any]:
    """Each ingress replica's actor options: no CPU reserved (it is mostly waiting on sockets),
    the long-lived allocator, and on the head node unless ``ingress_on_head`` is off."""
    placement = {"resources": ON_HEAD_NODE} if settings.ingress_on_head else {}
    return {"num_cpus": 0, "runtime_env": LONG_LIVED_RUNTIME_ENV, **placement}
