"""PolicyClient: a game process's side of the shared policy actors.

All games of an EnvActor tick together on one clock, so the observations their AI agents make on
one tick leave in one request per policy actor, sent once the tick is done, over that actor's
policy line (``crowdplay.ai.line``; opened when a game that may need the policy opens). The clock
never waits for an answer: each agent applies the newest one it has (``PolicyAgent``), and an agent
whose previous request is still out skips sending, so a slow policy costs freshness, not frame
rate or memory. While a policy actor is unreachable its agents play the no-op, and the line is
retried every ``RETRY_S`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ray.actor import ActorHandle

from crowdplay.ai.actor import policy_actor
from crowdplay.ai.line import PolicyLine
from crowdplay.ai.registry import policy_class
from crowdplay.config import Settings

log = logging.getLogger(__name__)

#: Called with (action or None, seconds from request to answer) when the policy answers.
Answer = Callable[[int | None, float], None]
#: Seconds before a policy actor that failed is tried again (its agents play the no-op meanwhile).
RETRY_S = 5.0
Key = tuple[str, int, int]  # policy id, action count, replica


class PolicyClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._actors: dict[Key, ActorHandle] = {}
        self._lines: dict[Key, asyncio.Task[PolicyLine]] = {}
        self._retry_at: dict[Key, float] = {}
        self._queued: dict[Key, list[tuple[Any, Callable[[int | None], None]]]] = {}
        self._flush_scheduled = False
        self._calls: set[asyncio.Task] = set()
        self._failed_calls = 0
        self._assigned: dict[str, int] = {}

    def assign_replica(self, policy_id: str) -> int:
        """The replica to serve a new agent of ``policy_id``: each in turn, so they share the load."""
        count = self._assigned.get(policy_id, 0)
        self._assigned[policy_id] = count + 1
        return count % max(1, policy_class(policy_id).replicas)

    def prepare(self, policy_id: str, action_count: int) -> None:
        """Start (or find) every replica of a policy before a game needs it: loading a model takes seconds."""
        if not policy_class(policy_id).in_actor:
            return
        for replica in range(policy_class(policy_id).replicas):
            self._line((policy_id, action_count, replica))

    def _actor(self, key: Key) -> ActorHandle:
        actor = self._actors.get(key)
        if actor is None:
            actor = self._actors[key] = policy_actor(self.settings, *key)
        return actor

    def _line(self, key: Key) -> asyncio.Task[PolicyLine]:
        """The line to ``key``'s actor, connected or connecting (reconnecting if it broke)."""
        line = self._lines.get(key)
        if line is None or (line.done() and (line.cancelled() or line.exception() is not None or line.result().closed)):
            line = self._lines[key] = asyncio.get_running_loop().create_task(self._connect(key))
        return line

    async def _connect(self, key: Key) -> PolicyLine:
        host, port, secret = await self._actor(key).address.remote()
        return await PolicyLine(host, port, secret).connect()

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

    async def _call(self, key: Key, requests: list[tuple[Any, Callable[[int | None], None]]]) -> None:
        try:
            if time.monotonic() < self._retry_at.get(key, 0.0):
                raise ConnectionError("unreachable a moment ago")
            line = await self._line(key)
            actions = await line.call([observation for observation, _ in requests])
        except Exception as error:  # the actor died (Ray restarts it) or cannot start: no-ops meanwhile
            self._failed_calls += 1
            if self._failed_calls == 1 or self._retry_at.get(key, 0.0) <= time.monotonic():
                log.warning("policy actor %s unavailable (%s); its agents play the no-op, retrying in %s s", key, error, RETRY_S)
                self._retry_at[key] = time.monotonic() + RETRY_S
                self._lines.pop(key, None)
                self._actors.pop(key, None)  # looked up again: a restarted or re-created actor
            actions = [None] * len(requests)
        for (_, answer), action in zip(requests, actions):
            answer(action)
