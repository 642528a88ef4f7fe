"""What the web layer needs from the session machinery, and its Ray implementation.

The Starlette app only talks to a ``SessionBackend``; ``RaySessions`` reaches the EnvsManager and
EnvActors through Ray. Keeping the seam this narrow lets the same app run without Ray hops (an
in-process backend) for baselines, and keeps Ray details out of the HTTP and websocket code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import ray
from ray.actor import ActorHandle

from crowdplay.config import Settings


class Attachment(Protocol):
    """One participant's connection to one agent of a running session."""

    agent: str
    hello: dict

    def frames(self) -> AsyncIterator[bytes | str]: ...

    async def submit_keys(self, keys: list[str], frame: int, seq: int) -> int: ...

    async def submit_action(self, action: int, frame: int, seq: int) -> int: ...

    async def close(self) -> None: ...


class SessionBackend(Protocol):
    async def create_session(self, env_id: str) -> dict: ...

    async def attach(self, session_id: str, token: str) -> Attachment: ...


class RayAttachment:
    def __init__(self, manager: ActorHandle, session_id: str, actor: ActorHandle, agent: str, hello: dict, settings: Settings) -> None:
        self._manager = manager
        self._session_id = session_id
        self._actor = actor
        self._settings = settings
        self.agent = agent
        self.hello = hello

    async def frames(self) -> AsyncIterator[bytes | str]:
        stream = self._actor.frames.options(
            _generator_backpressure_num_objects=self._settings.frame_backpressure
        ).remote(self.agent)
        try:
            async for ref in stream:
                yield await ref
        finally:
            ray.cancel(stream)

    async def submit_keys(self, keys: list[str], frame: int, seq: int) -> int:
        return await self._actor.submit_keys.remote(self.agent, keys, frame, seq)

    async def submit_action(self, action: int, frame: int, seq: int) -> int:
        return await self._actor.submit_action.remote(self.agent, action, frame, seq)

    async def close(self) -> None:
        await self._manager.detach.remote(self._session_id)


class RaySessions:
    """Sessions managed by the cluster's EnvsManager."""

    def __init__(self, manager: ActorHandle, settings: Settings) -> None:
        self.manager = manager
        self.settings = settings

    async def create_session(self, env_id: str) -> dict:
        return await self.manager.create_session.remote(env_id)

    async def attach(self, session_id: str, token: str) -> RayAttachment:
        actor, agent, hello = await self.manager.attach.remote(session_id, token)
        return RayAttachment(self.manager, session_id, actor, agent, hello, self.settings)
