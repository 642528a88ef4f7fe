"""The study the journey tests run: loaded as a plugin (``Settings.plugins``) in every process of
their deployment. One MTurk-style task with a completion code per assignment, one Prolific-style
task that redirects on completion, a task whose time window is over, a library card that sends
participants to another deployment, a turn-based task, and tasks that care whether the page is
in view; the page in English and German."""

from __future__ import annotations

from pathlib import Path

from crowdplay.study import define_study

#: Short enough for a test: three seconds of play completes a task.
SECONDS_TO_COMPLETE = 3

STUDY = define_study(
    {
        "title": {"en": "CrowdPlay test study", "de": "CrowdPlay-Teststudie"},
        "consent": {"en": "consent.md", "de": "einverstaendnis.md"},
        "assignment": "choose",
        "admin_token": "test-admin-token",
        "texts": {"de": "texts/de.json"},  # the page in German for ?lang=de or a German browser
        "tasks": {
            "invaders-mturk": {
                "environment": "SpaceInvaders",
                "title": "Space Invaders (MTurk)",
                "description": "Play for a few seconds.",
                "statistics": ["si_shots", "si_hits"],
                "task_requirements": {"time_played": SECONDS_TO_COMPLETE},
                "bonus": lambda stats: 0.01 * stats["time_played"],
                "target_complete_assignments": 100,
                "completion_code": "auto",
                "initial_message": "Shoot the aliens! Arrow keys move, Space fires.",
            },
            "pong-prolific": {
                "environment": "Pong",
                "title": "Pong (Prolific)",
                "task_requirements": {"time_played": SECONDS_TO_COMPLETE},
                "completion_url": "https://app.prolific.com/submissions/complete?cc=CPTEST",
            },
            "breakout-over": {
                "environment": "Breakout",
                "title": "Breakout (over)",
                "end_time": "2020-01-01T00:00:00+00:00",
            },
            "elsewhere": {
                "environment": "Pong",
                "title": "Another study",
                "redirect": "https://example.org/another-study",
            },
            "invaders-in-view": {
                "environment": "SpaceInvaders",
                "title": "Space Invaders, page in view",
                "task_requirements": {"time_played": SECONDS_TO_COMPLETE},
                "when_away": "play",
                "max_hidden_s": 1,
                "completion_code": "auto",
            },
            "breakout-stay": {
                "environment": "Breakout",
                "title": "Breakout, ends when you leave",
                "when_away": "end",
            },
            "invaders-turns": {
                "environment": "SpaceInvaders",
                "title": "Space Invaders, one step per key",
                "mode": "wait_for_key",
            },
        },
    },
    base_dir=Path(__file__).parent,
)
