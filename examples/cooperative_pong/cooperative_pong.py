"""Cooperative pong for CrowdPlay: a two-player PettingZoo parallel environment.

Load it with ``CROWDPLAY_PLUGINS=cooperative_pong`` in this directory (see README.md).
"""

from pettingzoo.butterfly import cooperative_pong_v6

from crowdplay.environments import EnvSpec, arrow_keymap, register_env


def make_cooperative_pong():
    # A PettingZoo *parallel* environment: CrowdPlay steps every agent at once.
    return cooperative_pong_v6.parallel_env(render_mode="rgb_array")


register_env(EnvSpec(
    id="CooperativePong",
    title="Cooperative pong",
    description="Two players, one ball: keep it in play together for as long as you can.",
    make_env=make_cooperative_pong,
    agents=("paddle_0", "paddle_1"),           # the environment's possible_agents: one seat each
    fps=30,
    action_labels=["noop", "up", "down"],      # every agent's actions 0, 1, 2
    keymap=arrow_keymap,                       # Up and Down arrows; no key -> 0 (the "noop" label)
    instructions={
        "paddle_0": "You are the <b>left</b> paddle. Up and Down arrows move it.",
        "paddle_1": "You are the <b>right</b> paddle. Up and Down arrows move it.",
    },
))
