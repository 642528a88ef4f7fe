"""Mountain car for CrowdPlay: a Gymnasium classic-control environment played with the arrow keys.

Load it with ``CROWDPLAY_PLUGINS=mountain_car`` in this directory (see README.md).
"""

import gymnasium as gym

from crowdplay.environments import EnvSpec, arrow_keymap, register_env


def make_mountain_car():
    # CrowdPlay shows what render() returns, so the environment renders RGB arrays.
    return gym.make("MountainCar-v0", render_mode="rgb_array")


register_env(EnvSpec(
    id="MountainCar",
    title="Mountain car",
    description="Rock the car back and forth to reach the flag on the right.",
    make_env=make_mountain_car,
    fps=30,                                   # 200 steps (the time limit) last under 7 seconds
    action_labels=["left", "noop", "right"],  # actions 0, 1, 2: push left, don't push, push right
    keymap=arrow_keymap,                      # Left arrow -> 0, Right arrow -> 2, no key -> 1 (the "noop" label)
    instructions="Hold <b>Left</b> or <b>Right</b> to push the car. Swing back and forth to build up speed.",
))
