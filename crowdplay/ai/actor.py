"""PolicyActor: one policy serving the AI agents of many games, answering them in batches.

A Nature-CNN Atari model takes ~1 ms for one observation on one core and ~8 ms for twenty
(measured, torch on this machine's CPU), so answering one game at a time caps a core near a
thousand actions a second while batching serves twenty 60 Hz games in half a core. Requests that
arrive while the model is busy, or within ``batch_wait_s`` of an idle actor's first request, are
answered together (up to ``max_batch`` observations). The model runs in a worker thread so that
the actor keeps receiving requests meanwhile.

The actors are named per policy, action count and replica, detached, created on first use by
whichever process needs them (Ray's ``get_if_exists`` makes that race-free) and restarted by Ray
if they die; callers never wait on them for a frame (``crowdplay.ai.remote``). Game processes send
their requests over a policy line (``crowdplay.ai.line``), a socket to this actor, rather than as
Ray calls; ``compute`` answers both.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym
import ray
from ray.actor import ActorHandle

from crowdplay.ai.answers import MAX_REASON, Answer, checked_action, failure_reason, one_line
from crowdplay.ai.line import PolicyLineServer, Streams
from crowdplay.ai.registry import Policy, compute_batch, make_policy, policy_class
from crowdplay.config import FRAME_PATH_RUNTIME_ENV, UNRECORDED_CALLS, Settings
from crowdplay.memory import release_freed_memory_every
from crowdplay.plugins import load_plugins

log = logging.getLogger(__name__)


@ray.remote(max_restarts=-1, **UNRECORDED_CALLS)  # type: ignore[call-overload]  # Ray's remote() overloads do not cover actor options given as **kwargs
class PolicyActor:
    """A detached actor that loads one policy and answers the observations of every game that uses it,
    batching requests that arrive together; an unfit policy answers every request with the reason."""

    def __init__(self, policy_id: str, action_count: int, settings: Settings) -> None:
        load_plugins(settings)
        release_freed_memory_every(settings.memory_release_interval_s)
        self.policy_id = policy_id
        self.action_count = action_count
        #: why this policy cannot play (it failed to load, or does not fit the agents' action
        #: space): every answer is this reason, and Ray does not restart the actor in a loop
        self.unfit: str | None = None
        self.policy: Policy = Policy()
        try:
            self.policy = make_policy(policy_id, gym.spaces.Discrete(action_count))
            problems = self.policy.problems()
        except Exception as error:
            problems = [one_line(error)]
        if problems:
            self.unfit = f"policy could not start: {'; '.join(problems)}"[:MAX_REASON]
            log.error("policy %r (%d actions): %s; its agents play a substitute", policy_id, action_count, self.unfit)
        if "torch" in sys.modules:  # one inference thread per CPU the actor was given
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
            sys.modules["torch"].set_num_threads(max(1, int(cpus)))
        self.batched = self.policy.batched and callable(getattr(self.policy, "compute_actions", None))
        self.max_batch = max(1, self.policy.max_batch)
        self.batch_wait_s = self.policy.batch_wait_s
        self._pending: list[tuple[list[Any], Streams, asyncio.Future[Any]]] = []
        self._runner: asyncio.Task[Any] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self.counters = {"requests": 0, "actions": 0, "batches": 0, "inference_s": 0.0, "failures": 0, "invalid_answers": 0}
        #: the newest failure's reason (None once the policy answers again)
        self.last_error: str | None = None
        self._line: PolicyLineServer | None = None
        self._address: tuple[str, int, str] | None = None

    async def ready(self) -> str:
        """Returns once the actor is constructed (its policy loaded or found unfit), so callers can wait for it."""
        return self.policy_id

    async def address(self) -> tuple[str, int, str]:
        """Where game processes connect their policy line (``crowdplay.ai.line``): host, port, secret."""
        if self._address is None:
            self._line = PolicyLineServer(self.compute, secrets.token_urlsafe(24))
            host = ray.util.get_node_ip_address()
            self._address = (host, await self._line.start(host), self._line.secret)
        return self._address

    async def compute(self, observations: list[Any], streams: Streams | None = None) -> list[Answer]:
        """Actions for ``observations`` (of ``streams``; see ``crowdplay.ai.streams``), or where the
        policy gave none, the reason (the caller plays a substitute and records why)."""
        answer: asyncio.Future[list[int | str]] = asyncio.get_running_loop().create_future()
        self._pending.append((observations, list(streams) if streams is not None else [None] * len(observations), answer))
        self.counters["requests"] += 1
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._answer_pending())
        return await answer

    async def _answer_pending(self) -> None:
        await asyncio.sleep(self.batch_wait_s)  # an idle actor waits briefly for the others of this tick
        loop = asyncio.get_running_loop()
        while self._pending:
            taken, size = 0, 0
            while taken < len(self._pending) and (taken == 0 or size + len(self._pending[taken][0]) <= self.max_batch):
                size += len(self._pending[taken][0])
                taken += 1
            requests, self._pending = self._pending[:taken], self._pending[taken:]
            observations = [observation for request, _, _ in requests for observation in request]
            streams = [stream for _, request_streams, _ in requests for stream in request_streams]
            actions = await loop.run_in_executor(self._thread, self._infer, observations, streams)
            start = 0
            for request, _, answer in requests:
                if not answer.done():
                    answer.set_result(actions[start : start + len(request)])
                start += len(request)

    def _infer(self, observations: list[Any], streams: Streams) -> list[Answer]:
        if self.unfit is not None:
            self.counters["failures"] += 1
            self.last_error = self.unfit
            return [self.unfit] * len(observations)
        started = time.perf_counter()
        try:
            answers = compute_batch(self.policy, observations, streams)
        except Exception as error:
            self.counters["failures"] += 1
            reason = failure_reason(error)
            if reason != self.last_error:  # said once per distinct failure, not once per request
                log.error("policy %r failed (%s); its agents play a substitute until it answers again", self.policy_id, reason, exc_info=True)
            self.last_error = reason
            return [reason] * len(observations)
        finally:
            self.counters["inference_s"] += time.perf_counter() - started
        self.counters["batches"] += 1 if self.batched else len(answers)
        checked = [checked_action(answer, self.action_count) for answer in answers]
        invalid = sum(isinstance(answer, str) for answer in checked)
        self.counters["invalid_answers"] += invalid
        self.counters["actions"] += len(checked) - invalid
        if invalid < len(checked):
            self.last_error = None
        return checked

    async def stats(self) -> dict[str, Any]:
        """What the policy benchmark reads: requests, actions, batches, inference seconds, failures and the last error."""
        return {"policy_id": self.policy_id, "batched": self.batched, "last_error": self.last_error, **self.counters}


def policy_actor(settings: Settings, policy_id: str, action_count: int, replica: int = 0) -> ActorHandle[Any]:
    """The shared actor ``replica`` of ``policy_id`` for ``action_count`` actions, started if needed."""
    cls = policy_class(policy_id)
    return PolicyActor.options(  # type: ignore[attr-defined,no-any-return]  # .options() is added by @ray.remote
        name=f"policy/{policy_id}/{action_count}/{replica}",
        namespace=settings.namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=cls.num_cpus,
        num_gpus=cls.num_gpus,
        runtime_env=FRAME_PATH_RUNTIME_ENV,
    ).remote(policy_id, action_count, settings)
