"""Deterministic replay check: re-run a recorded ALE episode and compare it with the recording.

The emulator is restored from the recorded state at (or before) ``from_step``, the recorded actions
are applied, and every screen and reward is compared with what was stored. A mismatch means the
recording cannot be trusted as a trajectory of that environment (or the emulator changed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crowdplay.data.dataset import Dataset
from crowdplay.environments import get_env, make_adapter


@dataclass
class ReplayReport:
    episode_id: str
    from_step: int
    steps_checked: int = 0
    frame_mismatches: list[int] = field(default_factory=list)
    reward_mismatches: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.steps_checked > 0 and not self.frame_mismatches and not self.reward_mismatches

    def summary(self) -> str:
        if self.ok:
            return f"{self.episode_id}: replay matches ({self.steps_checked} steps from step {self.from_step})"
        return (
            f"{self.episode_id}: {len(self.frame_mismatches)} frame and {len(self.reward_mismatches)} reward mismatches "
            f"in {self.steps_checked} steps (first frame mismatch at step {self.frame_mismatches[:1] or '-'}, "
            f"first reward mismatch at {self.reward_mismatches[:1] or '-'})"
        )


def replay_check(dataset: Dataset, episode_id: str, from_step: int = 0) -> ReplayReport:
    """Replay from the latest snapshot at or before ``from_step`` to the end of the recording."""
    episode = dataset.load(episode_id, observations="palette")
    meta = episode.meta
    start = max((step for step in episode.snapshots if step <= from_step), default=0)
    state = episode.snapshots.get(start, meta.get("start_state"))
    if state is None:
        raise ValueError(f"episode {episode_id!r} has no emulator snapshot to replay from (not an ALE environment?)")
    report = ReplayReport(episode_id, start)
    adapter = make_adapter(get_env(meta["env_id"]))
    try:
        adapter.reset(meta.get("seed", 0))
        adapter.restore(state)
        agents = list(episode.agents)
        first = episode.agents[agents[0]]
        # (The screen buffer is not part of an emulator state, so checking starts after the first step.)
        for step in range(start, episode.steps):
            result = adapter.step({agent: int(episode.agents[agent].actions[step]) for agent in agents})
            report.steps_checked += 1
            if not np.array_equal(adapter.screen(), first.observations[step + 1]):
                report.frame_mismatches.append(step)
            if any(result.rewards[agent] != episode.agents[agent].rewards[step] for agent in agents):
                report.reward_mismatches.append(step)
    finally:
        adapter.close()
    return report
