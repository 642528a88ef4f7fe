"""Fuzz campaign: tests/test_fuzz.py at full size against a real deployment (Ray, Serve, EnvActors).

Hypothesis generates ``--cases`` HTTP requests (every endpoint, any method, body, token) and
``--cases`` websocket messages (every message type, malformed, oversized, too fast) against one
game; the suite runs a few hundred per property. The result counts the HTTP statuses and
websocket close codes seen, and whether everything held: no 5xx, only documented close codes, the
fuzzed game still plays, and the manager, writer and the game's process never restarted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SUITE = Path(__file__).resolve().parents[2] / "tests" / "test_fuzz.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options on its ``python -m crowdplay.bench fuzz`` parser."""
    parser.add_argument("--cases", type=int, default=10_000, help="cases per property (HTTP, websocket)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the fuzz suite at ``--cases`` per property and return its report with the time taken and the
    verdict; SystemExit outside a clone of the repository."""
    if not SUITE.exists():
        raise SystemExit(f"the fuzz campaign runs {SUITE}: run it from a clone of the repository")
    with tempfile.TemporaryDirectory(prefix="crowdplay-fuzz-") as scratch:
        report = Path(scratch) / "report.json"
        environment = {**os.environ, "CROWDPLAY_FUZZ_CASES": str(args.cases), "CROWDPLAY_FUZZ_REPORT": str(report)}
        started = time.monotonic()
        finished = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(SUITE)],
            cwd=SUITE.parents[1], env=environment, capture_output=True, text=True,
        )
        seconds = time.monotonic() - started
        tallies = json.loads(report.read_text()) if report.exists() else {}
    summary = next((line for line in reversed(finished.stdout.splitlines()) if " in " in line), "")
    return {
        "benchmark": "fuzz",
        "cases_per_property": args.cases,
        "cases_total": 2 * args.cases,
        "passed": finished.returncode == 0,
        "pytest": summary.strip("= "),
        "seconds": round(seconds, 1),
        "cases_per_s": round(2 * args.cases / seconds, 1),
        **{key: value for key, value in tallies.items() if key != "cases_per_property"},
        **({} if finished.returncode == 0 else {"failure": finished.stdout[-3000:]}),
    }


def summarize(result: dict[str, Any]) -> str:
    """The campaign's verdict, statuses and close codes for people (and the failure, if any)."""
    lines = [
        f"fuzz campaign: {result['cases_total']} cases ({result['cases_per_property']} per property) in {result['seconds']} s: "
        + ("all held" if result["passed"] else "FAILED"),
        f"  HTTP statuses: {result.get('http_statuses')}",
        f"  websocket closes: {result.get('websocket_closes')}",
        f"  processes unchanged: {result.get('processes_unchanged', False)}",
    ]
    if not result["passed"]:
        lines.append(result.get("failure", ""))
    return "\n".join(lines)
