"""The built-in two-player Atari games: PettingZoo's ALE environments on multi-agent-ale-py.

Each game's agents are ``first_0`` and ``second_0``. Keys were checked on screen per agent:
in two-player Pong both paddles move up on the ALE action RIGHT and down on LEFT, so Up/Down
arrows map there for either side. Space Invaders comes as a team game (shared lives, each cannon
scores for itself) and as a duel where the right to fire alternates; Entombed has a cooperative
mode (one shared reward for getting further down the maze) and a competitive one (zero-sum: the
survivor wins).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from crowdplay.environments.keymap import atari_keymap
from crowdplay.environments.parallel_adapter import make_pettingzoo_atari
from crowdplay.environments.registry import register_env
from crowdplay.environments.spec import EnvSpec

TWO_PLAYERS = ("first_0", "second_0")
PONG_KEYS = partial(atari_keymap, renames={"RIGHT": "ArrowUp", "LEFT": "ArrowDown"})


def _two_player(env_id: str, module: str, title: str, description: str, instructions: dict[str, str], **options: Any) -> EnvSpec:
    """Register one built-in two-player game: ``keymap`` among ``options`` goes to the spec, the
    rest to PettingZoo's environment."""
    spec_options = {key: options.pop(key) for key in ("keymap",) if key in options}
    return register_env(
        EnvSpec(
            id=env_id,
            title=title,
            description=description,
            make_env=partial(make_pettingzoo_atari, module, **options),
            instructions=instructions,
            agents=TWO_PLAYERS,
            **spec_options,
        )
    )


SPACE_INVADERS_TEAM = _two_player(
    "SpaceInvaders2P",
    "space_invaders_v2",
    "Space Invaders for two",
    "Two cannons against one alien wave: clear it together (each of you scores your own hits).",
    {
        "first_0": "You are the <b>green</b> cannon on the left. Left/Right move, Space fires.",
        "second_0": "You are the <b>yellow</b> cannon on the right. Left/Right move, Space fires.",
    },
)
SPACE_INVADERS_DUEL = _two_player(
    "SpaceInvadersDuel",
    "space_invaders_v2",
    "Space Invaders duel",
    "Outscore the other cannon; only one of you may fire at a time, and the right to fire passes back and forth.",
    {
        "first_0": "You are the <b>green</b> cannon on the left. Left/Right move, Space fires when it is your turn.",
        "second_0": "You are the <b>yellow</b> cannon on the right. Left/Right move, Space fires when it is your turn.",
    },
    alternating_control=True,
)
PONG_DUEL = _two_player(
    "Pong2P",
    "pong_v3",
    "Pong for two",
    "Table tennis against another participant: first to 21 wins.",
    {
        "first_0": "You are the <b>green</b> paddle on the right. Up/Down move it; Space serves after you score.",
        "second_0": "You are the <b>orange</b> paddle on the left. Up/Down move it; Space serves after you score.",
    },
    keymap=PONG_KEYS,
)
ENTOMBED_TEAM = _two_player(
    "EntombedCoop",
    "entombed_cooperative_v3",
    "Entombed together",
    "Run down the endless maze together: you both score for every section either of you gets through.",
    {
        "first_0": "You are the <b>purple</b> runner on the left. Arrow keys move, Space breaks a wall (rarely).",
        "second_0": "You are the <b>yellow</b> runner on the right. Arrow keys move, Space breaks a wall (rarely).",
    },
)
ENTOMBED_DUEL = _two_player(
    "EntombedVersus",
    "entombed_competitive_v3",
    "Entombed versus",
    "Run down the endless maze; the one who survives longer wins.",
    {
        "first_0": "You are the <b>purple</b> runner on the left. Arrow keys move, Space breaks a wall (rarely).",
        "second_0": "You are the <b>yellow</b> runner on the right. Arrow keys move, Space breaks a wall (rarely).",
    },
)
