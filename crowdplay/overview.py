"""The researcher dashboard's overview (``GET /api/admin/overview``, and ``/metrics``), built from
what the manager holds and what its game processes answered.

Kept apart from the actor so the shape the dashboard draws is built (and tested) from plain data:
the study and its assignments, the session table, the hosts, and the answers gathered for this
overview (timings, recording health, policy health).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crowdplay.ai.health import merge_policy_snapshots
from crowdplay.assignments import Assignment, AssignmentBook
from crowdplay.engagement import engagement
from crowdplay.env_actor import merge_timings
from crowdplay.environments import get_env, list_envs
from crowdplay.hosts import Host
from crowdplay.problem_reports import ProblemReports
from crowdplay.recording.store_link import StoreLink, recording_overview
from crowdplay.session_table import SessionTable
from crowdplay.study import Study

#: Policy problem reports the dashboard shows (the newest).
POLICY_REPORTS_SHOWN = 20
#: Finished sessions the dashboard lists (the latest), from the assignments the manager still holds.
FINISHED_SESSIONS_SHOWN = 20


@dataclass
class Gathered:
    """What the game processes and the writer answered for one overview."""

    histograms: dict[str, Any]
    recording: dict[str, Any]
    policies: dict[str, Any]
    policy_reports: Sequence[dict[str, Any]]
    #: each live session's engagement as its game process answered, by session id
    engagement: dict[str, dict[str, float]] = field(default_factory=dict)


#: Asks a host's process for one of its dashboard figures ("timing", "policy_health", "recording",
#: "engagement").
AskHost = Callable[[Host, str], Awaitable[dict[str, Any]]]


async def gather(hosts: list[Host], ask: AskHost, link: StoreLink | None, problems: ProblemReports) -> Gathered:
    """Every host's figures and the recording path's health, at once; a host that does not answer
    in time is left out, and a late writer is not waited for (``recording_overview``); ``link``
    None: nothing is recorded."""
    timings, recording, health, engaged = await asyncio.gather(
        asyncio.gather(*(ask(host, "timing") for host in hosts), return_exceptions=True),
        recording_health(hosts, ask, link),
        asyncio.gather(*(ask(host, "policy_health") for host in hosts), return_exceptions=True),
        asyncio.gather(*(ask(host, "engagement") for host in hosts), return_exceptions=True),
    )
    return Gathered(
        merge_timings([t for t in timings if isinstance(t, dict)]), recording,
        merge_policy_snapshots([h for h in health if isinstance(h, dict)]), list(problems.reports),
        {session: values for answer in engaged if isinstance(answer, dict) for session, values in answer.items()},
    )


async def recording_health(hosts: list[Host], ask: AskHost, link: StoreLink | None) -> dict[str, Any]:
    """The writer (answering, late or unavailable), its store, its spool, the saves still held,
    and each host's unacknowledged chunks."""
    now = time.time()
    if link is None:
        return recording_overview(None, None, [], {}, now)
    answers: list[Any] = await asyncio.gather(
        link.probe("stats"), link.probe("data_volume", counts_as_late=False),
        *(ask(host, "recording") for host in hosts), return_exceptions=True,
    )
    stats, volume, *processes = answers
    return recording_overview(stats, volume, [p for p in processes if isinstance(p, dict)], link.pending(now), now)


def build_overview(
    study: Study, book: AssignmentBook, table: SessionTable, hosts: Iterable[Host], gathered: Gathered, now: float, builds_behind_play: int = 0,
    withdrawn_requests: int = 0,
) -> dict[str, Any]:
    """Everything the researcher dashboard and /metrics show; ``builds_behind_play``: games built
    behind games playing in their process so far (``HostPool.builds_behind_play``);
    ``withdrawn_requests``: session requests whose client left before the answer (``Withdrawals``)."""
    recording = dict(gathered.recording)
    data = recording.pop("data_volume")
    tasks = task_rows(study, book, table, now)  # a row for every environment anyone plays
    completed_times = sorted(at for at, _ in book.completions)
    return {
        "study": study.title,
        "generated_at": now,
        "totals": {
            "live_sessions": len(table.sessions), "waiting": sum(row["waiting"] for row in tasks), "completed": sum(book.completed.values()),
            "participants": book.participants(), "abandoned_starts": sum(row["abandoned_starts"] for row in tasks),
            "data_bytes": data.get("bytes") or 0, "episodes": data.get("episodes", 0), "builds_behind_play": builds_behind_play,
            "withdrawn_requests": withdrawn_requests,
        },
        "tasks": tasks,
        "nodes": node_rows(table, hosts),
        "games": game_rows(table, lambda session_id: live_engagement(session_id, gathered.engagement, book)),
        "finished_sessions": finished_session_rows(book),
        "histograms": gathered.histograms,
        "completions_timeline": [[at, index + 1] for index, at in enumerate(completed_times)],
        "recording": recording,
        "policies": gathered.policies,
        "policy_reports": [report for report in gathered.policy_reports if "policy_id" in report][-POLICY_REPORTS_SHOWN:],
        "ai_only_envs": [spec.id for spec in list_envs() if spec.ai_only],
    }


def task_rows(study: Study, book: AssignmentBook, table: SessionTable, now: float) -> list[dict[str, Any]]:
    """One row per task of the study, then per other environment someone plays."""
    live = Counter(entry.game.env_id for entry in table.sessions.values())
    waiting = Counter(entry.game.env_id for entry in table.sessions.values() if entry.game.joinable)
    unconnected = Counter(entry.game.env_id for entry in table.sessions.values() if not entry.connected)
    rows = []
    for task_id in list(study.tasks) + sorted(set(live) - set(study.tasks)):
        task = study.task_for(task_id)
        completed = book.completed[task_id]
        rows.append(
            {
                "task_id": task_id, "title": task.title, "live_sessions": live[task_id], "waiting": waiting[task_id],
                "completed": completed, "target": task.target_complete_assignments, "participants": book.participants(task_id),
                "abandoned_starts": abandoned_starts(book, task_id, unconnected[task_id]),
                "open": task.closed_reason(completed, now) is None,
            }
        )
    return rows


def abandoned_starts(book: AssignmentBook, task_id: str, unconnected: int) -> int:
    """Sessions of the task started since the manager started whose participant never connected
    and no longer will (their request given up, or ``connect_timeout_s`` passed): attempts, not people."""
    return max(0, book.started[task_id] - book.played[task_id] - unconnected)


def node_rows(table: SessionTable, hosts: Iterable[Host]) -> list[dict[str, Any]]:
    """Games and seated sessions per node that runs game processes."""
    nodes: dict[str, dict[str, Any]] = {}
    for host in hosts:
        node = nodes.setdefault(host.node_id, {"node_id": host.node_id, "games": 0, "sessions": 0})
        node["games"] += len(host.games)
    for game in table.games.values():
        if game.host is not None and game.host.node_id in nodes:
            nodes[game.host.node_id]["sessions"] += sum(1 for s in game.seated_sessions() if s in table.sessions)
    return list(nodes.values())


def game_rows(table: SessionTable, engagement_of: Callable[[str], dict[str, float] | None]) -> list[dict[str, Any]]:
    """Every running game: where, in which phase, its seats and who sits in them, with each
    session's engagement (``engagement_of``; None: not known)."""
    rows = []
    for game in table.games.values():
        sessions = [
            {"session_id": s, "agent": agent, "participant": table.sessions[s].participant, "engagement": engagement_of(s)}
            for agent, s in game.seated() if s in table.sessions
        ]
        rows.append(
            {
                "game_id": game.game_id, "task_id": game.env_id, "env_id": get_env(game.env_id).base_env or game.env_id,
                "node_id": game.host.node_id if game.host else None, "phase": "waiting" if game.joinable else "playing",
                "seats": game.seat_states(), "sessions": sessions, "started_at": game.created_at,
            }
        )
    return rows


def live_engagement(session_id: str, answered: dict[str, dict[str, float]], book: AssignmentBook) -> dict[str, float] | None:
    """A live session's engagement: as its game process answered this overview, else as its
    assignment last noted it (a process that did not answer in time), else None (not known yet:
    the dashboard shows a dash rather than zeros it cannot vouch for)."""
    if session_id in answered:
        return engagement(answered[session_id])
    assignment = book.assignments.get(session_id)
    if assignment is None or "values" not in assignment.statistics:
        return None
    return engagement(assignment.values)


def finished_session_rows(book: AssignmentBook) -> list[dict[str, Any]]:
    """The latest finished sessions the manager holds (``FINISHED_SESSIONS_SHOWN``, newest first)
    with their final engagement: once a session stops playing it leaves the live games, and
    the researcher still wants to see how it went. Older ones are in the store
    (``crowdplay data sessions``)."""
    finished = sorted((a for a in list(book.assignments.values()) if a.finished_at is not None), key=finished_at, reverse=True)
    return [finished_session_row(assignment) for assignment in finished[:FINISHED_SESSIONS_SHOWN]]


def finished_at(assignment: Assignment) -> float:
    """When the assignment's session finished (0 if it has not)."""
    return assignment.finished_at or 0.0


def finished_session_row(assignment: Assignment) -> dict[str, Any]:
    """One finished session: who, which task, when it finished, whether it completed, its engagement."""
    return {
        "session_id": assignment.session_id, "task_id": assignment.task_id, "participant": assignment.participant,
        "finished_at": assignment.finished_at, "completed": assignment.completed_at is not None,
        "time_played": assignment.values.get("time_played", 0), "engagement": engagement(assignment.values),
    }
