"""Streams: the episode each AI agent's observations form, for connector pipelines that look back.

An RLlib env-to-module pipeline reads its input from episodes (``SingleAgentEpisode`` or, for a
multi-agent checkpoint, ``MultiAgentEpisode``), not from a lone observation: pieces such as frame
stacking, previous actions or a running mean-std filter look at earlier steps. A policy actor
answers many games at once, so it keeps one episode per stream (one agent of one game in one
episode of it; ``PolicyAgent.stream``), adds each new observation with the action the policy
answered for the previous one, and forgets streams that went quiet.

Rewards are not sent to policy actors: episodes here record 0.0 for every step.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from crowdplay.bounded import forget_oldest

#: Steps of history each episode keeps (more than any frame stack or filter looks back).
HISTORY = 64
#: A stream not heard from for this long is forgotten (its game ended or moved elsewhere).
IDLE_S = 120.0
#: At most this many streams are kept (the least recently used go first).
MAX_STREAMS = 4096


class StreamEpisodes:
    """One RLlib episode per stream, grown one observation at a time and trimmed to ``HISTORY``.

    ``new_episode`` makes an empty episode; ``agent`` is the agent id the pipeline knows this
    module's agent by (None for a single-agent pipeline)."""

    def __init__(self, new_episode: Callable[[], Any], agent: str | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.new_episode = new_episode
        self.agent = agent
        self.clock = clock
        self._streams: OrderedDict[str, tuple[Any, Any, float]] = OrderedDict()  # stream -> episode, last action, seen at

    def __len__(self) -> int:
        return len(self._streams)

    def episodes(self, streams: list[str | None], observations: list[Any]) -> list[Any]:
        """Each stream's episode with its newest observation added (a None stream: a new
        episode of its own, not kept)."""
        now = self.clock()
        self._forget_idle(now)
        episodes = []
        for stream, observation in zip(streams, observations):
            episode, action, _ = self._streams.pop(stream, (None, None, now)) if stream is not None else (None, None, now)
            if episode is None or action is None:  # new, or its previous observation was never answered
                episode = self.new_episode()
                self._reset(episode, observation)
            else:
                if len(episode) >= 2 * HISTORY:
                    episode = episode.cut(len_lookback_buffer=HISTORY)
                self._step(episode, observation, action)
            if stream is not None:
                self._streams[stream] = (episode, action, now)
            episodes.append(episode)
        forget_oldest(self._streams, MAX_STREAMS)
        return episodes

    def answered(self, streams: list[str | None], actions: list[Any]) -> None:
        """The actions the policy answered: each is its stream's action for the step to come."""
        for stream, action in zip(streams, actions):
            if stream is not None and stream in self._streams:
                episode, _, seen = self._streams[stream]
                self._streams[stream] = (episode, action, seen)

    def _forget_idle(self, now: float) -> None:
        while self._streams:
            stream, (_, _, seen) = next(iter(self._streams.items()))
            if now - seen < IDLE_S:
                break
            del self._streams[stream]

    def _reset(self, episode: Any, observation: Any) -> None:
        if self.agent is None:
            episode.add_env_reset(observation=observation)
        else:
            episode.add_env_reset(observations={self.agent: observation})

    def _step(self, episode: Any, observation: Any, action: Any) -> None:
        if self.agent is None:
            episode.add_env_step(observation=observation, action=action, reward=0.0)
        else:
            episode.add_env_step(observations={self.agent: observation}, actions={self.agent: action}, rewards={self.agent: 0.0})
