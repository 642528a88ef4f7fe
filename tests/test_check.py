"""``crowdplay check`` in a researcher's directory: their plugin registers games and RLlib
checkpoints, and every mistake (a checkpoint trained on another game, a module id it does not
hold, a path with a typo, an actor too big for any node) is named before a participant arrives,
with a non-zero exit; the same checks make a policy actor that cannot play answer why."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import ray

from crowdplay.ai.actor import policy_actor
from tests.conftest import CROWDPLAY_COMMAND, TEST_SETTINGS, researcher_environment
from tests.rllib_checkpoints import checkpoint

GOOD = '''
from dataclasses import replace

import gymnasium as gym

from crowdplay.ai import register_rllib_checkpoint
from crowdplay.environments import EnvSpec, Keymap, get_env, register_env

register_rllib_checkpoint("pong-dqn", "{pong}")
register_rllib_checkpoint("cart-ppo", "{cart}", framebuffer=None, observation="env")
register_env(replace(get_env("Pong2P"), id="PongVsDQN", ai_agent_map_always={{"first_0": "pong-dqn"}}))
register_env(EnvSpec(
    id="Cart", title="Cart", description="Balance the pole.", make_env=lambda: gym.make("CartPole-v1", render_mode="rgb_array"),
    keymap=Keymap({{"ArrowLeft": 0, "ArrowRight": 1}}), idle="repeat", ai_agent_map_fallback={{"agent_0": "cart-ppo"}},
))
'''

MISTAKES = '''
from dataclasses import replace

import gymnasium as gym
from pettingzoo.butterfly import cooperative_pong_v6

from crowdplay.ai import register_rllib_checkpoint
from crowdplay.environments import EnvSpec, Keymap, arrow_keymap, get_env, register_env

register_env(EnvSpec(
    id="AcrobotUnseen", title="Acrobot", description="Swing up.", make_env=lambda: gym.make("Acrobot-v1"),
    keymap=Keymap({{"ArrowLeft": 0, "ArrowRight": 2}}, noop=1),
))
register_env(EnvSpec(
    id="PongInTurns", title="Pong", description="Together.", make_env=lambda: cooperative_pong_v6.env(render_mode="rgb_array"),
    agents=("paddle_0", "paddle_1"), action_labels=["noop", "up", "down"], keymap=arrow_keymap,
))

register_rllib_checkpoint("cart-ppo", "{cart}", framebuffer=None, observation="env")
register_rllib_checkpoint("pong-dqn-typo", "{pong}-typo")
register_rllib_checkpoint("pong-dqn-module", "{pong}", module_id="first_0")
register_rllib_checkpoint("pong-dqn-big", "{pong}", num_cpus=64)
register_env(replace(get_env("Pong"), id="PongByCart", ai_agent_map_fallback={{"agent_0": "cart-ppo"}}))
register_env(replace(get_env("Pong2P"), id="PongMistakes", ai_agent_map_always={{"first_0": "pong-dqn-typo"}},
                     ai_agent_map_fallback={{"second_0": "pong-dqn-module"}}))
register_env(replace(get_env("Pong"), id="PongBig", ai_agent_map_fallback={{"agent_0": "pong-dqn-big"}}))
'''


@pytest.fixture(scope="module")
def checkpoints(ray_session):
    return {"pong": checkpoint("dqn", "Pong"), "cart": checkpoint("ppo", "CartPole-v1")}


def crowdplay_check(directory, plugin: str, text: str) -> subprocess.CompletedProcess:
    (directory / f"{plugin}.py").write_text(text)
    return subprocess.run(
        [*CROWDPLAY_COMMAND, "check"], cwd=directory, env=researcher_environment(directory, CROWDPLAY_PLUGINS=plugin),
        capture_output=True, text=True, timeout=300,
    )


def test_a_researchers_games_and_checkpoints_pass(checkpoints, tmp_path):
    done = crowdplay_check(tmp_path, "my_games", GOOD.format(**checkpoints))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "ok    policy 'pong-dqn' for PongVsDQN/first_0 (ai_agent_map_always)" in out
    assert "ok    policy 'cart-ppo' for Cart/agent_0 (ai_agent_map_fallback)" in out
    assert f"checkpoint: {checkpoints['pong'].resolve()}" in out and "module: default_policy" in out
    assert "connectors: the checkpoint's env-to-module and module-to-env pipelines" in out
    assert "input: rgb observation -> shape (84, 84, 4) uint8" in out and "input: env observation -> shape (4,) float32" in out
    assert "1 actor(s) of CPU 0.5" in out and "of 6" in out
    assert out.strip().splitlines()[-1].endswith(" checks, 0 failed")


def test_every_mistake_is_named_and_the_check_fails(checkpoints, tmp_path):
    done = crowdplay_check(tmp_path, "my_mistakes", MISTAKES.format(**checkpoints))
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    cart_on_pong = out.split("FAIL  policy 'cart-ppo' for PongByCart/agent_0 (ai_agent_map_fallback)")[1].split("\nok")[0].split("\nFAIL")[0]
    assert "! module 'default_policy' has 2 actions but the agent has 6" in cart_on_pong
    assert "! the input has shape (210, 160, 3) but the checkpoint's env-to-module pipeline takes (4,)" in cart_on_pong
    assert "FAIL  policy 'pong-dqn-typo' for PongMistakes/first_0 (ai_agent_map_always)" in out
    assert f"! could not be loaded: CheckpointNotFound: {checkpoints['pong']}-typo is not an RLlib checkpoint" in out
    assert "FAIL  policy 'pong-dqn-module' for PongMistakes/second_0 (ai_agent_map_fallback)" in out
    assert "has no module 'first_0' (modules: default_policy); pass module_id" in out
    assert "! its actor asks for CPU 64 but the largest node has CPU " in out
    assert "FAIL  environment 'AcrobotUnseen'" in out and "! could not be built, reset and shown: TypeError: environment 'AcrobotUnseen' must be made " \
        "with render_mode='rgb_array': its render() returned None, not an HxWx3 image" in out
    assert "FAIL  environment 'PongInTurns'" in out and "environment 'PongInTurns' is a PettingZoo AEC environment" in out and "parallel_env" in out
    assert out.strip().splitlines()[-1].startswith("crowdplay check: ") and " 6 failed: " in out.strip().splitlines()[-1]


def test_a_policy_actor_that_cannot_play_answers_why_and_is_not_restarted(checkpoints):
    """The cart-pole module asked to play a six-action Atari agent: every answer is the reason."""
    actor = policy_actor(TEST_SETTINGS, "test-cartpole-on-pong", 6)
    try:
        answers = ray.get(actor.compute.remote([np.zeros((84, 84, 4), np.uint8)] * 2), timeout=120)
        assert answers == ["policy could not start: module 'default_policy' has 2 actions but the agent has 6"] * 2
        assert ray.get(actor.stats.remote())["last_error"] == answers[0]
    finally:
        ray.kill(actor)
