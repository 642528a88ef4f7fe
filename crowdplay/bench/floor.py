"""The floor of a session's server CPU: what the work itself costs, measured in this process.

A 60 fps session cannot cost less than stepping its environment 60 times a second and encoding
each screen for the wire once. ``load`` measures that here, in the same run and on the same
machine as the server it loads (the floor moves between machines as much as the server does), and
reports the server's CPU per session as a multiple of it: everything above 1 is overhead (the tick,
the frame channel, the ingress, HAProxy, the websocket, recording, Ray's daemons).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from crowdplay import codec
from crowdplay.environments import get_env, make_adapter


@dataclass(frozen=True)
class Floor:
    """Seconds of CPU per step of the environment and per encoded frame, and what a session at
    ``fps`` costs in cores for both."""

    step_s: float
    encode_s: float
    fps: float

    @property
    def cpu_per_session(self) -> float:
        """Cores a session at ``fps`` needs for its steps and frames alone."""
        return (self.step_s + self.encode_s) * self.fps

    def as_dict(self) -> dict[str, float]:
        """As the benchmark's JSON reports it."""
        return {
            "floor_cpu_per_session": round(self.cpu_per_session, 5),
            "floor_step_us": round(self.step_s * 1e6, 2),
            "floor_encode_us": round(self.encode_s * 1e6, 2),
        }


def measure_floor(env_id: str, steps: int = 3000, seed: int = 0) -> Floor:
    """Step ``env_id`` ``steps`` times with random actions (changing a few times a second, as the
    load's participants do) and encode each screen as a delta against the one before, timing each
    part in CPU time of this thread."""
    spec = get_env(env_id)
    adapter = make_adapter(spec)
    rng = random.Random(seed)
    try:
        adapter.reset(seed)
        previous = codec.Screen(adapter.screen())
        actions = {agent: 0 for agent in adapter.agents}
        step_s = encode_s = 0.0
        for index in range(steps):
            if index % 15 == 0:
                actions = {agent: rng.randrange(adapter.action_count) for agent in adapter.agents}
            started = time.thread_time()
            result = adapter.step(actions)
            if result.terminated or result.truncated:
                adapter.reset(seed + index)
            screen = codec.Screen(adapter.screen())
            stepped = time.thread_time()
            payload = codec.delta_payload(screen, previous)
            codec.frame_message(payload, flags=0, frame_id=index, env_step=index, score=0.0, input_seq=0)  # the codec adds its own flags
            encoded = time.thread_time()
            step_s += stepped - started
            encode_s += encoded - stepped
            previous = screen
    finally:
        adapter.close()
    return Floor(step_s / steps, encode_s / steps, spec.fps)
