"""Settings shared by the ingress, the EnvsManager and the EnvActors, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Settings:
    """Deployment knobs; every field can be overridden by ``CROWDPLAY_<FIELD>`` in the environment."""

    namespace: str = "crowdplay"
    manager_name: str = "EnvsManager"
    #: EnvActors kept booted and idle, so Start never waits for a process to start (~0.6 s each).
    warm_pool_size: int = 2
    #: CPU reserved per EnvActor; fractional so one core hosts many 60 fps sessions.
    env_actor_num_cpus: float = 0.05
    #: A keyframe every this many frames bounds how long a decoding error could persist.
    keyframe_interval: int = 300
    #: Frames a slow client may have in flight before newer frames replace older ones.
    frame_backpressure: int = 2
    #: Largest websocket message accepted from a client.
    max_message_bytes: int = 2048
    #: A session whose participant never connects is ended after this many seconds.
    connect_timeout_s: float = 60.0
    #: After the participant's websocket closes, the session waits this long for a reconnect.
    reconnect_grace_s: float = 10.0

    @classmethod
    def from_env(cls) -> "Settings":
        values = {}
        for field in fields(cls):
            raw = os.environ.get(f"CROWDPLAY_{field.name.upper()}")
            if raw is not None:
                values[field.name] = type(field.default)(raw)
        return cls(**values)
