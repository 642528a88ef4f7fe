"""Soak: participants play for a long time, dropping their connections at random; is anything
recorded lost, and is the server's memory flat?

``python -m crowdplay.bench soak --sessions 30 --minutes 10`` starts the app (as the load benchmark
does, recording into a fresh embedded store) with ``--sessions`` simulated participants pressing
keys. Every ``--drop-every`` seconds on average a connection drops without a close and reconnects
within the grace period, expecting its seat back; one drop in ``--leave-every`` is the participant
leaving for good and a new one starting. At the end every recorded episode is read back and
replayed from its snapshots.

Memory is judged idle (``crowdplay.bench.idle_memory``): after ``--warmup`` seconds of play
(caches and heaps reach their working size), ``--minutes`` are played in stretches of
``--checkpoint-every`` minutes; before the first and after each, everyone leaves and, ``--quiet``
seconds after the last game ended, each process's private memory is read. The result gives it by
kind of process at each checkpoint (``idle_minutes``, ``idle_private_mb``, ``idle_processes``)
and ``memory_flat``: whether a line through the long-lived processes' memory (ingress, manager,
writer, policy actors) would grow them by under ``--flat-tolerance`` in a day (null: the run was
too short to tell; play longer).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from crowdplay.bench.idle_memory import idle_checkpoint, memory_verdict
from crowdplay.bench.load import KEYS, serve_system
from crowdplay.client import Participant, http_json


def game_list(text: str) -> list[str]:
    """``--envs``: game ids, comma-separated."""
    games = [game.strip() for game in text.split(",") if game.strip()]
    if not games:
        raise argparse.ArgumentTypeError("names no game (give ids such as SpaceInvaders,Pong)")
    return games


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The soak's options: how many play, how long, how their connections fail, how memory is read."""
    parser.add_argument("--sessions", type=int, default=30, help="participants playing at once")
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of play judged (after the warm-up)")
    parser.add_argument("--envs", type=game_list, default="SpaceInvaders,Pong,Breakout", help="games, comma-separated, dealt round robin")
    parser.add_argument("--drop-every", type=float, default=60.0, help="mean seconds between a participant's connection drops")
    parser.add_argument("--leave-every", type=int, default=4, help="one drop in this many is a participant leaving for good")
    parser.add_argument("--grace", type=float, default=5.0, help="the server's reconnect grace period (s)")
    parser.add_argument("--warmup", type=float, default=600.0, help="seconds of play before the first idle checkpoint")
    parser.add_argument("--checkpoint-every", type=float, default=2.5, help="minutes of play between idle checkpoints")
    parser.add_argument("--spare-linger", type=float, default=300.0, help="seconds an emptied spare EnvActor waits before it retires (longer than a checkpoint, as in steady play)")
    parser.add_argument("--quiet", type=float, default=None, help="seconds idle before a checkpoint's readings (default: the memory release interval and 5)")
    parser.add_argument("--idle-samples", type=int, default=5, help="readings per checkpoint, 5 s apart (each process's median is kept)")
    parser.add_argument("--flat-tolerance", type=float, default=0.1, help="growth in a day, as a fraction of their memory, still called flat")
    parser.add_argument("--seed", type=int, default=0)


@dataclass
class Tally:
    """What the simulated participants saw, over the whole run."""

    participant_sessions: int = 0
    reconnects: int = 0
    reconnects_refused: int = 0
    unexpected_closes: int = 0
    failed_joins: int = 0
    games: set[str] = field(default_factory=set)
    #: what the first refused reconnects, unexpected closes and failed joins said, so that a run
    #: that counts one also says why (a grace period run out, a close code, an exception)
    problems: list[str] = field(default_factory=list)

    def note(self, problem: str) -> None:
        """Keep ``problem``'s words, up to ``MAX_PROBLEMS_NOTED`` of them."""
        if len(self.problems) < MAX_PROBLEMS_NOTED:
            self.problems.append(problem)


MAX_PROBLEMS_NOTED = 10


def what_the_server_said(player: Participant) -> str:
    """The connection's close code and the last error message the server sent on it."""
    errors = [event.get("reason", "") for event in player.events if event.get("type") == "error"]
    return f"close code {player.websocket.close_code}" + (f", error {errors[-1]!r}" if errors else "")


async def press_keys_until(player: Participant, deadline: float, rng: random.Random) -> bool:
    """Play until ``deadline``; False if the server closed the connection first."""
    while time.monotonic() < deadline:
        if player.closed.is_set():
            return False
        await asyncio.sleep(rng.uniform(0.1, 0.5))
        try:
            await player.press([key for key in KEYS if rng.random() < 0.3])
        except Exception:
            return False
    return True


async def first_frame(player: Participant, timeout_s: float = 10.0) -> None:
    """Returns once ``player`` has had a frame: a reconnect got its seat back."""
    deadline = time.monotonic() + timeout_s
    while not player.timings:
        if player.closed.is_set() or time.monotonic() > deadline:
            raise ConnectionError("no frame after reconnecting")
        await asyncio.sleep(0.05)


async def participant(url: str, env_id: str, until: float, args: argparse.Namespace, rng: random.Random, tally: Tally) -> None:
    """Sessions one after another until ``until``, each with drops and reconnects."""
    while time.monotonic() < until:
        try:
            session = await asyncio.to_thread(http_json, f"{url}/api/sessions", {"env_id": env_id})
            player = await Participant.connect(url, session, decode=False)
        except Exception as error:
            tally.failed_joins += 1
            tally.note(f"join failed: {error!r}")
            await asyncio.sleep(1.0)
            continue
        tally.participant_sessions += 1
        tally.games.add(session["game_id"])
        while True:
            if not await press_keys_until(player, min(until, time.monotonic() + rng.expovariate(1.0 / args.drop_every)), rng):
                tally.unexpected_closes += 1
                tally.note(f"closed by the server while playing: {what_the_server_said(player)}")
                break
            if time.monotonic() >= until or rng.randrange(args.leave_every) == 0:
                await player.close()
                break
            player.websocket.transport.abort()  # the network drops: no close frame
            dropped_at = time.monotonic()
            await asyncio.sleep(rng.uniform(0.2, args.grace * 0.6))
            try:  # the same seat again, proven by a frame
                player = await Participant.connect(url, session, decode=False)
                await first_frame(player)
                tally.reconnects += 1
            except Exception as error:
                tally.reconnects_refused += 1
                tally.note(f"reconnect {time.monotonic() - dropped_at:.2f} s after the drop refused: {error!r}; {what_the_server_said(player)}")
                break


async def play(url: str, args: argparse.Namespace, seconds: float, seed: int, tally: Tally) -> None:
    """``--sessions`` participants playing for ``seconds``."""
    until = time.monotonic() + seconds
    await asyncio.gather(*(
        participant(url, args.envs[index % len(args.envs)], until, args, random.Random(seed * 1000 + index), tally) for index in range(args.sessions)
    ))


def check_recordings(store_uri: str, games: set[str], timeout_s: float = 120.0) -> dict[str, Any]:
    """Every game left episodes, each ended with all its chunks, each replays exactly."""
    from crowdplay.data import Dataset, replay_check

    data = Dataset.open(store_uri)
    try:
        deadline = time.monotonic() + timeout_s
        while True:  # the last episodes end after their grace period and their chunks follow
            episodes = [doc for doc in data.episodes() if doc["game_id"] in games]
            if all("status" in doc for doc in episodes) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        incomplete = [doc["_id"] for doc in episodes if "status" not in doc or len(list(data.chunks(doc["_id"]))) != doc.get("chunks")]
        failures = [doc["_id"] for doc in episodes if not replay_check(data, doc["_id"]).ok]
        return {
            "episodes": len(episodes),
            "episode_statuses": dict(sorted(Counter(doc.get("status", "none") for doc in episodes).items())),
            "episodes_incomplete": len(incomplete),
            "replay_failures": len(failures),
            "games_without_episode": len(games - {doc["game_id"] for doc in episodes}),
            "failed_episode_ids": (incomplete + failures)[:10],
        }
    finally:
        data.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The warm-up, then stretches of play each followed by an idle checkpoint, then the recordings."""
    tally = Tally()
    with serve_system(record=True, reconnect_grace_s=args.grace, spare_host_linger_s=args.spare_linger) as system:
        settings = system.settings
        assert settings is not None, "serve_system starts the server with settings of its own"
        quiet_s = args.quiet if args.quiet is not None else settings.memory_release_interval_s + 5.0
        if args.warmup > 0:
            asyncio.run(play(system.url, args, args.warmup, args.seed, tally))
        checkpoints = [idle_checkpoint(system, 0.0, quiet_s, args.idle_samples)]
        while checkpoints[-1].minutes < args.minutes - 1e-6:
            stretch = min(args.checkpoint_every if args.checkpoint_every > 0 else args.minutes, args.minutes - checkpoints[-1].minutes)
            asyncio.run(play(system.url, args, 60 * stretch, args.seed + len(checkpoints), tally))
            checkpoints.append(idle_checkpoint(system, checkpoints[-1].minutes + stretch, quiet_s, args.idle_samples))
        recordings = check_recordings(settings.store_uri, tally.games)
    counts = {name: value for name, value in asdict(tally).items() if name != "games"}
    return {"benchmark": "soak", "sessions": args.sessions, "minutes": args.minutes, "games": len(tally.games), **counts,
            **recordings, **memory_verdict(checkpoints, args.flat_tolerance)}


def summarize(r: dict[str, Any]) -> str:
    """Play, recording and idle memory, a few lines for people."""
    return "\n".join([
        f"soak: {r['participant_sessions']} sessions, {r['reconnects']} reconnects ({r['reconnects_refused']} refused), "
        f"{r['unexpected_closes']} unexpected closes, {r['failed_joins']} failed joins",
        f"recorded: {r['episodes']} episodes {r['episode_statuses']}; incomplete {r['episodes_incomplete']}, "
        f"replay failures {r['replay_failures']}, games without an episode {r['games_without_episode']}",
        f"idle private MB at minutes {r['idle_minutes']}:", *(f"  {kind:9} {mb}" for kind, mb in r["idle_private_mb"].items()),
        f"long-lived {r['long_lived_growth_mb_per_min']:+} ± {r['long_lived_growth_error']} MB/min {r['growth_mb_per_min_by_kind']}, "
        f"flat below {r['flat_line_mb_per_min']}: memory_flat {r['memory_flat']}",
    ])
