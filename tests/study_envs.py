"""Games a study might configure, registered as a plugin (``Settings.plugins``) in every process of
the test deployment: two-player Space Invaders with the multi-agent options set in different ways."""

from __future__ import annotations

from dataclasses import replace

from crowdplay.environments import get_env, register_env

TEAM = get_env("SpaceInvaders2P")

#: Fallback AI for both cannons; a participant who drops has half a second to come back.
WITH_FALLBACK = register_env(
    replace(TEAM, id="TestDuoFallback", ai_agent_map_fallback={"first_0": "random", "second_0": "noop"}, reconnect_grace_s=0.5)
)
#: Waits two seconds for a partner, then starts with the fallback in the empty seat.
WITH_TIMEOUT = register_env(
    replace(TEAM, id="TestDuoTimeout", ai_agent_map_fallback={"first_0": "random", "second_0": "random"}, human_timeout=2.0)
)
#: No fallback: when a participant leaves, the game ends for the other.
WITHOUT_FALLBACK = register_env(replace(TEAM, id="TestDuoAlone", reconnect_grace_s=0.5))
#: One participant with an AI partner that always plays the second cannon.
WITH_AI_PARTNER = register_env(replace(TEAM, id="TestDuoWithAI", ai_agent_map_always={"second_0": "random"}))
