"""The ``hello`` message: what a page needs before a game's first frame (docs/protocol.md)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from crowdplay.engagement import WhenAway, when_away_for
from crowdplay.environments import EnvAdapter, EnvSpec, make_adapter
from crowdplay.environments.spec import for_agent
from crowdplay.protocol import encode_palette


def hello_fields(spec: EnvSpec, adapter: EnvAdapter, screen: np.ndarray) -> dict[str, Any]:
    """The environment, its agents, the screen's shape and palette, and per agent its keys,
    no-op, action names, idle choice, gamepad controls and instructions, and which agents people play."""
    return {
        "env": spec.public(),
        "width": int(screen.shape[1]),
        "height": int(screen.shape[0]),
        "channels": 1 if screen.ndim == 2 else int(screen.shape[2]),
        "palette": encode_palette(adapter.palette),
        "fps": spec.fps,
        **controls_fields(spec, adapter),
    }


def controls_fields(spec: EnvSpec, adapter: EnvAdapter) -> dict[str, Any]:
    """What a participant needs to know to play each agent: its keys, no-op, action names, idle
    choice, gamepad controls and instructions, and which agents people play."""
    agents = list(adapter.agents)
    return {
        "agents": agents,
        "keymaps": {agent: adapter.keymaps[agent].to_json() for agent in agents},
        "noop_actions": {agent: adapter.keymaps[agent].noop for agent in agents},
        "action_meanings": adapter.action_meanings,
        "action_labels": dict(adapter.action_labels),
        "idle": dict(adapter.idle),
        "gamepads": dict(adapter.gamepads),
        "instructions": {agent: for_agent(spec.instructions, agent, "") for agent in agents},
        "humans": spec.human_agents(agents),
        "when_away": when_away_for(cast(WhenAway | None, spec.when_away), len(spec.human_agents(agents))),
    }


_CONTROLS: dict[str, tuple[EnvSpec, dict[str, Any]]] = {}


def task_controls(spec: EnvSpec) -> dict[str, Any]:
    """``controls_fields`` of ``spec`` before any game of it runs (the task page shows them before
    Start): a keymap may depend on the built environment (its action meanings), so one is built
    once per process and spec, and closed."""
    cached = _CONTROLS.get(spec.id)
    if cached is not None and cached[0] is spec:
        return cached[1]
    adapter = make_adapter(spec)
    try:
        fields = controls_fields(spec, adapter)
    finally:
        adapter.close()
    _CONTROLS[spec.id] = (spec, fields)
    return fields
