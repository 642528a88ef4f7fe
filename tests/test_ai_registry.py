"""The AI registry, the AtariFB framebuffer against RLlib's own Atari preprocessing, and RLlib
checkpoints loaded through the registry."""

from __future__ import annotations

from dataclasses import replace

import ale_py
import gymnasium as gym
import numpy as np
import pytest
from ray.rllib.env.wrappers.atari_wrappers import wrap_atari_for_new_api_stack

from crowdplay.ai import (
    AtariFB,
    Framebuffer,
    Policy,
    UnknownPolicy,
    make_framebuffer,
    make_policy,
    policy_class,
    register_ai_framebuffer,
    register_policy,
    register_rllib_checkpoint,
)
from crowdplay.ai.atari import normalize
from crowdplay.ai.rllib import CheckpointNotFound
from crowdplay.environments import EnvSpec, get_env, make_adapter
from tests.study_envs import INVADERS_PPO, PONG_PPO

gym.register_envs(ale_py)
SIX_ACTIONS = gym.spaces.Discrete(6)


def test_stacked_decorators_register_every_id_and_return_the_class():
    @register_policy("stacked-a")
    @register_policy("stacked-b")
    class Stacked(Policy):
        def compute_action(self, observation):
            return 2

    @register_ai_framebuffer("stacked-a")
    @register_ai_framebuffer("stacked-b")
    class Halves(Framebuffer):
        def push(self, observation):
            return observation[::2]

    assert Stacked.__name__ == "Stacked" and Halves.__name__ == "Halves"  # returned unchanged, not None
    for policy_id in ("stacked-a", "stacked-b"):
        policy = make_policy(policy_id, SIX_ACTIONS)
        assert isinstance(policy, Stacked) and policy.action_space == SIX_ACTIONS and policy.compute_action(None) == 2
        assert isinstance(make_framebuffer(policy_id), Halves)
    assert policy_class("stacked-b") is Stacked
    with pytest.raises(ValueError, match="already registered"):
        register_policy("stacked-a")(type("Other", (Policy,), {}))
    with pytest.raises(ValueError, match="non-empty string"):
        register_policy("")


def test_unknown_policy_ids_fail_when_the_environment_is_configured():
    with pytest.raises(ValueError, match=r"'BadAI': ai_agent_map_always\['second_0'\]: unknown policy 'no-such-policy' \(registered: .*random"):
        replace(get_env("SpaceInvaders2P"), id="BadAI", ai_agent_map_always={"second_0": "no-such-policy"})
    with pytest.raises(ValueError, match="'X': ai_agent_map_fallback.*'typo'"):
        EnvSpec(id="X", title="X", description="", make_env=lambda: None, ai_agent_map_fallback={"agent_0": "typo"})
    with pytest.raises(UnknownPolicy):
        make_policy("typo", SIX_ACTIONS)


class Tap(gym.Wrapper):
    """Keeps every raw frame the emulator produces underneath RLlib's wrappers."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.frames: list[np.ndarray] = []

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        self.frames = [observation]
        return observation, info

    def step(self, action):
        result = self.env.step(action)
        self.frames.append(result[0])
        return result


@pytest.mark.parametrize("game", ["Pong", "SpaceInvaders"])
def test_atari_framebuffer_equals_rllibs_atari_preprocessing(game):
    """Every raw frame goes through AtariFB, as during play; at each frame where RLlib's wrapped
    environment hands its policy an observation, AtariFB's output (normalised) is the same array."""
    tap = Tap(gym.make(f"ale_py:ALE/{game}-v5", frameskip=1, repeat_action_probability=0.0))
    env = wrap_atari_for_new_api_stack(tap, dim=84, frameskip=4, framestack=4)
    env.reset(seed=7)
    rng = np.random.default_rng(7)
    decisions = []
    for _ in range(150):
        observation, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        decisions.append((len(tap.frames) - 1, observation))
        assert not (terminated or truncated)
    framebuffer = AtariFB()
    shown = [framebuffer.push(frame) for frame in tap.frames]
    # The first three decisions after RLlib's reset repeat its reset image; from then on both hold real history.
    for frame_index, observation in decisions[3:]:
        assert shown[frame_index].shape == (84, 84, 4) and shown[frame_index].dtype == np.uint8
        assert np.array_equal(normalize(shown[frame_index]), observation), f"frame {frame_index}"


def test_the_screens_policies_see_in_play_are_ales_rgb_frames():
    """AI agents get the adapter's palette screen as RGB: it must be exactly ALE's own RGB frame."""
    adapter = make_adapter(get_env("Pong"))
    ale = adapter.env.unwrapped.ale
    adapter.reset(3)
    for step in range(120):
        adapter.step({"agent_0": step % 6})
        assert np.array_equal(adapter.palette[adapter.screen()], ale.getScreenRGB())


def test_rllib_checkpoints_load_through_the_registry(trained_policies):
    """An Algorithm checkpoint (single-agent), modules of a multi-agent one, and a lone RLModule."""
    observation = AtariFB().push(np.zeros((210, 160, 3), np.uint8))
    pong = make_policy("test-pong-ppo", SIX_ACTIONS)
    assert 0 <= pong.compute_action(observation) < 6
    assert all(0 <= action < 6 for action in pong.compute_actions([observation] * 5))
    assert isinstance(make_framebuffer("test-pong-ppo"), AtariFB)
    second = make_policy("test-invaders-second", SIX_ACTIONS)
    first = make_policy("test-invaders-first", SIX_ACTIONS)
    batch = [AtariFB().push(np.full((210, 160, 3), value, np.uint8)) for value in (0, 90, 180)]
    assert len(first.compute_actions(batch)) == len(second.compute_actions(batch)) == 3
    # the two cannons' modules are different networks
    logits = [policy.module.forward_inference({"obs": policy._torch.from_numpy(normalize(np.stack(batch)))})["action_dist_inputs"] for policy in (first, second)]
    assert not np.allclose(logits[0].numpy(), logits[1].numpy())


def test_a_saved_rlmodule_and_clear_errors_for_wrong_paths(trained_policies, tmp_path):
    module = make_policy("test-invaders-second", SIX_ACTIONS).module
    module.save_to_path(str(tmp_path / "module"))
    register_rllib_checkpoint("test-lone-module", tmp_path / "module", explore=True)
    lone = make_policy("test-lone-module", SIX_ACTIONS)
    observation = AtariFB().push(np.zeros((210, 160, 3), np.uint8))
    assert all(0 <= action < 6 for action in lone.compute_actions([observation] * 20))  # sampled

    register_rllib_checkpoint("test-missing", tmp_path / "nowhere")
    with pytest.raises(CheckpointNotFound, match="nowhere.*python -m policies.train"):
        make_policy("test-missing", SIX_ACTIONS)
    register_rllib_checkpoint("test-no-module-id", INVADERS_PPO)
    with pytest.raises(CheckpointNotFound, match="first_0, second_0.*module_id"):
        make_policy("test-no-module-id", SIX_ACTIONS)
    register_rllib_checkpoint("test-wrong-module", PONG_PPO, module_id="second_0")
    with pytest.raises(CheckpointNotFound, match="no module 'second_0'.*default_policy"):
        make_policy("test-wrong-module", SIX_ACTIONS)
    with pytest.raises(TypeError, match="unknown options"):
        register_rllib_checkpoint("test-typo", PONG_PPO, num_cpu=1)


def test_the_example_registrations_load_as_a_plugin():
    import policies.examples as examples
    from crowdplay.ai import registered_policies
    from crowdplay.environments import list_envs

    assert {"pong-ppo", "invaders-ppo-left", "invaders-ppo-right"} <= set(registered_policies())
    offered = {spec.id for spec in list_envs()}
    assert ("PongVsPPO" in offered) == examples.PONG.exists()  # a game is offered only once its AI is trained
    assert ("InvadersWithPPO" in offered) == examples.INVADERS.exists()
    assert policy_class("invaders-ppo-right").module_id == "second_0"
