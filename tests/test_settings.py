"""``Settings.from_env`` is strict, and docs/settings.md is what the code generates (Ray-free, fast)."""

from __future__ import annotations

import ast
import dataclasses
import logging
from pathlib import Path

import pytest

from crowdplay import reference_docs
from crowdplay.cli import main as crowdplay_main
from crowdplay.config import OTHER_VARIABLES, RETIRED_STORE_URI_VARIABLE, SETTING_KINDS, Settings, SettingsError, setting_variables, unknown_variable_message

ROOT = Path(__file__).resolve().parent.parent


def test_no_variables_give_the_defaults_and_each_kind_is_read():
    assert Settings.from_env({}) == Settings()
    settings = Settings.from_env({
        "CROWDPLAY_RECORD": " Off ", "CROWDPLAY_WARM_POOL_SIZE": "5", "CROWDPLAY_COUNTDOWN_S": "0.5",
        "CROWDPLAY_ALLOWED_ORIGINS": "https://a.example, https://b.example", "CROWDPLAY_STORE_URI": " mongodb://db:27017 ",
        "CROWDPLAY_ADMIN_TOKEN": "",
    })
    assert settings.record is False and settings.warm_pool_size == 5 and settings.countdown_s == 0.5
    assert settings.allowed_origins == "https://a.example, https://b.example" and settings.store_uri == "mongodb://db:27017"
    assert settings.admin_token == ""
    for word in ("1", "TRUE", "yes", "On"):
        assert Settings.from_env({"CROWDPLAY_RECORD": word}).record is True
    for word in ("0", "False", "NO", "off"):
        assert Settings.from_env({"CROWDPLAY_RECORD": word}).record is False
    assert isinstance(Settings.from_env({"CROWDPLAY_PLACEMENT_TIMEOUT_S": "60"}).placement_timeout_s, float)


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("CROWDPLAY_RECORD", "maybe", "one of 1, true, yes, on or 0, false, no, off"),
        ("CROWDPLAY_RECORD", "", "one of 1, true, yes, on or 0, false, no, off"),
        ("CROWDPLAY_WARM_POOL_SIZE", "two", "a whole number >= 0"),
        ("CROWDPLAY_WARM_POOL_SIZE", "2.5", "a whole number >= 0"),
        ("CROWDPLAY_WARM_POOL_SIZE", "-1", "a whole number >= 0"),
        ("CROWDPLAY_COUNTDOWN_S", "soon", "a number >= 0"),
        ("CROWDPLAY_COUNTDOWN_S", "nan", "a number >= 0"),
        ("CROWDPLAY_COUNTDOWN_S", "inf", "a number >= 0"),
        ("CROWDPLAY_COUNTDOWN_S", "-0.5", "a number >= 0"),
    ],
)
def test_an_invalid_value_is_refused_naming_the_variable_the_value_and_what_it_takes(variable, value, accepted):
    field = setting_variables()[variable]
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({variable: value})
    assert str(refused.value).startswith(f"{variable}={value!r} is not a valid value: Settings.{field} takes {accepted}")


def test_every_invalid_value_is_named_in_one_error():
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"CROWDPLAY_RECORD": "maybe", "CROWDPLAY_CHUNK_STEPS": "many", "CROWDPLAY_MONGODB_URI": "x.db"})
    lines = str(refused.value).splitlines()
    assert len(lines) == 3 and any(line.startswith("CROWDPLAY_RECORD='maybe'") for line in lines)
    assert any(line.startswith("CROWDPLAY_CHUNK_STEPS='many'") for line in lines)
    assert any(line.startswith("CROWDPLAY_MONGODB_URI is no longer read") for line in lines)


def test_the_former_store_name_is_refused_without_repeating_its_value():
    secret = "mongodb://crowdplay:hunter2@db:27017"
    for environ in ({RETIRED_STORE_URI_VARIABLE: secret}, {RETIRED_STORE_URI_VARIABLE: secret, "CROWDPLAY_STORE_URI": secret}):
        with pytest.raises(SettingsError, match="CROWDPLAY_MONGODB_URI is no longer read: CROWDPLAY_STORE_URI is the one store setting") as refused:
            Settings.from_env(environ)
        assert "hunter2" not in str(refused.value) and "unset CROWDPLAY_MONGODB_URI" in str(refused.value)
    assert Settings.from_env({RETIRED_STORE_URI_VARIABLE: " ", "CROWDPLAY_STORE_URI": "x.db"}).store_uri == "x.db"  # empty: nothing to mistake


def test_an_unknown_variable_is_warned_about_with_the_setting_it_probably_meant(caplog):
    with caplog.at_level(logging.WARNING, logger="crowdplay.config"):
        settings = Settings.from_env({"CROWDPLAY_WARM_POOL_SZE": "5", "CROWDPLAY_store_uri": "x.db", "CROWDPLAY_BANANA": "1"})
    assert settings == Settings()  # ignored, as warned
    assert caplog.messages == [
        "CROWDPLAY_BANANA is not a CrowdPlay setting and is ignored (docs/settings.md lists the settings)",
        "CROWDPLAY_WARM_POOL_SZE is not a CrowdPlay setting and is ignored: did you mean CROWDPLAY_WARM_POOL_SIZE (Settings.warm_pool_size)?",
        "CROWDPLAY_store_uri is not a CrowdPlay setting and is ignored: did you mean CROWDPLAY_STORE_URI (Settings.store_uri)?",
    ]
    assert unknown_variable_message("CROWDPLAY_HAPROXY_PYTON").endswith("did you mean CROWDPLAY_HAPROXY_PYTHON?")


def test_a_renamed_settings_former_variable_is_still_read_with_a_warning_naming_the_new_one(caplog):
    with caplog.at_level(logging.WARNING, logger="crowdplay.config"):
        settings = Settings.from_env({"CROWDPLAY_SESSIONS_PER_ACTOR": "3"})
    assert settings.concurrent_games_per_actor == 3
    assert caplog.messages == [
        "CROWDPLAY_SESSIONS_PER_ACTOR is deprecated and will stop being read in the next release: "
        "rename it to CROWDPLAY_CONCURRENT_GAMES_PER_ACTOR (Settings.concurrent_games_per_actor)",
    ]


def test_a_renamed_settings_new_variable_wins_over_its_former_one(caplog):
    with caplog.at_level(logging.WARNING, logger="crowdplay.config"):
        settings = Settings.from_env({"CROWDPLAY_SESSIONS_PER_ACTOR": "3", "CROWDPLAY_CONCURRENT_GAMES_PER_ACTOR": "5"})
    assert settings.concurrent_games_per_actor == 5
    assert caplog.messages == [
        "CROWDPLAY_SESSIONS_PER_ACTOR is ignored: CROWDPLAY_CONCURRENT_GAMES_PER_ACTOR is set too, "
        "and is the name Settings.concurrent_games_per_actor is read from",
    ]


def test_an_invalid_value_of_a_former_variable_is_refused_naming_that_variable():
    with pytest.raises(SettingsError, match=r"^CROWDPLAY_SESSIONS_PER_ACTOR='many' is not a valid value: Settings.concurrent_games_per_actor takes"):
        Settings.from_env({"CROWDPLAY_SESSIONS_PER_ACTOR": "many"})


def test_settings_and_the_other_variables_are_not_warned_about(caplog):
    known = {name: "1" for name in [*setting_variables(), *OTHER_VARIABLES] if name != "CROWDPLAY_STORE_URI"}
    with caplog.at_level(logging.WARNING, logger="crowdplay.config"):
        Settings.from_env({**known, "OTHER_TOOL_VARIABLE": "x"})
    assert caplog.messages == []


def test_the_other_variables_are_those_the_docs_test_knows():
    """tests/test_docs.py's EXTRA_VARIABLES names the file that reads each variable that is not a
    setting; from_env must not warn about any of them (nor about the store's former name)."""
    tree = ast.parse((ROOT / "tests" / "test_docs.py").read_text())
    table = next(node.value for node in tree.body if isinstance(node, ast.AnnAssign | ast.Assign) and "EXTRA_VARIABLES" in ast.unparse(node))
    extra = set(ast.literal_eval(table))
    assert extra == {*OTHER_VARIABLES, RETIRED_STORE_URI_VARIABLE}


def test_every_setting_has_a_known_kind_and_a_comment():
    comments = reference_docs.setting_comments()
    for field in dataclasses.fields(Settings):
        assert str(field.type) in SETTING_KINDS, f"Settings.{field.name}: a {field.type} has no SettingKind"
        assert comments.get(field.name), f"Settings.{field.name} needs a #: comment (docs/settings.md shows it)"


def test_the_settings_page_is_generated_from_the_code():
    generated = reference_docs.settings_markdown()
    assert (ROOT / "docs" / "settings.md").read_text() == generated, (
        f"docs/settings.md differs from crowdplay.config.Settings: regenerate it with `{reference_docs.REGENERATE}`"
    )
    for name in setting_variables():
        assert f"| `{name}` |" in generated


def test_the_generator_rewrites_stale_pages_and_checks_them(tmp_path, capsys):
    assert reference_docs.main(["--check", "--docs", str(tmp_path)]) == 1
    assert "settings.md is out of date: run `python -m crowdplay.reference_docs`" in capsys.readouterr().err
    assert reference_docs.main(["--docs", str(tmp_path)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["settings.md", "study-config.md"]
    assert reference_docs.main(["--check", "--docs", str(tmp_path)]) == 0


def test_the_command_refuses_an_invalid_setting_in_a_line_and_warns_in_its_own_voice(monkeypatch, capsys):
    monkeypatch.setenv("CROWDPLAY_RECORD", "perhaps")
    assert crowdplay_main(["data", "list"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "crowdplay: CROWDPLAY_RECORD='perhaps' is not a valid value: Settings.record takes one of 1, true, yes, on or 0, false, no, off (any case)"
    )
    monkeypatch.setenv("CROWDPLAY_RECORD", "1")
    monkeypatch.setenv("CROWDPLAY_RECORDS", "1")
    monkeypatch.setenv("CROWDPLAY_CHUNK_STEPS", "x")  # stops the command before it opens a store
    assert crowdplay_main(["data", "list"]) == 2
    assert "crowdplay: warning: CROWDPLAY_RECORDS is not a CrowdPlay setting and is ignored: did you mean CROWDPLAY_RECORD (Settings.record)?\n" in capsys.readouterr().err
