"""The page's message catalogue and a study's translations of it: every key known, every
placeholder kept, a missing file or a bad language tag named at load."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from crowdplay import texts
from crowdplay.study import StudyConfigError, define_study, reset_study

pytestmark = pytest.mark.unit

STATIC = Path(texts.__file__).parent / "web" / "static"


def test_every_key_the_page_uses_is_in_the_catalogue_and_every_catalogue_key_is_used():
    page = (STATIC / "index.html").read_text() + "".join(path.read_text() for path in STATIC.glob("*.js") if path.name not in ("admin.js", "texts.js"))
    used = set(re.findall(r'data-text(?:-aria-label)?="([\w.]+)"', page)) | set(re.findall(r'\bt\("([\w.]+)"', page))
    plural = {f"{key}_{form}" for key in re.findall(r'\btn\("([\w.]+)"', page) for form in ("one", "other")}
    dynamic = re.findall(r"t\(`([\w.]+)\$\{", page)  # t(`keys.idle_${idle}`) and the like
    catalogue = texts.english()
    assert used | plural <= set(catalogue), sorted((used | plural) - set(catalogue))
    quoted = set(re.findall(r'"([a-z]+\.[a-z_]+)"', page))  # t(done ? "feedback.thanks" : "feedback.failed")
    unused = {key for key in set(catalogue) - used - plural - quoted if not any(key.startswith(prefix) for prefix in dynamic)}
    assert not unused, sorted(unused)


def test_the_example_studys_german_translates_every_key():
    german = texts.load_translation("de", "texts/de.json", Path(__file__).parents[1] / "study")
    assert set(german) == set(texts.english()) and german["consent.agree"] == "Ich stimme zu"


def test_a_translation_is_checked_key_by_key(tmp_path):
    with pytest.raises(texts.TextsError, match=r"unknown key 'consent.agre' \(did you mean 'consent.agree'\?\)"):
        texts.check_translation("texts['de']", {"consent.agre": "Ich stimme zu"})
    with pytest.raises(texts.TextsError, match=r"'lobby.starting_in' must use the placeholders \{seconds\}"):
        texts.check_translation("texts['de']", {"lobby.starting_in": "Start in {sekunden}..."})
    with pytest.raises(texts.TextsError, match="must be a non-empty string"):
        texts.check_translation("texts['de']", {"consent.agree": ""})
    with pytest.raises(texts.TextsError, match="does not exist"):
        texts.load_translation("fr", "fr.json", tmp_path)
    (tmp_path / "fr.json").write_text(json.dumps(["not", "an", "object"]))
    with pytest.raises(texts.TextsError, match="JSON object"):
        texts.load_translation("fr", "fr.json", tmp_path)


def test_a_study_names_its_bad_language_or_texts_at_load():
    try:
        with pytest.raises(StudyConfigError, match="'language': 'Deutsch' is not a language tag"):
            define_study({"language": "Deutsch", "tasks": {"a": {"environment": "Pong"}}})
        with pytest.raises(StudyConfigError, match="has no 'fr' translation"):
            define_study({"language": "fr", "tasks": {"a": {"environment": "Pong"}}})
        with pytest.raises(StudyConfigError, match="'texts': texts\\['de'\\]: unknown key"):
            define_study({"texts": {"de": {"nope": "x"}}, "tasks": {"a": {"environment": "Pong"}}})
        with pytest.raises(StudyConfigError, match="'title' has no text for the study's language 'en'"):
            define_study({"title": {"de": "Studie"}, "texts": {"de": {}}, "tasks": {"a": {"environment": "Pong"}}})
        with pytest.raises(StudyConfigError, match="'consent' has texts for 'fr', which the study does not offer"):
            define_study({"consent": {"en": "Yes?", "fr": "Oui ?"}, "tasks": {"a": {"environment": "Pong"}}})
        study = define_study({"language": "de", "texts": {"de": {"consent.agree": "Ich stimme zu"}}, "tasks": {"a-text": {"environment": "Pong"}}})
        assert study.languages == ["de"] and study.texts["de"] == {"consent.agree": "Ich stimme zu"}
        study = define_study({"title": {"en": "Study", "de": "Studie"}, "consent": "Agree?", "texts": {"de": {}}, "tasks": {"b-text": {"environment": "Pong"}}})
        assert study.titles == {"en": "Study", "de": "Studie"} and study.consents["de"] == study.consents["en"] == study.consent_html
    finally:
        reset_study()
