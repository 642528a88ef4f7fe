"""Tiny RLlib checkpoints of several algorithms (new API stack), trained for one iteration and
kept in tests/.cache until this file or the training code changes: a few seconds each.

Their weights are barely trained; what the tests check is that CrowdPlay answers exactly what
each module itself answers for the same input, whatever the algorithm."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(__file__).parent / ".cache" / "algorithms"


def _config(algorithm: str, env: str) -> Any:
    from ray.rllib.algorithms.appo import APPOConfig
    from ray.rllib.algorithms.bc import BCConfig
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.algorithms.impala import IMPALAConfig
    from ray.rllib.algorithms.marwil import MARWILConfig
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.algorithms.sac import SACConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from crowdplay.ai.rllib import NATURE_CNN

    small = {"fcnet_hiddens": [16, 16]}
    if algorithm == "dqn":
        config = DQNConfig().training(
            double_q=True, dueling=True, num_steps_sampled_before_learning_starts=32, train_batch_size_per_learner=32,
            replay_buffer_config={"type": "PrioritizedEpisodeReplayBuffer", "capacity": 2000},
        )
        small = {"fcnet_hiddens": [16], "head_fcnet_hiddens": [16]}
    elif algorithm == "ppo":
        config = PPOConfig().training(train_batch_size_per_learner=64, minibatch_size=32, num_epochs=1)
    elif algorithm == "appo":
        config = APPOConfig().training(train_batch_size_per_learner=64)
    elif algorithm == "impala":
        config = IMPALAConfig().training(train_batch_size_per_learner=64)
    elif algorithm in ("bc", "marwil"):  # offline: trained on an export (see ``offline_checkpoint``)
        config = (BCConfig() if algorithm == "bc" else MARWILConfig()).training(train_batch_size_per_learner=32).learners(num_learners=0)
    elif algorithm == "sac":
        config = SACConfig().training(
            num_steps_sampled_before_learning_starts=32, train_batch_size_per_learner=32,
            replay_buffer_config={"type": "PrioritizedEpisodeReplayBuffer", "capacity": 2000},
        )
        small = {"fcnet_hiddens": [16, 16], "head_fcnet_hiddens": [16]}
    else:
        raise ValueError(algorithm)
    model = {**NATURE_CNN, "head_fcnet_hiddens": [64]} if env == "Pong" else small
    return config.rl_module(model_config=DefaultModelConfig(**model)).env_runners(num_env_runners=0, rollout_fragment_length=32).reporting(log_gradients=False)


def checkpoint(algorithm: str, env: str, offline_data: Path | None = None) -> Path:
    """The checkpoint of ``algorithm`` ("dqn", "ppo", "appo", "impala", "sac") trained on ``env``
    ("CartPole-v1", or "Pong" with RLlib's own Atari wrappers), trained now unless cached; or
    of an offline algorithm ("bc", "marwil") trained on ``offline_data``, a single agent's RLlib
    export (``crowdplay.data.exports.export_rllib``) of a recorded ``env``."""
    root = Path(__file__).parent.parent
    # Not the offline data: every recording of the same game serves, and a checkpoint a policy
    # actor of another pytest worker is playing must not be retrained under it.
    sources = [Path(__file__), root / "policies" / "train.py"]
    fingerprint = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
    out = CACHE / f"{algorithm}-{env.lower()}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{out.name}.lock", "w") as lock:  # pytest's workers may want the same one at once: one trains
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = out / "fingerprint.txt"
        if not (marker.exists() and marker.read_text() == fingerprint):
            _train(algorithm, env, offline_data, out)
            marker.write_text(fingerprint)
    return out


def _train(algorithm: str, env: str, offline_data: Path | None, out: Path) -> None:
    from ray.tune.registry import register_env

    from policies.train import _single_agent_env

    shutil.rmtree(out, ignore_errors=True)
    config = _config(algorithm, env)
    if offline_data is not None:
        import gymnasium as gym

        spaces = gym.make(env)
        config = config.environment(observation_space=spaces.observation_space, action_space=spaces.action_space).offline_data(
            input_=[str(offline_data)], dataset_num_iters_per_learner=1, map_batches_kwargs={"concurrency": 1},
        )
    elif env == "Pong":
        register_env("crowdplay-test-atari-Pong", _single_agent_env)
        config = config.environment("crowdplay-test-atari-Pong", env_config={"game": "Pong"})
    else:
        config = config.environment(env)
    algo = config.build_algo()
    try:
        algo.train()
        algo.save_to_path(str(out.resolve()))
    finally:
        algo.stop()


def module_greedy(module: Any, observations: np.ndarray) -> list[int]:
    """The module's own greedy answer for a batch of observations (as the module takes them):
    its actions, or the most likely action of its distribution inputs."""
    import torch

    with torch.inference_mode():
        output = module.forward_inference({"obs": torch.from_numpy(observations)})
    if "actions" in output:
        return [int(action) for action in output["actions"]]
    return [int(action) for action in output["action_dist_inputs"].numpy().argmax(axis=1)]
