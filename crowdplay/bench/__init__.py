"""Benchmarks that put numbers behind the design's claims, run as ``python -m crowdplay.bench``.

Each benchmark lives in its own module and exposes the same two functions, so the dispatcher in
``__main__`` stays ignorant of what any of them measures:

    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> dict          # JSON-serialisable result

A module may also define ``summarize(result: dict) -> str`` for a human-readable table. Modules are
imported only when their subcommand is chosen, so a benchmark needing Ray does not slow down one
that does not.
"""

from __future__ import annotations

#: Subcommand name -> module implementing it.
BENCHMARKS: dict[str, str] = {
    "burst": "crowdplay.bench.burst",
    "codec": "crowdplay.bench.codec",
    "fuzz": "crowdplay.bench.fuzz",
    "load": "crowdplay.bench.load",
    "policy": "crowdplay.bench.policy",
    "soak": "crowdplay.bench.soak",
    "store": "crowdplay.bench.store",
}
