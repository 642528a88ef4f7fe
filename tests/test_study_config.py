"""The study configuration: everything is checked at load time against its schema, errors name the task and
key, and docs/study-config.md is the schema's own reference (Ray-free: no test here starts Ray)."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import get_args

import pytest

from crowdplay.environments import get_env, register_env
from crowdplay.environments.spec import MODES
from crowdplay.reference_docs import REGENERATE, study_config_markdown
from crowdplay.study import StudyConfigError, define_study, reset_study
from crowdplay.study_schema import Assignment, Mode, StudyConfig, TaskConfig, accepted, parse_study_config

ROOT = Path(__file__).resolve().parent.parent

_ids = itertools.count()


@pytest.fixture(autouse=True)
def forget_the_study():
    yield
    reset_study()


def task_id() -> str:
    return f"config-test-{next(_ids)}"


def study(**task_options) -> dict:
    return {"tasks": {task_id(): {"environment": "SpaceInvaders", **task_options}}}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fsp": 30}, r"task 'config-test-\d+': unknown key 'fsp' \(did you mean 'fps'\?\)"),
        ({"fps": "fast"}, r"'fps' must be a number of frames per second, got 'fast'"),
        ({"mode": "turns"}, r"'mode' must be one of realtime, wait_for_key, hold_keys"),
        ({"environment": "NoSuchGame"}, r"'environment': unknown environment 'NoSuchGame'"),
        ({"statistics": ["si_hitz"]}, r"'statistics': .*si_hitz"),
        ({"task_requirements": {"no_such_stat": 5}}, r"'task_requirements': .*no_such_stat"),
        ({"task_requirements": {"time_played": 0}}, r"'task_requirements' must be \{statistic name: positive threshold\}"),
        ({"bonus": 5}, r"'bonus' must be a function"),
        ({"completion_code": "X", "completion_url": "https://example.org"}, r"'completion_code' \(MTurk\) or 'completion_url' \(Prolific\), not both"),
        ({"start_time": "tomorrow"}, r"'start_time' is not an ISO 8601 time"),
        ({"start_time": "2030-01-01T00:00:00"}, r"'start_time' needs a time zone"),
        ({"start_time": "2030-01-02T00:00:00+00:00", "end_time": "2030-01-01T00:00:00+00:00"}, r"'end_time' must be after 'start_time'"),
        ({"target_complete_assignments": 2.5}, r"'target_complete_assignments' must be a positive integer"),
        ({"ai_agent_map_always": {"agent_0": "no-such-policy"}}, r"unknown policy 'no-such-policy'"),
        ({"consent": "missing-consent.md"}, r"'consent' file .*missing-consent.md' does not exist"),
        ({"image": "missing.png"}, r"'image' file .*missing.png' does not exist"),
        ({"instructions": "a", "initial_message": "b"}, r"'instructions' or 'initial_message'"),
    ],
)
def test_a_wrong_task_option_fails_at_load_naming_the_task_and_the_key(options, message):
    with pytest.raises(StudyConfigError, match=message):
        define_study(study(**options))


def test_wrong_study_level_options_fail_too():
    with pytest.raises(StudyConfigError, match=r"study: unknown key 'taks' \(did you mean 'tasks'\?\)"):
        define_study({"taks": {}})
    with pytest.raises(StudyConfigError, match=r"study: 'assignment' must be one of choose, auto"):
        define_study({"assignment": "random", "tasks": {task_id(): {"environment": "Pong"}}})
    with pytest.raises(StudyConfigError, match="'tasks' is required"):
        define_study({"title": "no tasks"})
    with pytest.raises(StudyConfigError, match="'environment' is required"):
        define_study({"tasks": {task_id(): {"title": "x"}}})


def test_a_valid_study_registers_its_tasks_as_games(tmp_path):
    (tmp_path / "consent.md").write_text("# Consent\n\nYou agree to *play*.")
    (tmp_path / "card.png").write_bytes(b"\x89PNG\r\n")
    first, second = task_id(), task_id()
    loaded = define_study(
        {
            "title": "A study",
            "consent": "consent.md",
            "assignment": "auto",
            "tasks": {
                first: {
                    "environment": "SpaceInvaders", "fps": 30, "mode": "hold_keys", "image": "card.png",
                    "task_requirements": {"si_hits": 10, "time_played": 60}, "bonus": lambda s: s["si_hits"] * 0.05,
                    "target_complete_assignments": 2, "completion_code": "auto", "initial_message": "Hi",
                },
                second: {"environment": "Pong2P", "ai_agent_map_always": {"first_0": "random"}, "completion_url": "https://example.org/done"},
            },
        },
        base_dir=tmp_path,
    )
    task = loaded.tasks[first]
    assert task.spec.id == first and task.spec.base_env == "SpaceInvaders" and task.spec.fps == 30 and task.spec.mode == "hold_keys"
    assert task.spec.instructions == "Hi" and "<em>play</em>" in task.consent_html
    assert {"score", "time_played", "si_hits"} <= set(task.statistics)
    assert task.progress({"si_hits": 5, "time_played": 90}) == {"si_hits": 0.5, "time_played": 1.0}
    assert not task.complete({"si_hits": 5, "time_played": 90}) and task.complete({"si_hits": 10, "time_played": 60})
    assert task.estimated_bonus({"si_hits": 4}) == 0.2
    assert task.code_for("s1", b"k") == task.code_for("s1", b"k") != task.code_for("s2", b"k")
    assert task.public()["image"] == f"/api/tasks/{first}/image"
    # Automatic assignment fills the task furthest from its target; a full task is closed.
    assert loaded.choose_task({first: 0, second: 5}, now=0).id == first
    assert loaded.choose_task({first: 2, second: 5}, now=0).id == second
    assert loaded.tasks[first].closed_reason(2, now=0) == "this task has all the participants it needs"


# ----------------------------------------------------------------- the schema alone (no registry, no files)
def test_every_problem_is_listed_at_once_a_misspelt_key_first():
    with pytest.raises(StudyConfigError) as refused:
        parse_study_config({"title": 3, "tasks": {"a": {"environment": "Pong", "fps": "fast", "fsp": 30}, "b": {"title": "no environment"}}})
    assert str(refused.value).splitlines() == [
        "task 'a': unknown key 'fsp' (did you mean 'fps'?)",
        "study: 'title' must be a string, or {language tag: string}, got 3",
        "task 'a': 'fps' must be a number of frames per second, got 'fast'",
        "task 'b': 'environment' is required: the id of a registered environment (str)",
    ]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([("tasks", {})], "the study configuration must be a dict"),
        ({"tasks": {}}, "study: 'tasks' must be {task id: task options}, got {}"),
        ({"tasks": {"a": 5}}, "task 'a': its options must be a dict, got int"),
        ({"tasks": {5: {"environment": "Pong"}}}, "study: 'tasks' must be {task id: task options}, got {5: {'environment': 'Pong'}} (the key 5: Input should be a valid string)"),
        ({"tasks": {"a": {"environment": "Pong", "task_requirements": {"time_played": 0}}}}, "task 'a': 'task_requirements' must be {statistic name: positive threshold}, got {'time_played': 0} (at time_played: 0 is not above 0)"),
        ({"tasks": {"a": {"environment": "Pong", "task_requirements": {"time_played": True}}}}, "(at time_played: not a number)"),
        ({"tasks": {"a": {"environment": "Pong", "ai_agent_map_fallback": {"first_0": 7}}}}, "task 'a': 'ai_agent_map_fallback' must be {agent: policy id}, got {'first_0': 7} (at first_0: Input should be a valid string)"),
        ({"tasks": {"a": {"environment": "Pong", "fps": None}}}, "task 'a': 'fps' must be a number of frames per second, got None"),
        ({"tasks": {"a": {"environment": "Pong", "fps": True}}}, "'fps' must be a number of frames per second, got True"),
        ({"tasks": {"a": {"environment": "Pong", "keymap": None}}}, "'keymap' must be a Keymap, a keymap factory, or {agent: either}, got None"),
        ({"tasks": {"a": {"environment": "Pong", "statistics": "si_hits"}}}, "'statistics' must be a list of statistic names, got 'si_hits'"),
        ({"tasks": {"a": {"environment": "Pong", "end_time": dt.datetime(2030, 1, 1)}}}, "task 'a': 'end_time' needs a time zone, e.g. 2030-01-01T00:00:00+00:00"),
        ({"tasks": {"a": {"environment": "Pong", "completion_code": ""}}}, "'completion_code' must be a code (str), or 'auto' for one per assignment, got ''"),
    ],
)
def test_schema_errors_name_the_task_the_key_and_the_problem(config, message):
    with pytest.raises(StudyConfigError) as refused:
        parse_study_config(config)
    assert message in str(refused.value)


def test_valid_values_keep_their_kind_and_times_become_epoch_seconds():
    opens = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    options = MappingProxyType({  # any mapping, not only a dict
        "environment": "Pong", "fps": 30, "human_timeout": None, "statistics": ("si_hits",), "task_requirements": {"time_played": 300, "score": 2.5},
        "start_time": opens, "end_time": "2030-01-02T00:00:00+01:00", "target_complete_assignments": 3,
    })
    task = parse_study_config({"tasks": {"a": options}}).tasks["a"]
    assert type(task.fps) is int and task.statistics == ("si_hits",)  # an int stays an int: the page's JSON shows 30, not 30.0
    assert task.task_requirements == {"time_played": 300, "score": 2.5} and type(task.task_requirements["time_played"]) is int
    assert task.start_time == opens.timestamp() and task.end_time == opens.timestamp() + 23 * 3600
    assert task.model_fields_set == set(options)  # what was given, None included, as the loader sees it
    assert parse_study_config({"tasks": {"a": {"environment": "Pong", "start_time": 1_900_000_000}}}).tasks["a"].start_time == 1_900_000_000


def test_the_schema_s_choices_are_the_platform_s():
    assert get_args(Mode) == MODES
    assert get_args(Assignment) == ("choose", "auto")
    for model in (StudyConfig, TaskConfig):
        for name, info in model.model_fields.items():
            assert info.description and accepted(model, name) != "?", f"{model.__name__}.{name} needs option(accepts, meaning)"


# ----------------------------------------------------------------- what the loader makes of the checked options
def test_a_key_given_as_none_overrides_the_environment_and_a_key_left_out_does_not():
    base = register_env(replace(get_env("Pong"), id=task_id(), human_timeout=30.0, fps=50))
    loaded = define_study({"tasks": {"given": {"environment": base.id, "human_timeout": None}, "left-out": {"environment": base.id}}})
    assert loaded.tasks["given"].spec.human_timeout is None and loaded.tasks["left-out"].spec.human_timeout == 30.0
    assert loaded.tasks["given"].spec.fps == 50 and loaded.tasks["left-out"].title == base.title


def test_the_reference_page_is_generated_from_the_schema():
    assert (ROOT / "docs" / "study-config.md").read_text() == study_config_markdown(), (
        f"docs/study-config.md differs from crowdplay/study_schema.py: regenerate it with `{REGENERATE}`"
    )
