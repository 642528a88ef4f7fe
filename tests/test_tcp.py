"""Participants' websockets get TCP_NODELAY even when the listening socket was made with proto 0."""

from __future__ import annotations

import socket

from crowdplay.web.tcp import set_nodelay_for


def test_the_connection_socket_is_found_by_its_addresses_and_gets_nodelay():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # proto 0, as Ray Serve makes it
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server_side, _ = listener.accept()
    try:
        assert server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        scope = {"server": server_side.getsockname(), "client": server_side.getpeername()}
        assert set_nodelay_for(scope)
        assert server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert not set_nodelay_for({"server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2)})
    finally:
        for sock in (client, server_side, listener):
            sock.close()
