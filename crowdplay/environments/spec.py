"""EnvSpec: everything the platform needs to know to run one environment for participants."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

from crowdplay.ai import check_policy
from crowdplay.engagement import WHEN_AWAY
from crowdplay.environments.gamepad import GamepadMap
from crowdplay.environments.keymap import Keymap, atari_keymap
from crowdplay.vocabulary import Mode

KeymapFactory = Callable[[Sequence[str]], Keymap]
#: The modes' names, in the order error messages list them.
MODES: tuple[str, ...] = tuple(mode.value for mode in Mode)
#: What an agent plays while its participant holds no mapped key: the keymap's no-op, the last
#: action again, or nothing (the game waits). See ``EnvSpec.idle``.
IDLE_CHOICES = ("noop", "repeat", "wait")
#: What a game does when an AI agent's policy has given no answer of its own for a while.
AI_UNAVAILABLE_CHOICES = ("play_on", "end")
#: Options that must be a positive number of seconds when given.
SECONDS_OPTIONS = ("human_timeout", "reconnect_grace_s", "ai_unavailable_after_s")
#: Options that name a registered policy per agent.
POLICY_OPTIONS = ("ai_agent_map_always", "ai_agent_map_fallback")
V = TypeVar("V")
#: An option given once for every agent, or per agent as ``{agent: value}``.
PerAgent: TypeAlias = V | Mapping[str, V]


def for_agent(value: PerAgent[V], agent: str | None, default: V | None = None) -> V | None:
    """The value of a per-agent option for ``agent`` (a plain value applies to every agent)."""
    if isinstance(value, Mapping):
        return value.get(agent, default) if agent is not None else default
    return value


def _entries(value: PerAgent[V]) -> list[tuple[str | None, V]]:
    """A per-agent option as (agent, value) pairs; a plain value is one pair for every agent (None)."""
    return list(value.items()) if isinstance(value, Mapping) else [(None, value)]


def _is_label_list(labels: object) -> bool:
    """Whether ``labels`` is a list of non-empty strings (a string itself is not: it would be read
    as one label per character)."""
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        return False
    return all(isinstance(label, str) and label for label in labels)


@dataclass(frozen=True)
class EnvSpec:
    """A playable environment.

    ``make_env`` builds a fresh Gymnasium environment, or a PettingZoo parallel environment for
    several agents (called inside the EnvActor, never in the ingress). An environment whose agent
    list has more than one entry is multi-agent with no further configuration; ``agents`` may
    declare that list so the per-agent options below are checked at registration.

    Per-agent options take a plain value or ``{agent: value}``: ``keymap`` (a Keymap, or a factory
    that receives the agent's action labels, e.g. ``arrow_keymap``; its no-op is the action before
    any key), ``action_labels`` (a name per action, shown with its key on the page; default: the
    environment's ``get_action_meanings()``, else "0", "1", ...), ``idle`` (what "no mapped key
    held" plays: "noop", "repeat" or "wait"; required when the keymap has no no-op, because an
    environment without one must not have action 0 recorded as the participant's choice) and
    ``instructions`` (the researcher's HTML shown with the game; the original's
    ``initial_message``) and ``gamepad`` (a ``GamepadMap`` over the default gamepad controls the
    keymap implies: d-pad and left stick on the arrows, A on Space; ``crowdplay.environments.gamepad``).

    AI: ``ai_agent_map_always`` names the policy that always plays an agent;
    ``ai_agent_map_fallback`` the policy that takes over an agent whose participant left (without
    one, the game ends for everyone); ``human_timeout`` starts a waiting game after that many
    seconds with the fallbacks in the still-empty places. ``reconnect_grace_s`` (default: the
    deployment's) is how long a participant whose connection dropped keeps their place. An AI
    agent whose policy has played only substitutes for ``ai_unavailable_after_s`` (it raises, its
    actor is down or cannot be placed) is *unavailable*: with ``ai_unavailable = "play_on"`` the
    participants are told and play on (told again when it answers), with ``"end"`` the game ends
    with a message naming the agent, the policy and the reason.
    """

    id: str
    title: str
    description: str
    make_env: Callable[[], Any]
    fps: float = 60.0
    keymap: PerAgent[Keymap | KeymapFactory] = atari_keymap
    instructions: PerAgent[str] = ""
    agents: tuple[str, ...] | None = None
    ai_agent_map_always: Mapping[str, str] = field(default_factory=dict)
    ai_agent_map_fallback: Mapping[str, str] = field(default_factory=dict)
    human_timeout: float | None = None
    reconnect_grace_s: float | None = None
    ai_unavailable: str = "play_on"
    ai_unavailable_after_s: float = 10.0
    #: "realtime" (steps at ``fps``), "wait_for_key" (one step per key press) or "hold_keys"
    #: (steps at ``fps`` while a participant holds a key, paused otherwise); given as a ``Mode`` or its name
    mode: Mode = Mode.REALTIME
    #: the registered environment this one configures (a study task's game): recordings name it
    base_env: str | None = None
    #: per agent, a label for each action (a list as long as the action space)
    action_labels: PerAgent[Sequence[str] | None] = None
    #: per agent, which gamepad control holds which key (None: the default the keymap implies)
    gamepad: PerAgent[GamepadMap | None] = None
    #: per agent, what is played while no mapped key is held: "noop" (the keymap's no-op; the
    #: default when it has one), "repeat" (the last action again; before the first key the no-op,
    #: or without one the game waits) or "wait" (the game does not step until a mapped key is held)
    idle: PerAgent[str | None] = None
    #: passed to every ``reset(seed=..., options=...)`` and recorded with the seed, so a replay
    #: resets the same way (must be JSON-able)
    reset_options: Mapping[str, Any] | None = None
    #: whether a recorded episode can be replayed exactly from its seed and actions: True (the
    #: default; ``crowdplay data replay-check`` still probes it), or False or a string saying why
    #: not (the environment draws on unseeded randomness, time, a network...): replay-check then
    #: reports its episodes "not replayable" with that reason instead of replaying them
    replayable: bool | str = True
    #: what the game does while its participant's page is hidden or unfocused: "pause" (a
    #: one-player game stops stepping until they are back), "play" (it plays on) or "end" (the
    #: page leaves the game); None: "pause" when one person plays, "play" when several do
    when_away: str | None = None

    def __post_init__(self) -> None:
        """Refuse a misconfigured environment at registration, each error naming the environment
        and the option, rather than when a participant's game is built."""
        self._check_identity()
        self._check_mode()
        self._check_fps()
        self._check_ai_options()
        self._check_waits()
        self._check_control_options()
        self._check_reset_options()
        if self.agents is not None:
            self.check_agents(self.agents)

    def _check_identity(self) -> None:
        """The id appears in URLs and recordings, so it is limited to letters, digits, '-' and '_'."""
        if not self.id or not self.id.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"environment id {self.id!r} must be non-empty letters, digits, '-' or '_'")

    def _check_mode(self) -> None:
        """Refuse an unknown mode by name, and hold a known one as a ``Mode`` (a mode given as a string
        compares equal to its member either way)."""
        if self.mode not in MODES:
            raise ValueError(f"environment {self.id!r}: mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        object.__setattr__(self, "mode", Mode(self.mode))  # frozen: the dataclass's own way to normalise a field

    def _check_fps(self) -> None:
        """The loop's tick rate: below 1 a game would look frozen, above 240 no screen shows it."""
        if not 1 <= self.fps <= 240:
            raise ValueError(f"environment {self.id!r}: fps must be within 1..240, got {self.fps}")

    def _check_ai_options(self) -> None:
        """Every policy the AI options name must be registered, so a typo fails here, not in a game."""
        for option in POLICY_OPTIONS:
            mapping: Mapping[str, str] = getattr(self, option)
            for agent, policy_id in mapping.items():
                try:
                    check_policy(policy_id)
                except KeyError as error:
                    raise ValueError(f"environment {self.id!r}: {option}[{agent!r}]: {error}") from None
        if self.ai_unavailable not in AI_UNAVAILABLE_CHOICES:
            raise ValueError(f"environment {self.id!r}: ai_unavailable must be one of {', '.join(AI_UNAVAILABLE_CHOICES)}, got {self.ai_unavailable!r}")
        if self.when_away not in (None, *WHEN_AWAY):
            raise ValueError(f"environment {self.id!r}: when_away must be one of {', '.join(WHEN_AWAY)} or None, got {self.when_away!r}")

    def _check_waits(self) -> None:
        """Every waiting time must be a usable number of seconds (None: the deployment's, or never)."""
        for option in SECONDS_OPTIONS:
            value = getattr(self, option)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"environment {self.id!r}: {option} must be a positive number of seconds or None")

    def _check_reset_options(self) -> None:
        """``reset_options`` is stored with every episode, so it must be JSON-able."""
        if self.reset_options is None:
            return
        try:
            json.dumps(dict(self.reset_options))
        except (TypeError, ValueError) as error:
            raise ValueError(f"environment {self.id!r}: reset_options must be JSON-able (it is recorded): {error}") from None

    def _check_control_options(self) -> None:
        """Check ``action_labels``, ``idle`` and every keymap that can be built without the
        environment (a Keymap as is, or a factory for an agent whose labels the spec gives); the
        rest is checked against the environment when its first game is built."""
        for agent, labels in _entries(self.action_labels):
            if labels is not None and not _is_label_list(labels):
                raise ValueError(f"{self._where(agent)}: action_labels must be a list of non-empty strings, got {labels!r}")
        for agent, idle in _entries(self.idle):
            if idle is not None and idle not in IDLE_CHOICES:
                raise ValueError(f"{self._where(agent)}: idle must be one of {', '.join(IDLE_CHOICES)}, got {idle!r}")
        for agent, gamepad in _entries(self.gamepad):
            if gamepad is not None and not isinstance(gamepad, GamepadMap):
                raise ValueError(f"{self._where(agent)}: gamepad must be a GamepadMap({{control: key}}) or {{agent: GamepadMap}}, got {gamepad!r}")
            problems = gamepad.problems() if gamepad is not None else []
            if problems:
                raise ValueError(f"{self._where(agent)}: gamepad: {'; '.join(problems)}")
        for agent in self._configured_agents():
            keymap, labels = for_agent(self.keymap, agent), for_agent(self.action_labels, agent)
            if keymap is not None and (labels is not None or isinstance(keymap, Keymap)):
                self.agent_controls(agent, labels)

    def _configured_agents(self) -> Sequence[str | None]:
        """The agents whose controls can be checked before the environment exists: the declared
        ones, else those the per-agent options name, else one entry (None) for every agent."""
        if self.agents is not None:
            return self.agents
        named: set[str] = set()
        for value in (self.keymap, self.action_labels, self.idle, self.gamepad):
            if isinstance(value, Mapping):
                named.update(value)
        return sorted(named) if named else [None]

    def _where(self, agent: str | None) -> str:
        """How errors name what they are about: the environment and the agent (an option given
        as a plain value is for every agent)."""
        return f"environment {self.id!r}, " + (f"agent {agent!r}" if agent is not None else "every agent")

    def agent_labels(self, agent: str, meanings: Sequence[str], action_count: int) -> list[str]:
        """The agent's action labels: the spec's ``action_labels``, checked against the real
        action count, else the environment's own ``meanings``."""
        labels = for_agent(self.action_labels, agent)
        if labels is None:
            return list(meanings)
        if len(labels) != action_count:
            raise ValueError(f"{self._where(agent)}: action_labels has {len(labels)} labels but the action space has {action_count} actions")
        return list(labels)

    def agent_controls(self, agent: str | None, labels: Sequence[str] | None) -> tuple[Keymap, str]:
        """The agent's keymap (a factory is given ``labels``) and its ``idle`` choice, checked:
        key codes, actions within ``len(labels)`` (when known), and an explicit ``idle`` when the
        keymap has no no-op. Every error names the environment, the agent and the option."""
        where = self._where(agent)
        keymap = self._build_keymap(where, self._keymap_option(agent), labels)
        problems = keymap.problems(len(labels) if labels is not None else None)
        if problems:
            raise ValueError(f"{where}: keymap: {'; '.join(problems)}")
        idle = for_agent(self.idle, agent)
        if keymap.noop is None and idle in (None, "noop"):
            raise ValueError(
                f"{where}: the keymap has no no-op action, so set the idle option to say what happens while no mapped key is held: "
                "'repeat' (the last action again) or 'wait' (the game waits for a key); or give the keymap a noop"
            )
        return keymap, idle or "noop"

    def agent_gamepad(self, agent: str, keymap: Keymap) -> dict[str, str]:
        """The agent's gamepad controls for its built ``keymap`` (``{control: keys}``, sent to the
        page): the ``gamepad`` option over the default; an error names the environment, the agent
        and the option."""
        option = self.gamepad.get(agent) if isinstance(self.gamepad, Mapping) else self.gamepad
        try:
            return (option or GamepadMap({})).resolve(keymap)
        except ValueError as error:
            raise ValueError(f"{self._where(agent)}: gamepad: {error}") from None

    def _keymap_option(self, agent: str | None) -> Keymap | KeymapFactory | None:
        """The keymap option's entry for ``agent`` (``for_agent``, spelt out: a Keymap and a factory
        have no common type for the type checker to infer)."""
        if isinstance(self.keymap, Mapping):
            return self.keymap.get(agent) if agent is not None else None
        return self.keymap

    @staticmethod
    def _build_keymap(where: str, option: Keymap | KeymapFactory | None, labels: Sequence[str] | None) -> Keymap:
        """The agent's entry of the keymap option as a Keymap: as given, or what its factory makes
        of ``labels``; a factory that fails or returns something else is the option's error."""
        if option is None:
            raise ValueError(f"{where}: the keymap option has no entry for this agent")
        if isinstance(option, Keymap):
            return option
        try:
            built: object = option(list(labels or ()))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{where}: keymap: {error}") from None
        if not isinstance(built, Keymap):
            raise ValueError(f"{where}: the keymap factory returned {type(built).__name__}, not a Keymap")
        return built

    def check_agents(self, agents: Sequence[str]) -> None:
        """Check the per-agent options against the environment's real agent list."""
        if self.agents is not None and tuple(agents) != tuple(self.agents):
            raise ValueError(f"environment {self.id!r}: declared agents {list(self.agents)} but the environment has {list(agents)}")
        for option in ("keymap", "action_labels", "idle", "instructions", "gamepad", "ai_agent_map_always", "ai_agent_map_fallback"):
            value = getattr(self, option)
            unknown = sorted(set(value) - set(agents)) if isinstance(value, Mapping) else []
            if unknown:
                raise ValueError(f"environment {self.id!r}: {option} names agents {unknown} the environment does not have ({list(agents)})")
        humans = self.human_agents(agents)
        if self.human_timeout is not None:
            missing = [agent for agent in humans if agent not in self.ai_agent_map_fallback]
            if missing:
                raise ValueError(f"environment {self.id!r}: human_timeout needs an ai_agent_map_fallback policy for {missing}")

    def human_agents(self, agents: Sequence[str]) -> list[str]:
        """The agents participants play (every agent not always played by AI)."""
        return [agent for agent in agents if agent not in self.ai_agent_map_always]

    def public(self) -> dict[str, object]:
        """What the game library shows (no callables)."""
        return {"id": self.id, "title": self.title, "description": self.description, "fps": self.fps, "players": self.players(), "mode": self.mode.value}

    @property
    def ai_only(self) -> bool:
        """Declared agents, every one of them played by AI: a game people only watch."""
        return self.agents is not None and not self.human_agents(self.agents)

    def players(self) -> int:
        """How many agents people play: 0 for an AI-only game (participants watch it). An
        environment that does not declare its ``agents`` counts one until its first game is built."""
        return len(self.human_agents(self.agents)) if self.agents is not None else 1
