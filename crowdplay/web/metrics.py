"""The researcher overview as Prometheus text (exposition format 0.0.4).

The admin overview (see ``GET /api/admin/overview``) already holds every number worth
scraping, so the metrics endpoint renders that same dict instead of keeping a second set of
counters in sync with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: The media type Prometheus expects for the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Per-task gauges: metric name, overview field, help text.
TASK_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("crowdplay_live_sessions", "live_sessions", "Participant sessions currently in a game."),
    ("crowdplay_waiting_participants", "waiting", "Participants waiting for a game to start."),
    ("crowdplay_completed_assignments", "completed", "Assignments completed so far."),
    ("crowdplay_target_assignments", "target", "Assignments the study aims to complete."),
    ("crowdplay_participants", "participants", "Distinct participants who have joined."),
)

#: Histograms: metric name, key in ``overview["histograms"]``, help text.
HISTOGRAMS: tuple[tuple[str, str, str], ...] = (
    ("crowdplay_frame_interval_ms", "frame_interval_ms", "Interval between frames sent to participants, in ms."),
    ("crowdplay_input_latency_ms", "input_latency_ms", "Delay from a participant's input to its game step, in ms."),
)

SUM_NOTE = " The _sum is estimated from bucket midpoints."

#: The writer's answer to the dashboard's probe, as ``crowdplay_writer_state``'s label.
WRITER_STATES = ("ok", "late", "unavailable", "unknown")
#: The store's health as the writer last reported it, as ``crowdplay_store_state``'s label.
STORE_STATES = ("healthy", "draining", "failing", "unknown")

#: Per-EnvActor-process gauges of chunks the writer has not acknowledged: metric name, field, help.
UNACKED_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("crowdplay_unacked_chunks", "chunks", "Recorded chunks an EnvActor process holds until the writer acknowledges them."),
    ("crowdplay_unacked_memory_bytes", "memory_bytes", "Bytes of unacknowledged chunks an EnvActor process holds in memory."),
    ("crowdplay_unacked_disk_bytes", "disk_bytes", "Bytes of unacknowledged chunks an EnvActor process spilled to its disk."),
    ("crowdplay_unacked_oldest_age_seconds", "oldest_age_s", "Age of an EnvActor process's oldest unacknowledged chunk (0 when none)."),
)


def escape_label_value(value: object) -> str:
    """A label value as the format requires: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text escapes only backslash and newline (quotes are literal there)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value; integers stay integral so counts read naturally."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def format_le(edge: float) -> str:
    """A bucket bound, written as a float like the official client libraries do."""
    return "+Inf" if math.isinf(edge) else repr(float(edge))


def sample(name: str, value: float, labels: Mapping[str, object] | None = None) -> str:
    """One sample line, ``name{label="value",...} value``."""
    if labels:
        pairs = ",".join(f'{key}="{escape_label_value(val)}"' for key, val in labels.items())
        return f"{name}{{{pairs}}} {format_value(value)}"
    return f"{name} {format_value(value)}"


def family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    """A metric family: its HELP and TYPE lines followed by its samples."""
    return [f"# HELP {name} {escape_help(help_text)}", f"# TYPE {name} {kind}", *samples]


def number(value: Any) -> float:
    """Missing or null overview numbers count as zero rather than breaking the scrape."""
    return 0 if value is None else value


def histogram_samples(name: str, histogram: Mapping[str, Any]) -> list[str]:
    """Cumulative ``le`` buckets at each bucket's upper edge, then ``+Inf``, ``_sum`` and ``_count``.

    The overview keeps only per-bucket counts, so ``_sum`` is estimated as if every observation
    sat at its bucket's midpoint. Observations beyond the last edge are not in the overview, so
    ``+Inf`` equals the last bucket and ``_count``. A value exactly on an edge may sit in the
    bucket above it in the overview while Prometheus's ``le`` is inclusive; with millisecond
    timings that difference is immaterial.
    """
    edges: Sequence[float] = histogram.get("edges") or []
    counts: Sequence[int] = histogram.get("counts") or []
    if counts and len(edges) != len(counts) + 1:
        raise ValueError(f"{name}: {len(edges)} edges for {len(counts)} counts (need one more edge than counts)")
    lines = []
    cumulative = 0
    estimated_sum = 0.0
    for lower, upper, count in zip(edges, edges[1:], counts):
        cumulative += count
        estimated_sum += count * (lower + upper) / 2
        lines.append(sample(f"{name}_bucket", cumulative, {"le": format_le(upper)}))
    lines.append(sample(f"{name}_bucket", cumulative, {"le": "+Inf"}))
    lines.append(sample(f"{name}_sum", estimated_sum))
    lines.append(sample(f"{name}_count", cumulative))
    return lines


def prometheus_text(overview: Mapping[str, Any]) -> str:
    """The whole overview in the Prometheus text format, ending with a newline as required."""
    tasks = overview.get("tasks") or []
    nodes = overview.get("nodes") or []
    totals = overview.get("totals") or {}
    histograms = overview.get("histograms") or {}

    lines: list[str] = []
    for name, field, help_text in TASK_GAUGES:
        samples = (sample(name, number(task.get(field)), {"task": task["task_id"]}) for task in tasks)
        lines += family(name, "gauge", help_text, samples)
    node_samples = (sample("crowdplay_node_sessions", number(node.get("sessions")), {"node": node["node_id"]}) for node in nodes)
    lines += family("crowdplay_node_sessions", "gauge", "Participant sessions hosted on each Ray node.", node_samples)
    lines += family("crowdplay_data_bytes", "gauge", "Bytes of recorded data stored.", [sample("crowdplay_data_bytes", number(totals.get("data_bytes")))])
    for name, key, help_text in HISTOGRAMS:
        lines += family(name, "histogram", help_text + SUM_NOTE, histogram_samples(name, histograms.get(key) or {}))
    lines += recording_lines(overview.get("recording") or {})
    lines += policy_lines(overview.get("policies") or {})
    return "\n".join(lines) + "\n"


POLICY_STATES = ("starting", "answering", "failing", "unavailable", "unschedulable")


def policy_lines(policies: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Each policy's state and answers, as the game processes see them (``crowdplay.ai.health``)."""
    lines: list[str] = []
    states = [
        sample("crowdplay_policy_state", 1.0 if figures.get("state") == state else 0.0, {"policy": policy_id, "state": state})
        for policy_id, figures in policies.items() for state in POLICY_STATES
    ]
    lines += family("crowdplay_policy_state", "gauge", "Each policy's state: starting, answering, failing (it raised), unavailable or unschedulable.", states)
    for name, key, kind, help_text in (
        ("crowdplay_policy_answers", "answers", "gauge", "The policy's own answers so far, in the game processes now running."),
        ("crowdplay_policy_substitutes", "substitutes", "gauge", "Actions played in place of the policy's answer so far (recorded as substitutes)."),
        ("crowdplay_policy_answers_per_second", "answers_per_s", "gauge", "The policy's own answers a second over the last 10 s."),
        ("crowdplay_policy_substitute_ratio", "substitute_rate", "gauge", "Share of the last 10 s of answers that were substitutes."),
        ("crowdplay_policy_latency_p50_ms", "latency_p50_ms", "gauge", "Median request-to-answer time over the last 10 s (NaN: none)."),
    ):
        values = [
            sample(name, math.nan if figures.get(key) is None else number(figures.get(key)), {"policy": policy_id})
            for policy_id, figures in policies.items()
        ]
        lines += family(name, kind, help_text, values)
    return lines


def state_samples(name: str, states: Sequence[str], current: object) -> list[str]:
    """One sample per possible state, 1 for the current one (Prometheus's enum idiom)."""
    return [sample(name, 1 if state == current else 0, {"state": state}) for state in states]


def recording_lines(recording: Mapping[str, Any]) -> list[str]:
    """The recording path's health: the writer, its store and spool, the manager's unsaved
    assignment saves, and each EnvActor process's unacknowledged chunks. Figures the writer sent
    earlier (it is late) are served as they were, with their age in
    ``crowdplay_writer_stats_age_seconds``."""
    writer = recording.get("writer") or {}
    store = recording.get("store") or {}
    spool = recording.get("spool") or {}
    pending = recording.get("pending_saves") or {}
    processes = (recording.get("unacked") or {}).get("processes") or []
    last_error = store.get("last_error") or {}
    lines: list[str] = []
    lines += family("crowdplay_writer_state", "gauge", "The writer's answer to this scrape: ok, late (not within 0.5 s), unavailable or unknown.",
                    state_samples("crowdplay_writer_state", WRITER_STATES, writer.get("state", "unknown")))
    lines += family("crowdplay_writer_stats_age_seconds", "gauge", "Seconds since the writer's figures below were fresh (0: answered now; NaN: never).",
                    [sample("crowdplay_writer_stats_age_seconds", math.nan if writer.get("age_s") is None else writer["age_s"])])
    lines += family("crowdplay_store_state", "gauge", "The store's health as the writer last reported it: healthy, draining (its spool) or failing.",
                    state_samples("crowdplay_store_state", STORE_STATES, store.get("state", "unknown")))
    error_samples = [sample("crowdplay_store_last_error_timestamp_seconds", last_error["at"], {"kind": last_error.get("kind", "")})] if last_error.get("at") else []
    lines += family("crowdplay_store_last_error_timestamp_seconds", "gauge", "When the store last failed (Unix time), by the kind of error.", error_samples)
    lines += family("crowdplay_store_errors", "gauge", "Store failures the writer has seen since it started.",
                    [sample("crowdplay_store_errors", number(store.get("errors")))])
    lines += family("crowdplay_spool_batches", "gauge", "Batches of chunks the writer holds in its spool while the store cannot take them.",
                    [sample("crowdplay_spool_batches", number(spool.get("batches")))])
    lines += family("crowdplay_spool_bytes", "gauge", "Bytes in the writer's spool.", [sample("crowdplay_spool_bytes", number(spool.get("bytes")))])
    lines += family("crowdplay_spool_oldest_age_seconds", "gauge", "Age of the oldest spooled batch (0 when the spool is empty).",
                    [sample("crowdplay_spool_oldest_age_seconds", number(spool.get("oldest_age_s")))])
    lines += family("crowdplay_pending_saves", "gauge", "Assignment and note saves the manager holds until the writer acknowledges them.",
                    [sample("crowdplay_pending_saves", number(pending.get("saves")))])
    lines += family("crowdplay_pending_saves_oldest_age_seconds", "gauge", "Age of the oldest save the manager still holds (0 when none).",
                    [sample("crowdplay_pending_saves_oldest_age_seconds", number(pending.get("oldest_age_s")))])
    for name, field, help_text in UNACKED_GAUGES:
        samples = (sample(name, number(process.get(field)), {"actor": process.get("actor_id") or "", "node": process.get("node_id") or ""}) for process in processes)
        lines += family(name, "gauge", help_text, samples)
    return lines
