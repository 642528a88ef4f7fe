"""RLlib's own offline pipeline reading an export: the tests of the RLlib export check what BC
would train on, not just that the parquet files parse."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gymnasium as gym


def bc_sample(directory: Path, observation_space: gym.Space[Any], action_space: gym.Space[Any], samples: int = 16) -> Any:
    """``samples`` rows of the RLlib export in ``directory`` as BC's learner would get them
    (OfflineData -> OfflinePreLearner -> learner connectors), in one local learner without
    env runners: the default policy's batch, with ``obs``, ``new_obs``, ``actions``, ``rewards``,
    ``terminateds`` and ``truncateds`` columns. Needs a Ray session."""
    from ray.rllib.algorithms.bc import BCConfig

    config = (
        BCConfig()
        .environment(observation_space=observation_space, action_space=action_space)
        .offline_data(input_=[str(directory)], dataset_num_iters_per_learner=1, map_batches_kwargs={"concurrency": 1})
        .learners(num_learners=0)
        .env_runners(num_env_runners=0)
        .training(train_batch_size_per_learner=samples)
    )
    algo = config.build_algo()
    try:
        assert algo.offline_data is not None  # built from the offline_data config above
        return algo.offline_data.sample(num_samples=samples, num_shards=0).policy_batches["default_policy"]
    finally:
        algo.stop()
