"""EnvSpec: everything the platform needs to know to run one environment for participants."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from crowdplay.ai import check_policy
from crowdplay.environments.keymap import Keymap, atari_keymap

KeymapFactory = Callable[[Sequence[str]], Keymap]
MODES = ("realtime", "wait_for_key", "hold_keys")
V = TypeVar("V")
#: An option given once for every agent, or per agent as ``{agent: value}``.
PerAgent = V | Mapping[str, V]


def for_agent(value: PerAgent, agent: str, default: Any = None) -> Any:
    """The value of a per-agent option for ``agent`` (a plain value applies to every agent)."""
    if isinstance(value, Mapping):
        return value.get(agent, default)
    return value


@dataclass(frozen=True)
class EnvSpec:
    """A playable environment.

    ``make_env`` builds a fresh Gymnasium environment, or a PettingZoo parallel environment for
    several agents (called inside the EnvActor, never in the ingress). An environment whose agent
    list has more than one entry is multi-agent with no further configuration; ``agents`` may
    declare that list so the per-agent options below are checked at registration.

    Per-agent options take a plain value or ``{agent: value}``: ``keymap`` (a Keymap, or a factory
    that receives the action meanings; its no-op is the action before any key) and
    ``instructions`` (the researcher's HTML shown with the game; the original's
    ``initial_message``).

    AI: ``ai_agent_map_always`` names the policy that always plays an agent;
    ``ai_agent_map_fallback`` the policy that takes over an agent whose participant left (without
    one, the game ends for everyone); ``human_timeout`` starts a waiting game after that many
    seconds with the fallbacks in the still-empty places. ``reconnect_grace_s`` (default: the
    deployment's) is how long a participant whose connection dropped keeps their place.
    """

    id: str
    title: str
    description: str
    make_env: Callable[[], Any]
    fps: float = 60.0
    keymap: PerAgent = atari_keymap
    instructions: PerAgent = ""
    agents: tuple[str, ...] | None = None
    ai_agent_map_always: Mapping[str, str] = field(default_factory=dict)
    ai_agent_map_fallback: Mapping[str, str] = field(default_factory=dict)
    human_timeout: float | None = None
    reconnect_grace_s: float | None = None
    #: "realtime" (steps at ``fps``), "wait_for_key" (one step per key press) or "hold_keys"
    #: (steps at ``fps`` while a participant holds a key, paused otherwise)
    mode: str = "realtime"
    #: the registered environment this one configures (a study task's game): recordings name it
    base_env: str | None = None

    def __post_init__(self) -> None:
        if not self.id or not self.id.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"environment id {self.id!r} must be non-empty letters, digits, '-' or '_'")
        if self.mode not in MODES:
            raise ValueError(f"environment {self.id!r}: mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 1 <= self.fps <= 240:
            raise ValueError(f"environment {self.id!r}: fps must be within 1..240, got {self.fps}")
        for option in ("ai_agent_map_always", "ai_agent_map_fallback"):
            for agent, policy_id in getattr(self, option).items():
                try:
                    check_policy(policy_id)
                except KeyError as error:
                    raise ValueError(f"environment {self.id!r}: {option}[{agent!r}]: {error}") from None
        for option in ("human_timeout", "reconnect_grace_s"):
            value = getattr(self, option)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"environment {self.id!r}: {option} must be a positive number of seconds or None")
        if self.agents is not None:
            self.check_agents(self.agents)

    def check_agents(self, agents: Sequence[str]) -> None:
        """Check the per-agent options against the environment's real agent list."""
        if self.agents is not None and tuple(agents) != tuple(self.agents):
            raise ValueError(f"environment {self.id!r}: declared agents {list(self.agents)} but the environment has {list(agents)}")
        for option in ("keymap", "instructions", "ai_agent_map_always", "ai_agent_map_fallback"):
            value = getattr(self, option)
            unknown = sorted(set(value) - set(agents)) if isinstance(value, Mapping) else []
            if unknown:
                raise ValueError(f"environment {self.id!r}: {option} names agents {unknown} the environment does not have ({list(agents)})")
        humans = self.human_agents(agents)
        if not humans:
            raise ValueError(f"environment {self.id!r}: every agent is in ai_agent_map_always; a participant needs one to play")
        if self.human_timeout is not None:
            missing = [agent for agent in humans if agent not in self.ai_agent_map_fallback]
            if missing:
                raise ValueError(f"environment {self.id!r}: human_timeout needs an ai_agent_map_fallback policy for {missing}")

    def human_agents(self, agents: Sequence[str]) -> list[str]:
        """The agents participants play (every agent not always played by AI)."""
        return [agent for agent in agents if agent not in self.ai_agent_map_always]

    def public(self) -> dict[str, object]:
        """What the game library shows (no callables)."""
        players = len(self.human_agents(self.agents)) if self.agents is not None else 1
        return {"id": self.id, "title": self.title, "description": self.description, "fps": self.fps, "players": players, "mode": self.mode}
