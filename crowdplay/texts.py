"""The participant page's words: one message catalogue, English built in, other languages from the study.

Every string the page shows a participant comes from ``crowdplay/web/static/texts/en.json`` (the page
loads it as is) or from a study's translation of it (``define_study``'s ``texts``: per language, a
mapping or a JSON file of the same keys). A translation is checked at load, so a typo cannot leave
a participant with a missing sentence: every key must be one of the catalogue's and keep its
``{placeholders}``. A key a translation leaves out is shown in English, and the load says how many.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENGLISH_CATALOGUE = Path(__file__).parent / "web" / "static" / "texts" / "en.json"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
#: A language tag as BCP 47 writes the common ones: "de", "pt-BR", "zh-Hant".
_LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class TextsError(ValueError):
    """A study's translation that does not fit the catalogue (the message names the language and key)."""


@cache
def english() -> dict[str, str]:
    """The built-in catalogue: every key the page uses, in English."""
    catalogue: dict[str, str] = json.loads(ENGLISH_CATALOGUE.read_text(encoding="utf-8"))
    return catalogue


def placeholders(text: str) -> set[str]:
    """The ``{names}`` a text fills in."""
    return set(_PLACEHOLDER.findall(text))


def check_language_tag(tag: str) -> str:
    """``tag`` if it reads as a language tag (``de``, ``pt-BR``), else TextsError."""
    if not _LANGUAGE_TAG.match(tag):
        raise TextsError(f"{tag!r} is not a language tag such as 'de' or 'pt-BR'")
    return tag


def load_translation(language: str, given: str | Mapping[str, Any], base: Path) -> dict[str, str]:
    """A study's texts for ``language``: the mapping itself, or the JSON file (relative to ``base``)
    holding it, checked against the catalogue key by key."""
    check_language_tag(language)
    where = f"texts[{language!r}]"
    if isinstance(given, str):
        path = Path(given) if Path(given).is_absolute() else base / given
        if not path.is_file():
            raise TextsError(f"{where}: file {str(path)!r} does not exist")
        try:
            given = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise TextsError(f"{where}: {str(path)!r} is not JSON: {error}") from None
        if not isinstance(given, Mapping):
            raise TextsError(f"{where}: {str(path)!r} must hold a JSON object of texts by key")
    return check_translation(where, given)


def check_translation(where: str, given: Mapping[str, Any]) -> dict[str, str]:
    """``given`` as a catalogue: each key known (with the closest one suggested), each value a
    string with the English text's placeholders and no others."""
    import difflib

    catalogue = english()
    problems = []
    for key, text in given.items():
        if key not in catalogue:
            close = difflib.get_close_matches(str(key), catalogue, n=1)
            problems.append(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        elif not isinstance(text, str) or not text.strip():
            problems.append(f"{key!r} must be a non-empty string")
        elif placeholders(text) != placeholders(catalogue[key]):
            wanted = ", ".join(sorted(f"{{{name}}}" for name in placeholders(catalogue[key]))) or "none"
            problems.append(f"{key!r} must use the placeholders {wanted}, as the English text does")
    if problems:
        raise TextsError(f"{where}: " + "; ".join(problems))
    missing = len(catalogue) - len(given)
    if missing:
        log.warning("%s: %d of %d texts are not translated and are shown in English", where, missing, len(catalogue))
    return dict(given)
