"""The reference pages written from the code they describe: docs/settings.md from ``Settings``,
docs/study-config.md from the study configuration's schema.

Why generated: a hand-kept list of settings or keys drifts from the code the first time someone
adds one; generated, the page is the code's own words, and tests/test_settings.py and
tests/test_study_config.py fail when a checked-in page differs from what this writes.

    python -m crowdplay.reference_docs           # rewrite both pages
    python -m crowdplay.reference_docs --check   # exit 1 naming the pages that are out of date
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from crowdplay.config import OTHER_VARIABLES, RETIRED_STORE_URI_VARIABLE, SETTING_KINDS, STORE_URI_VARIABLE, Settings, setting_kind, setting_variable
from crowdplay.study_schema import StudyConfig, TaskConfig

#: The repository's docs/ (the pages are written for the repository, not an installed copy).
DOCS = Path(__file__).resolve().parent.parent / "docs"
REGENERATE = "python -m crowdplay.reference_docs"
_FIELD = re.compile(r"^    (\w+): [^=]+=")
_COMMENT = re.compile(r"^    #: ?(.*)$")


def setting_comments() -> dict[str, str]:
    """Each ``Settings`` field's ``#:`` comment (the lines right above it), joined into one line."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(Settings).splitlines():
        comment, field = _COMMENT.match(line), _FIELD.match(line)
        if comment:
            pending.append(comment.group(1))
            continue
        if field:
            comments[field.group(1)] = " ".join(pending)
        pending = []
    return comments


def markdown(text: str) -> str:
    """Docstring text as Markdown in a table cell: reST's double backticks become single ones,
    and a ``|`` does not end the cell."""
    return text.replace("``", "`").replace("|", "\\|")


def default_text(value: Any) -> str:
    """A default as one writes it in the environment: ``true``, ``30``, ``0.25``, or *(empty)*."""
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`" if value != "" else "*(empty)*"


def settings_markdown() -> str:
    """docs/settings.md: every setting (variable, field, kind, default, its comment), how values
    are read, and the ``CROWDPLAY_*`` variables that are not settings."""
    comments = setting_comments()
    lines = [
        "# Settings",
        "",
        f"<!-- Generated from crowdplay.config.Settings by `{REGENERATE}`: edit the class's `#:` comments, not this page. -->",
        "",
        "CrowdPlay reads its settings from the environment where it starts (`crowdplay serve`, the",
        "ingress replicas, HAProxy's launcher, `crowdplay data`) and hands them to the actors it starts:",
        "the field `name` of `crowdplay.config.Settings` from the variable `CROWDPLAY_<NAME>`. On a cluster",
        "they come from `crowdplay.env` (docs/deploy.md); in your own scripts, `Settings.from_env()` reads them.",
        "",
        "- A value that is not valid stops the process before anything starts, with an error naming the",
        "  variable, its value and what the setting takes (`crowdplay` exits with status 2).",
        "- A `CROWDPLAY_*` variable that is neither a setting nor one of the other variables below is",
        "  logged as a warning, with the setting it probably meant: a misspelt setting is ignored.",
        "",
        "| Kind | Takes |",
        "|---|---|",
        *(f"| {kind.name} | {markdown(kind.accepted)} |" for kind in SETTING_KINDS.values()),
        "",
        "## Settings",
        "",
        "| Variable | Field | Kind | Default | What it is for |",
        "|---|---|---|---|---|",
    ]
    for field in fields(Settings):
        default = field.default if field.default is not MISSING else ""
        lines.append(
            f"| `{setting_variable(field.name)}` | `{field.name}` | {setting_kind(field).name} | {default_text(default)} "
            f"| {markdown(comments.get(field.name, ''))} |"
        )
    lines += [
        "",
        "## The store",
        "",
        f"`{STORE_URI_VARIABLE}` is the one store setting: the server records into it, and `crowdplay data`",
        f"and `Dataset.open()` read it. Its former name `{RETIRED_STORE_URI_VARIABLE}` is refused with an",
        "error that says to use it instead: two names for one store could disagree, and the data tools",
        "would then read an empty local store while the server recorded elsewhere.",
        "",
        "## Other variables",
        "",
        "Not settings, but read by CrowdPlay's launchers, its cluster configuration or its tests (never",
        "warned about):",
        "",
        "| Variable | Read by |",
        "|---|---|",
        *(f"| `{name}` | {markdown(reader)} |" for name, reader in OTHER_VARIABLES.items()),
        "",
    ]
    return "\n".join(lines)


def _key_table(model: type[BaseModel]) -> list[str]:
    """A schema's keys as a Markdown table: key, what it takes, what leaving it out means, meaning."""
    rows = ["| Key | Takes | If left out | What it is for |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        absent = "**required**" if info.is_required() else markdown(str(extra.get("when_absent", "")))
        rows.append(f"| `{name}` | {markdown(str(extra.get('accepts', '')))} | {absent} | {markdown(info.description or '')} |")
    return rows


def _docstring(model: type[BaseModel]) -> str:
    return " ".join(markdown(inspect.getdoc(model) or "").split())


def study_config_markdown() -> str:
    """docs/study-config.md: every key of the study and of a task, from the schema that checks them."""
    return "\n".join([
        "# Study configuration reference",
        "",
        f"<!-- Generated from crowdplay.study_schema by `{REGENERATE}`: edit the schema, not this page. -->",
        "",
        "`crowdplay.study.define_study(config, base_dir=...)` takes a dict with the keys below (docs/study.md",
        "shows a whole study). Every key is checked when the study module loads: an unknown key, a value",
        "of the wrong kind, an unknown environment, statistic or policy, or a missing file fails then, with",
        "one line per problem naming the task and the key, e.g.",
        "`task 'invaders': unknown key 'fsp' (did you mean 'fps'?)`.",
        "",
        "## The study",
        "",
        _docstring(StudyConfig),
        "",
        *_key_table(StudyConfig),
        "",
        "## A task",
        "",
        _docstring(TaskConfig),
        "",
        *_key_table(TaskConfig),
        "",
    ])


#: Each generated page, by its file name in docs/.
PAGES: dict[str, Callable[[], str]] = {"settings.md": settings_markdown, "study-config.md": study_config_markdown}


def stale_pages(docs: Path = DOCS) -> list[str]:
    """The pages whose checked-in text differs from what the code generates now."""
    return [name for name, render in PAGES.items() if not (docs / name).is_file() or (docs / name).read_text() != render()]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the pages (or, with ``--check``, only say which are out of date: exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m crowdplay.reference_docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is out of date")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the docs directory (default: the repository's)")
    args = parser.parse_args(argv)
    stale = stale_pages(args.docs)
    if args.check:
        for name in stale:
            print(f"{args.docs / name} is out of date: run `{REGENERATE}`", file=sys.stderr)
        return 1 if stale else 0
    for name in stale:
        (args.docs / name).write_text(PAGES[name]())
        print(f"wrote {args.docs / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
