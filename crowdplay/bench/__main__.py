"""``python -m crowdplay.bench <benchmark> [--json]``: run one benchmark and print its result.

The JSON result is always the last line on stdout, so scripts can take ``tail -n 1`` whatever else
a benchmark printed; ``--json`` only suppresses the human-readable table before it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from types import ModuleType

from crowdplay.bench import BENCHMARKS


def _load(name: str) -> ModuleType:
    return importlib.import_module(BENCHMARKS[name])


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """A parser whose subcommands are the benchmarks; only the chosen one's module is imported."""
    parser = argparse.ArgumentParser(prog="python -m crowdplay.bench", description=__doc__)
    commands = parser.add_subparsers(dest="benchmark", required=True, metavar="{" + ",".join(BENCHMARKS) + "}")
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, module_path in BENCHMARKS.items():
        sub = commands.add_parser(name, help=f"see {module_path}")
        sub.add_argument("--json", action="store_true", help="print only the JSON result")
        if name == chosen:
            module = _load(name)
            sub.description = module.__doc__
            module.add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark named in ``argv`` (default: the command line), print its summary unless ``--json``,
    then its JSON result as the last line; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    module = _load(args.benchmark)
    result = module.run(args)
    summarize = getattr(module, "summarize", None)
    if not args.json and summarize is not None:
        print(summarize(result))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
