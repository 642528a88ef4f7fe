"""PolicyHealth: how each policy is doing, as one game process sees it.

Every answer a policy actor sends (or that stands in for one) passes through here: real answers
and substitutes are counted, recent ones over a sliding window (answers per second, latency,
substitute rate), and the policy's state follows: ``starting`` until its first answer,
``answering``, ``failing`` (the policy raised or answered outside the action space),
``unavailable`` (its actor is down or unreachable) or ``unschedulable`` (Ray could not place it).
A change of state, or a new reason, is a problem to report once (``take_reports``): the game
process sends it on to the EnvsManager, which shows it on ``crowdplay serve``'s console, the
dashboard and ``/metrics``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Seconds of answers the rates and the latency are computed over.
WINDOW_S = 10.0
#: A reason that starts with one of these names the state it puts the policy in.
STATE_OF_REASON = (("policy actor not placed", "unschedulable"), ("policy actor unavailable", "unavailable"))


def state_of(reason: str) -> str:
    """The state a substitute's reason puts its policy in."""
    for prefix, state in STATE_OF_REASON:
        if reason.startswith(prefix):
            return state
    return "failing"


@dataclass
class PolicyFigures:
    """One policy's answers in this process."""

    state: str = "starting"
    reason: str | None = None
    answers: int = 0
    substitutes: int = 0
    #: (time, real?, latency seconds) of the answers in the last ``WINDOW_S``
    recent: deque[tuple[float, bool, float]] = field(default_factory=deque)


class PolicyHealth:
    """Answer counts, recent rates and the state of each policy a game process uses, with each change
    of state queued once as a report for the EnvsManager; ``clock`` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.policies: dict[str, PolicyFigures] = {}
        self._reports: list[dict[str, Any]] = []

    def starting(self, policy_id: str) -> None:
        """A game that may need ``policy_id`` opened (its actor is being started or found)."""
        self.policies.setdefault(policy_id, PolicyFigures())

    def answered(self, policy_id: str, answers: list[int | str], latency_s: float) -> None:
        """Count ``answers`` (actions, or strings saying why a substitute was played) that took
        ``latency_s`` seconds, and move the policy's state accordingly."""
        figures = self.policies.setdefault(policy_id, PolicyFigures())
        now = self.clock()
        reasons = [answer for answer in answers if isinstance(answer, str)]
        real = len(answers) - len(reasons)
        figures.answers += real
        figures.substitutes += len(reasons)
        figures.recent.extend((now, not isinstance(answer, str), latency_s) for answer in answers)
        while figures.recent and now - figures.recent[0][0] > WINDOW_S:
            figures.recent.popleft()
        if reasons:
            self._change(policy_id, figures, state_of(reasons[-1]), reasons[-1])
        elif real:
            self._change(policy_id, figures, "answering", None)

    def _change(self, policy_id: str, figures: PolicyFigures, state: str, reason: str | None) -> None:
        if (state, reason) == (figures.state, figures.reason):
            return
        recovered = state == "answering" and figures.state != "starting"
        figures.state, figures.reason = state, reason
        if state != "answering" or recovered:
            self._reports.append({"policy_id": policy_id, "state": state, "reason": reason, "at": time.time()})

    def take_reports(self) -> list[dict[str, Any]]:
        """Problems (and recoveries) since the last call, each once."""
        reports, self._reports = self._reports, []
        return reports

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Each policy's state and figures, for the dashboard and /metrics."""
        now = self.clock()
        shown = {}
        for policy_id, figures in self.policies.items():
            recent = [entry for entry in figures.recent if now - entry[0] <= WINDOW_S]
            real = [latency for _, is_real, latency in recent if is_real]
            latencies = sorted(real)
            shown[policy_id] = {
                "state": figures.state,
                "reason": figures.reason,
                "answers": figures.answers,
                "substitutes": figures.substitutes,
                "answers_per_s": round(len(real) / WINDOW_S, 2),
                "substitute_rate": round((len(recent) - len(real)) / len(recent), 4) if recent else 0.0,
                "latency_p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
                "latency_p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2) if latencies else None,
            }
        return shown


def merge_policy_snapshots(snapshots: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Several processes' snapshots as one per policy: counts and rates summed; the worst state
    (unschedulable, unavailable, failing, starting, answering) with its reason; the highest latency."""
    order = ["answering", "starting", "failing", "unavailable", "unschedulable"]
    merged: dict[str, dict[str, Any]] = {}
    for snapshot in snapshots:
        for policy_id, figures in snapshot.items():
            into = merged.get(policy_id)
            if into is None:
                merged[policy_id] = dict(figures)
                continue
            for name in ("answers", "substitutes", "answers_per_s"):
                into[name] = into[name] + figures[name]
            into["substitute_rate"] = max(into["substitute_rate"], figures["substitute_rate"])
            for name in ("latency_p50_ms", "latency_p99_ms"):
                values = [value for value in (into[name], figures[name]) if value is not None]
                into[name] = max(values) if values else None
            if order.index(figures["state"]) > order.index(into["state"]):
                into["state"], into["reason"] = figures["state"], figures["reason"]
    return merged
