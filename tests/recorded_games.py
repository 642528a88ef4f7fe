"""A real game recording into a store, without Ray or Serve: the tests of observations, replay,
exports and statuses play registered environments this way and read back what was stored."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from crowdplay.config import Settings
from crowdplay.controllers import Human
from crowdplay.environments import get_env
from crowdplay.environments.parallel_adapter import make_adapter
from crowdplay.inputs import ParticipantInput
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

    async def play(self, ticks: int, actions: Sequence[int | None]) -> None:
        """Every agent submits ``actions`` in turn, one a tick (None skips the tick), for ``ticks``
        ticks or until the game stops; then the researcher ends it (``end``)."""
        sequence = itertools.cycle(actions)
        for seq in range(ticks):
            action = next(sequence)
            if action is not None and self.live.stopped is None:
                for agent in self.agents:
                    self.live.submit(agent, ParticipantInput.choosing(action, self.live.frame_id, seq + 1))
            await asyncio.sleep(1 / 60)
        await self.end()

    async def end(self) -> None:
        """The researcher ends the game (the episode under way is interrupted), and the last
        chunks are given a second to be sealed and stored."""
        self.lineup.end("the researcher ended this session")
        await asyncio.sleep(1.0)


def recorded_game(env_id: str, store: TrajectoryStore, chunk_steps: int = 50, seed: int = 7, lineup_settings: Settings | None = None) -> RecordedGame:
    """``env_id`` (a registered environment) as game ``game-<env_id>``, recording into ``store``
    in chunks of ``chunk_steps``, every seat taken by a participant ``p-<agent>`` and connected,
    so it plays from the next tick."""

    async def send_batch(chunks):
        store.put_chunks(chunks)

    spec = get_env(env_id)
    adapter = make_adapter(spec)
    batcher = ChunkBatcher(send_batch)
    humans = {agent: Human(f"p-{agent}") for agent in adapter.agents}
    recorder = Recorder(f"game-{env_id}", adapter.agents, batcher.deliver, chunk_steps, humans, adapter.snapshot, 600, {}, batcher.seal_later)
    live = LiveEnv(spec, seed, Settings(), adapter=adapter, recorder=recorder)
    lineup = Lineup(live, lineup_settings or Settings(countdown_s=0.0))
    subscribers = {}
    for agent in adapter.agents:
        lineup.take(agent, f"session-{agent}", humans[agent], {})
        subscribers[agent] = lineup.connect(agent, f"session-{agent}")
    return RecordedGame(live, lineup, subscribers)
