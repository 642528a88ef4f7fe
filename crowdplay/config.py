"""Settings shared by the ingress, the EnvsManager and the EnvActors, in one place."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import socket
import sys
import tempfile
import warnings
from pathlib import Path
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Settings:
    """Deployment knobs; every field can be overridden by ``CROWDPLAY_<FIELD>`` in the environment."""

    namespace: str = "crowdplay"
    manager_name: str = "EnvsManager"
    #: Empty EnvActors kept booted, so Start never waits for a process to start (~0.6 s each).
    warm_pool_size: int = 2
    #: Sessions one EnvActor process hosts (they share its event loop and tick clock).
    sessions_per_actor: int = 16
    #: Games an EnvActor process hosts in its life (0: no limit); then it takes no new ones and
    #: retires once they end, and a fresh process from the warm pool takes its place: whatever a
    #: process keeps of its games (heap fragmentation, the emulators' native memory) is bounded.
    games_per_actor: int = 200
    #: Seconds an emptied EnvActor beyond the warm pool stays, in case the next arrivals need it,
    #: before it retires (0: at once). Load that comes and goes then reuses processes.
    spare_host_linger_s: float = 30.0
    #: CPU reserved per EnvActor; fractional so one core hosts many 60 fps sessions.
    env_actor_num_cpus: float = 0.25
    #: A keyframe every this many frames bounds how long a decoding error could persist.
    keyframe_interval: int = 300
    #: Frames a slow client may have in flight before newer frames replace older ones.
    frame_backpressure: int = 2
    #: Largest websocket message accepted from a client.
    max_message_bytes: int = 2048
    #: Messages a second a client may send on average (bursts of twice that); more closes it (1008).
    max_messages_per_s: float = 60.0
    #: Origins (scheme://host[:port], comma-separated) whose pages may open websockets besides the
    #: server's own host; browsers' websockets from any other origin are refused (4003).
    allowed_origins: str = ""
    #: A session whose participant never connects is ended after this many seconds: until then it
    #: holds a seat, and often a new game on an EnvActor (the page connects at once).
    connect_timeout_s: float = 15.0
    #: New sessions one client address may start: a burst of this many, then this many a minute.
    session_starts_per_client_burst: int = 10
    session_starts_per_client_per_min: float = 6.0
    #: New sessions all clients together may start: a burst of this many, then this many a second.
    session_starts_burst: int = 50
    session_starts_per_s: float = 10.0
    #: At most this many sessions may wait for their participant's first connection (0: no bound).
    max_unconnected_sessions: int = 100
    #: HAProxy answers 429 itself to a client address's ``POST /api/sessions`` beyond this many in
    #: any 10 s (0: off), before any Python runs: a flood's refusals cost the ingress replicas nothing.
    #: Read from the environment by HAProxy's launcher (``crowdplay.web.haproxy``) when it starts.
    session_starts_guard_per_10s: int = 40
    #: Proxies in front of the ingress replicas that append the client's address to X-Forwarded-For:
    #: HAProxy is one; add one for each load balancer in front of it that appends too. A client's
    #: address (its rate limits) is the entry this many places from the end.
    forwarded_hops: int = 1
    #: After the participant's websocket closes, the session waits this long for a reconnect.
    reconnect_grace_s: float = 10.0
    #: Modules imported by every process to register environments and policies ("a.b,c.d").
    plugins: str = ""
    #: Seconds of countdown before a game with several participants begins (all start together).
    countdown_s: float = 3.0
    #: Resources every EnvActor requests besides its CPU share, e.g. "env_slots=1" or
    #: "env_slots=1,gpu_node=0.1": names a node type's custom resource so sessions land there.
    env_actor_resources: str = ""
    #: Where recordings go, and where ``crowdplay data`` and ``Dataset.open()`` read them: a
    #: mongodb:// URI, or a file path for the embedded store ("" = data/crowdplay.db). The old name
    #: ``CROWDPLAY_MONGODB_URI`` is still read when ``CROWDPLAY_STORE_URI`` is not set (deprecated).
    store_uri: str = ""
    #: Steps per recording chunk (50 = 0.83 s at 60 fps): a crashed EnvActor loses at most this plus one
    #: batching window (50 ms), so under a second.
    chunk_steps: int = 50
    #: An emulator snapshot is recorded at the first chunk boundary past every this many steps.
    snapshot_interval: int = 600
    #: Where the writer keeps chunks while the store is unreachable ("" = data/spool).
    spool_dir: str = ""
    #: A store write not done within this many seconds counts as failed (the batch is spooled).
    store_timeout_s: float = 5.0
    #: Record play (off only for benchmarks that measure the cost of recording).
    record: bool = True
    #: A join waits this long for a node with room for another EnvActor (on a cluster: for the
    #: autoscaler to start one) before it is refused.
    placement_timeout_s: float = 600.0
    #: A policy actor not placed and answering within this many seconds is reported (with what it
    #: asks for and what the cluster has free); its agents play a substitute meanwhile, recorded as such.
    policy_start_timeout_s: float = 60.0
    #: The researcher dashboard's token (/admin, /metrics); a study's ``admin_token`` wins. Empty: off.
    admin_token: str = ""
    #: Every long-lived process gives freed memory back to the OS this often (``crowdplay.memory``;
    #: 0 = never): a full collection and ``malloc_trim``, a few milliseconds each time.
    memory_release_interval_s: float = 30.0
    #: Megabytes of recorded chunks an EnvActor process keeps in memory while the writer has not
    #: acknowledged them (0 = no limit); beyond it they wait in files (``unacked_spill_dir``) until
    #: acknowledged. ~7 KB per session a second: 64 MB is ~10 minutes of a full process's play.
    unacked_memory_mb: float = 64.0
    #: Where EnvActors spill unacknowledged chunks beyond ``unacked_memory_mb``: a directory per
    #: process is made in it, removed when emptied ("" = the system temp dir).
    unacked_spill_dir: str = ""

    @classmethod
    def from_env(cls) -> "Settings":
        values = {}
        for field in fields(cls):
            raw = os.environ.get(f"CROWDPLAY_{field.name.upper()}")
            if raw is not None:
                kind = type(field.default)
                values[field.name] = raw.strip().lower() in ("1", "true", "yes", "on") if kind is bool else kind(raw)
        values["store_uri"] = store_uri_from_environment()  # also reads the deprecated name
        return cls(**values)


#: The one variable naming the store, for the server, its Ray processes, ``crowdplay data``,
#: ``Dataset.open()`` and the benchmarks alike.
STORE_URI_VARIABLE = "CROWDPLAY_STORE_URI"
#: Its old name: the data tools read only this one while the server recorded into the other, so on
#: a cluster configured with ``CROWDPLAY_STORE_URI`` they opened an empty local store.
DEPRECATED_STORE_URI_VARIABLE = "CROWDPLAY_MONGODB_URI"


def store_uri_from_environment() -> str:
    """The store named in the environment ("" for none): ``CROWDPLAY_STORE_URI``, else the
    deprecated ``CROWDPLAY_MONGODB_URI`` with a FutureWarning (shown by default, unlike a
    DeprecationWarning, so a researcher running a script sees it). Both set and different: the
    new one wins, and the warning says the old one is ignored."""
    current = os.environ.get(STORE_URI_VARIABLE, "").strip()
    old = os.environ.get(DEPRECATED_STORE_URI_VARIABLE, "").strip()
    if old and not current:
        warnings.warn(
            f"{DEPRECATED_STORE_URI_VARIABLE} is deprecated: set {STORE_URI_VARIABLE} instead (the server, "
            f"`crowdplay data` and Dataset.open() all read it); using {DEPRECATED_STORE_URI_VARIABLE} for now",
            FutureWarning, stacklevel=3,
        )
        return old
    if old and old != current:
        warnings.warn(
            f"{DEPRECATED_STORE_URI_VARIABLE} is deprecated and ignored: {STORE_URI_VARIABLE} is set and names another store",
            FutureWarning, stacklevel=3,
        )
    return current


#: Session-start limits lifted (``crowdplay.admission``): for benchmarks and tests, whose simulated
#: participants stand for many people but all come from one address.
NO_START_LIMITS: dict = {
    "session_starts_per_client_burst": 1_000_000, "session_starts_per_client_per_min": 1e9,
    "session_starts_burst": 1_000_000, "session_starts_per_s": 1e9, "max_unconnected_sessions": 0,
    "session_starts_guard_per_10s": 0,
}
#: The same for HAProxy's guard, which reads it from the environment of the Ray instance.
NO_START_GUARD_ENVIRONMENT = {"CROWDPLAY_SESSION_STARTS_GUARD_PER_10S": "0"}

#: The control actors (EnvsManager, TrajectoryWriter) ask for a sliver of the head node's own
#: resource: a worker node leaving must not take them along, and the writer's spool and the
#: embedded store sit on the head's disk.
ON_HEAD_NODE = {"node:__internal_head__": 0.001}

#: Options for CrowdPlay's long-lived actors. Ray records every actor call as a task event, and the
#: GCS keeps ~3 KB per call (measured) until it holds 100,000 of them, ~300 MB; the writer, the
#: EnvsManager and the EnvActors are called a few times a second for as long as the server runs,
#: so their calls are not recorded (Ray's dashboard does not list them as tasks).
UNRECORDED_CALLS = {"enable_task_events": False}


#: The environment Ray's processes start with (so it must be set before Ray starts):
#: - Ray Serve's throughput mode with HAProxy in front of the ingress replicas: websocket bytes go
#:   from HAProxy straight to the replica's own HTTP server instead of through the Python proxy
#:   actor (measured: 0.6 ms of proxy CPU per frame removed). Serve reads it when it imports.
#: - Two glibc malloc arenas per process instead of up to 8 per core: a long-running process's
#:   threads (Ray's, the emulator builder, the store's) each left freed holes in their own arena.
#:   Measured in 6-minute soaks: EnvActors grew 8.9 MB instead of 14.9, the ingress replica 3.4
#:   instead of 4.5, the writer 1.7 instead of 2.2, the server started ~25 MB smaller; frames on
#:   time and CPU per session unchanged within run-to-run noise.
#: - Serve's access log written every 100 records, not every 1,000 (throughput mode's default):
#:   the replica holds the records in memory until then, ~1.5 KB each; at a study's rate of
#:   connections the buffer took ~40 minutes to fill, and in the soak the replica grew by it
#:   (~0.08 MB a minute, traced to these records). The log also reaches its file sooner.
RAY_ENVIRONMENT = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "MALLOC_ARENA_MAX": "2",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "100",
}
#: Added for a Ray instance this process starts itself (``crowdplay serve``, the benchmarks), not
#: for clusters started from cluster.yaml, which keep Serve's defaults: a stopping ingress replica
#: is held open 2 s for HAProxy, not Serve's 30 s for external load balancers to deregister it.
#: Locally HAProxy runs on the same node and Serve reconfigures it itself, and every session has
#: ended when `crowdplay serve` stops (Ctrl-C took 32 s, 30 of them this wait).
LOCAL_INSTANCE_ENVIRONMENT = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}

#: glibc's allocator for the processes that live as long as the server (the EnvsManager, the
#: TrajectoryWriter, the ingress replicas), given to each in its ``runtime_env`` so that it is in
#: the environment the process starts with (glibc reads it then): one malloc arena and no
#: per-thread caches. Each has ~30 threads (Ray's, gRPC's, the store's) that otherwise scatter
#: freed chunks over their own arena and cache, and their resident memory crept ~0.07 MB a minute
#: in 10-minute soaks while the heap in use stayed flat; with both, their private memory was flat
#: over a 30-minute soak, +0.0065 ± 0.0033 MB a minute for the three (docs/performance.md). Not for every
#: process: set everywhere (EnvActors and Ray's daemons too) it cost ~6% more CPU per session in
#: the load benchmark at 30 sessions (median of 6 alternating runs each, 0.0406 vs 0.0382 cores)
#: and ~0.8 points of frames on time; EnvActors retire after ``Settings.games_per_actor`` games.
LONG_LIVED_ALLOCATOR = {"MALLOC_ARENA_MAX": "1", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}
LONG_LIVED_RUNTIME_ENV = {"env_vars": LONG_LIVED_ALLOCATOR}
#: The per-frame actors (EnvActors, policy actors) start with Ray's allocator settings again: the
#: manager starts them, and an actor inherits the ``runtime_env`` variables of the one that
#: started it. (An empty ``GLIBC_TUNABLES`` sets no tunable.)
FRAME_PATH_RUNTIME_ENV = {"env_vars": {"MALLOC_ARENA_MAX": RAY_ENVIRONMENT["MALLOC_ARENA_MAX"], "GLIBC_TUNABLES": ""}}


#: What Ray Serve runs as HAProxy: ``crowdplay/web/haproxy.sh``, which binds every listener but the
#: public ingress to 127.0.0.1 and turns on X-Forwarded-For, then runs Ray's HAProxy
#: (``crowdplay.web.haproxy``). ``CROWDPLAY_HAPROXY_PYTHON`` is the Python it runs in.
HAPROXY_BINARY_VARIABLE = "RAY_SERVE_HAPROXY_BINARY_PATH"
HAPROXY_LAUNCHER = Path(__file__).resolve().parent / "web" / "haproxy.sh"
HAPROXY_PYTHON_VARIABLE = "CROWDPLAY_HAPROXY_PYTHON"
#: HAProxy's files, by the variable Ray reads each one's path from ("": the directory itself).
HAPROXY_FILES = {
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock",
}
HAPROXY_SOCKETS = ("RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH")
#: HAProxy refuses a longer unix socket path ("socket path ... too long (max 97)"; its admin socket
#: and its log socket alike, measured), and Ray puts each one in a directory named after the node
#: (56 hex digits) inside the one its variable names: <dir>/<node id>/admin.sock.
HAPROXY_SOCKET_PATH_MAX = 97
RAY_NODE_ID_LENGTH = 56
#: Where this process's HAProxy files go: the first of these that is writable, whatever TMPDIR says
#: (under a TMPDIR of ~40 characters or more the socket paths were too long and Serve never started).
SHORT_TEMP_PARENTS = ("/tmp", "/dev/shm")
#: Ray's own sockets, <temp dir>/ray/session_<date>_<time>_<us>_<pid>/sockets/plasma_store, may be
#: at most AF_UNIX's 107 bytes, or ``ray.init`` fails ("AF_UNIX path length cannot exceed 107
#: bytes"): this many bytes follow the temp dir (a 7-digit pid, Ray's ".<n>" suffix up to 99).
RAY_SOCKET_PATH_MAX = 107
RAY_SOCKET_SUFFIX = len("/ray/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store.99")


def apply_ray_environment() -> None:
    """Set ``RAY_ENVIRONMENT`` and ``LOCAL_INSTANCE_ENVIRONMENT`` for the Ray instance this process
    starts (explicit values win).

    HAProxy's files and its metrics and stats ports have fixed defaults; each local instance gets
    its own so that two on one machine (a study and its tests, say) do not collide. The files go
    in a private directory of this process's, short whatever TMPDIR is (see ``SHORT_TEMP_PARENTS``),
    removed when this process exits (the Ray instance it started is gone by then). A socket path
    too long for HAProxy fails here, naming its variable, rather than in Serve's HAProxy actor.

    Ray's temp dir (``RAY_TMPDIR``, else ``TMPDIR``) too long for its own sockets is replaced by a
    short link to the same directory in that private one: Ray's files stay where they were asked
    to go, and ``ray.init`` starts.
    """
    for name, value in {**RAY_ENVIRONMENT, **LOCAL_INSTANCE_ENVIRONMENT}.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault(HAPROXY_BINARY_VARIABLE, str(HAPROXY_LAUNCHER))
    os.environ.setdefault(HAPROXY_PYTHON_VARIABLE, sys.executable)
    if os.environ[HAPROXY_BINARY_VARIABLE] == str(HAPROXY_LAUNCHER) and not os.access(HAPROXY_LAUNCHER, os.X_OK):
        raise PermissionError(f"{HAPROXY_LAUNCHER} ({HAPROXY_BINARY_VARIABLE}) must be executable: chmod +x it")
    ray_temp = ray_temp_dir()
    shorten_ray_temp = len(ray_temp.encode()) + RAY_SOCKET_SUFFIX > RAY_SOCKET_PATH_MAX
    if shorten_ray_temp or any(name not in os.environ for name in HAPROXY_FILES):
        state_dir = short_private_dir()
        for name, file_name in HAPROXY_FILES.items():
            os.environ.setdefault(name, str(state_dir / file_name) if file_name else str(state_dir))
        if shorten_ray_temp:
            os.makedirs(ray_temp, exist_ok=True)
            (state_dir / "ray-tmp").symlink_to(os.path.abspath(ray_temp), target_is_directory=True)
            os.environ["RAY_TMPDIR"] = str(state_dir / "ray-tmp")
    for name in HAPROXY_SOCKETS:
        check_haproxy_socket_path(name, os.environ[name])
    # The Python fallback proxy behind HAProxy defaults to the fixed ports 8500/9500 (and reuses them).
    for name in (
        "RAY_SERVE_HAPROXY_METRICS_PORT",
        "RAY_SERVE_HAPROXY_STATS_PORT",
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
    ):
        os.environ.setdefault(name, str(free_port()))


def ray_temp_dir() -> str:
    """The directory Ray would put its session (and its sockets) under: Ray's own rule on Linux."""
    if "RAY_TMPDIR" in os.environ:
        return os.environ["RAY_TMPDIR"]
    return os.environ.get("TMPDIR", "/tmp")


def haproxy_socket_path(path: str) -> str:
    """Where Ray really puts a socket its variable names: in a directory named after the node."""
    directory, name = os.path.split(path)
    return os.path.join(directory, "0" * RAY_NODE_ID_LENGTH, name)


def check_haproxy_socket_path(variable: str, path: str) -> None:
    """Fail now, naming the variable, if HAProxy would refuse the socket path (at Serve's start)."""
    real = haproxy_socket_path(path)
    if len(real.encode()) > HAPROXY_SOCKET_PATH_MAX:
        room = HAPROXY_SOCKET_PATH_MAX - (len(real.encode()) - len(os.path.dirname(path).encode()))
        raise ValueError(
            f"{variable}={path} is too long for HAProxy: Ray puts the socket at {os.path.dirname(path)}/<node id>/"
            f"{os.path.basename(path)}, {len(real.encode())} bytes, and HAProxy allows {HAPROXY_SOCKET_PATH_MAX}. "
            f"Use a directory of at most {room} bytes, or unset {variable} (CrowdPlay then picks one under /tmp)."
        )


def short_private_dir() -> Path:
    """A new directory only this user can enter (HAProxy's admin socket in it is mode 666), short
    enough for HAProxy's sockets; removed when this process exits (after ``ray.shutdown``, whose
    exit hook is registered later and so runs earlier)."""
    longest = max(len(HAPROXY_FILES[name]) for name in HAPROXY_SOCKETS)
    tried = []
    for parent in (*SHORT_TEMP_PARENTS, tempfile.gettempdir()):
        directory = f"{parent}/cp-XXXXXXXX"  # mkdtemp's name: the prefix and 8 random characters
        if len(haproxy_socket_path(f"{directory}/{'x' * longest}").encode()) > HAPROXY_SOCKET_PATH_MAX:
            tried.append(f"{parent} (too long)")
            continue
        try:
            path = Path(tempfile.mkdtemp(prefix="cp-", dir=parent))
        except OSError as error:
            tried.append(f"{parent} ({error.strerror})")
            continue
        atexit.register(shutil.rmtree, path, True)
        return path
    raise OSError(
        f"no directory for HAProxy's sockets: tried {', '.join(tried)}. Make /tmp writable, or set "
        f"{', '.join(HAPROXY_FILES)} to paths in a short directory of your own."
    )


#: Ray's worker processes listen on ports 10002-19999 (its ``--min/max-worker-port`` defaults).
RAY_WORKER_PORTS_END = 19999


def free_port() -> int:
    """A TCP port nobody listens on, for a server that binds it later (HAProxy, Serve, Ray).

    Not one the kernel would hand out for port 0 or an outgoing connection, nor one of Ray's
    worker ports: between the pick and the bind, Ray starts processes that take such ports, and
    one of them took HAProxy's stats port once (CI: "cannot bind socket (Address already in
    use)"). Never the same port twice in one process.
    """
    first, last = RAY_WORKER_PORTS_END + 1, ephemeral_ports()[0] - 1
    for _ in range(1000):
        port = _pick.randint(first, last) if first < last else 0
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            port = sock.getsockname()[1]
        _handed_out.add(port)
        return port
    raise OSError(f"no free TCP port in {first}-{last}")


def ephemeral_ports() -> tuple[int, int]:
    """The range the kernel picks port 0 and outgoing connections' ports from."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_pick = random.SystemRandom()
_handed_out: set[int] = set()
