"""The environment a local Ray instance starts with: ports picked now and bound later (HAProxy's,
Serve's) must not be taken in between, HAProxy's files must not outlive the instance, and its
sockets and Ray's must fit their path limits whatever the temp directory is."""

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from crowdplay.config import (
    HAPROXY_SOCKET_PATH_MAX,
    HAPROXY_SOCKETS,
    RAY_SOCKET_PATH_MAX,
    RAY_SOCKET_SUFFIX,
    RAY_WORKER_PORTS_END,
    ephemeral_ports,
    free_port,
    haproxy_socket_path,
)
from crowdplay.web.haproxy import LAUNCHER
from tests.conftest import crowdplay_serve, fresh_environment


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


def applied_environment(env: dict[str, str]) -> dict[str, str]:
    """The environment ``apply_ray_environment`` makes of ``env``, in a process of its own (whose
    exit removes what it created)."""
    script = "import json, os; from crowdplay.config import apply_ray_environment as a; a(); print(json.dumps(dict(os.environ)))"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def long_directory(parent: Path, length: int) -> Path:
    directory = parent / ("d" * (length - len(str(parent)) - 1))
    directory.mkdir()
    assert len(str(directory)) == length
    return directory


def test_haproxys_sockets_and_rays_fit_their_limits_under_a_long_tmpdir(tmp_path):
    long = long_directory(tmp_path, 90)
    env = applied_environment(fresh_environment(TMPDIR=str(long), RAY_TMPDIR=str(long)))
    state_dir = Path(env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])
    assert state_dir.parent == Path("/tmp") and not str(state_dir).startswith(str(long))
    for name in HAPROXY_SOCKETS:
        assert Path(env[name]).parent == state_dir
        assert len(haproxy_socket_path(env[name])) <= HAPROXY_SOCKET_PATH_MAX
    # Ray's temp dir is a short name for the same directory: its files still land in the long one.
    assert Path(env["RAY_TMPDIR"]).parent == state_dir and len(env["RAY_TMPDIR"]) + RAY_SOCKET_SUFFIX <= RAY_SOCKET_PATH_MAX
    assert not state_dir.exists()  # gone with the process, link and all; the long directory stays
    assert long.is_dir()
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(LAUNCHER) and os.access(LAUNCHER, os.X_OK)
    assert env["CROWDPLAY_HAPROXY_PYTHON"] == sys.executable


def test_a_short_tmpdir_is_left_to_ray_and_the_state_directory_is_private():
    script = "import os; from crowdplay.config import apply_ray_environment as a; a(); d = os.environ['RAY_SERVE_HAPROXY_SERVER_STATE_BASE']; print(oct(os.stat(d).st_mode & 0o777), os.environ['RAY_TMPDIR'])"
    done = subprocess.run([sys.executable, "-c", script], env=fresh_environment(RAY_TMPDIR="/tmp"), capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0o700", "/tmp"]  # HAProxy's admin socket in it is mode 666


def test_a_socket_path_too_long_for_haproxy_fails_at_once_naming_its_variable():
    socket_path = f"/tmp/{'d' * 35}/admin.sock"  # 40 characters of directory: 108 bytes with Ray's node id
    script = "from crowdplay.config import apply_ray_environment as a; a()"
    done = subprocess.run([sys.executable, "-c", script], env=fresh_environment(RAY_SERVE_HAPROXY_SOCKET_PATH=socket_path), capture_output=True, text=True)
    assert done.returncode != 0
    assert f"RAY_SERVE_HAPROXY_SOCKET_PATH={socket_path} is too long for HAProxy" in done.stderr


def test_the_server_starts_with_a_90_character_ray_tmpdir(tmp_path):
    long = long_directory(tmp_path, 90)
    port = free_port()
    env = fresh_environment(
        RAY_TMPDIR=str(long), TMPDIR=str(long), CROWDPLAY_NAMESPACE="crowdplay-long-tmpdir-test", CROWDPLAY_WARM_POOL_SIZE="0",
        RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="0",  # serve.shutdown: 1 s, not 30
        CROWDPLAY_STORE_URI=str(tmp_path / "recordings.db"), CROWDPLAY_SPOOL_DIR=str(tmp_path / "spool"),
    )
    with crowdplay_serve(port, env) as url:
        with urllib.request.urlopen(f"{url}/api/health", timeout=30) as response:
            assert response.status == 200
        assert list((long / "ray").glob("session_*/sockets/plasma_store"))  # Ray's session is in the long directory
