"""Policy benchmark: how many 60 Hz AI agents one policy actor on one CPU core keeps up with.

The model is the Nature-CNN Atari network (84x84x4 input; 32 8x8/4, 64 4x4/2, 64 3x3/1 convolutions,
512 units) as an RLlib PPO RLModule, saved as a checkpoint and loaded by ``RLlibPolicy`` in a
``PolicyActor`` with one CPU (one torch thread); its weights are untrained, which costs the same.

Sessions are simulated as the platform runs them: hosted by session-host actors (up to
``--sessions-per-host`` each, like EnvActors) that tick at 60 Hz on the platform's TickClock. At
every tick each session's ``PolicyAgent`` is shown an AtariFB stack of real Pong screens and asks
through the host's ``PolicyClient``; an agent whose previous request is still out skips that frame.
Per configuration (``--sessions`` counts, batched or one-at-a-time) it reports:

* ``actions_per_s``: answers per second over all sessions (60 x sessions when every frame is answered);
* ``p50_ms`` / ``p99_ms``: time from sending an observation to its answer arriving in the host;
* ``answered_fraction``: frames answered out of frames shown (the rest were skipped);
* ``mean_batch``: observations per model call in the actor;
* ``actor_busy``: the fraction of the actor's core spent in the model.

The target: 20 sessions with every frame answered (``answered_fraction`` >= 0.999, i.e. >= 1,199
of the 1,200 actions/s they ask for) and ``p99_ms`` under one frame (16.7 ms).

``saturated`` drives the batched actor flat out (every answer immediately followed by the next
request of ``--sessions`` observations): the capacity of one core.

``dqn`` is the batched row for a DQN module (double, dueling, the same encoder), whose
``forward_inference`` answers actions rather than distribution inputs.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import ray

from crowdplay.ai import AtariFB, RLlibPolicy, register_policy
from crowdplay.ai.actor import policy_actor
from crowdplay.ai.agent import PolicyAgent
from crowdplay.ai.remote import PolicyClient
from crowdplay.ai.rllib import NATURE_CNN
from crowdplay.config import Settings
from crowdplay.environments import get_env, make_adapter
from crowdplay.realtime import TickClock

CHECKPOINT = Path(tempfile.gettempdir()) / "crowdplay-bench-nature-cnn"
DQN_CHECKPOINT = Path(tempfile.gettempdir()) / "crowdplay-bench-nature-cnn-dqn"
BATCHED, ONE_AT_A_TIME, DQN = "bench-nature-cnn", "bench-nature-cnn-one-at-a-time", "bench-nature-cnn-dqn"
ACTIONS = 6
SETTINGS = Settings(namespace="crowdplay-bench-policy", plugins=__name__, record=False)


@register_policy(BATCHED)
class NatureCNN(RLlibPolicy):
    """The untrained Nature-CNN PPO checkpoint, batched, on one CPU."""

    checkpoint = CHECKPOINT
    num_cpus = 1.0


@register_policy(ONE_AT_A_TIME)
class NatureCNNOneAtATime(NatureCNN):
    """The same model answering one observation at a time, for comparison."""

    batched = False


@register_policy(DQN)
class NatureCNNDQN(RLlibPolicy):
    """The Nature-CNN DQN checkpoint, batched, on one CPU."""

    checkpoint = DQN_CHECKPOINT
    num_cpus = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options on its ``python -m crowdplay.bench policy`` parser."""
    parser.add_argument("--sessions", default="1,10,20", help="comma-separated session counts")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured time per configuration")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured time before each measurement")
    parser.add_argument("--sessions-per-host", type=int, default=Settings().concurrent_games_per_actor)


def save_nature_cnn() -> None:
    """Build the untrained model and save it where the policy class looks for it."""
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    spec = RLModuleSpec(
        module_class=DefaultPPOTorchRLModule,
        observation_space=gym.spaces.Box(-1.0, 1.0, (AtariFB.dim, AtariFB.dim, AtariFB.stack), np.float32),
        action_space=gym.spaces.Discrete(ACTIONS),
        model_config=DefaultModelConfig(**NATURE_CNN),
    )
    spec.build().save_to_path(str(CHECKPOINT))


def save_nature_cnn_dqn() -> None:
    """The same encoder as a DQN module (double, dueling), untrained, where its policy class looks."""
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    observations = gym.spaces.Box(-1.0, 1.0, (AtariFB.dim, AtariFB.dim, AtariFB.stack), np.float32)
    config = DQNConfig().training(double_q=True, dueling=True).rl_module(model_config=DefaultModelConfig(**NATURE_CNN))
    config.get_rl_module_spec(spaces={"default_policy": (observations, gym.spaces.Discrete(ACTIONS))}).build().save_to_path(str(DQN_CHECKPOINT))


def pong_stacks(count: int = 32) -> list[np.ndarray]:
    """AtariFB stacks of real Pong screens, for the sessions to show their agents in turn."""
    adapter = make_adapter(get_env("Pong"))
    adapter.reset(5)
    framebuffer, stacks = AtariFB(), []
    for step in range(count * 5):
        adapter.step({"agent_0": (step // 8) % ACTIONS})
        assert adapter.palette is not None, "Pong is an Atari game: its screens are palette indices"
        stack = framebuffer.push(adapter.palette[adapter.screen()])
        if step % 5 == 4:
            stacks.append(stack)
    return stacks


class BenchSession:
    """One simulated session: its AI agent is shown a new observation at every tick."""

    #: the game whose screens the agent is shown, named in the clock's log line if a tick fails
    name = "Pong"

    def __init__(self, agent: PolicyAgent, observations: list[np.ndarray], offset: int) -> None:
        self.agent, self.observations, self.offset = agent, observations, offset
        self.ticks_late = 0
        self.shown = 0
        self.latencies: list[float] = []
        self._answers = 0
        self.measuring = False

    def tick(self, frame: int) -> None:
        """Show the agent the observation for ``frame``, counting answers and their latencies while measuring."""
        if self.agent.answers != self._answers:
            self._answers = self.agent.answers
            if self.measuring:
                self.latencies.append(self.agent.latency_s)
        if self.measuring:
            self.shown += 1
        self.agent.observe(frame, self.observations[(frame + self.offset) % len(self.observations)])

    def stop(self, reason: str) -> None:
        """A failed tick fails the benchmark: measuring on without this session would understate the load."""
        raise RuntimeError(f"policy benchmark session failed: {reason}")


@ray.remote(num_cpus=0)
class SessionHost:
    """Hosts sessions on one 60 Hz clock, as an EnvActor does."""

    def __init__(self, sessions: int, policy_id: str, first: int) -> None:
        from crowdplay.plugins import load_plugins

        load_plugins(SETTINGS)
        observations = pong_stacks()
        client = PolicyClient(SETTINGS)
        space: gym.spaces.Discrete[np.int64] = gym.spaces.Discrete(ACTIONS)
        self.sessions = [BenchSession(PolicyAgent(policy_id, space, 0, client), observations, first + i) for i in range(sessions)]

    async def run(self, warmup_s: float, seconds: float) -> dict[str, Any]:
        """Tick every session at 60 Hz for ``warmup_s``, then measure for ``seconds``: latencies, frames
        shown and ticks late."""
        clock = TickClock(60.0)
        for session in self.sessions:
            clock.add(session)
        await asyncio.sleep(warmup_s)
        before = [len(s.latencies) for s in self.sessions]
        for session in self.sessions:
            session.measuring = True
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        for session in self.sessions:
            session.measuring = False
            clock.remove(session)
        latencies = [latency for s, skip in zip(self.sessions, before) for latency in s.latencies[skip:]]
        return {"elapsed_s": elapsed, "latencies": latencies, "shown": sum(s.shown for s in self.sessions), "ticks_late": clock.ticks_late}


def measure(policy_id: str, sessions: int, per_host: int, warmup_s: float, seconds: float) -> dict[str, Any]:
    """Actions per second, latency percentiles, answered fraction, mean batch and actor busy time of
    ``sessions`` AI agents on one policy actor, ``per_host`` sessions per SessionHost."""
    actor = policy_actor(SETTINGS, policy_id, ACTIONS)
    ray.get(actor.ready.remote())
    hosts_needed = -(-sessions // per_host)
    sizes = [sessions // hosts_needed + (1 if i < sessions % hosts_needed else 0) for i in range(hosts_needed)]
    hosts = [SessionHost.remote(size, policy_id, sum(sizes[:i])) for i, size in enumerate(sizes)]
    before = ray.get(actor.stats.remote())
    results = ray.get([host.run.remote(warmup_s, seconds) for host in hosts])
    after = ray.get(actor.stats.remote())
    for host in hosts:
        ray.kill(host)
    latencies = np.array([latency for result in results for latency in result["latencies"]]) * 1000
    elapsed = max(result["elapsed_s"] for result in results)
    answered = len(latencies)
    shown = sum(result["shown"] for result in results)
    batches = max(1, after["batches"] - before["batches"])
    return {
        "actions_per_s": round(answered / elapsed, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2) if answered else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 2) if answered else None,
        "answered_fraction": round(answered / max(1, shown), 4),
        "mean_batch": round((after["actions"] - before["actions"]) / batches, 2),
        "actor_busy": round((after["inference_s"] - before["inference_s"]) / elapsed, 3),
        "ticks_late": sum(result["ticks_late"] for result in results),
    }


def saturate(sessions: int, seconds: float) -> dict[str, Any]:
    """Back-to-back requests of ``sessions`` observations: the batched actor's capacity."""
    actor = policy_actor(SETTINGS, BATCHED, ACTIONS)
    batch = (pong_stacks() * 2)[:sessions]
    ray.get(actor.compute.remote(batch))
    answered, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        answered += len(ray.get(actor.compute.remote(batch)))
    return {"batch": sessions, "actions_per_s": round(answered / (time.perf_counter() - started), 1)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Batched against unbatched at each ``--sessions`` count, the DQN at the largest, and the
    saturated capacity."""
    counts = [int(count) for count in args.sessions.split(",")]
    save_nature_cnn()
    save_nature_cnn_dqn()
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, namespace=SETTINGS.namespace)
    try:
        result: dict[str, Any] = {"model": "nature-cnn", "policy_actor_cpus": 1, "fps": 60}
        for label, policy_id in (("batched", BATCHED), ("unbatched", ONE_AT_A_TIME)):
            result[label] = {str(count): measure(policy_id, count, args.sessions_per_host, args.warmup, args.seconds) for count in counts}
            ray.kill(policy_actor(SETTINGS, policy_id, ACTIONS))  # free its core for the next
        result["dqn"] = {str(max(counts)): measure(DQN, max(counts), args.sessions_per_host, args.warmup, args.seconds)}
        ray.kill(policy_actor(SETTINGS, DQN, ACTIONS))
        result["saturated"] = saturate(max(counts), args.seconds)
        twenty = result["batched"].get("20")
        if twenty is not None:
            result["target_met"] = twenty["answered_fraction"] >= 0.999 and twenty["actions_per_s"] >= 1199 and twenty["p99_ms"] < 1000 / 60
        return result
    finally:
        ray.shutdown()


def summarize(result: dict[str, Any]) -> str:
    """One table row per mode and session count, then the saturated rate."""
    lines = [f"{'mode':<10} {'sessions':>8} {'actions/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'answered':>9} {'batch':>6} {'busy':>6}"]
    for mode in ("batched", "unbatched", "dqn"):
        for count, row in result[mode].items():
            lines.append(
                f"{mode:<10} {count:>8} {row['actions_per_s']:>10} {row['p50_ms']:>8} {row['p99_ms']:>8} "
                f"{row['answered_fraction']:>9} {row['mean_batch']:>6} {row['actor_busy']:>6}"
            )
    lines.append(f"saturated: {result['saturated']['actions_per_s']} actions/s in batches of {result['saturated']['batch']}")
    return "\n".join(lines)
