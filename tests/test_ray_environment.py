"""The environment a local Ray instance starts with: ports picked now and bound later (HAProxy's,
Serve's) must not be taken in between, and HAProxy's files must not outlive the instance."""

import os
import socket
import subprocess
import sys
from pathlib import Path

from crowdplay.config import RAY_WORKER_PORTS_END, ephemeral_ports, free_port


def test_free_ports_are_distinct_bindable_and_outside_the_kernels_and_rays_own_ranges():
    low = ephemeral_ports()[0]
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


def test_haproxys_state_directory_is_removed_when_the_process_exits():
    script = "import os; from crowdplay.config import apply_ray_environment as a; a(); d = os.environ['RAY_SERVE_HAPROXY_SERVER_STATE_BASE']; print(d, os.path.isdir(d))"
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_SERVE_HAPROXY")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    path, existed = done.stdout.split()
    assert existed == "True" and Path(path).name.startswith("cp-") and not Path(path).exists()
