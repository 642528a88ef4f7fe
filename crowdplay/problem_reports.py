"""Problems the running games reported (a policy failing or recovering, an environment that cannot
be built), kept for ``crowdplay serve``'s console and the dashboard.

Each report gets a sequence number, so the console asks only for what is newer than what it
printed (``after``), and the dashboard shows the newest few.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from crowdplay.environments import EnvironmentFailed

log = logging.getLogger(__name__)

#: Reports kept (the oldest go first).
REPORTS_KEPT = 200


class ProblemReports:
    """Reports of policies' problems and recoveries and of environments that failed to build."""

    def __init__(self, kept: int = REPORTS_KEPT) -> None:
        self.reports: deque[dict[str, Any]] = deque(maxlen=kept)
        self._seq = 0

    def _keep(self, report: dict[str, Any]) -> None:
        self._seq += 1
        self.reports.append({**report, "seq": self._seq})

    def policy(self, report: dict[str, Any]) -> None:
        """A policy's new problem or recovery (``crowdplay.ai.health``), logged and kept."""
        self._keep(report)
        reason = f": {report['reason']}" if report.get("reason") else ""
        log.warning("policy %r is %s%s", report["policy_id"], report["state"], reason)

    def environment_failed(self, failure: EnvironmentFailed) -> None:
        """A game could not be built: logged and kept once per environment and cause (each later
        join fails the same way)."""
        if any(report.get("environment") == failure.env_id and report["reason"] == failure.problem for report in self.reports):
            return
        self._keep({"environment": failure.env_id, "state": "failed", "reason": failure.problem})
        log.error("%s", failure)

    def after(self, seq: int) -> list[dict[str, Any]]:
        """The reports newer than ``seq``."""
        return [report for report in self.reports if report["seq"] > seq]
