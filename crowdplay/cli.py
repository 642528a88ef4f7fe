"""The ``crowdplay`` command: ``crowdplay serve`` runs the whole system on this machine;
``crowdplay check`` tries every registered game and policy before participants arrive
(``crowdplay.check``); ``crowdplay data ...`` works with the recordings (see ``crowdplay.data.cli``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from crowdplay.config import Settings, SettingsError, apply_ray_environment
from crowdplay.data.cli import add_data_commands
from crowdplay.plugins import PluginImportError, check_plugins_on_every_node, load_plugins, plugin_failure, plugin_names, plugin_runtime_env, share_import_path

if TYPE_CHECKING:
    from ray.actor import ActorHandle

#: How long ``crowdplay serve`` waits for the warm pool's EnvActors to boot before it says it is
#: running: a plugin that fails to import in them fails the start instead of every later Start.
#: Boots still waiting after this (on a cluster, for the autoscaler to add a node) are not judged.
GAME_SERVER_CHECK_S = 60.0


def serve_command(args: argparse.Namespace) -> int:
    """``crowdplay serve``: start Ray, the writer, the EnvsManager and the Serve app, and run until
    SIGINT (Ctrl-C) or SIGTERM; then end the sessions, save their recordings, and stop Serve and
    Ray without draining them (``crowdplay.shutdown``)."""
    import ray
    from ray import serve

    from crowdplay.manager import get_or_create_manager
    from crowdplay.recording.store import absolute_store_uri
    from crowdplay.shutdown import save_recordings, stop_ray
    from crowdplay.web.ingress import build_app

    # Every Ray process records where this process says (and where `crowdplay data` run here reads).
    settings = replace(args.settings, store_uri=absolute_store_uri(args.settings.store_uri or None))
    apply_ray_environment()
    runtime_env = plugin_runtime_env(plugin_names(settings), args.directory)  # the plugins, for every node
    ray.init(address=args.address or "local", include_dashboard=False, log_to_driver=args.verbose, runtime_env=runtime_env or None)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())  # a second Ctrl-C while stopping changes nothing: recordings first
    stopping_at: float | None = None
    try:
        try:
            check_plugins_on_every_node(settings)  # in Ray's processes too, before anything is served
            serve.start(http_options={"host": args.host, "port": args.port})
            serve.run(build_app(settings), name="crowdplay", route_prefix="/")
            check_game_servers(get_or_create_manager(settings))
        except Exception as error:  # noqa: BLE001 - whatever stopped the start, said plainly, and stop
            print(startup_failure(error), file=sys.stderr, flush=True)
            return 1
        print(f"CrowdPlay is running at http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)
        print(describe_recording(settings), flush=True)
        print_policy_reports_until(stop, get_or_create_manager(settings))
        stopping_at = time.monotonic()
        print("Stopping: ending sessions and saving their recordings...", flush=True)
        saved = save_recordings(get_or_create_manager(settings), settings)
        print(saved.summary(), file=sys.stderr if saved.warning else sys.stdout, flush=True)
        print("Stopping Serve and Ray...", flush=True)
    finally:
        killed = stop_ray(started_here=args.address is None)  # also after a failed start: nothing is left running
    if killed:
        print(f"crowdplay: {killed} process(es) outlived Ray's shutdown and were killed", file=sys.stderr, flush=True)
    if stopping_at is not None:
        print(f"Stopped in {time.monotonic() - stopping_at:.1f} s.", flush=True)
    return 0


def check_command(args: argparse.Namespace) -> int:
    """Build every registered environment and ask each of its policies one action
    (``crowdplay.check``); exit 1 if anything failed."""
    from crowdplay.check import check_everything

    verdicts = check_everything(largest_node(args.address))
    for verdict in verdicts:
        print("\n".join(verdict.lines()), flush=True)
    failed = [verdict for verdict in verdicts if not verdict.ok]
    print(f"crowdplay check: {len(verdicts)} checks, {len(failed)} failed" + (": " + ", ".join(verdict.subject for verdict in failed) if failed else ""), flush=True)
    return 1 if failed else 0


def largest_node(address: str | None) -> dict[str, float]:
    """The resources of the largest node policy actors could be placed on: this machine's, or
    with ``address`` the biggest alive node of that Ray cluster."""
    if address is None:
        import os

        gpus = 0
        if "torch" in sys.modules:
            gpus = int(sys.modules["torch"].cuda.device_count())
        return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}
    import ray

    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    finally:
        ray.shutdown()
    return {name: max(node.get(name, 0.0) for node in nodes) for name in ("CPU", "GPU")} if nodes else {"CPU": 0.0, "GPU": 0.0}


def print_policy_reports_until(stop: threading.Event, manager: ActorHandle[Any], every_s: float = 1.0) -> None:
    """Until ``stop``, print each policy problem (and recovery) the game processes report, once:
    a policy that raises, whose actor is down or cannot be placed reaches the operator here, not
    only a Ray worker's log; so does an environment that could not be built."""
    import ray

    seen = 0
    while not stop.wait(every_s):
        try:
            reports: list[dict[str, Any]] = ray.get(manager.policy_reports_after.remote(seen), timeout=5)
        except Exception:  # noqa: BLE001 - a busy or restarting manager: ask again next time
            continue
        for report in reports:
            seen = max(seen, report["seq"])
            reason = f": {report['reason']}" if report.get("reason") else ""
            if "environment" in report:
                print(f"crowdplay: environment {report['environment']!r} could not be built{reason} (crowdplay check tries every environment)", file=sys.stderr, flush=True)
            else:
                print(f"crowdplay: policy {report['policy_id']!r} is {report['state']}{reason}", file=sys.stderr, flush=True)


def check_game_servers(manager: ActorHandle[Any]) -> None:
    """Wait for the warm pool's EnvActors (up to ``GAME_SERVER_CHECK_S``); their boot failure
    (e.g. a plugin that does not import in them) raises here, failing the start."""
    import ray

    ray.get(manager.warm_pool_ready.remote(GAME_SERVER_CHECK_S))


def startup_failure(error: BaseException) -> str:
    """What stopped ``crowdplay serve`` from starting, for the console: a plugin's import failure
    in a Ray process (an ingress replica, the EnvsManager, an EnvActor) as its own message, else
    the error as Ray or Serve reported it."""
    text = str(error)
    plugin = plugin_failure(text)
    if plugin is not None:
        return f"crowdplay serve could not start: a Ray process could not import a plugin.\n{plugin}"
    return f"crowdplay serve could not start: {type(error).__name__}: {text}\n(--verbose shows the Ray processes' logs)"


def settings_from_environment() -> Settings:
    """``Settings.from_env()``, with its warnings (a ``CROWDPLAY_*`` variable nothing reads) as
    ``crowdplay: warning:`` lines on stderr, like the command's other messages."""
    config_log = logging.getLogger("crowdplay.config")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("crowdplay: warning: %(message)s"))
    config_log.addHandler(handler)
    propagate, config_log.propagate = config_log.propagate, False
    try:
        return Settings.from_env()
    finally:
        config_log.removeHandler(handler)
        config_log.propagate = propagate


def describe_recording(settings: Settings) -> str:
    """Start the TrajectoryWriter now (not on the first chunk) and say where recordings go."""
    import ray

    from crowdplay.recording.store import describe_uri
    from crowdplay.recording.writer import get_or_create_writer

    if not settings.record:
        return "Recording is off (CROWDPLAY_RECORD=0)."
    stats: Any = ray.get(get_or_create_writer(settings).stats.remote())
    state = "" if stats["healthy"] else " (unreachable now: chunks spool locally until it answers)"
    return f"Recording to {describe_uri(settings.store_uri)}{state}; read it with `crowdplay data list`."


def build_parser() -> argparse.ArgumentParser:
    """The ``crowdplay`` command's argument parser (``serve``, ``check`` and ``data ...``)."""
    parser = argparse.ArgumentParser(prog="crowdplay", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="start Ray, Serve and the app on this machine")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument("--address", default=None, help="join a running Ray cluster (e.g. 'auto') instead of starting one")
    serve_parser.add_argument("--verbose", action="store_true", help="show the actors' logs")
    serve_parser.set_defaults(run=serve_command)
    check_parser = commands.add_parser(
        "check", help="build every registered environment and ask each of its policies one action; exit 1 if anything fails",
    )
    check_parser.add_argument("--address", default=None, help="judge policies' resources against this Ray cluster's largest node (e.g. 'auto'), not this machine")
    check_parser.set_defaults(run=check_command)
    add_data_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``crowdplay`` console script: parse ``argv``, read the settings, run the subcommand; returns the exit code
    (2 for invalid settings)."""
    args = build_parser().parse_args(argv)
    try:
        args.settings = settings_from_environment()
    except SettingsError as error:  # an invalid CROWDPLAY_* value: said plainly, nothing started
        print(f"crowdplay: {error}", file=sys.stderr, flush=True)
        return 2
    # The working directory's modules are importable (the console script's sys.path lacks it)
    # before the plugins load, and before Ray starts: its processes inherit the path.
    args.directory = share_import_path()
    try:
        load_plugins(args.settings)  # the deployment's own games and policies, for serve and data alike
    except PluginImportError as error:
        print(f"crowdplay: {error}", file=sys.stderr, flush=True)
        return 1
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
