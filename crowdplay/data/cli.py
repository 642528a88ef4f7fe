"""``crowdplay data ...``: the researcher's command line over the dataset API.

    crowdplay data list [filters] [--json]
    crowdplay data show EPISODE [--json]
    crowdplay data sessions [--task T] [--participant P] [--json | --csv]
    crowdplay data replay-check EPISODE [--from-step N]
    crowdplay data export --format {npz,minari,rllib} --out PATH [filters] [--observations FORMAT] [--agent A]
    crowdplay data delete-participant PARTICIPANT [--yes]

``--store`` picks the store (a mongodb:// URI or the embedded store's path); by default the one
the server records into, ``CROWDPLAY_STORE_URI``, else data/crowdplay.db. Which store was opened,
and why, goes to stderr (stdout stays clean for ``--json``).

Filters: ``--completed`` keeps the episodes the environment ended (status ``complete``),
``--incomplete`` every other one; ``--status`` any of ``complete``, ``finished`` (a participant
pressed Finish), ``interrupted`` and ``unended`` (no status yet): see
``crowdplay.recording.status``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from crowdplay.data.dataset import Dataset, EpisodeNotFound
from crowdplay.data.episode import Episode
from crowdplay.data.observations import FORMATS
from crowdplay.data.replay_check import replay_check
from crowdplay.engagement import ENGAGEMENT_VALUES
from crowdplay.recording.status import STATUSES, status_of
from crowdplay.recording.store import describe_uri, embedded_path, store_origin
from crowdplay.round_trips import CONNECTION_VALUES

#: A ``crowdplay data`` subcommand: runs on the opened store, returns the exit code.
DataCommand = Callable[[Dataset, argparse.Namespace], int]


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task")
    parser.add_argument("--env")
    parser.add_argument("--participant", help="a pseudonym (p-...)")
    parser.add_argument("--since", type=start_time, help="start time >= (ISO date/time or epoch seconds)")
    parser.add_argument("--until", type=start_time, help="start time < (ISO date/time or epoch seconds)")
    played = parser.add_mutually_exclusive_group()
    played.add_argument("--human-only", dest="human_only", action="store_const", const=True, help="only episodes without AI agents")
    played.add_argument("--with-ai", dest="human_only", action="store_const", const=False, help="only episodes with an AI agent")
    parser.add_argument("--min-return", type=float)
    ended = parser.add_mutually_exclusive_group()
    ended.add_argument("--completed", dest="completed", action="store_const", const=True, help="only episodes the environment ended (status complete)")
    ended.add_argument("--incomplete", dest="completed", action="store_const", const=False, help="only the others: finished, interrupted, unended")
    parser.add_argument(
        "--status", type=_statuses, action="extend", metavar="STATUS[,STATUS]",
        help="only episodes with one of these statuses: " + "; ".join(f"{name}: {meaning}" for name, meaning in STATUSES.items()),
    )


def _statuses(value: str) -> list[str]:
    """``--status``'s value: one status or several, comma-separated, each a known one."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in STATUSES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown status {', '.join(unknown) or repr(value)}: use {', '.join(STATUSES)}")
    return names


def start_time(value: str) -> float:
    """``--since``/``--until``: epoch seconds or an ISO date/time (UTC unless it says otherwise)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither an ISO date/time (such as 2026-12-01 or 2026-12-01T09:30) nor epoch seconds") from None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)).timestamp()


#: Minari's dataset ids: [namespace/]name-v<N>
MINARI_ID = re.compile(r"(?:[\w.-]+/)?[\w.-]+-v\d+")


def minari_dataset_id(value: str) -> str:
    """``--dataset-id``, checked before anything is written (Minari fails on a malformed id only
    after it has begun the dataset, which then blocks the same id)."""
    if not MINARI_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a Minari dataset id: [namespace/]name-v<N>, such as crowdplay/acrobot-v0")
    return value


def _select(data: Dataset, args: argparse.Namespace) -> list[dict[str, Any]]:
    return data.episodes(
        task=args.task, env=args.env, participant=args.participant, since=args.since, until=args.until,
        human_only=args.human_only, min_return=args.min_return, completed=args.completed, status=args.status,
    )


def _printable(document: dict[str, Any]) -> dict[str, Any]:
    return {key: (f"<{len(value)} bytes>" if isinstance(value, bytes) else value) for key, value in document.items()}


def _when(seconds: float | None) -> str:
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S") if seconds else "-"


def list_command(data: Dataset, args: argparse.Namespace) -> int:
    """``crowdplay data list``: the matching episodes, one line each (or a JSON list)."""
    episodes = _select(data, args)
    if args.json:
        print(json.dumps([_printable(doc) for doc in episodes]))
        return 0
    print(f"{'episode':40} {'env':16} {'task':16} {'started':19} {'steps':>6} {'return':>8} {'status':12} participants")
    for doc in episodes:
        returns = doc.get("returns", {})
        best = max(returns.values()) if returns else float("nan")
        print(
            f"{doc['_id']:40} {doc.get('env_id', '-'):16} {doc.get('task_id', '-'):16} {_when(doc.get('started_at')):19} "
            f"{doc.get('steps', '-'):>6} {best:>8.1f} {status_of(doc):12} {','.join(doc.get('participants', []))}"
        )
    print(f"{len(episodes)} episodes")
    return 0


def show_command(data: Dataset, args: argparse.Namespace) -> int:
    """``crowdplay data show``: one episode's document with its stored steps and inputs counted,
    in all and by the device they came from (keyboard, gamepad, touch)."""
    document = _printable(data.episode(args.episode))
    document["stored_steps"] = sum(chunk["steps"] for chunk in data.chunks(args.episode))
    inputs = data.inputs(args.episode)
    document["inputs"] = len(inputs)
    document["input_sources"] = dict(Counter(event["source"] for event in inputs))
    print(json.dumps(document, indent=None if args.json else 2, default=str))
    return 0


#: ``sessions --csv``'s columns: the row's scalars (``params`` and ``values`` are dicts, kept for ``--json``).
SESSION_COLUMNS = (
    "session_id", "task_id", "participant", "created_at", "consented_at", "finished_at", "completed_at", "episodes", *ENGAGEMENT_VALUES, *CONNECTION_VALUES,
)


def sessions_command(data: Dataset, args: argparse.Namespace) -> int:
    """``crowdplay data sessions``: every participant session with its engagement and its
    connection's round trips, one line each (or JSON rows, or CSV for a spreadsheet)."""
    rows = data.sessions(task=args.task, participant=args.participant)
    if args.json:
        print(json.dumps(rows, default=str))
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, SESSION_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        _print_sessions(rows)
    return 0


def _print_sessions(rows: list[dict[str, Any]]) -> None:
    """The sessions as a table a researcher reads in a terminal: seconds rounded, pauses counted,
    the 95th percentile of the connection's round trips in ms ("-": none measured)."""
    print(
        f"{'session':32} {'task':16} {'participant':20} {'finished':19} {'played':>7} {'hidden':>7} {'idle':>7} {'pauses':>6} "
        f"{'rtt_p95':>7} completed"
    )
    for row in rows:
        played = float(row["values"].get("time_played", 0))
        rtt = "-" if row["rtt_p95_ms"] is None else f"{row['rtt_p95_ms']:.0f}"
        print(
            f"{row['session_id']:32} {row['task_id'] or '-':16} {row['participant'] or '-':20} {_when(row['finished_at']):19} "
            f"{played:>7.0f} {row['time_hidden']:>7.0f} {row['idle_time']:>7.0f} {row['pauses']:>6} {rtt:>7} {'yes' if row['completed_at'] else 'no'}"
        )
    print(f"{len(rows)} sessions")


def replay_check_command(data: Dataset, args: argparse.Namespace) -> int:
    """Exit code: 0 the replay matches, 1 it does not, 3 the episode is not replayable (2: no
    such episode); see ``crowdplay.data.replay_check``."""
    report = replay_check(data, args.episode, args.from_step)
    print(report.summary())
    return report.exit_code


def export_command(data: Dataset, args: argparse.Namespace) -> int:
    """``crowdplay data export``: the matching episodes in the chosen format under ``--out``; 1 if none match."""
    ids = [doc["_id"] for doc in _select(data, args)]
    if not ids:
        print("no episodes match the filters", file=sys.stderr)
        return 1
    episodes = data.iter_load(ids, observations=args.observations)
    options: dict[str, Any] = {"total": len(ids), "progress": not args.quiet, "agent": args.agent}
    try:
        EXPORTERS[args.format](episodes, args, options)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _export_npz(episodes: Iterator[Episode], args: argparse.Namespace, options: dict[str, Any]) -> None:
    """One ``.npz`` file per episode (and agent) under ``--out``."""
    from crowdplay.data.exports import export_npz

    written = export_npz(episodes, args.out, **options)
    print(f"wrote {len(written)} files to {args.out}")


def _export_minari(episodes: Iterator[Episode], args: argparse.Namespace, options: dict[str, Any]) -> None:
    """Minari datasets under ``--out`` as their root, named by ``--dataset-id`` or the filters."""
    from crowdplay.data.exports import export_minari
    from crowdplay.data.exports.common import ID_UNSAFE

    dataset_id = args.dataset_id or f"crowdplay/{ID_UNSAFE.sub('_', args.task or args.env or 'all')}-v0"
    result = export_minari(episodes, dataset_id, data_path=args.out, **options)
    for dataset in sorted([result] if args.agent else result.values(), key=lambda d: d.id):
        spec = dataset.env_spec.id if dataset.env_spec is not None else "None"
        print(
            f"wrote Minari dataset {dataset.id}: {dataset.total_episodes} episodes, {dataset.total_steps} steps, "
            f"{dataset.storage.metadata.get('dataset_size', '?')} MB, env_spec {spec}"
        )
    print(f"under {args.out}; load with MINARI_DATASETS_PATH={args.out} minari.load_dataset(id)")


def _export_rllib(episodes: Iterator[Episode], args: argparse.Namespace, options: dict[str, Any]) -> None:
    """RLlib offline data under ``--out``."""
    from crowdplay.data.exports import export_rllib

    path = export_rllib(episodes, args.out, **options)
    print(f"wrote RLlib offline data to {path}")


#: ``--format``'s choices and what writes each; the exporters import their libraries only when used.
EXPORTERS: dict[str, Callable[[Iterator[Episode], argparse.Namespace, dict[str, Any]], None]] = {
    "npz": _export_npz,
    "minari": _export_minari,
    "rllib": _export_rllib,
}


def delete_participant_command(data: Dataset, args: argparse.Namespace) -> int:
    """``crowdplay data delete-participant``: remove every episode the participant played in, after
    asking unless ``--yes``."""
    if not args.yes:
        answer = input(f"Delete every episode of participant {args.participant!r}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    removed = data.delete_participant(args.participant)
    print(f"deleted {len(removed)} episodes" + (f": {', '.join(removed)}" if removed else ""))
    return 0


def add_data_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``crowdplay data`` and its subcommands to the ``crowdplay`` parser."""
    data_parser = commands.add_parser("data", help="list, inspect, check, export and delete recordings")
    data_parser.add_argument("--store", default=None, help="mongodb:// URI or embedded store path")
    sub = data_parser.add_subparsers(dest="data_command", required=True)

    listing = sub.add_parser("list", help="episodes matching the filters")
    _filters(listing)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(data_run=list_command)

    show = sub.add_parser("show", help="one episode's document")
    show.add_argument("episode")
    show.add_argument("--json", action="store_true")
    show.set_defaults(data_run=show_command)

    sessions = sub.add_parser("sessions", help="participant sessions (assignments) with their engagement (time hidden, idle time, pauses) and connection round trips")
    sessions.add_argument("--task")
    sessions.add_argument("--participant", help="a pseudonym (p-...)")
    formats = sessions.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="every field, statistic values and URL parameters included")
    formats.add_argument("--csv", action="store_true", help="one row per session, engagement as columns")
    sessions.set_defaults(data_run=sessions_command)

    check = sub.add_parser(
        "replay-check", help="re-run an episode from its seed (Atari: its snapshot) and actions, compare observations, rewards and frames",
        description=(
            "Re-run a recorded episode and compare it with the recording. Exit code: 0 the replay matches, "
            "1 it does not (the first divergence is named), 2 no such episode, 3 not replayable (the reason is given: "
            "a nondeterministic environment, or a recording without seed or observations)."
        ),
    )
    check.add_argument("episode")
    check.add_argument(
        "--from-step", type=int, default=0,
        help="Atari: start from the emulator snapshot at or before this step; other environments always replay from the reset",
    )
    check.set_defaults(data_run=replay_check_command)

    export = sub.add_parser("export", help="write episodes as npz, a Minari dataset or RLlib offline data")
    export.add_argument("--format", choices=tuple(EXPORTERS), required=True)
    export.add_argument("--out", required=True, help="output directory (Minari: the datasets root)")
    export.add_argument(
        "--observations", choices=("env", *FORMATS), default="env",
        help="env (default): each agent's own observations in its environment's space (Atari: the screen as rgb); "
        "rgb: the screens participants saw; palette (Atari): palette indices; atari84: what an Atari policy sees",
    )
    export.add_argument(
        "--dataset-id", type=minari_dataset_id,
        help="Minari dataset id [namespace/]name-v<N> (default crowdplay/<task or env or all>-v0), used as given for "
        "single-agent recordings; a multi-agent recording gives one dataset per agent, [namespace/]name-<agent>-v<N>",
    )
    export.add_argument(
        "--agent", help="export only this agent (Minari: under --dataset-id as given; RLlib: straight into --out)",
    )
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    _filters(export)
    export.set_defaults(data_run=export_command)

    delete = sub.add_parser("delete-participant", help="remove all data of a participant (raw id or pseudonym)")
    delete.add_argument("participant")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(data_run=delete_participant_command)

    data_parser.set_defaults(run=data_command)


def data_command(args: argparse.Namespace) -> int:
    """Run the chosen ``crowdplay data`` subcommand on the store; the process's exit code (2 for an unknown episode)."""
    settings = getattr(args, "settings", None)
    uri = args.store or (settings.store_uri if settings is not None else "") or None
    print(f"crowdplay data: {describe_store(uri, args.store)}", file=sys.stderr, flush=True)
    with Dataset.open(uri) as data:
        try:
            run: DataCommand = args.data_run
            return run(data, args)
        except EpisodeNotFound as error:
            print(f"error: {error.args[0]}", file=sys.stderr)
            return 2


def describe_store(uri: str | None, given: str | None) -> str:
    """Which store ``crowdplay data`` opens and why (``--store``, ``CROWDPLAY_STORE_URI``, the
    deprecated name, or the default), noting an embedded store that does not exist yet: opening
    an empty local store by mistake (on a cluster, say) then shows at once."""
    origin = "--store" if given else store_origin(None)
    path = embedded_path(uri)
    empty = "; it does not exist yet, so nothing has been recorded there" if path is not None and not path.exists() else ""
    return f"reading {describe_uri(uri)} ({origin}{empty})"
