"""A TCP relay that can cut a link without killing anything: frozen, it stops forwarding in both
directions and holds every socket open, as a network partition or a stuck machine does (packets
dropped, nothing reset); thawed, it delivers what it held and goes on. A connection closed or reset
at one end while frozen reaches the other end only after the thaw, as it would once the network
came back.

It runs in the test's own event loop, between an ingress replica and an EnvActor's frame channel
(the EnvsManager is told the relay's address for the game, ``route_game_through``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any


class Relay:
    """Forwards connections made to ``port`` (after ``start``) to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        #: while frozen: a listener whose accept queue is full, so new handshakes are dropped
        self._dropping: list[socket.socket] = []
        self.connections = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def frozen(self) -> bool:
        return not self._flowing.is_set()

    def freeze(self) -> None:
        """Stop forwarding both ways; new connections get no handshake (their SYNs are dropped:
        a listener on the port with a backlog of 0 holds one connection it never accepts)."""
        self._flowing.clear()
        if self._server is not None:
            self._server.close()
            self._server = None
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(0)
            self._dropping = [listener, socket.create_connection((self.host, self.port), timeout=5)]

    async def thaw(self) -> None:
        """Deliver what was held, take connections again and forward."""
        for held in self._dropping:
            held.close()
        self._dropping = []
        if self._server is None:
            await self.start()
        self._flowing.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for held in self._dropping:
            held.close()
        self._flowing.set()
        for writer in self._writers:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(client_writer)
        await self._flowing.wait()
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.append(upstream_writer)
        for reader, writer in ((client_reader, upstream_writer), (upstream_reader, client_writer)):
            task = asyncio.get_running_loop().create_task(self._pump(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction; what was read while frozen waits for the thaw, and so does an end
        of the connection (a close, a reset)."""
        reset = False
        try:
            while True:
                await self._flowing.wait()
                try:
                    data = await reader.read(65536)
                except ConnectionError:
                    reset = True
                    break
                await self._flowing.wait()
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            reset = True
        await self._flowing.wait()
        if reset:
            writer.transport.abort()
        else:
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()


def game_channel(manager: Any, game_id: str) -> dict[str, Any]:
    """The game's frame channel as the EnvsManager hands it out (host, port, secret)."""
    import ray

    def channel(self: Any, game_id: str) -> dict[str, Any]:
        return dict(self.table.games[game_id].channel)

    return ray.get(manager.__ray_call__.remote(channel, game_id), timeout=60)  # type: ignore[no-any-return]


def route_game_through(manager: Any, game_id: str, relay: Relay) -> None:
    """Have the EnvsManager hand out the relay's address as the game's frame channel: the ingress
    connects there from then on, and the manager's probes go there too."""
    import ray

    def reroute(self: Any, game_id: str, host: str, port: int) -> None:
        game = self.table.games[game_id]
        game.channel = {**game.channel, "host": host, "port": port}

    ray.get(manager.__ray_call__.remote(reroute, game_id, relay.host, relay.port), timeout=60)
