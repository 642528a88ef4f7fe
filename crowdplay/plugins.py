"""Plugins: a deployment's own modules that register environments and policies.

Registrations happen at import, and every CrowdPlay process (ingress replicas, the EnvsManager,
every EnvActor, the data tools) looks games and policies up in its own registry, so each imports
the same modules: ``Settings.plugins``, e.g. ``CROWDPLAY_PLUGINS=policies.examples,my_study.games``.
"""

from __future__ import annotations

import importlib
import os

from crowdplay.config import Settings


def share_import_path(directory: str | None = None) -> None:
    """Make ``directory`` (default: the working directory) importable in the Ray processes this
    process starts, which inherit its environment: plugins next to the project then load there."""
    directory = os.path.abspath(directory or os.getcwd())
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if directory not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([directory, *paths])


def load_plugins(settings: Settings) -> list[str]:
    """Import every plugin module (once per process; a missing one fails loudly, naming it)."""
    names = [name.strip() for name in settings.plugins.split(",") if name.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ImportError(f"plugin module {name!r} (Settings.plugins) cannot be imported: {error}") from error
    return names
