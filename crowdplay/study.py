"""The study: tasks, consent, assignment and completion, configured in Python and checked at load.

A researcher writes a plugin module (``CROWDPLAY_PLUGINS=my_study``) that calls ``define_study``::

    define_study({
        "title": "Atari demonstrations",
        "consent": "consent.md",                  # Markdown or HTML file (or inline Markdown)
        "assignment": "auto",                     # or "choose": the participant picks from the library
        "tasks": {
            "invaders": {
                "environment": "SpaceInvaders",
                "title": "Space Invaders",
                "statistics": ["si_accuracy", "si_hits"],
                "task_requirements": {"time_played": 300, "si_hits": 20},
                "bonus": lambda stats: 0.01 * stats["si_hits"],
                "target_complete_assignments": 50,
                "completion_code": "auto",          # MTurk: a code per assignment; or a fixed string
                # "completion_url": "https://app.prolific.com/submissions/complete?cc=XXXX",
            },
        },
    })

Every key is checked when the module loads: an unknown key or a wrong type raises
``StudyConfigError`` naming the task and the key (with the closest known key). Each task becomes
a registered environment with the task's id (its game configured by the task's options), so the
rest of the platform runs a task like any game. Without a study, every registered game is a task
with no requirements, chosen from the library.

Completion: each requirement ``name -> threshold`` is met to ``min(value / threshold, 1)``; a
participant completes when all are fully met. The server, never the page, decides that.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import hmac
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from crowdplay.environments import get_env, list_envs, register_env
from crowdplay.environments.registry import UnknownEnvironment
from crowdplay.environments.spec import MODES, EnvSpec
from crowdplay.statistics import UnknownStatistic, check_statistic

#: Statistics every task tracks: the score page ranks by score; time played is always useful.
ALWAYS_TRACKED = ("score", "time_played", "active_time")
ASSIGNMENT_MODES = ("choose", "auto")


class StudyConfigError(ValueError):
    """The study configuration is wrong; the message names the task and the key."""


@dataclass(frozen=True)
class Task:
    """One task of a study: a configured game plus what completing it takes."""

    id: str
    spec: EnvSpec
    title: str
    description: str = ""
    #: a URL for the library card's image, or None
    image: str | None = None
    #: an image file served as the card's image (at /api/tasks/<id>/image)
    image_file: str | None = None
    consent_html: str = ""
    statistics: tuple[str, ...] = ALWAYS_TRACKED
    task_requirements: Mapping[str, float] = field(default_factory=dict)
    bonus: Callable[[dict[str, float]], float] | None = None
    target_complete_assignments: int | None = None
    redirect: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    completion_code: str | None = None
    completion_url: str | None = None

    # ----------------------------------------------------------------- completion
    def progress(self, values: Mapping[str, float]) -> dict[str, float]:
        """Each requirement's fraction met, ``min(value / threshold, 1)``."""
        return {name: min(float(values.get(name, 0.0)) / threshold, 1.0) for name, threshold in self.task_requirements.items()}

    def complete(self, values: Mapping[str, float]) -> bool:
        return all(fraction >= 1.0 for fraction in self.progress(values).values())

    def summary(self, values: Mapping[str, float]) -> dict[str, Any]:
        """What the page shows while playing: values, each requirement's progress, overall
        completion (the least-met requirement), the estimated bonus, whether it is complete."""
        progress = self.progress(values)
        return {
            "values": dict(values),
            "progress": progress,
            "completion": min(progress.values(), default=1.0),
            "complete": self.complete(values),
            "bonus": self.estimated_bonus(values),
        }

    def estimated_bonus(self, values: Mapping[str, float]) -> float | None:
        """The bonus formula on the values so far (None without a formula; a failing formula counts 0)."""
        if self.bonus is None:
            return None
        try:
            bonus = float(self.bonus(dict(values)))
        except Exception:
            return 0.0
        return round(bonus, 2) if math.isfinite(bonus) else 0.0

    def code_for(self, session_id: str, secret: bytes) -> str | None:
        """The completion code shown to an MTurk-style participant: the configured string, or with
        ``"auto"`` one derived from the session (unguessable without the deployment's secret)."""
        if self.completion_code != "auto":
            return self.completion_code
        return hmac.new(secret, f"{self.id}/{session_id}".encode(), hashlib.sha256).hexdigest()[:12].upper()

    # ----------------------------------------------------------------- availability
    def closed_reason(self, completed: int, now: float) -> str | None:
        """Why the task takes no new participants now (None: it is open)."""
        if self.start_time is not None and now < self.start_time:
            return f"opens at {dt.datetime.fromtimestamp(self.start_time, dt.timezone.utc).isoformat()}"
        if self.end_time is not None and now >= self.end_time:
            return "this task has ended"
        if self.target_complete_assignments is not None and completed >= self.target_complete_assignments:
            return "this task has all the participants it needs"
        return None

    def public(self, completed: int = 0, now: float | None = None) -> dict[str, Any]:
        """What the page shows about the task (nothing callable, nothing secret)."""
        closed = self.closed_reason(completed, time.time() if now is None else now)
        spec = self.spec
        return {
            **spec.public(),
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "image": f"/api/tasks/{self.id}/image" if self.image_file else self.image,
            "redirect": self.redirect,
            "statistics": list(self.statistics),
            "requirements": [{"name": name, "threshold": threshold} for name, threshold in self.task_requirements.items()],
            "has_bonus": self.bonus is not None,
            "completion": "url" if self.completion_url else "code" if self.completion_code else None,
            "open": closed is None,
            "closed_reason": closed,
        }


@dataclass(frozen=True)
class Study:
    title: str
    tasks: dict[str, Task]
    assignment: str = "choose"
    consent_html: str = ""
    admin_token: str = ""

    @property
    def consent_version(self) -> str:
        """Changes whenever the consent text does: the page asks again for a new version."""
        return hashlib.sha256(self.consent_html.encode()).hexdigest()[:12]

    def task(self, task_id: str) -> Task:
        try:
            return self.tasks[task_id]
        except KeyError:
            raise UnknownEnvironment(task_id) from None

    def task_for(self, env_id: str) -> Task:
        """The task of a game: the study's, or (a registered game outside the study) one with no
        requirements and no completion."""
        task = self.tasks.get(env_id)
        if task is not None:
            return task
        spec = get_env(env_id)
        return Task(id=spec.id, spec=spec, title=spec.title, description=spec.description)

    def choose_task(self, completed: Mapping[str, int], now: float) -> Task | None:
        """Automatic assignment: the open task furthest from its target (fewest completions, then
        the least complete relative to its target), so tasks fill evenly."""
        open_tasks = [task for task in self.tasks.values() if task.redirect is None and task.closed_reason(completed.get(task.id, 0), now) is None]
        if not open_tasks:
            return None
        return min(
            open_tasks,
            key=lambda task: (completed.get(task.id, 0) / (task.target_complete_assignments or math.inf), completed.get(task.id, 0), task.id),
        )


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://", "/"))


# ----------------------------------------------------------------- loading and checking
_STUDY: Study | None = None

#: key -> (description of the expected type, check) for a task's keys.
Check = Callable[[Any], bool]
_text: Check = lambda value: isinstance(value, str)  # noqa: E731
_number: Check = lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)  # noqa: E731
_optional_number: Check = lambda value: value is None or _number(value)  # noqa: E731
_str_map: Check = lambda value: isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())  # noqa: E731
_per_agent_text: Check = lambda value: _text(value) or _str_map(value)  # noqa: E731
_time: Check = lambda value: value is None or _number(value) or isinstance(value, (str, dt.datetime))  # noqa: E731

TASK_KEYS: dict[str, tuple[str, Check]] = {
    "environment": ("the id of a registered environment (str)", _text),
    "title": ("a string", _text),
    "description": ("a string", _text),
    "image": ("a URL or an image file path (str)", lambda v: v is None or _text(v)),
    "instructions": ("HTML (str) or {agent: HTML}", _per_agent_text),
    "initial_message": ("HTML (str) or {agent: HTML}", _per_agent_text),
    "consent": ("a Markdown/HTML file path or Markdown text (str)", _text),
    "fps": ("a number of frames per second", _number),
    "mode": (f"one of {', '.join(MODES)}", lambda v: v in MODES),
    "keymap": ("a Keymap, a keymap factory, or {agent: either}", lambda v: v is not None),
    "ai_agent_map_always": ("{agent: policy id}", _str_map),
    "ai_agent_map_fallback": ("{agent: policy id}", _str_map),
    "human_timeout": ("seconds (number) or None", _optional_number),
    "reconnect_grace_s": ("seconds (number) or None", _optional_number),
    "statistics": ("a list of statistic names", lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)),
    "task_requirements": ("{statistic name: positive threshold}", lambda v: isinstance(v, Mapping) and all(isinstance(k, str) and _number(t) and t > 0 for k, t in v.items())),
    "bonus": ("a function of the statistics dict returning a number", callable),
    "target_complete_assignments": ("a positive integer or None", lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0)),
    "redirect": ("a URL (str)", lambda v: v is None or _text(v)),
    "start_time": ("an ISO 8601 time, epoch seconds or a datetime", _time),
    "end_time": ("an ISO 8601 time, epoch seconds or a datetime", _time),
    "completion_code": ("a code (str), or 'auto' for one per assignment", lambda v: v is None or (_text(v) and v != "")),
    "completion_url": ("a URL (str) to send the participant to", lambda v: v is None or _text(v)),
}
STUDY_KEYS: dict[str, tuple[str, Check]] = {
    "title": ("a string", _text),
    "consent": ("a Markdown/HTML file path or Markdown text (str)", _text),
    "assignment": (f"one of {', '.join(ASSIGNMENT_MODES)}", lambda v: v in ASSIGNMENT_MODES),
    "tasks": ("{task id: task options}", lambda v: isinstance(v, Mapping) and len(v) > 0),
    "admin_token": ("a string", _text),
}


def _check_keys(where: str, options: Mapping[str, Any], schema: dict[str, tuple[str, Check]]) -> None:
    for key, value in options.items():
        if key not in schema:
            close = difflib.get_close_matches(str(key), schema, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(schema))})"
            raise StudyConfigError(f"{where}: unknown key {key!r}{hint}")
        expected, check = schema[key]
        if not check(value):
            raise StudyConfigError(f"{where}: {key!r} must be {expected}, got {value!r}")


def _timestamp(where: str, key: str, value: Any) -> float | None:
    if value is None or _number(value):
        return value
    try:
        moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    except ValueError:
        raise StudyConfigError(f"{where}: {key!r} is not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        raise StudyConfigError(f"{where}: {key!r} needs a time zone, e.g. {value}+00:00")
    return moment.timestamp()


def render_consent(where: str, value: str, base: Path) -> str:
    """Consent as HTML: an .html file as is, a .md file or inline text rendered from Markdown."""
    from markdown_it import MarkdownIt

    if value.lower().endswith((".md", ".markdown", ".html", ".htm")) and "\n" not in value:
        path = Path(value) if Path(value).is_absolute() else base / value
        if not path.is_file():
            raise StudyConfigError(f"{where}: 'consent' file {str(path)!r} does not exist")
        text = path.read_text(encoding="utf-8")
        return text if path.suffix.lower() in (".html", ".htm") else MarkdownIt("commonmark", {"html": True}).render(text)
    return MarkdownIt("commonmark", {"html": True}).render(value)


def _task(task_id: str, options: Mapping[str, Any], study_consent: str, base: Path) -> Task:
    where = f"task {task_id!r}"
    _check_keys(where, options, TASK_KEYS)
    if "environment" not in options:
        raise StudyConfigError(f"{where}: 'environment' is required (the id of a registered environment)")
    if "instructions" in options and "initial_message" in options:
        raise StudyConfigError(f"{where}: give 'instructions' or 'initial_message' (the original's name), not both")
    if (options.get("completion_code") is not None) and (options.get("completion_url") is not None):
        raise StudyConfigError(f"{where}: give 'completion_code' (MTurk) or 'completion_url' (Prolific), not both")
    try:
        base_spec = get_env(options["environment"])
    except UnknownEnvironment as error:
        raise StudyConfigError(f"{where}: 'environment': {error}") from None
    statistics = list(ALWAYS_TRACKED) + [name for name in options.get("statistics", ()) if name not in ALWAYS_TRACKED]
    requirements = dict(options.get("task_requirements", {}))
    statistics += [name for name in requirements if name not in statistics]
    for name in statistics:
        try:
            check_statistic(name)
        except UnknownStatistic as error:
            key = "task_requirements" if name in requirements else "statistics"
            raise StudyConfigError(f"{where}: {key!r}: {error}") from None
    spec_options = {key: options[key] for key in ("fps", "mode", "keymap", "ai_agent_map_always", "ai_agent_map_fallback", "human_timeout", "reconnect_grace_s") if key in options}
    instructions = options.get("instructions", options.get("initial_message"))
    if instructions is not None:
        spec_options["instructions"] = instructions
    title = options.get("title", base_spec.title)
    try:
        spec = replace(base_spec, id=task_id, title=title, description=options.get("description", base_spec.description), base_env=base_spec.base_env or base_spec.id, **spec_options)
    except (ValueError, TypeError) as error:
        raise StudyConfigError(f"{where}: {error}") from None
    start, end = _timestamp(where, "start_time", options.get("start_time")), _timestamp(where, "end_time", options.get("end_time"))
    if start is not None and end is not None and end <= start:
        raise StudyConfigError(f"{where}: 'end_time' must be after 'start_time'")
    image, image_file = options.get("image"), None
    if image is not None:
        path = Path(image) if Path(image).is_absolute() else base / image
        if path.is_file():
            image, image_file = None, str(path)
        elif not _is_url(image):
            raise StudyConfigError(f"{where}: 'image' file {str(path)!r} does not exist")
    return Task(
        id=task_id,
        spec=spec,
        title=title,
        description=spec.description,
        image=image,
        image_file=image_file,
        consent_html=render_consent(where, options["consent"], base) if "consent" in options else study_consent,
        statistics=tuple(statistics),
        task_requirements=requirements,
        bonus=options.get("bonus"),
        target_complete_assignments=options.get("target_complete_assignments"),
        redirect=options.get("redirect"),
        start_time=start,
        end_time=end,
        completion_code=options.get("completion_code"),
        completion_url=options.get("completion_url"),
    )


def define_study(config: Mapping[str, Any], base_dir: str | os.PathLike | None = None) -> Study:
    """Check ``config`` (see the module docstring), register its tasks, and make it this
    process's study. File paths are relative to ``base_dir`` (default: the working directory)."""
    global _STUDY
    if not isinstance(config, Mapping):
        raise StudyConfigError("the study configuration must be a dict")
    _check_keys("study", config, STUDY_KEYS)
    if "tasks" not in config:
        raise StudyConfigError("study: 'tasks' is required ({task id: task options})")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    consent = render_consent("study", config["consent"], base) if "consent" in config else ""
    tasks = {}
    for task_id, options in config["tasks"].items():
        if not isinstance(options, Mapping):
            raise StudyConfigError(f"task {task_id!r}: its options must be a dict, got {type(options).__name__}")
        tasks[task_id] = _task(task_id, options, consent, base)
    study = Study(
        title=config.get("title", "CrowdPlay"),
        tasks=tasks,
        assignment=config.get("assignment", "choose"),
        consent_html=consent,
        admin_token=config.get("admin_token", ""),
    )
    for task in tasks.values():
        try:
            register_env(task.spec)
        except ValueError as error:
            raise StudyConfigError(f"task {task.id!r}: {error} (a task id must differ from every environment id)") from None
    _STUDY = study
    return study


def current_study() -> Study:
    """The defined study, or the default: every registered game is a task with no requirements."""
    if _STUDY is not None:
        return _STUDY
    tasks = {spec.id: Task(id=spec.id, spec=spec, title=spec.title, description=spec.description) for spec in list_envs()}
    return Study(title="CrowdPlay", tasks=tasks)


def reset_study() -> None:
    """Forget the defined study (tests that define several)."""
    global _STUDY
    _STUDY = None
