"""The ``hello`` message: what a page needs before a game's first frame (docs/protocol.md)."""

from __future__ import annotations

from typing import Any

import numpy as np

from crowdplay.environments import EnvAdapter, EnvSpec
from crowdplay.environments.spec import for_agent
from crowdplay.protocol import encode_palette


def hello_fields(spec: EnvSpec, adapter: EnvAdapter, screen: np.ndarray) -> dict[str, Any]:
    """The environment, its agents, the screen's shape and palette, and per agent its keys,
    no-op, action names, idle choice and instructions, and which agents people play."""
    agents = list(adapter.agents)
    return {
        "env": spec.public(),
        "agents": agents,
        "width": int(screen.shape[1]),
        "height": int(screen.shape[0]),
        "channels": 1 if screen.ndim == 2 else int(screen.shape[2]),
        "palette": encode_palette(adapter.palette),
        "fps": spec.fps,
        "keymaps": {agent: adapter.keymaps[agent].to_json() for agent in agents},
        "noop_actions": {agent: adapter.keymaps[agent].noop for agent in agents},
        "action_meanings": adapter.action_meanings,
        "action_labels": dict(adapter.action_labels),
        "idle": dict(adapter.idle),
        "instructions": {agent: for_agent(spec.instructions, agent, "") for agent in agents},
        "humans": spec.human_agents(agents),
    }
