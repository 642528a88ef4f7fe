"""TCP_NODELAY for participants' websockets, whoever created the listening socket.

asyncio sets TCP_NODELAY only on sockets whose ``proto`` is ``IPPROTO_TCP``. Ray Serve's direct
ingress creates its listening socket as ``socket(AF_INET, SOCK_STREAM)`` (proto 0), so connections
it accepts keep Nagle's algorithm: a small frame written while the previous one is unacknowledged
waits for the peer's delayed ACK. Measured on the load benchmark: every key press made the next
frame ~30 ms late (5% of frames late at 20 sessions, against 0% with plain uvicorn). The app cannot
reach the transport through ASGI, so it finds its connection's socket by the addresses in the scope.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Mapping
from typing import Any

FD_DIR = "/proc/self/fd"


def _address(value: object) -> tuple[str, int] | None:
    if isinstance(value, (list, tuple)) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None


def set_nodelay_for(scope: Mapping[str, Any]) -> bool:
    """Set TCP_NODELAY on the socket serving ``scope``; True when found (Linux only)."""
    local, peer = _address(scope.get("server")), _address(scope.get("client"))
    if local is None or peer is None or not os.path.isdir(FD_DIR):
        return False
    for name in os.listdir(FD_DIR):
        with contextlib.suppress(OSError, ValueError):
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            for family in (socket.AF_INET, socket.AF_INET6):
                duplicate = socket.fromfd(fd, family, socket.SOCK_STREAM)  # a dup: closing it keeps ours
                with duplicate:
                    if duplicate.family != family:
                        continue
                    if duplicate.getpeername()[:2] == peer and duplicate.getsockname()[:2] == local:
                        duplicate.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        return True
    return False
