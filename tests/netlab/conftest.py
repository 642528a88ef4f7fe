"""A netlab (docs/netlab.md) for the tests of this directory: the document's by-hand session is
the fixture, run exactly as written; its last line (``down``) runs at the end, also on failure.
Needs root; ``make test`` runs this directory in a pytest process of its own."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from crowdplay.netlab.lab import Lab
from crowdplay.netlab.namespace import inside

ROOT = Path(__file__).resolve().parent.parent.parent
T = TypeVar("T")


def by_hand_commands() -> list[str]:
    """The sh block after ``<!-- netlab: by hand -->`` in docs/netlab.md."""
    text = (ROOT / "docs" / "netlab.md").read_text()
    block = re.search(r"<!-- netlab: by hand -->\n```sh\n(.*?)```", text, re.S)
    assert block, "docs/netlab.md lost its by-hand block"
    return [line for line in block.group(1).splitlines() if line.strip()]


@dataclass
class ByHand:
    """The lab the document's session left up, and what each of its commands printed."""

    lab: Lab
    outputs: dict[str, str]


def run_documented(command: str) -> str:
    """One documented command line, as a maintainer types it at the checkout's root."""
    done = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={key: value for key, value in os.environ.items() if not key.startswith("CROWDPLAY_")})
    assert done.returncode == 0, f"{command!r} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="session")
def by_hand() -> Iterator[ByHand]:
    if os.geteuid() != 0:
        pytest.skip("netlab needs root (network namespaces)")
    commands = by_hand_commands()
    assert shlex.split(commands[-1])[-1] == "down"
    outputs: dict[str, str] = {}
    try:
        for command in commands[:-1]:
            outputs[command] = run_documented(command)
        yield ByHand(Lab.load(), outputs)
    finally:
        run_documented(commands[-1])


@pytest.fixture(scope="session")
def lab(by_hand: ByHand) -> Lab:
    return by_hand.lab


def in_thread_inside(namespace: str, work: Callable[[], T]) -> T:
    """``work()`` in a thread inside ``namespace`` (a browser started there browses from there)."""
    result: list[Any] = []

    def thread() -> None:
        try:
            with inside(namespace):
                result.append(work())
        except BaseException as error:
            result.append(error)

    runner = threading.Thread(target=thread)
    runner.start()
    runner.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]  # type: ignore[no-any-return]
