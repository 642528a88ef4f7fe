"""The documentation's code is checked against the code it documents.

Documents: ``README.md``, ``docs/*.md`` and ``examples/*/README.md``.

- Every ```python block compiles. It also **runs**, as a program of its own (``python block.py``
  in a fresh temporary directory, without any ``CROWDPLAY_*`` variable), unless the line before
  its opening fence is an HTML comment that says otherwise:

  - ``<!-- not run: why -->``: a fragment (it needs recorded data, a running server, files the
    reader has): only compiled;
  - ``<!-- file: NAME -->``: the block is the content of the file ``NAME`` (a plugin module, say):
    compiled, not run, and written into the directory of every later block of the same document
    that runs, so those can import it.

- Every command line in a ```sh / ```bash block that runs ``crowdplay`` (after any ``VAR=value``
  words, ``&&`` or ``;``) is parsed by the real parser (``crowdplay.cli.build_parser``). A
  concrete line (placeholders such as ``<episode>`` allowed) must parse as it is. A synopsis (a
  line with ``[...]``, ``{a,b}``, ``a|b`` or ``...``; indented lines continue it) must name only
  subcommands and options that exist, and for options with choices only values among them. The
  same synopsis check applies to inline code spans that start with ``crowdplay ``.
- Every ``CROWDPLAY_*`` variable a document mentions is a setting (``CROWDPLAY_<FIELD>`` of
  ``crowdplay.config.Settings``) or one of ``EXTRA_VARIABLES``, each read where that table says.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crowdplay.cli import build_parser
from crowdplay.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").glob("*/README.md"))]
#: ``CROWDPLAY_*`` variables that are not settings, with a file that reads (or sets) each one.
EXTRA_VARIABLES = {
    "CROWDPLAY_MONGODB_URI": "crowdplay/config.py",  # the store setting's former name, refused
    "CROWDPLAY_HAPROXY_PYTHON": "crowdplay/config.py",
    "CROWDPLAY_HAPROXY_BINARY": "crowdplay/web/haproxy.py",
    "CROWDPLAY_LOCAL_MONGODB": "cluster.yaml",
    "CROWDPLAY_MONGODB_PASSWORD": "cluster.yaml",
    "CROWDPLAY_TEST_MONGODB_URI": "tests/test_recording_mongodb.py",
    "CROWDPLAY_FUZZ_CASES": "tests/test_fuzz.py",
    "CROWDPLAY_FUZZ_REPORT": "tests/test_fuzz.py",
}
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
RUN_TIMEOUT_S = 120


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    #: the HTML comment on the line before the opening fence ("not run: ...", "file: NAME"), or ""
    marker: str

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"

    @property
    def file_name(self) -> str | None:
        return self.marker[len("file:"):].strip() if self.marker.startswith("file:") else None

    @property
    def runs(self) -> bool:
        return self.language == "python" and not self.marker.startswith("not run") and self.file_name is None


FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*(.*?)\s*-->\s*$")


def code_blocks(document: Path) -> list[Block]:
    """The document's fenced code blocks, with the marker comment before each."""
    lines = document.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, language = opening.group(1), opening.group(2).lower()
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marked = MARKER.match(previous)
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith("```"):
            body.append(lines[end][len(indent):] if lines[end].startswith(indent) else lines[end])
            end += 1
        blocks.append(Block(document, index + 1, language, "\n".join(body) + "\n", marked.group(1) if marked else ""))
        index = end + 1
    return blocks


ALL_BLOCKS = [block for document in DOCUMENTS for block in code_blocks(document)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.language == "python"]
SHELL_BLOCKS = [block for block in ALL_BLOCKS if block.language in SHELL_LANGUAGES]


def test_the_documents_have_code_to_check():
    """The checks below see the documents' blocks (a parser that found none would pass them all)."""
    assert {block.document.name for block in PYTHON_BLOCKS} >= {"environments.md", "reference.md", "multiplayer.md"}
    assert any(block.runs for block in PYTHON_BLOCKS) and any(block.file_name for block in PYTHON_BLOCKS)
    assert len(list(shell_commands())) >= 20


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.where for block in PYTHON_BLOCKS])
def test_python_blocks_compile(block: Block):
    try:
        compile(block.text, block.where, "exec")
    except SyntaxError as error:
        pytest.fail(f"{block.where}: the python block does not compile: {error}")


def documentation_environment() -> dict[str, str]:
    """A reader's shell: no CrowdPlay variable, no PYTHONPATH (CrowdPlay is installed)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("CROWDPLAY_") and name != "PYTHONPATH"}


RUN_BLOCKS = [block for block in PYTHON_BLOCKS if block.runs]


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[block.where for block in RUN_BLOCKS])
def test_python_programs_run(block: Block, tmp_path: Path):
    """A block not marked otherwise runs as a program, next to the files its document defined
    before it (``<!-- file: NAME -->`` blocks)."""
    for earlier in code_blocks(block.document):
        if earlier.line >= block.line:
            break
        if earlier.file_name is not None:
            (tmp_path / earlier.file_name).write_text(earlier.text)
    program = tmp_path / f"block_{block.line}.py"
    program.write_text(block.text)
    done = subprocess.run(
        [sys.executable, program.name], cwd=tmp_path, env=documentation_environment(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, f"{block.where}: the program failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


# ----------------------------------------------------------------------------- command lines
PLACEHOLDER = re.compile(r"<[^<>]*>")
SEPARATORS = {"&&", "||", ";", "|"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    where: str
    text: str
    words: tuple[str, ...]  # after "crowdplay"
    synopsis: bool


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with backslash continuations joined, and indented lines joined to the command
    before them (a synopsis spread over several lines)."""
    current: list[str] = []
    first = 0
    for number, line in enumerate(text.splitlines()):
        continues = bool(current) and (current[-1].endswith("\\") or (line[:1].isspace() and line.strip() and not line.strip().startswith("#")))
        if continues:
            current[-1] = current[-1].rstrip("\\")
            current.append(line.strip())
            continue
        if current:
            yield first, " ".join(current)
        current, first = [line.strip()], number
    if current:
        yield first, " ".join(current)


def crowdplay_invocations(line: str) -> Iterator[tuple[tuple[str, ...], bool]]:
    """Each ``crowdplay ...`` in a shell line: its words after ``crowdplay``, and whether the line
    is a synopsis rather than a command to run."""
    line = PLACEHOLDER.sub("PLACEHOLDER", line)
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        words = line.split()
    synopsis = any(mark in word for word in words for mark in ("[", "]", "{", "}", "...")) or any("|" in word and word != "|" for word in words)
    command: list[str] = []
    for word in [*words, ";"]:
        if word in SEPARATORS:
            while command and ASSIGNMENT.match(command[0]):
                command.pop(0)
            if command and command[0] == "crowdplay":
                yield tuple(command[1:]), synopsis
            command = []
        else:
            command.append(word)


def shell_commands() -> Iterator[Command]:
    for block in SHELL_BLOCKS:
        for offset, line in logical_lines(block.text):
            for words, synopsis in crowdplay_invocations(line):
                yield Command(f"{block.where} (+{offset + 1})", line, words, synopsis)
    for document in DOCUMENTS:
        text = document.read_text()
        prose = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)
        for span in re.findall(r"`(crowdplay [^`]+)`", prose):
            for words, _ in crowdplay_invocations(span):
                yield Command(f"{document.relative_to(ROOT)} (inline)", span, words, True)


COMMANDS = list(shell_commands())


class ParseFailure(Exception):
    pass


class CheckingParser(argparse.ArgumentParser):
    """Raises instead of printing and exiting."""

    def error(self, message: str):
        raise ParseFailure(message)


def checking_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    for each in parsers_of(parser):
        each.__class__ = CheckingParser
    return parser


def parsers_of(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers_of(sub)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: sub for action in parser._actions if isinstance(action, argparse._SubParsersAction) for name, sub in action.choices.items()}


def check_synopsis(words: tuple[str, ...]) -> list[str]:
    """What a synopsis names that the parser does not have: subcommands, options, choices."""
    problems: list[str] = []
    parser = build_parser()
    chain = [parser]
    tokens = [word.strip("[]") for word in words]
    tokens = [token for token in tokens if token and token != "..."]
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.startswith("-"):
            for option in token.split("|"):
                option = option.strip("[]").split("=")[0]
                if not option.startswith("-"):
                    continue
                action = next((p._option_string_actions[option] for p in reversed(chain) if option in p._option_string_actions), None)
                if action is None:
                    problems.append(f"no option {option} in `crowdplay {' '.join(p.prog.split()[-1] for p in chain[1:])}`")
                elif action.nargs != 0 and index + 1 < len(tokens) and not tokens[index + 1].startswith("-"):
                    index += 1  # the option's value
                    value = tokens[index]
                    values = value.strip("{}").replace("|", ",").split(",")
                    if action.choices and not (value.isupper() or value == "PLACEHOLDER"):  # not a metavariable
                        unknown = [each for each in values if each and each not in action.choices]
                        if unknown:
                            problems.append(f"{option}: {unknown} not among its choices {list(action.choices)}")
        else:
            sub = subcommands(chain[-1])
            if sub:
                if token not in sub:
                    problems.append(f"no subcommand {token!r} of `{chain[-1].prog}` (it has {sorted(sub)})")
                    break
                chain.append(sub[token])
        index += 1
    return problems


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{command.where} {' '.join(command.words)[:60]}" for command in COMMANDS])
def test_crowdplay_command_lines_parse(command: Command):
    if command.synopsis:
        problems = check_synopsis(command.words)
        assert not problems, f"{command.where}: `{command.text}`: " + "; ".join(problems)
        return
    try:
        checking_parser().parse_args(list(command.words))
    except ParseFailure as failure:
        pytest.fail(f"{command.where}: `crowdplay {' '.join(command.words)}` does not parse: {failure}")


def test_the_command_line_checks_catch_mistakes():
    """The checks themselves: an option that does not exist fails, in both forms."""
    with pytest.raises(ParseFailure):
        checking_parser().parse_args(["data", "list", "--finished"])
    with pytest.raises(ParseFailure):
        checking_parser().parse_args(["data", "list", "--status", "done"])
    checking_parser().parse_args(["data", "list", "--status", "complete,finished"])
    assert check_synopsis(("data", "list", "[--env", "E]", "[--completed", "|", "--incomplete]")) == []
    assert check_synopsis(("data", "list", "[--finished]"))
    assert check_synopsis(("data", "export", "--format", "{npz,parquet}"))
    assert check_synopsis(("data", "lists"))
    assert [words for words, _ in crowdplay_invocations("cd x && CROWDPLAY_PLUGINS=a crowdplay serve --port 1  # comment")] == [("serve", "--port", "1")]


# ----------------------------------------------------------------------------- variables
def test_crowdplay_variables_exist():
    settings = {f"CROWDPLAY_{field.name.upper()}" for field in dataclasses.fields(Settings)}
    for name, reader in EXTRA_VARIABLES.items():
        assert name not in settings, f"{name} is a setting: drop it from EXTRA_VARIABLES"
        assert name in (ROOT / reader).read_text(), f"{name} is no longer read in {reader}"
    unknown = {}
    for document in DOCUMENTS:
        for match in re.finditer(r"\bCROWDPLAY_[A-Z0-9_]*[A-Z0-9]\b", document.read_text()):
            name = match.group(0)
            if name not in settings and name not in EXTRA_VARIABLES:
                unknown.setdefault(name, []).append(str(document.relative_to(ROOT)))
    assert not unknown, f"variables that are neither settings nor known names: {unknown}"
