"""Frozen lake for CrowdPlay: a turn-based Gymnasium toy-text environment, one move per key press.

Load it with ``CROWDPLAY_PLUGINS=frozen_lake`` in this directory (see README.md).
"""

import gymnasium as gym

from crowdplay.environments import EnvSpec, arrow_keymap, register_env


def make_frozen_lake():
    return gym.make("FrozenLake-v1", is_slippery=False, render_mode="rgb_array")


register_env(EnvSpec(
    id="FrozenLake",
    title="Frozen lake",
    description="Walk from the top-left corner to the present without falling into a hole.",
    make_env=make_frozen_lake,
    mode="wait_for_key",                           # one step per key press; the game waits in between
    action_labels=["left", "down", "right", "up"],  # FrozenLake's actions 0, 1, 2, 3
    keymap=arrow_keymap,                           # each arrow key plays its direction
    idle="wait",                                   # there is no "do nothing" action: no key, no step
    instructions="Press an arrow key to take one step. Reach the present; avoid the holes.",
))
