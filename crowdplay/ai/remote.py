"""PolicyClient: a game process's side of the shared policy actors.

All games of an EnvActor tick together on one clock, so the observations their AI agents make on
one tick leave in one call per policy actor, sent once the tick is done (one Ray call costs ~1 ms
of CPU at each end; one per agent per frame would not keep up). The clock never waits for an
answer: each agent applies the newest one it has (``PolicyAgent``), and an agent whose previous
request is still out skips sending, so a slow policy costs freshness, not frame rate or memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ray.actor import ActorHandle

from crowdplay.ai.actor import policy_actor
from crowdplay.ai.registry import policy_class
from crowdplay.config import Settings

log = logging.getLogger(__name__)

#: Called with (action or None, seconds from request to answer) when the policy answers.
Answer = Callable[[int | None, float], None]


class PolicyClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._actors: dict[tuple[str, int, int], ActorHandle] = {}
        self._queued: dict[tuple[str, int, int], list[tuple[Any, Answer]]] = {}
        self._flush_scheduled = False
        self._calls: set[asyncio.Task] = set()
        self._failed_calls = 0

    def prepare(self, policy_id: str, action_count: int) -> None:
        """Start (or find) every replica of a policy before a game needs it: loading a model takes seconds."""
        if not policy_class(policy_id).in_actor:
            return
        for replica in range(policy_class(policy_id).replicas):
            self._actor((policy_id, action_count, replica))

    def _actor(self, key: tuple[str, int, int]) -> ActorHandle:
        actor = self._actors.get(key)
        if actor is None:
            actor = self._actors[key] = policy_actor(self.settings, *key)
        return actor

    def request(self, policy_id: str, action_count: int, replica: int, observation: Any, on_answer: Answer) -> None:
        """Ask for an action; ``on_answer`` runs when it arrives (this tick's requests leave together)."""
        sent_at = time.perf_counter()
        self._queued.setdefault((policy_id, action_count, replica), []).append(
            (observation, lambda action: on_answer(action, time.perf_counter() - sent_at))
        )
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        queued, self._queued = self._queued, {}
        for key, requests in queued.items():
            task = asyncio.get_running_loop().create_task(self._call(key, requests))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _call(self, key: tuple[str, int, int], requests: list[tuple[Any, Callable[[int | None], None]]]) -> None:
        try:
            actions = await self._actor(key).compute.remote([observation for observation, _ in requests])
        except Exception as error:  # the actor died (Ray restarts it) or the call failed: no-ops meanwhile
            self._failed_calls += 1
            if self._failed_calls == 1:
                log.warning("policy actor %s failed (%s); its agents play the no-op until it answers", key, error)
            actions = [None] * len(requests)
        for (_, answer), action in zip(requests, actions):
            answer(action)
