"""The ``crowdplay`` command: ``crowdplay serve`` runs the whole system on this machine;
``crowdplay data ...`` works with the recordings (see ``crowdplay.data.cli``)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from crowdplay.config import Settings, apply_ray_environment
from crowdplay.data.cli import add_data_commands
from crowdplay.plugins import load_plugins, share_import_path


def serve_command(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    from crowdplay.manager import get_or_create_manager
    from crowdplay.web.ingress import build_app

    settings = Settings.from_env()
    apply_ray_environment()
    share_import_path()
    ray.init(address=args.address or "local", include_dashboard=False, log_to_driver=args.verbose)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(build_app(settings), name="crowdplay", route_prefix="/")
        print(f"CrowdPlay is running at http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)
        print(describe_recording(settings), flush=True)
        stop.wait()
        print("Stopping: ending sessions and saving their recordings...", flush=True)
        ended = ray.get(get_or_create_manager(settings).shutdown.remote())
        print(f"Ended {ended} sessions. Stopping Serve and Ray...", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def describe_recording(settings: Settings) -> str:
    """Start the TrajectoryWriter now (not on the first chunk) and say where recordings go."""
    import ray

    from crowdplay.recording.store import describe_uri
    from crowdplay.recording.writer import get_or_create_writer

    if not settings.record:
        return "Recording is off (CROWDPLAY_RECORD=0)."
    stats = ray.get(get_or_create_writer(settings).stats.remote())
    state = "" if stats["healthy"] else " (unreachable now: chunks spool locally until it answers)"
    return f"Recording to {describe_uri(settings.store_uri)}{state}; read it with `crowdplay data list`."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crowdplay", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="start Ray, Serve and the app on this machine")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument("--address", default=None, help="join a running Ray cluster (e.g. 'auto') instead of starting one")
    serve_parser.add_argument("--verbose", action="store_true", help="show the actors' logs")
    serve_parser.set_defaults(run=serve_command)
    add_data_commands(commands)
    args = parser.parse_args(argv)
    load_plugins(Settings.from_env())  # the deployment's own games and policies, for serve and data alike
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
