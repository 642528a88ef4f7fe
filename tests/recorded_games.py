"""A real game recording into a store, without Ray or Serve: the tests of observations, replay,
exports and statuses play registered environments this way and read back what was stored."""

from __future__ import annotations

from dataclasses import dataclass

from crowdplay.config import Settings
from crowdplay.environments import get_env
from crowdplay.environments.parallel_adapter import make_adapter
from crowdplay.lineup import Lineup
from crowdplay.realtime import LiveEnv
from crowdplay.recording.recorder import ChunkBatcher, Recorder
from crowdplay.recording.store import TrajectoryStore


@dataclass
class RecordedGame:
    live: LiveEnv
    lineup: Lineup
    #: each agent's subscription (what ``Lineup.connect`` returned)
    subscribers: dict

    @property
    def agents(self) -> list[str]:
        return list(self.subscribers)


def recorded_game(env_id: str, store: TrajectoryStore, chunk_steps: int = 50, seed: int = 7, lineup_settings: Settings | None = None) -> RecordedGame:
    """``env_id`` (a registered environment) as game ``game-<env_id>``, recording into ``store``
    in chunks of ``chunk_steps``, every seat taken by a participant ``p-<agent>`` and connected,
    so it plays from the next tick."""

    async def send_batch(chunks):
        store.put_chunks(chunks)

    spec = get_env(env_id)
    adapter = make_adapter(spec)
    batcher = ChunkBatcher(send_batch)
    humans = {agent: {"human": True, "participant": f"p-{agent}"} for agent in adapter.agents}
    recorder = Recorder(f"game-{env_id}", adapter.agents, batcher.deliver, chunk_steps, humans, adapter.snapshot, 600, {}, batcher.seal_later)
    live = LiveEnv(spec, seed, Settings(), adapter=adapter, recorder=recorder)
    lineup = Lineup(live, lineup_settings or Settings(countdown_s=0.0))
    subscribers = {}
    for agent in adapter.agents:
        lineup.take(agent, f"session-{agent}", humans[agent], {})
        subscribers[agent] = lineup.connect(agent, f"session-{agent}")
    return RecordedGame(live, lineup, subscribers)
