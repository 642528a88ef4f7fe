"""TUN devices: a network interface whose packets a process reads and writes as bytes. The
emulator holds one at each end of a shaped link; moving a device to another network namespace
keeps the file descriptor working, so one process can serve links between many namespaces."""

from __future__ import annotations

import fcntl
import os
import struct

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000  # bare IP packets, no packet-information header
#: Linux interface names are at most 15 characters.
MAX_NAME = 15


def open_tun(name: str) -> int:
    """Create the TUN device ``name`` in this process's namespace; returns its non-blocking fd.
    The device disappears when the fd closes (and with it the emulator's process)."""
    if not 0 < len(name) <= MAX_NAME:
        raise ValueError(f"interface name {name!r}: 1 to {MAX_NAME} characters")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def read_packets(fd: int, limit: int = 256) -> list[bytes]:
    """Every packet waiting on ``fd`` (up to ``limit``), without blocking."""
    packets: list[bytes] = []
    while len(packets) < limit:
        try:
            packets.append(os.read(fd, 65_536))
        except BlockingIOError:
            break
    return packets
