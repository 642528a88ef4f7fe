"""EnvActor: the Ray actor that hosts one session's LiveEnv.

Actors boot empty and wait in the EnvsManager's warm pool; ``start`` loads the environment when a
participant arrives. Frames leave through ``frames``, a streaming generator with a small
backpressure window: when the ingress cannot keep up, the generator waits and then sends the newest
frame, so a slow client drops frames instead of building a queue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import ray

from crowdplay.config import Settings
from crowdplay.environments import get_env
from crowdplay.realtime import LiveEnv


class SessionNotStarted(RuntimeError):
    """A call that needs an environment reached an EnvActor still in the warm pool."""


@ray.remote
class EnvActor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.live: LiveEnv | None = None
        self.session_id: str | None = None

    async def ready(self) -> bool:
        """Answers once the process is up; the pool waits on it before offering the actor."""
        return True

    async def start(self, session_id: str, env_id: str, seed: int) -> dict:
        """Load the environment for a session and describe it (the client's ``hello``)."""
        if self.live is not None:
            raise RuntimeError(f"EnvActor already hosts session {self.session_id}")
        self.session_id = session_id
        self.live = LiveEnv(get_env(env_id), seed, self.settings)
        return self.live.describe()

    def _live(self) -> LiveEnv:
        if self.live is None:
            raise SessionNotStarted("this EnvActor hosts no session")
        return self.live

    async def frames(self, agent: str) -> AsyncIterator[bytes | str]:
        async for message in self._live().stream(agent):
            yield message

    async def submit_keys(self, agent: str, keys: list[str], client_frame: int, seq: int) -> int:
        return self._live().submit_keys(agent, keys, client_frame, seq)

    async def submit_action(self, agent: str, action: int, client_frame: int, seq: int) -> int:
        return self._live().submit_action(agent, action, client_frame, seq)

    async def input_log(self) -> list[dict]:
        return list(self._live().input_log)

    async def episodes(self) -> list[dict]:
        return [vars(record) for record in self._live().episodes]

    async def stats(self) -> dict:
        return self._live().stats()

    async def stop(self, reason: str) -> None:
        if self.live is not None:
            self.live.stop(reason)


def spawn_env_actor(settings: Settings):
    """A new EnvActor reserving this deployment's CPU share per session."""
    return EnvActor.options(num_cpus=settings.env_actor_num_cpus).remote(settings)
