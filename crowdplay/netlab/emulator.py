"""The link emulator: a process that carries participants' packets between their site and the
router, each direction shaped by a ``Direction``. It stands in for ``tc netem``, which this
kernel lacks (CONFIG_NET_SCH_NETEM is off and modules cannot be loaded): the same delay, jitter,
loss and rate, done on packets in user space.

It is driven over a Unix socket, one JSON request per line and one JSON answer per line:
``{"op": "add", "link": name, "site": [namespace, device], "router": [namespace, device], "shape": {...}}``,
``{"op": "shape", "link": name, "shape": {...}}`` and ``{"op": "stats"}``."""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from crowdplay.netlab.shape import Direction, LinkShape
from crowdplay.netlab.tun import open_tun, read_packets


@dataclass
class _Way:
    """One direction of a link on the loop: packets read from ``source`` leave on ``sink``."""

    source: int
    sink: int
    direction: Direction
    waiting: collections.deque[tuple[float, bytes]] = field(default_factory=collections.deque)
    timer: asyncio.TimerHandle | None = None


class Link:
    """A shaped link between a site's TUN device and the router's."""

    def __init__(self, name: str, site_fd: int, router_fd: int, shape: LinkShape, seed: int) -> None:
        self.name = name
        self.fds = (site_fd, router_fd)
        rng = random.Random(seed)
        self.up = _Way(site_fd, router_fd, Direction(shape, rng))
        self.down = _Way(router_fd, site_fd, Direction(shape, rng))

    def reshape(self, shape: LinkShape) -> None:
        """Give both directions ``shape`` from the next packet on."""
        self.up.direction.shape = shape
        self.down.direction.shape = shape

    def stats(self) -> dict[str, Any]:
        """The link's shape and each direction's packet counters."""
        return {"shape": self.up.direction.shape.to_dict(), "up": self.up.direction.counters(), "down": self.down.direction.counters()}


class Emulator:
    """Every shaped link of a lab, served on one event loop."""
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.links: dict[str, Link] = {}

    def add(self, name: str, site: tuple[str, str], router: tuple[str, str], shape: LinkShape) -> None:
        """Create the link's two TUN devices, move each into its namespace and start carrying packets."""
        if name in self.links:
            raise ValueError(f"link {name!r} exists")
        fds = []
        for namespace, device in (site, router):
            fd = open_tun(device)
            fds.append(fd)
            subprocess.run(["ip", "link", "set", device, "netns", namespace], check=True, capture_output=True)
        link = Link(name, fds[0], fds[1], shape, seed=len(self.links))
        self.links[name] = link
        for way in (link.up, link.down):
            self.loop.add_reader(way.source, self._arrived, way)

    def _arrived(self, way: _Way) -> None:
        now = self.loop.time()
        for packet in read_packets(way.source):
            departure = way.direction.admit(now, len(packet))
            if departure is not None:
                way.waiting.append((departure, packet))
        if way.waiting and way.timer is None:
            way.timer = self.loop.call_at(way.waiting[0][0], self._depart, way)

    def _depart(self, way: _Way) -> None:
        way.timer = None
        now = self.loop.time()
        while way.waiting and way.waiting[0][0] <= now + 0.0002:
            _, packet = way.waiting.popleft()
            try:
                os.write(way.sink, packet)
            except OSError:  # the far interface is down or full: the packet is lost, as on a wire
                pass
        if way.waiting:
            way.timer = self.loop.call_at(way.waiting[0][0], self._depart, way)

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one control request (see the module's docstring)."""
        op = request.get("op")
        if op == "add":
            self.add(request["link"], tuple(request["site"]), tuple(request["router"]), LinkShape(**request.get("shape", {})))
            return {"ok": True}
        if op == "shape":
            link = self.links.get(request["link"])
            if link is None:
                raise ValueError(f"no link {request['link']!r}; links: {sorted(self.links)}")
            link.reshape(LinkShape(**request["shape"]))
            return {"ok": True}
        if op == "stats":
            return {"ok": True, "links": {name: link.stats() for name, link in self.links.items()}}
        raise ValueError(f"unknown op {op!r}; expected add, shape or stats")

    async def serve_control(self, path: str) -> None:
        """Serve control requests on the Unix socket ``path``; prints ``ready`` once listening."""
        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                try:
                    answer = self.handle(json.loads(line))
                except (ValueError, TypeError, KeyError, OSError, subprocess.CalledProcessError) as error:
                    answer = {"ok": False, "error": str(error)}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
            writer.close()

        if os.path.exists(path):
            os.unlink(path)
        server = await asyncio.start_unix_server(client, path=path)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()


def request(control: str, message: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    """Send one request to a running emulator and return its answer; raises on an error answer."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(control)
        sock.sendall(json.dumps(message).encode() + b"\n")
        answer: dict[str, Any] = json.loads(sock.makefile().readline())
    if not answer.get("ok"):
        raise RuntimeError(f"link emulator: {answer.get('error')}")
    return answer


def main(argv: list[str] | None = None) -> None:
    """Run an emulator until it is killed (``crowdplay.netlab.lab`` starts and stops it)."""
    parser = argparse.ArgumentParser(prog="python -m crowdplay.netlab.emulator", description=__doc__)
    parser.add_argument("--control", required=True, help="path of the Unix socket to serve requests on")
    args = parser.parse_args(argv)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(Emulator(loop).serve_control(args.control))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
