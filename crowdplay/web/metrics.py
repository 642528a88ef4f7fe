"""The researcher overview as Prometheus metrics, written by ``prometheus_client``.

The admin overview (see ``GET /api/admin/overview``) already holds every number worth
scraping, so the metrics endpoint reads that same dict through a collector instead of keeping a
second set of counters in sync with it; the library writes the format (the text format, or
OpenMetrics when the scraper asks for it) and escapes the labels. The frame-interval and
input-latency histograms are real ones: each game process counts them as the events happen
(``crowdplay.timing``) and the overview carries every process's buckets, exact sum and count,
served as one series per process so that a process that retires is not read as a counter reset.

The third histogram, key to frame displayed, is measured by the participants' pages and reported
to the ingress replica that serves their websocket (``latency`` messages, ``BrowserLatency``): it is
that replica's own, added to the overview by the replica that answers the dashboard.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import Histogram
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from crowdplay.env_actor import bucket_quantile
from crowdplay.timing import HISTOGRAMS, histogram_figures

#: Per-task gauges: metric name, overview field, help text.
TASK_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("crowdplay_live_sessions", "live_sessions", "Participant sessions currently in a game."),
    ("crowdplay_waiting_participants", "waiting", "Participants waiting for a game to start."),
    ("crowdplay_completed_assignments", "completed", "Assignments completed so far."),
    ("crowdplay_target_assignments", "target", "Assignments the study aims to complete."),
    ("crowdplay_participants", "participants", "Distinct participants who connected to a game."),
    ("crowdplay_abandoned_starts", "abandoned_starts", "Sessions started whose participant never connected."),
)

#: The writer's answer to the dashboard's probe, as ``crowdplay_writer_state``'s label.
WRITER_STATES = ("ok", "late", "unavailable", "unknown")
#: The store's health as the writer last reported it, as ``crowdplay_store_state``'s label.
STORE_STATES = ("healthy", "draining", "failing", "unknown")
POLICY_STATES = ("starting", "answering", "failing", "unavailable", "unschedulable")

#: Per-EnvActor-process gauges of chunks the writer has not acknowledged: metric name, field, help.
UNACKED_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("crowdplay_unacked_chunks", "chunks", "Recorded chunks an EnvActor process holds until the writer acknowledges them."),
    ("crowdplay_unacked_memory_bytes", "memory_bytes", "Bytes of unacknowledged chunks an EnvActor process holds in memory."),
    ("crowdplay_unacked_disk_bytes", "disk_bytes", "Bytes of unacknowledged chunks an EnvActor process spilled to its disk."),
    ("crowdplay_unacked_oldest_age_seconds", "oldest_age_s", "Age of an EnvActor process's oldest unacknowledged chunk (0 when none)."),
)

#: Per-policy gauges: metric name, field of ``crowdplay.ai.health``'s figures, help text.
POLICY_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("crowdplay_policy_answers", "answers", "The policy's own answers so far, in the game processes now running."),
    ("crowdplay_policy_substitutes", "substitutes", "Actions played in place of the policy's answer so far (recorded as substitutes)."),
    ("crowdplay_policy_answers_per_second", "answers_per_s", "The policy's own answers a second over the last 10 s."),
    ("crowdplay_policy_substitute_ratio", "substitute_rate", "Share of the last 10 s of answers that were substitutes."),
    ("crowdplay_policy_latency_p50_ms", "latency_p50_ms", "Median request-to-answer time over the last 10 s (NaN: none)."),
)


class OverviewCollector(Collector):
    """The overview dict as metric families, so ``prometheus_client`` writes the exposition
    (one collector per scrape: the overview is fetched fresh for each)."""

    def __init__(self, overview: Mapping[str, Any]) -> None:
        self.overview = overview

    def collect(self) -> Iterator[Metric]:
        """Every family, read from the overview at scrape time."""
        overview = self.overview
        yield from task_families(overview.get("tasks") or [])
        yield gauge_family("crowdplay_node_sessions", "Participant sessions hosted on each Ray node.", ["node"],
                           (([node["node_id"]], node.get("sessions")) for node in overview.get("nodes") or []))
        totals = overview.get("totals") or {}
        yield gauge("crowdplay_data_bytes", "Bytes of recorded data stored.", totals.get("data_bytes"))
        yield counter("crowdplay_withdrawn_requests", "Session requests whose client left before the answer (none was fulfilled).", totals.get("withdrawn_requests"))
        yield counter("crowdplay_builds_behind_play", "Games whose environment was built behind games playing in its process (each a stall of those games).", totals.get("builds_behind_play"))
        yield from histogram_families(overview.get("histograms") or {})
        yield key_to_frame_family((overview.get("histograms") or {}).get(KEY_TO_FRAME) or {})
        yield from recording_families(overview.get("recording") or {})
        yield from policy_families(overview.get("policies") or {})


def prometheus_text(overview: Mapping[str, Any]) -> str:
    """The whole overview in the Prometheus text format (version 0.0.4)."""
    return generate_latest(OverviewCollector(overview)).decode()


def exposition(overview: Mapping[str, Any], accept: str | None) -> tuple[bytes, str]:
    """The overview encoded as the scraper's ``Accept`` header asks (OpenMetrics or the text
    format, chosen by ``prometheus_client``), and that encoding's content type."""
    encode, content_type = choose_encoder(accept or "")
    return encode(OverviewCollector(overview)), content_type


def number(value: Any) -> float:
    """Missing or null overview numbers count as zero rather than breaking the scrape."""
    return 0.0 if value is None else float(value)


def gauge(name: str, help_text: str, value: Any) -> GaugeMetricFamily:
    """An unlabelled gauge (missing counts as zero)."""
    return GaugeMetricFamily(name, help_text, value=number(value))


def counter(name: str, help_text: str, value: Any) -> CounterMetricFamily:
    """An unlabelled counter (served as ``<name>_total``; missing counts as zero): a count since
    the EnvsManager started, which a restart resets as Prometheus expects of a counter."""
    return CounterMetricFamily(name, help_text, value=number(value))


def gauge_family(name: str, help_text: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[object], Any]]) -> GaugeMetricFamily:
    """A labelled gauge from ``(label values, value)`` rows; a missing label value is empty."""
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for values, value in rows:
        family.add_metric(["" if v is None else str(v) for v in values], number(value))
    return family


def state_family(name: str, help_text: str, states: Sequence[str], current: object) -> GaugeMetricFamily:
    """One sample per possible state, 1 for the current one (Prometheus's enum idiom)."""
    return gauge_family(name, help_text, ["state"], (([state], 1 if state == current else 0) for state in states))


def task_families(tasks: Sequence[Mapping[str, Any]]) -> Iterator[GaugeMetricFamily]:
    """Each task's sessions, waiting participants, completions and target."""
    for name, field, help_text in TASK_GAUGES:
        yield gauge_family(name, help_text, ["task"], (([task["task_id"]], task.get(field)) for task in tasks))


def histogram_families(histograms: Mapping[str, Mapping[str, Any]]) -> Iterator[HistogramMetricFamily]:
    """Each game process's frame-interval and input-latency histogram since it started, labelled
    by its actor and node (an overview without them declares the metrics with no samples)."""
    for key, histogram in HISTOGRAMS.items():
        (described,) = histogram.describe()
        family = HistogramMetricFamily(described.name, described.documentation, labels=["actor", "node"])
        for process in (histograms.get(key) or {}).get("processes") or []:
            buckets = [(str(le), float(count)) for le, count in process["buckets"]]
            family.add_metric([process.get("actor") or "", process.get("node") or ""], buckets, float(process["sum"]))
        yield family


def key_to_frame_family(histogram: Mapping[str, Any]) -> HistogramMetricFamily:
    """The pages' key-to-frame-displayed histogram, one series per ingress replica that received
    reports (labelled by replica and node, like the game processes' by actor and node)."""
    (described,) = BROWSER_LATENCY.histogram.describe()
    family = HistogramMetricFamily(described.name, described.documentation, labels=["replica", "node"])
    for replica in histogram.get("processes") or []:
        buckets = [(str(le), float(count)) for le, count in replica["buckets"]]
        family.add_metric([replica.get("replica") or "", replica.get("node") or ""], buckets, float(replica["sum"]))
    return family


def recording_families(recording: Mapping[str, Any]) -> Iterator[GaugeMetricFamily]:
    """The recording path's health: the writer, its store and spool, the manager's unsaved
    assignment saves, and each EnvActor process's unacknowledged chunks. Figures the writer sent
    earlier (it is late) are served as they were, with their age in
    ``crowdplay_writer_stats_age_seconds``."""
    yield from writer_families(recording.get("writer") or {})
    yield from store_families(recording.get("store") or {}, recording.get("spool") or {})
    yield from unsaved_families(recording.get("pending_saves") or {}, (recording.get("unacked") or {}).get("processes") or [])


def writer_families(writer: Mapping[str, Any]) -> Iterator[GaugeMetricFamily]:
    """Whether the writer answered this scrape, and how old the figures it last sent are."""
    yield state_family("crowdplay_writer_state", "The writer's answer to this scrape: ok, late (not within 0.5 s), unavailable or unknown.",
                       WRITER_STATES, writer.get("state", "unknown"))
    yield gauge("crowdplay_writer_stats_age_seconds", "Seconds since the writer's figures below were fresh (0: answered now; NaN: never).",
                math.nan if writer.get("age_s") is None else writer["age_s"])


def store_families(store: Mapping[str, Any], spool: Mapping[str, Any]) -> Iterator[GaugeMetricFamily]:
    """The store's health and failures, and the spool that holds chunks while the store fails."""
    last_error = store.get("last_error") or {}
    yield state_family("crowdplay_store_state", "The store's health as the writer last reported it: healthy, draining (its spool) or failing.",
                       STORE_STATES, store.get("state", "unknown"))
    yield gauge_family("crowdplay_store_last_error_timestamp_seconds", "When the store last failed (Unix time), by the kind of error.", ["kind"],
                       [([last_error.get("kind", "")], last_error["at"])] if last_error.get("at") else [])
    yield gauge("crowdplay_store_errors", "Store failures the writer has seen since it started.", store.get("errors"))
    yield gauge("crowdplay_spool_batches", "Batches of chunks the writer holds in its spool while the store cannot take them.", spool.get("batches"))
    yield gauge("crowdplay_spool_bytes", "Bytes in the writer's spool.", spool.get("bytes"))
    yield gauge("crowdplay_spool_oldest_age_seconds", "Age of the oldest spooled batch (0 when the spool is empty).", spool.get("oldest_age_s"))


def unsaved_families(pending: Mapping[str, Any], processes: Sequence[Mapping[str, Any]]) -> Iterator[GaugeMetricFamily]:
    """What is held until the writer acknowledges it: the manager's saves and each EnvActor
    process's chunks."""
    yield gauge("crowdplay_pending_saves", "Assignment and note saves the manager holds until the writer acknowledges them.", pending.get("saves"))
    yield gauge("crowdplay_pending_saves_oldest_age_seconds", "Age of the oldest save the manager still holds (0 when none).", pending.get("oldest_age_s"))
    for name, field, help_text in UNACKED_GAUGES:
        yield gauge_family(name, help_text, ["actor", "node"],
                           (([process.get("actor_id"), process.get("node_id")], process.get(field)) for process in processes))


def policy_families(policies: Mapping[str, Mapping[str, Any]]) -> Iterator[GaugeMetricFamily]:
    """Each policy's state and answers, as the game processes see them (``crowdplay.ai.health``)."""
    yield gauge_family(
        "crowdplay_policy_state", "Each policy's state: starting, answering, failing (it raised), unavailable or unschedulable.", ["policy", "state"],
        (([policy_id, state], 1 if figures.get("state") == state else 0) for policy_id, figures in policies.items() for state in POLICY_STATES),
    )
    for name, field, help_text in POLICY_GAUGES:
        yield gauge_family(name, help_text, ["policy"],
                           (([policy_id], math.nan if figures.get(field) is None else figures[field]) for policy_id, figures in policies.items()))


# ---------------------------------------------------------------- key to frame, as the pages see it

#: The overview's key (under ``histograms``) for the pages' key-to-frame-displayed delays.
KEY_TO_FRAME = "key_to_frame_ms"
#: Bucket edges (ms) of that histogram; the last bucket is open-ended. It spans the network's
#: round trip, the wait for the tick and the wait for the browser's next paint, so it reaches
#: further than the game process's receive-to-apply delay.
KEY_TO_FRAME_EDGES_MS = [0, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 300, 500, 1000, 1e9]
#: Reports kept for the dashboard's recent histogram (as many as the game processes keep).
RECENT_KEY_TO_FRAME_SAMPLES = 3600


class BrowserLatency:
    """The key-to-frame-displayed delays the pages on this ingress replica reported: a Prometheus
    histogram since the replica started (for ``/metrics``) and the newest reports (for the
    dashboard). The pages measure it because only they know when a frame reached the screen."""

    def __init__(self) -> None:
        """Nothing reported yet; the histogram is in no registry, it is served through the overview."""
        self.histogram = Histogram(
            "crowdplay_key_to_frame_ms", "Delay from a participant's key press to the first frame showing it on their screen (measured by the page), in ms.",
            buckets=KEY_TO_FRAME_EDGES_MS[1:-1], registry=None,
        )
        self.recent: deque[float] = deque(maxlen=RECENT_KEY_TO_FRAME_SAMPLES)
        #: the replica and node that received the reports (``crowdplay.web.websocket.served_by``); None before the first
        self.served_by: Mapping[str, Any] | None = None

    def observe(self, samples: Iterable[float], served_by: Mapping[str, Any]) -> None:
        """A page's report (already checked by ``crowdplay.protocol``), received by the replica
        ``served_by`` names: every sample counted."""
        self.served_by = served_by
        for delay_ms in samples:
            self.histogram.observe(delay_ms)
            self.recent.append(delay_ms)

    def figures(self) -> dict[str, Any]:
        """The recent histogram in the shape of the game processes' (edges, counts, p50, p99,
        samples) and, under ``processes``, this replica's cumulative one once it has had a report."""
        counts = np.histogram(list(self.recent), bins=KEY_TO_FRAME_EDGES_MS)[0]
        shown_edges = [*KEY_TO_FRAME_EDGES_MS[:-1], KEY_TO_FRAME_EDGES_MS[-2] * 2]  # the open end drawn twice as wide
        cumulative = np.cumsum(counts)
        where = self.served_by
        replicas = [] if where is None else [{"replica": where.get("replica"), "node": where.get("node"), **histogram_figures(self.histogram)}]
        return {
            "edges": shown_edges, "counts": counts.tolist(), "samples": int(counts.sum()),
            "p50": bucket_quantile(shown_edges, cumulative, 0.5), "p99": bucket_quantile(shown_edges, cumulative, 0.99), "processes": replicas,
        }


#: This process's reports (an ingress replica, or the local baseline's web process).
BROWSER_LATENCY = BrowserLatency()


def with_browser_latency(overview: dict[str, Any]) -> dict[str, Any]:
    """The overview (from the EnvsManager, which never sees the pages' reports) with this
    replica's key-to-frame histogram added under ``histograms``."""
    histograms = {**(overview.get("histograms") or {}), KEY_TO_FRAME: BROWSER_LATENCY.figures()}
    return {**overview, "histograms": histograms}
