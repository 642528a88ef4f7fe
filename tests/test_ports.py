"""Ports picked now and bound later (HAProxy's, Serve's) must not be taken in between."""

import socket

from crowdplay.config import RAY_WORKER_PORTS_END, ephemeral_ports, free_port


def test_free_ports_are_distinct_bindable_and_outside_the_kernels_and_rays_own_ranges():
    low, high = ephemeral_ports()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    for port in ports:
        assert RAY_WORKER_PORTS_END < port < low, port
        with socket.socket() as sock:
            sock.bind(("0.0.0.0", port))


def test_a_port_in_use_is_never_handed_out():
    held = []
    try:
        for port in range(RAY_WORKER_PORTS_END + 1, RAY_WORKER_PORTS_END + 2000):
            sock = socket.socket()
            try:
                sock.bind(("0.0.0.0", port))
                sock.listen()
            except OSError:
                sock.close()
                continue
            held.append(sock)
        taken = {sock.getsockname()[1] for sock in held}
        assert not taken & {free_port() for _ in range(300)}
    finally:
        for sock in held:
            sock.close()
