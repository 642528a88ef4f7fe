"""Replaying a recorded episode: same seed, same actions, same screens (ALE is deterministic)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from crowdplay.environments.adapter import SINGLE_AGENT
from crowdplay.environments.parallel_adapter import make_adapter
from crowdplay.environments.registry import get_env


def replay_screens(env_id: str, seed: int, actions: Sequence[int], start_state: bytes | None = None) -> Iterator[np.ndarray]:
    """Yield the screen after the reset (step 0) and after each action (step i + 1).

    ``start_state`` (an ``EnvAdapter.snapshot`` taken at the episode's start) takes precedence over
    the seed: ALE episodes continue from the emulator's state rather than from a seed.
    """
    adapter = make_adapter(get_env(env_id))
    try:
        adapter.reset(seed)
        if start_state is not None:
            adapter.restore(start_state)
        yield adapter.screen()
        for action in actions:
            adapter.step({SINGLE_AGENT: int(action)})
            yield adapter.screen()
    finally:
        adapter.close()
