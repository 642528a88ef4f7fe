"""Train a small RLlib PPO policy on an Atari game and save the checkpoint CrowdPlay plays it from.

    python -m policies.train Pong                       # -> policies/checkpoints/pong-ppo
    python -m policies.train SpaceInvaders2P --iterations 20   # one module per cannon

A single-agent game trains on RLlib's own Atari setup (``wrap_atari_for_new_api_stack``: 84x84
gray, max over two frames, four-frame action repeat, stack of four), which is what the ``AtariFB``
framebuffer reproduces during play. A multi-agent game (any of CrowdPlay's PettingZoo games) trains
one module per agent, named by the agent, on ``policies.atari_agents.AtariAgentsEnv``: CrowdPlay's
own environment with each agent's observations made by AtariFB and each action repeated for four
frames, so training sees exactly what play will show. Both use the Nature-CNN encoder.

The defaults train for seconds, enough to show the path from training to playing against the
policy; a policy worth playing against takes ``--iterations`` in the thousands and a bigger batch.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import gymnasium as gym

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
ACTION_REPEAT = 4  # as policies.atari_agents


def _single_agent_env(config: dict[str, Any]) -> gym.Env:
    import ale_py
    from ray.rllib.env.wrappers.atari_wrappers import wrap_atari_for_new_api_stack

    gym.register_envs(ale_py)
    env = gym.make(f"ale_py:ALE/{config['game']}-v5", frameskip=1, repeat_action_probability=0.0)
    return wrap_atari_for_new_api_stack(env, dim=84, frameskip=ACTION_REPEAT, framestack=4)


def train(env_id: str, out: Path, iterations: int = 1, batch: int = 128, minibatch: int = 64) -> Path:
    """Train PPO on ``env_id`` (an ALE game name, or a CrowdPlay multi-agent game id) and save an
    Algorithm checkpoint at ``out``; returns ``out``. Starts a local Ray unless one is running."""
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.registry import register_env

    from crowdplay.ai.rllib import NATURE_CNN
    from crowdplay.environments import get_env, list_envs

    multi_agent = any(spec.id == env_id and len(spec.agents or ()) > 1 for spec in list_envs())
    config = (
        PPOConfig()
        .env_runners(num_env_runners=0, rollout_fragment_length=batch)
        .training(train_batch_size_per_learner=batch, minibatch_size=minibatch, num_epochs=1, lr=2.5e-4)
        .rl_module(model_config=DefaultModelConfig(**NATURE_CNN))
        .reporting(log_gradients=False)
    )
    if multi_agent:
        from policies.atari_agents import AtariAgentsEnv

        name = f"crowdplay-agents-{env_id}"
        register_env(name, AtariAgentsEnv)
        agents = list(get_env(env_id).agents or ())
        config = config.environment(name, env_config={"env_id": env_id}).multi_agent(
            policies=set(agents), policy_mapping_fn=lambda agent_id, episode, **kwargs: agent_id
        )
    else:
        name = f"crowdplay-atari-{env_id}"
        register_env(name, _single_agent_env)
        config = config.environment(name, env_config={"game": env_id})
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    algorithm = config.build_algo()
    try:
        for iteration in range(iterations):
            result = algorithm.train()
            logging.info("iteration %d: %s", iteration + 1, result.get("env_runners", {}).get("episode_return_mean"))
        out.parent.mkdir(parents=True, exist_ok=True)
        algorithm.save_to_path(str(out.resolve()))
    finally:
        algorithm.stop()
        if started_ray:
            ray.shutdown()
    return out


def default_checkpoint(env_id: str) -> Path:
    return CHECKPOINTS / f"{env_id.lower()}-ppo"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("env_id", help="an ALE game (Pong, SpaceInvaders, ...) or a CrowdPlay multi-agent game id (SpaceInvaders2P, ...)")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256, help="environment steps per iteration")
    parser.add_argument("--out", type=Path, help="checkpoint directory (default: policies/checkpoints/<env>-ppo)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = train(args.env_id, args.out or default_checkpoint(args.env_id), args.iterations, args.batch, min(64, args.batch))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
