"""The project's example AI agents: RLlib checkpoints made by ``python -m policies.train``.

Load with ``CROWDPLAY_PLUGINS=policies.examples`` (every CrowdPlay process imports it). The
policies are registered whether or not they have been trained; a game that uses one is registered
only once its checkpoint exists, so no study offers a game whose AI cannot load:

    python -m policies.train Pong              # -> PongVsPPO: you (left paddle) against PPO
    python -m policies.train SpaceInvaders2P   # -> InvadersWithPPO: PPO is your partner cannon
"""

from __future__ import annotations

import logging
from dataclasses import replace

from crowdplay.ai import register_rllib_checkpoint
from crowdplay.environments import get_env, register_env
from policies.train import default_checkpoint

log = logging.getLogger(__name__)

PONG = default_checkpoint("Pong")
INVADERS = default_checkpoint("SpaceInvaders2P")

#: PPO trained on single-player Pong, where it plays the right paddle, as two-player Pong's first_0 does.
register_rllib_checkpoint("pong-ppo", PONG)
#: One module per cannon of two-player Space Invaders.
register_rllib_checkpoint("invaders-ppo-left", INVADERS, module_id="first_0")
register_rllib_checkpoint("invaders-ppo-right", INVADERS, module_id="second_0")

if PONG.exists():
    register_env(
        replace(
            get_env("Pong2P"), id="PongVsPPO", title="Pong against PPO",
            description="Beat a policy trained with RLlib's PPO.", ai_agent_map_always={"first_0": "pong-ppo"},
        )
    )
else:
    log.info("PongVsPPO is not offered: train its policy with python -m policies.train Pong")

if INVADERS.exists():
    register_env(
        replace(
            get_env("SpaceInvaders2P"), id="InvadersWithPPO", title="Space Invaders with a PPO partner",
            description="Clear the wave together with a policy trained with RLlib's PPO.",
            ai_agent_map_always={"second_0": "invaders-ppo-right"},
        )
    )
else:
    log.info("InvadersWithPPO is not offered: train its policies with python -m policies.train SpaceInvaders2P")
