"""Plugins: a deployment's own modules that register environments and policies.

Registrations happen at import, and every CrowdPlay process (ingress replicas, the EnvsManager,
every EnvActor, the policy actors, the data tools) looks games and policies up in its own registry,
so each imports the same modules: ``Settings.plugins``, e.g.
``CROWDPLAY_PLUGINS=policies.examples,my_study.games``.

A researcher's plugin usually sits in the directory they run ``crowdplay`` in. The ``crowdplay``
command is a console script, so Python puts the script's own directory (the venv's ``bin``) on
``sys.path``, not the working directory: ``share_import_path`` adds it, before the plugins are
imported and before Ray starts. The Ray processes of ``crowdplay serve`` find the plugins two ways:

* on this machine, in the working directory itself (Ray puts the driver's working directory first
  on every worker's ``sys.path``; ``PYTHONPATH`` says it too), so a plugin that reads files next
  to it (a checkpoint) finds them;
* on every other node of a cluster, in a copy: ``plugin_runtime_env`` ships the plugins found under
  the working directory with the job as Ray ``py_modules``, which Ray uploads once and unpacks on
  each node before a process of the job starts there (Serve's replicas and the actors the
  EnvsManager starts inherit it). Only the module (or its package directory, without the files
  ``.gitignore`` excludes) travels: data a plugin reads from elsewhere must be on every node.

A plugin that cannot be imported raises ``PluginImportError``, which names the module, the
directories it was looked for in and what went wrong (a module that raises: the exception's type,
message, file and line).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from crowdplay.config import Settings

#: CrowdPlay itself is installed on every node: never shipped as a plugin even when the working
#: directory is a checkout of it.
INSTALLED_PACKAGES = frozenset({"crowdplay"})


class PluginImportError(ImportError):
    """A plugin module could not be imported; the message says which, where it was looked for and
    why. Picklable with its message, so that Ray hands it across processes intact."""

    def __init__(self, message: str, module: str = "") -> None:
        super().__init__(message, name=module or None)
        self.module = module

    def __reduce__(self) -> tuple[type[PluginImportError], tuple[str, str]]:
        return (type(self), (str(self.args[0]), self.module))


def plugin_names(settings: Settings) -> list[str]:
    """The plugin modules ``Settings.plugins`` lists ("a.b, c" -> ["a.b", "c"])."""
    return [name.strip() for name in settings.plugins.split(",") if name.strip()]


def share_import_path(directory: str | None = None) -> str:
    """Make ``directory`` (default: the working directory) importable here and in the Ray processes
    this process starts on this machine, which inherit its environment; returns it (absolute).

    First on ``sys.path``, as ``python -m`` and ``python script.py`` put theirs: a researcher's
    module is found there before anything installed under the same name."""
    directory = os.path.abspath(directory or os.getcwd())
    if directory not in [os.path.abspath(entry or os.curdir) for entry in sys.path]:
        sys.path.insert(0, directory)
        importlib.invalidate_caches()
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if directory not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([directory, *paths])
    return directory


def load_plugins(settings: Settings) -> list[str]:
    """Import every plugin module (once per process). A failure raises ``PluginImportError``
    naming the module, the directories searched and the underlying error."""
    names = plugin_names(settings)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:  # ImportError, or whatever the module raised at import
            raise PluginImportError(describe_import_failure(name, error), name) from error
    return names


def describe_import_failure(name: str, error: BaseException) -> str:
    """What a researcher needs to fix a plugin that failed to import: the module, what went wrong
    (a module not found, or the exception the module raised, with its file and line) and the
    directories Python looked in."""
    head = f"plugin module {name!r} (Settings.plugins, CROWDPLAY_PLUGINS) cannot be imported"
    missing = error.name if isinstance(error, ModuleNotFoundError) else None
    if missing is not None and (name == missing or name.startswith(missing + ".")):
        lines = [f"{head}: {error}"]
    else:
        lines = [f"{head}: it raised {type(error).__name__}: {error}"]
        lines += [f"  {where}" for where in raise_site(error, name)]
        found = module_origin(name)
        if found:
            lines.append(f"  module file: {found}")
    lines.append(f"  looked for in: {', '.join(searched_directories(name, missing)) or '(no directory)'}")
    lines.append(f"  (in process {os.getpid()} on {os.uname().nodename}, working directory {os.getcwd()})")
    return "\n".join(lines)


def raise_site(error: BaseException, name: str) -> list[str]:
    """Where the error was raised, as "at FILE, line N" lines: the innermost frame outside
    Python's import machinery and, when that is not in the plugin itself, the plugin's own line
    that led there. A SyntaxError names the offending line itself."""
    if isinstance(error, SyntaxError) and error.filename:
        return [f"at {error.filename}, line {error.lineno}: {(error.text or '').strip()}"]
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if not _machinery(frame.filename)]
    if not frames:
        return []
    sites = [f"at {frames[-1].filename}, line {frames[-1].lineno}, in {frames[-1].name}"]
    own = module_origin(name)
    plugin_frames = [frame for frame in frames if own and os.path.abspath(frame.filename) == own]
    if plugin_frames and plugin_frames[-1] is not frames[-1]:
        sites.append(f"from {plugin_frames[-1].filename}, line {plugin_frames[-1].lineno}")
    return sites


def _machinery(filename: str) -> bool:
    """Frames of the import system and of this module, which say nothing about the plugin."""
    return filename.startswith("<frozen ") or os.path.abspath(filename) in (__file__, importlib.__file__)


def module_origin(name: str) -> str | None:
    """The file a module was (or would be) loaded from, without importing it; None if unknown."""
    try:
        spec = importlib.util.find_spec(name)
    except Exception:  # a parent package that itself fails to import
        return None
    origin = spec.origin if spec is not None else None
    return os.path.abspath(origin) if origin and os.path.exists(origin) else None


def searched_directories(name: str, missing: str | None = None) -> list[str]:
    """The directories Python searches for ``missing`` (default: ``name``): its parent package's
    when that was found, else ``sys.path`` (the working directory marked; entries that do not
    exist on this machine marked too, since a path shared from another node may not be here)."""
    target = missing or name
    if "." in target:
        parent = sys.modules.get(target.rsplit(".", 1)[0])
        if parent is not None and getattr(parent, "__path__", None) is not None:
            return [str(path) for path in parent.__path__]
    here = os.getcwd()
    described = []
    for entry in sys.path:
        path = os.path.abspath(entry or os.curdir)
        if not os.path.exists(path) and (path.endswith(".zip") or not os.path.isabs(entry or os.curdir)):
            continue  # the standard library's zip, listed whether or not it exists; a path hook's marker
        note = " (the working directory)" if path == here else "" if os.path.isdir(path) else " (does not exist here)"
        if f"{path}{note}" not in described:
            described.append(f"{path}{note}")
    return described


def plugin_runtime_env(names: Iterable[str], directory: str) -> dict[str, Any]:
    """The Ray ``runtime_env`` that ships the plugins found under ``directory`` to every node:
    ``{"py_modules": [each one's top-level module file or package directory]}``, or ``{}`` when
    none lies there (an installed plugin is on every node already). Call after ``load_plugins``:
    it asks the imported modules where they came from."""
    root = Path(directory).resolve()
    shipped: list[str] = []
    for name in names:
        top = name.split(".", 1)[0]
        module = sys.modules.get(top)
        if top in INSTALLED_PACKAGES or module is None:
            continue
        for location in module_locations(module):
            if location.is_relative_to(root) and location != root and str(location) not in shipped:
                shipped.append(str(location))
    return {"py_modules": shipped} if shipped else {}


def module_locations(module: ModuleType) -> Sequence[Path]:
    """Where a top-level module lives: its package directories, or its one file."""
    paths = getattr(module, "__path__", None)
    if paths is not None:
        return [Path(path).resolve() for path in paths]
    file = getattr(module, "__file__", None)
    return [Path(file).resolve()] if file else []


def check_plugins_on_every_node(settings: Settings) -> int:
    """Import the plugins in a Ray process of this job on every node alive now (they carry the
    job's ``runtime_env``, as the server's processes will): a plugin that does not import there
    (missing on a node, or raising only inside Ray) raises here, before anything is served, with
    its ``PluginImportError`` message. Returns the number of nodes checked."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not plugin_names(settings):
        return 0
    remote_load = ray.remote(num_cpus=0, max_retries=0)(load_plugins)
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    checks = [remote_load.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(settings) for node in nodes]
    ray.get(checks)
    return len(nodes)


def plugin_failure(text: str) -> str | None:
    """The ``PluginImportError`` message inside an error's text (a Ray actor's creation failure
    or a Serve deployment's carry the remote traceback as text), or None."""
    start = text.find("plugin module '")
    if start < 0:
        return None
    lines = text[start:].splitlines()
    block = [lines[0]]
    for line in lines[1:]:
        if not line.startswith("  "):
            break
        block.append(line)
    return "\n".join(block)
