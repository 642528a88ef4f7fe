"""The study configuration's schema: every key ``define_study`` accepts, what it takes and means.

Why a schema: the configuration is checked in one declaration that also writes its reference page
(docs/study-config.md, ``python -m crowdplay.reference_docs``), so the checks and the page cannot
disagree. pydantic does the checking, in strict mode (a number is never a string or a bool);
``parse_study_config`` turns its errors into ``StudyConfigError`` lines that name the
task, the key and the problem, the way a researcher reads them:
``task 'invaders': 'fps' must be a number of frames per second, got 'fast'``.

What needs the running platform (the environment and policy registries, the statistics, the
consent and image files) is checked by ``crowdplay.study`` when it builds the tasks.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, GetPydanticSchema, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

#: The error type of a value of the wrong kind: reported as "must be <what the key accepts>".
WRONG_KIND = "crowdplay_wrong_kind"

#: ``crowdplay.environments.spec.MODES``, spelt out for type checkers (a test keeps the two equal).
Mode = Literal["realtime", "wait_for_key", "hold_keys"]
Assignment = Literal["choose", "auto"]
#: ``crowdplay.engagement.WHEN_AWAY``, spelt out for type checkers.
WhenAway = Literal["pause", "play", "end"]
#: Whether participants on a touch-only device (a phone, a tablet) may play with on-screen controls.
Touch = Literal["allowed", "excluded"]


class StudyConfigError(ValueError):
    """The study configuration is wrong; each line of the message names the task, the key and the
    problem, so a researcher fixes every mistake from one run."""


def one_error(message: str) -> GetPydanticSchema:
    """A union reported as one error at its key ("must be ..."; ``message`` when it is deeper, as
    a value in a mapping), not one per member of the union (pydantic's default, with the members'
    names in the error's path)."""

    def schema(source: Any, handler: Callable[[Any], core_schema.CoreSchema]) -> core_schema.CoreSchema:
        built = handler(source)
        keys = cast("dict[str, Any]", built)  # a union schema's keys, which the CoreSchema union type does not name
        keys["custom_error_type"] = WRONG_KIND
        keys["custom_error_message"] = message
        return built

    return GetPydanticSchema(schema)


def _given(value: Any) -> Any:
    """Refuse an explicit None for a key whose absence means "the default" but which takes no None
    (pydantic validates what is given, never the default, so leaving the key out still works)."""
    if value is None:
        raise PydanticCustomError(WRONG_KIND, "None is not accepted")
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise PydanticCustomError(WRONG_KIND, "{value} is not above 0", {"value": value})
    return value


def _timestamp(value: Any) -> Any:
    """An ISO 8601 time (with its time zone) or a datetime as epoch seconds; anything else as is,
    for the number check after it."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"is not an ISO 8601 time: {value!r}") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"needs a time zone, e.g. {value.isoformat()}+00:00")
        return value.timestamp()
    return value


def _mapping_as_dict(value: Any) -> Any:
    """Task options may be any mapping, not only a dict (pydantic's strict mode takes only dicts)."""
    return dict(value) if isinstance(value, Mapping) else value


Given = AfterValidator(_given)
#: Strict: an int stays an int (JSON shows 30, not 30.0), a bool or a string is not a number.
Number = Annotated[int | float, one_error("not a number")]
PositiveNumber = Annotated[Number, AfterValidator(_positive)]
PerAgentHtml = Annotated[str | Mapping[str, str], one_error("neither HTML nor {agent: HTML}")]
PerLanguage = Annotated[str | Mapping[str, str], one_error("neither a string nor {language tag: string}")]
Names = Annotated[list[str] | tuple[str, ...], one_error("not a list of names")]
Moment = Annotated[Number | None, BeforeValidator(_timestamp)]


def option(accepts: str, meaning: str, when_absent: str = "", **field: Any) -> Any:
    """One configuration key: what it ``accepts`` (in errors and in the reference alike), what it
    means, and what leaving it out means, for the reference (``field``: pydantic's ``Field``
    arguments, its ``default`` among them; a key without one is required)."""
    return Field(description=meaning, json_schema_extra={"accepts": accepts, "when_absent": when_absent}, **field)


class TaskConfig(BaseModel):
    """One task: a registered environment, configured, and what completing it takes. Each task is
    registered as an environment under the task's id, so the rest of the platform runs it like
    any game; its recordings carry ``task_id`` (the task) and ``env_id`` (the environment)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    environment: str = option("the id of a registered environment (str)", "The game this task is played on: any registered environment (docs/environments.md, docs/multiplayer.md, docs/ai.md).")
    title: Annotated[str | None, Given] = option("a string", "The task's name on its library card and game page.", "the environment's title", default=None)
    description: Annotated[str | None, Given] = option("a string", "A sentence or two under the title on the card.", "the environment's description", default=None)
    image: str | None = option(
        "a URL or an image file path (str)", "The card's image: a URL, or a file (relative to `base_dir`) that the server serves at `/api/tasks/<id>/image`; a path that is not a file and not a URL is an error.", "none", default=None,
    )
    instructions: Annotated[PerAgentHtml | None, Given] = option(
        "HTML (str) or {agent: HTML}", "Shown with the game while playing: HTML, or HTML per agent of a multi-agent game.", "the environment's", default=None,
    )
    initial_message: Annotated[PerAgentHtml | None, Given] = option(
        "HTML (str) or {agent: HTML}", "The original CrowdPlay's name for `instructions`; give one of the two.", "see `instructions`", default=None,
    )
    consent: Annotated[str | None, Given] = option(
        "a Markdown/HTML file path or Markdown text (str)", "This task's own consent text, asked before it is played (a `.md`/`.html` file relative to `base_dir`, or Markdown).", "the study's `consent`", default=None,
    )
    fps: Annotated[Number | None, Given] = option("a number of frames per second", "How fast the game steps (`realtime` and `hold_keys`).", "the environment's (usually 60)", default=None)
    mode: Annotated[Mode | None, Given] = option(
        "one of realtime, wait_for_key, hold_keys", "`realtime` steps at `fps`; `wait_for_key` makes one step per key press (a release is not a turn); `hold_keys` steps at `fps` while a key is held and pauses otherwise.", "the environment's (usually `realtime`)", default=None,
    )
    keymap: Annotated[Any, Given] = option(
        "a Keymap, a keymap factory, or {agent: either}", "Which keys play which actions (docs/environments.md).", "the environment's", default=None,
    )
    gamepad: Annotated[Any, Given] = option(
        "a GamepadMap or {agent: GamepadMap}", "Which gamepad button or stick holds which key, over the default (d-pad and left stick: arrows; A: Space; docs/environments.md).", "the environment's", default=None,
    )
    ai_agent_map_always: Annotated[Mapping[str, str] | None, Given] = option(
        "{agent: policy id}", "Agents a registered policy always plays (docs/ai.md); every agent listed: an AI-only game people watch.", "the environment's", default=None,
    )
    ai_agent_map_fallback: Annotated[Mapping[str, str] | None, Given] = option(
        "{agent: policy id}", "The policy that takes over an agent whose participant left (without one the game ends for everyone).", "the environment's", default=None,
    )
    human_timeout: Number | None = option(
        "seconds (number) or None", "A waiting game starts after this many seconds with the fallback policies in the still-empty places (None: it waits).", "the environment's", default=None,
    )
    reconnect_grace_s: Number | None = option(
        "seconds (number) or None", "How long a participant whose connection dropped keeps their place (None: the deployment's `reconnect_grace_s`).", "the environment's", default=None,
    )
    when_away: WhenAway | None = option(
        "one of pause, play, end", "What the game does while the participant's tab is hidden or their window unfocused: `pause` (a one-player game waits for them), `play` (it plays on) or `end` (the page leaves the game). Every change is recorded either way.", "`pause` when one person plays, `play` when several do", default=None,
    )
    max_hidden_s: Annotated[float, Field(ge=0)] | None = option(
        "seconds (number) or None", "A requirement: the participant completes the task only if their page was hidden for at most this long in all.", "no limit", default=None,
    )
    statistics: Annotated[Names | None, Given] = option(
        "a list of statistic names", "Statistics tracked besides `score`, `time_played` and `active_time` (always tracked); see docs/study.md's Statistics.", "none", default=None,
    )
    task_requirements: Annotated[Mapping[str, PositiveNumber] | None, Given] = option(
        "{statistic name: positive threshold}", "What completing the task takes: each requirement counts as `min(value / threshold, 1)`, and the participant completes when all are met (the server decides).", "none: complete at once", default=None,
    )
    bonus: Annotated[Callable[..., Any] | None, Given] = option(
        "a function of the statistics dict returning a number", "The bonus shown while playing, computed from the statistics (a formula that raises counts 0).", "no bonus", default=None,
    )
    target_complete_assignments: Annotated[int, Field(gt=0)] | None = option(
        "a positive integer or None", "Completions wanted: the task closes when it has them, and automatic assignment fills tasks evenly towards them.", "no target", default=None,
    )
    redirect: str | None = option("a URL (str)", "The card sends participants to this URL instead of a game (another deployment, say).", "none", default=None)
    start_time: Moment = option("an ISO 8601 time, epoch seconds or a datetime", "The task opens at this time (an ISO 8601 time needs its time zone).", "open from the start", default=None)
    end_time: Moment = option("an ISO 8601 time, epoch seconds or a datetime", "The task closes at this time; it must be after `start_time`.", "never closes", default=None)
    completion_code: Annotated[str, Field(min_length=1)] | None = option(
        "a code (str), or 'auto' for one per assignment", "MTurk: the code shown on completion; `auto` derives one per assignment that cannot be guessed or shared.", "none", default=None,
    )
    completion_url: str | None = option(
        "a URL (str) to send the participant to", "Prolific: where a participant who completed is sent. Give this or `completion_code`, not both.", "none", default=None,
    )

    @model_validator(mode="after")
    def _one_of_each_pair(self) -> TaskConfig:
        """Keys that say the same thing two ways, and a time window that must be one."""
        if self.instructions is not None and self.initial_message is not None:
            raise ValueError("give 'instructions' or 'initial_message' (the original's name), not both")
        if self.completion_code is not None and self.completion_url is not None:
            raise ValueError("give 'completion_code' (MTurk) or 'completion_url' (Prolific), not both")
        if self.start_time is not None and self.end_time is not None and self.end_time <= self.start_time:
            raise ValueError("'end_time' must be after 'start_time'")
        return self


class StudyConfig(BaseModel):
    """The study: its tasks, the consent every participant gives, and how tasks are assigned.
    File paths are relative to ``define_study``'s ``base_dir`` (default: the working directory)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    title: Annotated[PerLanguage, Given] = option(
        "a string, or {language tag: string}", "The study's name, in the page's header (per language: one for `language`, and any of the study's other languages).", "`CrowdPlay`", default="CrowdPlay",
    )
    consent: Annotated[PerLanguage | None, Given] = option(
        "a Markdown/HTML file path or Markdown text (str), or {language tag: either}", "The consent every participant gives before playing: a `.md`/`.html` file or Markdown text (per language: one for `language`, and any of the study's other languages). Agreement is asked again when the text changes.", "none", default=None,
    )
    assignment: Assignment = option(
        "one of choose, auto", "`choose`: the participant picks a task from the library; `auto`: the server assigns the open task furthest from its target.", "`choose`", default="choose",
    )
    language: str = option(
        "a language tag (str), e.g. en, de, pt-BR", "The language a participant reads when their browser asks for none the study offers (`?lang=` on the page's URL chooses one).", "`en`", default="en",
    )
    texts: Annotated[Mapping[str, str | Mapping[str, str]], Given] = option(
        "{language tag: {text key: text} or a JSON file path}", "The page's texts in other languages (or other English wording): keys of `crowdplay/web/static/texts/en.json`, each keeping its `{placeholders}`; a key left out is shown in English. The study offers `language`, English when it is `en`, and every language given here.", "English only", default_factory=dict,
    )
    percentile_from: Annotated[int, Field(ge=1)] = option(
        "a positive integer", "The score page gives a participant's percentile only once this many others have finished the task; before that it says how many have.", "10", default=10,
    )
    auto_continue_s: Annotated[float, Field(ge=10)] | None = option(
        "seconds (number, at least 10) or None", "The score page continues to the completion URL by itself after this long, with a visible countdown (None: only the participant's click continues).", "60", default=60.0,
    )
    touch: Touch = option(
        "one of allowed, excluded", "`allowed`: participants on a phone or tablet play with on-screen controls made from the keymap; `excluded`: the page asks them to use a computer with a keyboard.", "`excluded`", default="excluded",
    )
    admin_token: str = option("a string", "The researcher dashboard's token (/admin, /metrics); wins over `CROWDPLAY_ADMIN_TOKEN`.", "`CROWDPLAY_ADMIN_TOKEN`", default="")
    tasks: Annotated[Mapping[str, Annotated[TaskConfig, BeforeValidator(_mapping_as_dict)]], Field(min_length=1)] = option(
        "{task id: task options}", "The study's tasks by id (the task's table below). A task id must differ from every environment id.",
    )


def parse_study_config(config: Any) -> StudyConfig:
    """``config`` checked against the schema, or a ``StudyConfigError`` listing every problem."""
    if not isinstance(config, Mapping):
        raise StudyConfigError("the study configuration must be a dict")
    try:
        return StudyConfig.model_validate(dict(config))
    except ValidationError as error:
        errors = sorted(error.errors(include_url=False), key=lambda each: each["type"] != "extra_forbidden")  # a misspelt key first: it often explains the rest
        raise StudyConfigError("\n".join(dict.fromkeys(_problem(config, each) for each in errors))) from None


def _problem(config: Mapping[str, Any], error: ErrorDetails) -> str:
    """One pydantic error as a line naming the task (or the study), the key and the problem."""
    loc: tuple[Any, ...] = tuple(error["loc"])
    model: type[BaseModel]
    if len(loc) >= 2 and loc[0] == "tasks" and loc[2:3] != ("[key]",):
        where, model, rest, options = f"task {loc[1]!r}", TaskConfig, loc[2:], _at(config, loc[:2])
    else:
        where, model, rest, options = "study", StudyConfig, loc, config
    kind, detail = error["type"], str(error["msg"]).removeprefix("Value error, ")
    if not rest:  # the options as a whole
        if kind == "model_type":
            return f"{where}: its options must be a dict, got {type(error['input']).__name__}"
        return f"{where}: {detail}"
    key, deeper = rest[0], rest[1:]
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(key), list(model.model_fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(model.model_fields))})"
        return f"{where}: unknown key {key!r}{hint}"
    accepts = accepted(model, str(key))
    if kind == "missing":
        return f"{where}: {key!r} is required: {accepts}"
    if kind == "value_error" and not deeper:
        return f"{where}: {key!r} {detail}"
    line = f"{where}: {key!r} must be {accepts}, got {_at(options, (key,))!r}"
    if deeper[-1:] == ("[key]",):
        line += f" (the key {deeper[-2]!r}: {detail})"
    elif deeper:
        line += f" (at {'.'.join(str(part) for part in deeper)}: {detail})"
    return line


def accepted(model: type[BaseModel], key: str) -> str:
    """What a key accepts, as its ``option`` says."""
    extra = model.model_fields[key].json_schema_extra
    return str(extra["accepts"]) if isinstance(extra, dict) else "?"


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    """The part of the configuration at ``path`` (what a researcher wrote there)."""
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value
