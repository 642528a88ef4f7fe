"""Store benchmark: how much recorded play the embedded store and the TrajectoryWriter absorb.

1. Real chunks: Space Invaders is played headless (a scripted player pressing keys a few times a
   second) through the same LiveEnv + Recorder as live sessions, for ``--play-seconds`` of game
   time; their sizes give the bytes stored per hour of play.
2. Embedded store: those chunks written back to back in batches, as the writer does: chunks/s.
3. Writer actor: ``--sessions`` simulated sessions' chunk traffic at the live rate (one batch per
   EnvActor process of 16 sessions at every chunk boundary) for ``--seconds``; the writer process's
   CPU over that time is ``writer_cpu_fraction``. Then the writer is driven flat out to find the
   chunk rate it sustains, and ``sessions_absorbed`` is that rate over one session's chunk rate.
4. A state env (Gymnasium's Acrobot: its 6-float observation recorded every step besides its
   frames): bytes per hour, the observation columns' share, and the embedded store's chunk rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import psutil

from crowdplay.config import Settings
from crowdplay.controllers import Human
from crowdplay.environments import EnvAdapter, get_env
from crowdplay.inputs import ParticipantInput
from crowdplay.realtime import LiveEnv, TickClock
from crowdplay.recording.chunk import pack_chunk, unpack_chunk
from crowdplay.recording.recorder import Recorder
from crowdplay.recording.spool import Chunk
from crowdplay.recording.store import TrajectoryStore

if TYPE_CHECKING:
    from ray import ObjectRef

KEYS = [[], ["Space"], ["ArrowLeft"], ["ArrowRight"], ["ArrowLeft", "Space"], ["ArrowRight", "Space"]]
#: The state env: Gymnasium's Acrobot (a 6-float observation every step, besides its 500x500 frames).
STATE_ENV = "BenchAcrobot"
STATE_KEYS = [[], ["ArrowLeft"], ["ArrowRight"]]


def register_state_env() -> None:
    """Register the Acrobot state env (``STATE_ENV``) the benchmark records observations from."""
    import gymnasium as gym

    from crowdplay.environments import EnvSpec, Keymap, register_env

    register_env(EnvSpec(
        id=STATE_ENV, title="Acrobot", description="Gymnasium's Acrobot-v1",
        make_env=lambda: gym.make("Acrobot-v1", render_mode="rgb_array"), keymap=Keymap({"ArrowLeft": 0, "ArrowRight": 2}, noop=1),
    ))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options on its ``python -m crowdplay.bench store`` parser."""
    parser.add_argument("--sessions", type=int, default=100, help="simulated sessions for the writer CPU measurement")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the live-rate writer measurement")
    parser.add_argument("--play-seconds", type=float, default=120.0, help="game time recorded to make the chunks")
    parser.add_argument("--state-play-seconds", type=float, default=60.0, help="game time of the state env recorded")
    parser.add_argument("--flat-seconds", type=float, default=10.0, help="length of the flat-out writer measurement")
    parser.add_argument("--sessions-per-actor", type=int, default=Settings().concurrent_games_per_actor)


def record_play(play_seconds: float, settings: Settings, env_id: str = "SpaceInvaders", keys: list[list[str]] = KEYS) -> tuple[list[Chunk], float]:
    """Chunks of ``play_seconds`` of scripted play of ``env_id``, made by the real Recorder."""
    chunks: list[Chunk] = []

    async def collect(episode_id: str, seq: int, blob: bytes, steps: int, fields: dict[str, Any]) -> None:
        chunks.append((episode_id, seq, blob, steps, fields))

    async def play() -> None:
        rng = random.Random(7)
        spec = get_env(env_id)
        adapter = EnvAdapter(spec)
        recorder = Recorder(
            "bench", adapter.agents, collect, settings.chunk_steps, {"agent_0": Human("p-bench")},
            adapter.snapshot, settings.snapshot_interval, {"task_id": "bench"},
        )
        live = LiveEnv(spec, 0, settings, clock=TickClock(spec.fps), adapter=adapter, recorder=recorder)
        steps = int(play_seconds * spec.fps)
        for frame in range(1, steps + 1):
            if rng.random() < 3 / spec.fps:  # a few key changes a second, like a player
                live.submit("agent_0", ParticipantInput.holding(rng.choice(keys), frame, frame))
            live.tick(frame)
            if frame % 50 == 0:
                await asyncio.sleep(0)  # let sealed chunks be delivered
        live.stop("benchmark over")
        await asyncio.sleep(0.1)

    asyncio.run(play())
    return chunks, play_seconds


def embedded_write_rate(chunks: list[Chunk], directory: str, batch: int, rounds: int, name: str = "raw.db") -> dict[str, Any]:
    """Chunks per second and CPU per chunk of ``chunks`` written ``rounds`` times into a fresh embedded
    store in batches of ``batch``, as the writer writes them."""
    store = TrajectoryStore.open(os.path.join(directory, name))
    started, cpu = time.perf_counter(), time.process_time()
    written = 0
    for round_ in range(rounds):
        renamed = [(f"{e}-{round_}", s, b, n, f) for e, s, b, n, f in chunks]
        for start in range(0, len(renamed), batch):
            store.put_chunks(renamed[start : start + batch])
            written += len(renamed[start : start + batch])
    elapsed, cpu_used = time.perf_counter() - started, time.process_time() - cpu
    store.close()
    return {"chunks_per_s": round(written / elapsed, 1), "cpu_us_per_chunk": round(cpu_used / written * 1e6, 1)}


def writer_measurements(chunks: list[Chunk], args: argparse.Namespace, settings: Settings, chunks_per_session_s: float) -> dict[str, Any]:
    """The TrajectoryWriter's CPU at the live rate of ``--sessions`` and its flat-out chunk rate, in a
    local Ray cluster."""
    import ray

    from crowdplay.recording.writer import get_or_create_writer

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        writer = get_or_create_writer(settings)
        pid_ref: ObjectRef[int] = writer.__ray_call__.remote(lambda self: os.getpid())  # an actor's methods are untyped
        pid = ray.get(pid_ref)
        ray.get(writer.stats.remote())  # started, store open
        process = psutil.Process(pid)
        processes = -(-args.sessions // args.sessions_per_actor)
        sessions_of = [min(args.sessions_per_actor, args.sessions - p * args.sessions_per_actor) for p in range(processes)]
        boundary_s = settings.chunk_steps / 60

        # Live rate: every process sends its sessions' chunks at every boundary, offset from each other.
        cpu_before, started = process.cpu_times(), time.perf_counter()
        tick, pending, sent = 0, [], 0
        while time.perf_counter() - started < args.seconds:
            for p, count in enumerate(sessions_of):
                batch = [(f"live-{p}-{s}", tick, chunks[(tick + s) % len(chunks)][2], settings.chunk_steps, {}) for s in range(count)]
                pending.append(writer.write_chunks.remote(batch))
                sent += count
            tick += 1
            time.sleep(max(0.0, started + tick * boundary_s - time.perf_counter()))
        ray.get(pending)
        elapsed = time.perf_counter() - started
        cpu_after = process.cpu_times()
        cpu_fraction = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / elapsed

        # Flat out: keep a few batches of 16 in flight.
        flat_started, flat_sent, in_flight, seq = time.perf_counter(), 0, [], 0
        while time.perf_counter() - flat_started < args.flat_seconds:
            while len(in_flight) < 4:
                batch = [(f"max-{seq}", s, chunks[(seq + s) % len(chunks)][2], settings.chunk_steps, {}) for s in range(16)]
                in_flight.append(writer.write_chunks.remote(batch))
                seq += 1
            done, in_flight = ray.wait(in_flight, num_returns=1)
            ray.get(done)
            flat_sent += 16
        ray.get(in_flight)
        flat_sent += 16 * len(in_flight)
        max_rate = flat_sent / (time.perf_counter() - flat_started)
        stats = ray.get(writer.stats.remote())
        ray.kill(writer)
    finally:
        ray.shutdown()
    return {
        "live_chunks_sent": sent,
        "live_chunks_per_s": round(sent / elapsed, 1),
        "writer_cpu_fraction": round(cpu_fraction, 4),
        "writer_max_chunks_per_s": round(max_rate, 1),
        "sessions_absorbed": int(max_rate / chunks_per_session_s),
        "writer_stats": stats,
    }


def state_env_row(play_seconds: float, directory: str, settings: Settings) -> dict[str, Any]:
    """The state env's recording: bytes per hour (all of it, and its observation columns alone,
    compressed the same way) and the embedded store's write rate for its chunks."""
    register_state_env()
    chunks, seconds = record_play(play_seconds, settings, STATE_ENV, STATE_KEYS)
    chunk_bytes = sum(len(chunk[2]) for chunk in chunks)
    field_bytes = sum(len(repr(chunk[4])) for chunk in chunks)
    observation_bytes = 0
    for chunk in chunks:
        columns = unpack_chunk(chunk[2])
        observation_bytes += len(pack_chunk({name: value for name, value in columns.items() if name.startswith("obs") or name == "infos"}))
    embedded = embedded_write_rate(chunks, directory, batch=settings.concurrent_games_per_actor, rounds=max(1, 1000 // len(chunks)), name="state.db")
    return {
        "env": "Acrobot-v1",
        "bytes_per_hour": int((chunk_bytes + field_bytes) / seconds * 3600),
        "observation_bytes_per_hour": int(observation_bytes / seconds * 3600),
        "bytes_per_chunk": int(chunk_bytes / len(chunks)),
        "embedded_chunks_per_s": embedded["chunks_per_s"],
        "embedded_cpu_us_per_chunk": embedded["cpu_us_per_chunk"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """All the store measurements, in a temporary directory removed afterwards."""
    directory = tempfile.mkdtemp(prefix="crowdplay-store-bench-")
    settings = replace(
        Settings(), namespace=f"crowdplay-store-bench-{os.getpid()}", store_uri=os.path.join(directory, "writer.db"),
        spool_dir=os.path.join(directory, "spool"),
    )
    try:
        chunks, seconds = record_play(args.play_seconds, settings)
        chunk_bytes = sum(len(chunk[2]) for chunk in chunks)
        field_bytes = sum(len(repr(chunk[4])) for chunk in chunks)
        chunks_per_session_s = 60 / settings.chunk_steps
        embedded = embedded_write_rate(chunks, directory, batch=settings.concurrent_games_per_actor, rounds=max(1, 2000 // len(chunks)))
        state_env = state_env_row(args.state_play_seconds, directory, settings)
        writer = writer_measurements(chunks, args, settings, chunks_per_session_s)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "sessions": args.sessions,
        "sessions_absorbed": writer["sessions_absorbed"],
        "writer_cpu_fraction": writer["writer_cpu_fraction"],
        "bytes_per_hour_space_invaders": int((chunk_bytes + field_bytes) / seconds * 3600),
        "bytes_per_chunk": int(chunk_bytes / len(chunks)),
        "chunk_steps": settings.chunk_steps,
        "chunks_per_session_per_s": round(chunks_per_session_s, 3),
        "embedded_store": {**embedded, "sessions_equivalent": int(embedded["chunks_per_s"] / chunks_per_session_s)},
        "state_env": state_env,
        "writer": writer,
    }


def summarize(result: dict[str, Any]) -> str:
    """The bytes per hour, store and writer rates for people."""
    return "\n".join(
        [
            f"Space Invaders: {result['bytes_per_chunk']} B per {result['chunk_steps']}-step chunk, "
            f"{result['bytes_per_hour_space_invaders'] / 1e6:.1f} MB per hour of play",
            f"embedded store: {result['embedded_store']['chunks_per_s']} chunks/s "
            f"({result['embedded_store']['sessions_equivalent']} sessions), {result['embedded_store']['cpu_us_per_chunk']} us CPU per chunk",
            f"state env ({result['state_env']['env']}): {result['state_env']['bytes_per_hour'] / 1e6:.1f} MB per hour "
            f"(observations {result['state_env']['observation_bytes_per_hour'] / 1e6:.2f} MB), "
            f"embedded store {result['state_env']['embedded_chunks_per_s']} chunks/s",
            f"writer at {result['sessions']} sessions: {result['writer_cpu_fraction']:.3f} of a core; "
            f"flat out {result['writer']['writer_max_chunks_per_s']} chunks/s = {result['sessions_absorbed']} sessions",
        ]
    )
