"""Replaying a recorded episode: same seed, same actions, same screens (ALE is deterministic)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from crowdplay.environments.adapter import SINGLE_AGENT, EnvAdapter
from crowdplay.environments.registry import get_env


def replay_screens(env_id: str, seed: int, actions: Sequence[int]) -> Iterator[np.ndarray]:
    """Yield the screen after the reset (step 0) and after each action (step i + 1)."""
    adapter = EnvAdapter(get_env(env_id))
    try:
        adapter.reset(seed)
        yield adapter.screen()
        for action in actions:
            adapter.step({SINGLE_AGENT: int(action)})
            yield adapter.screen()
    finally:
        adapter.close()
