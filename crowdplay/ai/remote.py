"""PolicyClient: a game process's side of the shared policy actors.

All games of an EnvActor tick together on one clock, so the observations their AI agents make on
one tick leave in one request per policy actor, sent once the tick is done, over that actor's
policy line (``crowdplay.ai.line``; opened when a game that may need the policy opens). The clock
never waits for an answer: each agent applies the newest one it has (``PolicyAgent``), and an agent
whose previous request is still out skips sending, so a slow policy costs freshness, not frame
rate or memory. While a policy actor is unreachable (or not placed within
``Settings.policy_start_timeout_s``) every answer is the reason, its agents play a substitute
that the recording marks as one, and the line is retried every ``RETRY_S`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ray.actor import ActorHandle

from crowdplay.ai.actor import policy_actor
from crowdplay.ai.answers import Answer
from crowdplay.ai.health import PolicyHealth
from crowdplay.ai.line import PolicyLine
from crowdplay.ai.registry import policy_class
from crowdplay.config import Settings

log = logging.getLogger(__name__)

#: Called with (the action, or why there is none; seconds from request to answer) when the policy answers.
OnAnswer = Callable[[Answer, float], None]
#: Seconds before a policy actor that failed is tried again (its agents play the no-op meanwhile).
RETRY_S = 5.0
Key = tuple[str, int, int]  # policy id, action count, replica


class PolicyUnavailable(ConnectionError):
    """A policy actor that failed a moment ago is not asked again until ``RETRY_S`` has passed."""


class PolicyNotPlaced(TimeoutError):
    """A policy actor that Ray could not place (start) within ``Settings.policy_start_timeout_s``."""


async def not_placed_reason(policy_id: str, timeout_s: float) -> str:
    """Why a policy actor did not start: what it asks for against what the cluster has free."""
    import ray

    cls = policy_class(policy_id)
    asked = {"CPU": cls.num_cpus, **({"GPU": cls.num_gpus} if cls.num_gpus else {})}
    try:
        free = await asyncio.wait_for(asyncio.to_thread(ray.available_resources), 5)
        has = ", ".join(f"{name} {free.get(name, 0):g}" for name in asked)
    except Exception:  # noqa: BLE001 - the reason without the cluster's side
        has = "unknown"
    wanted = ", ".join(f"{name} {amount:g}" for name, amount in asked.items())
    return f"policy actor not placed within {timeout_s:g} s: it asks for {wanted}; the cluster has {has} free"


class PolicyClient:
    """One game process's client of the policy actors: queues each tick's AI observations, sends them
    per actor over its policy line and hands answers back, never letting a frame wait on a policy."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._actors: dict[Key, ActorHandle[Any]] = {}
        self._lines: dict[Key, asyncio.Task[PolicyLine]] = {}
        self._retry_at: dict[Key, float] = {}
        self._queued: dict[Key, list[tuple[Any, str | None, Callable[[Answer], None]]]] = {}
        self._flush_scheduled = False
        self._calls: set[asyncio.Task[Any]] = set()
        self._unavailable: dict[Key, str] = {}  # why each unreachable actor is, while it is
        self.health = PolicyHealth()
        #: called with each new problem (or recovery) of a policy, once (the EnvActor tells the manager)
        self.on_report: Callable[[dict[str, Any]], None] | None = None
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
        self.health.starting(policy_id)
        for replica in range(policy_class(policy_id).replicas):
            self._line((policy_id, action_count, replica))

    def _actor(self, key: Key) -> ActorHandle[Any]:
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
        timeout = self.settings.policy_start_timeout_s
        try:
            address: tuple[str, int, str] = await asyncio.wait_for(asyncio.wrap_future(self._actor(key).address.remote().future()), timeout)
        except TimeoutError:
            raise PolicyNotPlaced(await not_placed_reason(key[0], timeout)) from None
        return await PolicyLine(*address).connect()

    def request(self, policy_id: str, action_count: int, replica: int, observation: Any, on_answer: OnAnswer, stream: str | None = None) -> None:
        """Ask for an action for ``observation`` (continuing ``stream``'s episode); ``on_answer``
        runs when it arrives (this tick's requests leave together)."""
        sent_at = time.perf_counter()
        self._queued.setdefault((policy_id, action_count, replica), []).append(
            (observation, stream, lambda action: on_answer(action, time.perf_counter() - sent_at))
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

    async def _call(self, key: Key, requests: list[tuple[Any, str | None, Callable[[Answer], None]]]) -> None:
        answers: list[Answer]
        sent_at = time.perf_counter()
        try:
            if time.monotonic() < self._retry_at.get(key, 0.0):
                raise PolicyUnavailable(self._unavailable.get(key, "policy actor unavailable"))
            line = await self._line(key)
            answers = await line.call([observation for observation, _, _ in requests], [stream for _, stream, _ in requests])
        except Exception as error:  # the actor died (Ray restarts it) or cannot start: substitutes meanwhile
            reason = str(error) if isinstance(error, (PolicyUnavailable, PolicyNotPlaced)) else f"policy actor unavailable: {type(error).__name__}: {error}"
            if self._retry_at.get(key, 0.0) <= time.monotonic():
                log.warning("policy %r (replica %d): %s; its agents play a substitute, retrying in %s s", key[0], key[2], reason, RETRY_S)
                self._retry_at[key] = time.monotonic() + RETRY_S
                self._unavailable[key] = reason
                self._lines.pop(key, None)
                self._actors.pop(key, None)  # looked up again: a restarted or re-created actor
            answers = [reason] * len(requests)
        self.health.answered(key[0], answers, time.perf_counter() - sent_at)
        for report in self.health.take_reports():
            log.warning("policy %r is %s%s", report["policy_id"], report["state"], f": {report['reason']}" if report["reason"] else "")
            if self.on_report is not None:
                self.on_report(report)
        for (_, _, answer), action in zip(requests, answers):
            answer(action)
