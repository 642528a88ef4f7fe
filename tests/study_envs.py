"""Games and policies a study might configure, registered as a plugin (``Settings.plugins``) in every
process of the test deployment: two-player Space Invaders with the multi-agent options set in
different ways, RLlib checkpoints as partners and fallbacks, policies that misbehave, and a
non-Atari game without a no-op action (CartPole)."""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from pettingzoo import ParallelEnv

from crowdplay.ai import Policy, register_policy, register_rllib_checkpoint
from crowdplay.environments import EnvSpec, Keymap, arrow_keymap, get_env, register_env
from crowdplay.environments.parallel_adapter import make_pettingzoo_atari

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


# ----------------------------------------------------------------- AI agents (policy actors, RLlib)
#: Checkpoints the ``trained_policies`` fixture trains once and keeps for later runs.
CHECKPOINTS = Path(__file__).resolve().parent / ".cache" / "checkpoints"
#: Single-agent Pong, trained on RLlib's own Atari setup; in two-player Pong it plays the right paddle.
PONG_PPO = CHECKPOINTS / "pong-ppo"
#: Two-player Space Invaders, one module per cannon (module ids first_0 and second_0).
INVADERS_PPO = CHECKPOINTS / "spaceinvaders2p-ppo"
SMALL_ACTOR = {"num_cpus": 0.25}  # the test cluster has 4 CPUs for everything
register_rllib_checkpoint("test-pong-ppo", PONG_PPO, **SMALL_ACTOR)
register_rllib_checkpoint("test-pong-ppo-single", PONG_PPO, batched=False, **SMALL_ACTOR)
register_rllib_checkpoint("test-invaders-first", INVADERS_PPO, module_id="first_0", **SMALL_ACTOR)
register_rllib_checkpoint("test-invaders-second", INVADERS_PPO, module_id="second_0", **SMALL_ACTOR)
#: A DQN (double, dueling) checkpoint on RLlib's Atari Pong (``tests.rllib_checkpoints``): its
#: module answers actions, not distribution inputs.
PONG_DQN = Path(__file__).resolve().parent / ".cache" / "algorithms" / "dqn-pong"
register_rllib_checkpoint("test-pong-dqn", PONG_DQN, **SMALL_ACTOR)
#: The CartPole PPO checkpoint (``tests.rllib_checkpoints``), registered for an Atari game it cannot play.
register_rllib_checkpoint("test-cartpole-on-pong", PONG_DQN.parent / "ppo-cartpole-v1", **SMALL_ACTOR)


@register_policy("test-slow")
class SlowPolicy(Policy):
    """Answers FIRE after 50 ms (three frames): a model too slow for the frame rate."""

    observation = "ram"
    num_cpus = 0.0

    def compute_action(self, observation: object) -> int:
        time.sleep(0.05)
        return 1


@register_policy("test-slow-pair")
class SlowPair(SlowPolicy):
    """Served by two actors."""

    replicas = 2


@register_policy("test-huge")
class HugePolicy(SlowPolicy):
    """Asks for more CPUs than any test cluster has: Ray never places its actor."""

    num_cpus = 64.0


@register_policy("test-broken")
class BrokenPolicy(Policy):
    """Fails on every observation."""

    observation = "ram"
    num_cpus = 0.0

    def compute_action(self, observation: object) -> int:
        raise RuntimeError("this model is broken")


def _short(env_id: str, module: str, cycles: int = 300) -> EnvSpec:
    """A two-player game whose episodes end after ``cycles`` frames (five seconds)."""
    return replace(get_env(env_id), make_env=partial(make_pettingzoo_atari, module, max_cycles=cycles))


#: The tiny single-agent RLlib policy plays the right paddle; a participant the left.
PONG_VS_PPO = register_env(replace(_short("Pong2P", "pong_v3"), id="TestPongVsPPO", ai_agent_map_always={"first_0": "test-pong-ppo"}))
PONG_VS_DQN = register_env(replace(_short("Pong2P", "pong_v3"), id="TestPongVsDQN", ai_agent_map_always={"first_0": "test-pong-dqn"}))
#: The participant's opponent is a policy that raises on every observation.
PONG_VS_BROKEN = register_env(
    replace(_short("Pong2P", "pong_v3"), id="TestPongVsBroken", ai_agent_map_always={"first_0": "test-broken"}, ai_unavailable_after_s=1.0)
)
#: The opponent answers FIRE after 50 ms; the tests kill its actor mid-game.
PONG_VS_SLOW = register_env(
    replace(_short("Pong2P", "pong_v3"), id="TestPongVsSlow", ai_agent_map_always={"first_0": "test-slow"}, ai_unavailable_after_s=1.0)
)
@register_policy("test-ram-bot")
class RamBot(Policy):
    """Plays from the console RAM alone, inside the game's process: the same game every time."""

    observation = "ram"
    in_actor = False

    def compute_action(self, observation: bytes) -> int:
        return (observation[0x31] + observation[0x36]) % 6


#: An AI-only game: both paddles played by the RAM bot; participants and researchers watch it.
AI_PONG = register_env(
    replace(_short("Pong2P", "pong_v3"), id="TestAIPong", title="AI Pong", ai_agent_map_always={"first_0": "test-ram-bot", "second_0": "test-ram-bot"}, reconnect_grace_s=1.0)
)
#: The opponent's actor asks for 64 CPUs: Ray never places it.
PONG_VS_HUGE = register_env(replace(_short("Pong2P", "pong_v3"), id="TestPongVsHuge", ai_agent_map_always={"first_0": "test-huge"}))
#: The same, but a game whose AI partner is unavailable ends.
PONG_VS_BROKEN_ENDS = register_env(replace(PONG_VS_BROKEN, id="TestPongVsBrokenEnds", ai_unavailable="end"))
#: An RLlib module from a multi-agent checkpoint is the participant's partner.
INVADERS_WITH_PPO = register_env(
    replace(_short("SpaceInvaders2P", "space_invaders_v2"), id="TestInvadersWithPPO", ai_agent_map_always={"second_0": "test-invaders-second"})
)
#: Two participants; whoever leaves is replaced by their cannon's RLlib module.
INVADERS_PPO_FALLBACK = register_env(
    replace(
        TEAM, id="TestInvadersPPOFallback", reconnect_grace_s=0.5,
        ai_agent_map_fallback={"first_0": "test-invaders-first", "second_0": "test-invaders-second"},
    )
)


def make_cartpole() -> object:
    """Gymnasium's CartPole, drawn as RGB: two actions (push left, push right) and no no-op."""
    import gymnasium as gym

    return gym.make("CartPole-v1", render_mode="rgb_array")


#: Arrow keys push the cart; with no key held the game waits (CartPole has no "do nothing").
CARTPOLE = register_env(
    EnvSpec(
        id="TestCartPole", title="CartPole", description="Balance the pole.", make_env=make_cartpole, fps=30,
        action_labels=["left", "right"], keymap=arrow_keymap, idle="wait",
    )
)

#: Tiny checkpoints of ``tests.rllib_checkpoints`` on non-Atari games, given the env's own observations.
ALGORITHMS = Path(__file__).resolve().parent / ".cache" / "algorithms"
for _algorithm in ("impala", "sac"):
    register_rllib_checkpoint(f"test-{_algorithm}-cart", ALGORITHMS / f"{_algorithm}-cartpole-v1", framebuffer=None, observation="env", **SMALL_ACTOR)
    #: CartPole played by the checkpoint alone: participants watch it.
    register_env(replace(CARTPOLE, id=f"TestCartPole{_algorithm.upper()}", agents=("agent_0",), ai_agent_map_always={"agent_0": f"test-{_algorithm}-cart"}, reconnect_grace_s=1.0))
#: BC trained offline on this project's own RLlib export of a recorded MountainCar game.
register_rllib_checkpoint("test-bc-car", ALGORITHMS / "bc-mountaincar-v0", framebuffer=None, observation="env", **SMALL_ACTOR)


def make_mountain_car() -> object:
    import gymnasium as gym

    return gym.make("MountainCar-v0", render_mode="rgb_array")


#: MountainCar driven by the BC policy alone: participants watch it.
CAR_BC = register_env(
    EnvSpec(
        id="TestCarBC", title="Mountain car", description="Reach the flag.", make_env=make_mountain_car, agents=("agent_0",),
        keymap=Keymap({"ArrowLeft": 0, "ArrowRight": 2}, noop=1), reconnect_grace_s=1.0, ai_agent_map_always={"agent_0": "test-bc-car"},
    )
)

#: Instructions for an agent single-player Pong does not have: registration cannot tell (its agents
#: are not declared, so they are known only once it is built).
MISCONFIGURED = register_env(replace(get_env("Pong"), id="TestMisconfigured", instructions={"agent_1": "You are the left paddle."}))


def cartpole_without_a_screen():
    import gymnasium as gym

    return gym.make("CartPole-v1")  # no render_mode: nothing to show the participant


#: A game that builds and resets but has no screen: found only when its first screen is rendered.
NO_SCREEN = register_env(EnvSpec(
    id="TestNoScreen", title="CartPole, unseen", description="No render_mode.", make_env=cartpole_without_a_screen,
    keymap=Keymap({"ArrowLeft": 0, "ArrowRight": 1}), idle="repeat",
))


class CartPair(ParallelEnv):
    """Two CartPoles side by side, one per agent (a PettingZoo parallel environment): a non-Atari
    game two participants play, where a CartPole checkpoint can take over either cart."""

    metadata = {"name": "cart_pair_v0", "render_modes": ["rgb_array"]}
    possible_agents = ["left", "right"]
    render_mode = "rgb_array"

    def __init__(self) -> None:
        import gymnasium as gym

        self.carts = {agent: gym.make("CartPole-v1", render_mode="rgb_array") for agent in self.possible_agents}
        self.agents: list[str] = []

    def observation_space(self, agent: str):
        return self.carts[agent].observation_space

    def action_space(self, agent: str):
        return self.carts[agent].action_space

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.agents = list(self.possible_agents)
        observations = {agent: self.carts[agent].reset(seed=None if seed is None else seed + index)[0] for index, agent in enumerate(self.agents)}
        return observations, {agent: {} for agent in self.agents}

    def step(self, actions: dict):
        results = {agent: self.carts[agent].step(actions[agent]) for agent in self.agents}
        self.agents = [agent for agent in self.agents if not (results[agent][2] or results[agent][3])]
        return tuple({agent: result[index] for agent, result in results.items()} for index in range(5))

    def render(self):
        import numpy as np

        return np.concatenate([self.carts[agent].render() for agent in self.possible_agents], axis=1)

    def close(self) -> None:
        for cart in self.carts.values():
            cart.close()


#: Two participants balance a cart each; whoever leaves is replaced by the IMPALA CartPole checkpoint.
CART_PAIR = register_env(
    EnvSpec(
        id="TestCartPair", title="Two carts", description="Balance your pole.", make_env=CartPair, fps=30, agents=("left", "right"),
        keymap=Keymap({"ArrowLeft": 0, "ArrowRight": 1}), idle="repeat", reconnect_grace_s=0.5,
        ai_agent_map_fallback={"left": "test-impala-cart", "right": "test-impala-cart"},
    )
)
