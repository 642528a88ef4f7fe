"""A participant's view of a link: join a game at ``url``, press keys for a few seconds, and report
the connection's round trip (websocket pings, answered by the ingress), key-to-frame latency
(key sent -> first frame that applied it), the frames received per second and the frames that
never came. ``key_to_frame_ms`` is about ``rtt_ms`` plus the server's time, which
``server_ms`` gives (their medians' difference)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any

from crowdplay.client import Participant

KEYS = ("ArrowLeft", "ArrowRight", "Space")


def _percentile(values: list[float], point: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * point / 100))], 1)


async def probe(url: str, env_id: str = "SpaceInvaders", seconds: float = 5.0, seed: int = 0) -> dict[str, Any]:
    """Play ``seconds`` at ``url`` as one participant and measure the link (see the module docstring)."""
    rng = random.Random(seed)
    player = await Participant.join(url, env_id, decode=False)
    rtts: list[float] = []
    try:
        started = time.perf_counter()
        next_ping = started
        while time.perf_counter() - started < seconds:
            await asyncio.sleep(rng.uniform(0.15, 0.4))
            await player.press(rng.sample(KEYS, rng.randint(0, 2)))
            if time.perf_counter() >= next_ping:
                pong = await player.websocket.ping()
                sent = time.perf_counter()
                await asyncio.wait_for(pong, 10)
                rtts.append((time.perf_counter() - sent) * 1000)
                next_ping = time.perf_counter() + 0.5
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.5)  # the last keys' frames
    finally:
        await player.close()
    ids = [timing.frame_id for timing in player.timings]
    keys = [latency * 1000 for _, latency in player.key_latencies]
    rtt_p50, key_p50 = _percentile(rtts, 50), _percentile(keys, 50)
    return {
        "url": url,
        "env_id": env_id,
        "rtt_ms": {"p50": rtt_p50, "p99": _percentile(rtts, 99), "n": len(rtts)},
        "key_to_frame_ms": {"p50": key_p50, "p99": _percentile(keys, 99), "n": len(keys)},
        "server_ms": round(key_p50 - rtt_p50, 1) if key_p50 is not None and rtt_p50 is not None else None,
        "fps": round(len(ids) / (elapsed + 0.5), 1),
        "frames_missing": (ids[-1] - ids[0] + 1 - len(set(ids))) if ids else 0,
        "rtt_spread_ms": round(statistics.pstdev(rtts), 1) if len(rtts) > 1 else 0.0,
    }
