"""The study configuration: everything is checked at load time, and errors name the task and key."""

from __future__ import annotations

import itertools

import pytest

from crowdplay.study import StudyConfigError, define_study, reset_study

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
