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

Every key is checked when the module loads, against the schema in ``crowdplay.study_schema``
(docs/study-config.md is generated from it): an unknown key or a wrong type raises
``StudyConfigError`` naming the task and the key (with the closest known key). Each task becomes
a registered environment with the task's id (its game configured by the task's options), so the
rest of the platform runs a task like any game. Without a study, every registered game is a task
with no requirements, chosen from the library.

Completion: each requirement ``name -> threshold`` is met to ``min(value / threshold, 1)``; a
participant completes when all are fully met. The server, never the page, decides that.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from crowdplay import texts
from crowdplay.environments import get_env, list_envs, register_env
from crowdplay.environments.registry import UnknownEnvironment
from crowdplay.environments.spec import EnvSpec
from crowdplay.statistics import UnknownStatistic, check_statistic
from crowdplay.study_schema import StudyConfigError, TaskConfig, parse_study_config

#: Statistics every task tracks: the score page ranks by score; time played is always useful.
ALWAYS_TRACKED = ("score", "time_played", "active_time")

__all__ = ["ALWAYS_TRACKED", "Study", "StudyConfigError", "Task", "current_study", "define_study", "render_consent", "reset_study"]


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
    #: the page may be hidden at most this long in all for the task to be complete (None: no limit)
    max_hidden_s: float | None = None

    # ----------------------------------------------------------------- completion
    def progress(self, values: Mapping[str, float]) -> dict[str, float]:
        """Each requirement's fraction met, ``min(value / threshold, 1)``."""
        return {name: min(float(values.get(name, 0.0)) / threshold, 1.0) for name, threshold in self.task_requirements.items()}

    def complete(self, values: Mapping[str, float]) -> bool:
        """Whether ``values`` meet every requirement of the task (a task without requirements is
        complete at once) and the page was not hidden for longer than ``max_hidden_s``."""
        return all(fraction >= 1.0 for fraction in self.progress(values).values()) and not self.hidden_too_long(values)

    def hidden_too_long(self, values: Mapping[str, float]) -> bool:
        """Whether the participant's page was hidden for longer than the task allows."""
        return self.max_hidden_s is not None and float(values.get("time_hidden", 0.0)) > self.max_hidden_s

    def summary(self, values: Mapping[str, float]) -> dict[str, Any]:
        """What the page shows while playing: values, each requirement's progress, overall
        completion (the least-met requirement), the estimated bonus, whether it is complete."""
        progress = self.progress(values)
        return {
            "values": dict(values),
            "progress": progress,
            "completion": min(progress.values(), default=1.0),
            "complete": self.complete(values),
            "hidden_too_long": self.hidden_too_long(values),
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
            return f"opens at {dt.datetime.fromtimestamp(self.start_time, dt.UTC).isoformat()}"
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
            "max_hidden_s": self.max_hidden_s,
            "has_bonus": self.bonus is not None,
            "completion": "url" if self.completion_url else "code" if self.completion_code else None,
            "open": closed is None,
            "closed_reason": closed,
        }


@dataclass(frozen=True)
class Study:
    """The study a deployment runs: its title, tasks by id, how participants are assigned (``choose`` or
    ``auto``), the consent text and the admin token."""

    title: str
    tasks: dict[str, Task]
    assignment: str = "choose"
    consent_html: str = ""
    admin_token: str = ""
    #: whether touch-only devices play with on-screen controls ("allowed") or are asked for a keyboard ("excluded")
    touch: str = "excluded"
    #: the language a participant reads unless their browser asks for another the study offers
    language: str = "en"
    #: the page's texts by language: each a checked part of the catalogue (``crowdplay.texts``)
    texts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: the study's title and consent (HTML) in each language it offers (``title``, ``consent_html``: its own language's)
    titles: Mapping[str, str] = field(default_factory=dict)
    consents: Mapping[str, str] = field(default_factory=dict)
    #: the score page's percentile needs this many other finishers
    percentile_from: int = 10
    #: the score page continues by itself after this many seconds (None: only on a click)
    auto_continue_s: float | None = 60.0

    @property
    def languages(self) -> list[str]:
        """The languages the page offers: the study's own, English when that is it, and every translation."""
        return list(dict.fromkeys([self.language, *self.texts]))

    @property
    def consent_version(self) -> str:
        """Changes whenever the consent text does: the page asks again for a new version."""
        return hashlib.sha256("\0".join([self.consent_html, *sorted(self.consents.values())]).encode()).hexdigest()[:12]

    def task(self, task_id: str) -> Task:
        """The task with ``task_id``; UnknownEnvironment if there is none."""
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

#: The task keys that configure the task's game (its ``EnvSpec``), when the task gives them.
SPEC_KEYS = ("fps", "mode", "keymap", "gamepad", "when_away", "ai_agent_map_always", "ai_agent_map_fallback", "human_timeout", "reconnect_grace_s")


def render_consent(where: str, value: str, base: Path) -> str:
    """Consent as HTML: an .html file as is, a .md file or inline text rendered from Markdown."""
    from markdown_it import MarkdownIt

    if value.lower().endswith((".md", ".markdown", ".html", ".htm")) and "\n" not in value:
        path = Path(value) if Path(value).is_absolute() else base / value
        if not path.is_file():
            raise StudyConfigError(f"{where}: 'consent' file {str(path)!r} does not exist")
        text = path.read_text(encoding="utf-8")
        return text if path.suffix.lower() in (".html", ".htm") else str(MarkdownIt("commonmark", {"html": True}).render(text))
    return str(MarkdownIt("commonmark", {"html": True}).render(value))


def _by_language(key: str, given: str | Mapping[str, str], language: str, offered: list[str]) -> dict[str, str]:
    """A study text given once (for every language) or per language: the study's own language
    must have one, and every language named must be one the study offers."""
    if isinstance(given, str):
        return {tag: given for tag in offered}
    if language not in given:
        raise StudyConfigError(f"study: {key!r} has no text for the study's language {language!r}")
    unknown = [tag for tag in given if tag not in offered]
    if unknown:
        raise StudyConfigError(f"study: {key!r} has texts for {', '.join(map(repr, unknown))}, which the study does not offer (it offers {', '.join(offered)}: 'language' and the languages of 'texts')")
    return {tag: given.get(tag, given[language]) for tag in offered}


def _language(tag: str) -> str:
    try:
        return texts.check_language_tag(tag)
    except texts.TextsError as error:
        raise StudyConfigError(f"study: 'language': {error}") from None


def _texts(given: Mapping[str, str | Mapping[str, str]], base: Path) -> dict[str, dict[str, str]]:
    """The study's translations, each checked against the page's catalogue (``crowdplay.texts``)."""
    try:
        return {language: texts.load_translation(language, translation, base) for language, translation in given.items()}
    except texts.TextsError as error:
        raise StudyConfigError(f"study: 'texts': {error}") from None


def _statistics(where: str, options: TaskConfig) -> tuple[list[str], dict[str, float]]:
    """The task's statistics (the always-tracked ones first, then its own, then any its
    requirements name) and its requirements, every name checked against the registered ones."""
    requirements = dict(options.task_requirements or {})
    statistics = list(ALWAYS_TRACKED) + [name for name in options.statistics or () if name not in ALWAYS_TRACKED]
    statistics += [name for name in requirements if name not in statistics]
    for name in statistics:
        try:
            check_statistic(name)
        except UnknownStatistic as error:
            key = "task_requirements" if name in requirements else "statistics"
            raise StudyConfigError(f"{where}: {key!r}: {error}") from None
    return statistics, requirements


def _image(where: str, image: str | None, base: Path) -> tuple[str | None, str | None]:
    """The card's image as (URL, file): a file that exists is served, else it must be a URL."""
    if image is None:
        return None, None
    path = Path(image) if Path(image).is_absolute() else base / image
    if path.is_file():
        return None, str(path)
    if not _is_url(image):
        raise StudyConfigError(f"{where}: 'image' file {str(path)!r} does not exist")
    return image, None


def _task(task_id: str, options: TaskConfig, study_consent: str, base: Path) -> Task:
    """A task from its checked options: what the schema cannot check (the registries, the files)
    is checked here, each error naming the task and the key."""
    where = f"task {task_id!r}"
    try:
        base_spec = get_env(options.environment)
    except UnknownEnvironment as error:
        raise StudyConfigError(f"{where}: 'environment': {error}") from None
    statistics, requirements = _statistics(where, options)
    spec_options = {key: getattr(options, key) for key in SPEC_KEYS if key in options.model_fields_set}
    instructions = options.instructions if options.instructions is not None else options.initial_message
    if instructions is not None:
        spec_options["instructions"] = instructions
    title = options.title if options.title is not None else base_spec.title
    description = options.description if options.description is not None else base_spec.description
    try:
        spec = replace(base_spec, id=task_id, title=title, description=description, base_env=base_spec.base_env or base_spec.id, **spec_options)
    except (ValueError, TypeError) as error:
        raise StudyConfigError(f"{where}: {error}") from None
    image, image_file = _image(where, options.image, base)
    return Task(
        id=task_id,
        spec=spec,
        title=title,
        description=spec.description,
        image=image,
        image_file=image_file,
        consent_html=render_consent(where, options.consent, base) if options.consent is not None else study_consent,
        statistics=tuple(statistics),
        task_requirements=requirements,
        bonus=options.bonus,
        target_complete_assignments=options.target_complete_assignments,
        redirect=options.redirect,
        start_time=options.start_time,
        end_time=options.end_time,
        completion_code=options.completion_code,
        completion_url=options.completion_url,
        max_hidden_s=options.max_hidden_s,
    )


def define_study(config: Mapping[str, Any], base_dir: str | os.PathLike[str] | None = None) -> Study:
    """Check ``config`` (its schema: ``crowdplay.study_schema``, docs/study-config.md), register
    its tasks, and make it this process's study. File paths are relative to ``base_dir``
    (default: the working directory)."""
    global _STUDY
    parsed = parse_study_config(config)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    language = _language(parsed.language)
    translations = _texts(parsed.texts, base)
    offered = list(dict.fromkeys([language, *translations]))
    if language.split("-")[0] != "en" and language not in translations:
        raise StudyConfigError(f"study: 'language' is {language!r} but 'texts' has no {language!r} translation (the page would be in English)")
    titles = _by_language("title", parsed.title, language, offered)
    consents = {tag: render_consent("study", text, base) for tag, text in _by_language("consent", parsed.consent or "", language, offered).items() if text}
    consent = consents.get(language, "")
    tasks = {task_id: _task(task_id, options, consent, base) for task_id, options in parsed.tasks.items()}
    study = Study(
        title=titles[language], tasks=tasks, assignment=parsed.assignment, consent_html=consent, admin_token=parsed.admin_token,
        percentile_from=parsed.percentile_from, auto_continue_s=parsed.auto_continue_s, touch=parsed.touch,
        language=language, texts=translations, titles=titles, consents=consents,
    )
    for task in tasks.values():
        try:
            register_env(task.spec)
        except ValueError as error:
            raise StudyConfigError(f"task {task.id!r}: {error} (a task id must differ from every environment id)") from None
    _STUDY = study
    return study


def defined_study() -> Study | None:
    """The study a plugin defined in this process, or None (``current_study`` is then the default)."""
    return _STUDY


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
