"""Settings shared by the ingress, the EnvsManager and the EnvActors, in one place.

Every field of ``Settings`` is read from ``CROWDPLAY_<FIELD>`` by ``Settings.from_env``, strictly: a
value that is not of the field's kind stops the process with an error naming the variable, so a
typo never turns into a silently different deployment. docs/settings.md is generated from the
class (``python -m crowdplay.reference_docs``), its ``#:`` comments included.
"""

from __future__ import annotations

import atexit
import difflib
import logging
import math
import os
import random
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Every setting's variable starts with this; so do a few variables that are not settings (below).
VARIABLE_PREFIX = "CROWDPLAY_"


class SettingsError(ValueError):
    """A ``CROWDPLAY_*`` variable holds a value CrowdPlay cannot use: the message names the
    variable, its value and what is accepted, so the deployment is fixed before anything starts."""


@dataclass(frozen=True)
class Settings:
    """Deployment knobs; every field can be overridden by ``CROWDPLAY_<FIELD>`` in the environment."""

    #: The Ray namespace of CrowdPlay's named actors: two deployments on one Ray cluster need two.
    namespace: str = "crowdplay"
    #: The name of the one EnvsManager actor every ingress replica finds (within ``namespace``).
    manager_name: str = "EnvsManager"
    #: Empty EnvActors kept booted, so Start never waits for a process to start (~0.6 s each).
    warm_pool_size: int = 2
    #: Games one EnvActor process hosts at once (they share its event loop and tick clock; each
    #: game seats one or more participants). Its former, misleading name ``sessions_per_actor`` is
    #: still read from the environment, with a warning, until the next release drops it.
    concurrent_games_per_actor: int = 16
    #: Games an EnvActor process hosts in its life (0: no limit); then it takes no new ones and
    #: retires once they end, and a fresh process from the warm pool takes its place: whatever a
    #: process keeps of its games (heap fragmentation, the emulators' native memory) is bounded.
    games_per_actor: int = 200
    #: Seconds an emptied EnvActor beyond the warm pool stays, in case the next arrivals need it,
    #: before it retires (0: at once). Load that comes and goes then reuses processes.
    spare_host_linger_s: float = 30.0
    #: Spare environments an EnvActor builds while it runs no game, spread over the recent games (0:
    #: none): building an Atari one holds the process's interpreter lock ~90 ms, which every game
    #: playing there would feel, so a process where a game plays opens new games only from these.
    #: Size it to the games a process takes while the next one boots.
    spare_envs_per_actor: int = 16
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
    #: New sessions one client address may start at once (a burst), before its rate below applies.
    session_starts_per_client_burst: int = 10
    #: New sessions one client address may start a minute once its burst is spent.
    session_starts_per_client_per_min: float = 6.0
    #: New sessions all clients together may start at once (a burst), before the rate below applies.
    session_starts_burst: int = 50
    #: New sessions all clients together may start a second once the burst is spent.
    session_starts_per_s: float = 10.0
    #: At most this many sessions may wait for their participant's first connection (0: no bound).
    max_unconnected_sessions: int = 100
    #: Feedback and problem reports one client address may send at once (a burst), before its
    #: rate below applies (``crowdplay.note_limits``); more are answered 429 with ``Retry-After``.
    notes_per_client_burst: int = 10
    #: Notes one client address may send a minute once its burst is spent.
    notes_per_client_per_min: float = 6.0
    #: Notes all clients together may send at once (a burst), before the rate below applies.
    notes_burst: int = 200
    #: Notes all clients together may send a minute once the burst is spent (each is at most 4 KB).
    notes_per_min: float = 120.0
    #: Notes stored about one session at most (0: no cap); more are answered 409.
    notes_per_session: int = 20
    #: HAProxy answers 429 itself to a client address's ``POST /api/sessions`` beyond this many in
    #: any 10 s (0: off), before any Python runs: a flood's refusals cost the ingress replicas nothing.
    #: Read from the environment by HAProxy's launcher (``crowdplay.web.haproxy``) when it starts.
    session_starts_guard_per_10s: int = 40
    #: Connections one client address may hold open to HAProxy at once (0: no limit); HAProxy
    #: closes any beyond it as soon as they are accepted, so one client cannot take the connections
    #: everyone shares (HAProxy's ``maxconn``, sized from the node's file-descriptor limit). A
    #: participant's page holds a websocket and a few HTTP connections: 300 lets a lab of ~100
    #: behind one NAT address in. Applies only where HAProxy is the edge (``forwarded_hops`` 1):
    #: behind a load balancer every connection comes from the balancer, so set the equivalent there.
    #: Read by HAProxy's launcher (``crowdplay.web.haproxy``) when it starts, as are the next two.
    connections_per_client: int = 300
    #: Seconds a new connection has to send a whole request head (HAProxy's ``timeout
    #: http-request``): one that sends nothing is closed silently then, one that sends it slowly
    #: (slowloris) gets 408. A browser on a poor link sends its ~1 KB head in well under a second.
    request_head_timeout_s: float = 10.0
    #: Seconds an HTTP connection may stay open idle between requests (HAProxy's ``timeout
    #: http-keep-alive``; Serve's default 90). A browser opens a new one when it needs it; a page's
    #: websocket, once upgraded, is not idle in this sense and is kept.
    keep_alive_timeout_s: float = 15.0
    #: Seconds a request's body may take to arrive after its head (0: no deadline): HAProxy
    #: answers 408 to one not complete by then and closes its connection, so a body announced and
    #: never sent holds nothing (read by HAProxy's launcher, ``crowdplay.web.haproxy_bodies``); an
    #: ingress replica allows as long from when it starts reading one. Every body is at most a few
    #: kilobytes (``crowdplay.web.limits``): a browser on a poor link sends one in well under a second.
    body_timeout_s: float = 5.0
    #: Proxies in front of the ingress replicas that append the client's address to X-Forwarded-For:
    #: HAProxy is one; add one for each load balancer in front of it that appends too. A client's
    #: address (its rate limits) is the entry this many places from the end.
    forwarded_hops: int = 1
    #: After the participant's websocket closes, the session waits this long for a reconnect.
    reconnect_grace_s: float = 10.0
    #: Seconds of silence on a frame channel after which the ingress judges the game server's
    #: machine unreachable (a partition, a stuck VM: packets dropped, the connection never reset):
    #: the participant is told at once and offered a new game, and the EnvsManager places nothing
    #: more on that node until it answers again. The game server sends a heartbeat four times
    #: within it whenever it has nothing else to send (a paused or waiting game), so only a machine
    #: that stopped answering stays silent this long. Silence is confirmed by a TCP handshake in
    #: the deadline's last quarter: a machine that completes it (a live server too starved of CPU
    #: to send) gets up to 10 times as long (0: never judged).
    channel_stall_s: float = 1.5
    #: Modules imported by every process to register environments and policies ("a.b,c.d").
    plugins: str = ""
    #: Seconds of countdown before a game with several participants begins (all start together).
    countdown_s: float = 3.0
    #: Resources every EnvActor requests besides its CPU share, e.g. "env_slots=1" or
    #: "env_slots=1,gpu_node=0.1": names a node type's custom resource so sessions land there.
    env_actor_resources: str = ""
    #: Where recordings go, and where ``crowdplay data`` and ``Dataset.open()`` read them: a
    #: mongodb:// URI, or a file path for the embedded store ("" = data/crowdplay.db). The only
    #: store setting: its former name ``CROWDPLAY_MONGODB_URI`` is refused with an error.
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
    #: Ingress replicas run on the head node, beside the EnvsManager and the writer (cluster.yaml's
    #: head node type): a worker whose link is cut then takes only its games along, and the ingress
    #: tells their participants. Off: Serve places replicas on any node (several replicas, one per
    #: node, spread the websocket work; a replica on a cut worker leaves its participants' pages
    #: without an answer until the link returns).
    ingress_on_head: bool = True
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
    #: Seconds an EnvActor waits for the writer to answer a call of recorded chunks before it
    #: counts as failed and its chunks wait in the process (``unacked_memory_mb``) to be sent again
    #: (0: 30 s). A writer that cannot be reached (a partition) never fails a call; this bounds it.
    #: At most 4 calls stay out unanswered; the rest wait, and everything is sent once it answers.
    writer_call_timeout_s: float = 30.0
    #: Where EnvActors spill unacknowledged chunks beyond ``unacked_memory_mb``: a directory per
    #: process is made in it, removed when emptied ("" = the system temp dir).
    unacked_spill_dir: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings this process runs with: the defaults, overridden by the ``CROWDPLAY_<FIELD>``
        variables of ``environ`` (default: ``os.environ``).

        Strict, because every CrowdPlay process reads the same variables and a value one of them
        misread would make a deployment quietly differ from what its operator wrote: every invalid
        value is refused together in one ``SettingsError`` (each naming its variable, its value and
        what the setting takes), and a ``CROWDPLAY_*`` variable that is neither a setting nor one
        of ``OTHER_VARIABLES`` (a misspelt setting, usually) is logged as a warning with the
        setting it probably meant.
        """
        environ = os.environ if environ is None else environ
        warn_about_unknown_variables(environ)
        values: dict[str, Any] = {}
        problems: list[str] = []
        for field in fields(cls):
            variable = variable_read(field.name, environ)
            if variable is None:
                continue
            try:
                values[field.name] = parse_setting(field, environ[variable], variable)
            except SettingsError as error:
                problems.append(str(error))
        try:
            values["store_uri"] = store_uri_from_environment(environ)
        except SettingsError as error:
            problems.append(str(error))
        if problems:
            raise SettingsError("\n".join(problems))
        return cls(**values)


def setting_variable(field_name: str) -> str:
    """The environment variable a setting is read from: ``CROWDPLAY_<FIELD>``."""
    return f"{VARIABLE_PREFIX}{field_name.upper()}"


def setting_variables() -> dict[str, str]:
    """Every setting's variable, with its field's name: the names ``Settings.from_env`` reads."""
    return {setting_variable(field.name): field.name for field in fields(Settings)}


#: Settings whose former names misled, by the former variable: deployments set those, so each is
#: still read (with a warning naming the new variable) for one release before it is dropped.
RENAMED_VARIABLES: dict[str, str] = {
    "CROWDPLAY_SESSIONS_PER_ACTOR": "concurrent_games_per_actor",
}


def variable_read(field_name: str, environ: Mapping[str, str]) -> str | None:
    """The variable a setting's value is taken from: its own if set, else its former name's (a
    warning says to rename it), else None. Both set: its own wins, and the warning says the
    former one is ignored."""
    variable = setting_variable(field_name)
    for former, renamed_to in RENAMED_VARIABLES.items():
        if renamed_to != field_name or former not in environ:
            continue
        if variable in environ:
            log.warning("%s is ignored: %s is set too, and is the name Settings.%s is read from", former, variable, field_name)
        else:
            log.warning("%s is deprecated and will stop being read in the next release: rename it to %s (Settings.%s)", former, variable, field_name)
            return former
    return variable if variable in environ else None


@dataclass(frozen=True)
class SettingKind:
    """How the text of a variable becomes a setting's value, and how to say what it accepts (in
    errors and in docs/settings.md alike, so the two never disagree)."""

    #: the kind's name in docs/settings.md's table: "whole number"
    name: str
    #: what the setting takes, for people: "a whole number >= 0"
    accepted: str
    #: the text (as the environment holds it) to the value; raises ValueError when it is not one
    parse: Callable[[str], Any]


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _boolean(text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(text)


def _whole_number(text: str) -> int:
    value = int(text.strip())
    if value < 0:
        raise ValueError(text)
    return value


def _number(text: str) -> float:
    value = float(text.strip())
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


#: The kinds of setting there are, by the type a ``Settings`` field is annotated with. Every
#: number a setting takes is a count, a size or a duration, so none is negative (0 often means
#: "off" or "no limit", as each field's comment says).
SETTING_KINDS: dict[str, SettingKind] = {
    "bool": SettingKind("boolean", f"one of {', '.join(TRUE_WORDS)} or {', '.join(FALSE_WORDS)} (any case)", _boolean),
    "int": SettingKind("whole number", "a whole number >= 0", _whole_number),
    "float": SettingKind("number", "a number >= 0 (e.g. 2.5)", _number),
    "str": SettingKind("text", "any text (spaces included; empty is a value too)", str),
}


def setting_kind(field: Field[Any]) -> SettingKind:
    """The kind of a ``Settings`` field (its annotation is a string: this module postpones them)."""
    return SETTING_KINDS[str(field.type)]


def parse_setting(field: Field[Any], raw: str, variable: str | None = None) -> Any:
    """The value of ``field`` that the text ``raw`` of ``variable`` (default: the field's own)
    says, or a ``SettingsError`` naming the variable, the value and what the setting takes."""
    kind = setting_kind(field)
    try:
        return kind.parse(raw)
    except ValueError:
        raise SettingsError(
            f"{variable or setting_variable(field.name)}={raw!r} is not a valid value: Settings.{field.name} takes {kind.accepted}"
        ) from None


#: ``CROWDPLAY_*`` variables that are not settings, and who reads each: ``Settings.from_env`` does
#: not warn about them. (tests/test_docs.py's ``EXTRA_VARIABLES`` names the file that reads each.)
OTHER_VARIABLES: dict[str, str] = {
    "CROWDPLAY_HAPROXY_PYTHON": "the Python that HAProxy's launcher (crowdplay/web/haproxy.sh) runs in",
    "CROWDPLAY_HAPROXY_BINARY": "an HAProxy binary to run instead of the one Ray bundles (crowdplay/web/haproxy.py)",
    "CROWDPLAY_LOCAL_MONGODB": "cluster.yaml: 1 installs MongoDB on the head node",
    "CROWDPLAY_MONGODB_PASSWORD": "cluster.yaml: the password of that MongoDB's crowdplay user",
    "CROWDPLAY_TEST_MONGODB_URI": "the test suite: a real MongoDB that tests/test_recording_mongodb.py also runs against",
    "CROWDPLAY_FUZZ_CASES": "the test suite: cases per property in tests/test_fuzz.py",
    "CROWDPLAY_FUZZ_REPORT": "the test suite: where tests/test_fuzz.py writes what it saw",
}


def unknown_variable_message(name: str) -> str:
    """What to tell an operator about ``name``, a ``CROWDPLAY_*`` variable CrowdPlay does not read:
    it is ignored, and which variable it most probably meant (difflib's closest, by the part after
    the prefix and in any case; the shared prefix would make every name look close)."""
    candidates = {known[len(VARIABLE_PREFIX):]: known for known in [*setting_variables(), *OTHER_VARIABLES]}
    close = difflib.get_close_matches(name[len(VARIABLE_PREFIX):].upper(), list(candidates), n=1)
    message = f"{name} is not a CrowdPlay setting and is ignored"
    if not close:
        return f"{message} (docs/settings.md lists the settings)"
    meant = candidates[close[0]]
    field_name = setting_variables().get(meant)
    return f"{message}: did you mean {meant}" + (f" (Settings.{field_name})?" if field_name else "?")


def warn_about_unknown_variables(environ: Mapping[str, str]) -> None:
    """Log a warning for every ``CROWDPLAY_*`` variable in ``environ`` that nothing reads."""
    known = {*setting_variables(), *OTHER_VARIABLES, *RENAMED_VARIABLES, RETIRED_STORE_URI_VARIABLE}
    for name in sorted(environ):
        if name.startswith(VARIABLE_PREFIX) and name not in known:
            log.warning(unknown_variable_message(name))


#: The one variable naming the store, for the server, its Ray processes, ``crowdplay data``,
#: ``Dataset.open()`` and the benchmarks alike.
STORE_URI_VARIABLE = "CROWDPLAY_STORE_URI"
#: Its former name, refused rather than read: with two names for one store, the server and the
#: data tools could each read a different one (the tools then open an empty local store). One name
#: cannot disagree with itself.
RETIRED_STORE_URI_VARIABLE = "CROWDPLAY_MONGODB_URI"


def store_uri_from_environment(environ: Mapping[str, str] | None = None) -> str:
    """The store named in the environment ("" for none): ``CROWDPLAY_STORE_URI``.

    ``CROWDPLAY_MONGODB_URI`` set is a ``SettingsError`` saying to use the one store setting
    instead (without repeating its value: a MongoDB URI often holds a password)."""
    environ = os.environ if environ is None else environ
    if environ.get(RETIRED_STORE_URI_VARIABLE, "").strip():
        raise SettingsError(
            f"{RETIRED_STORE_URI_VARIABLE} is no longer read: {STORE_URI_VARIABLE} is the one store setting (the "
            f"server, `crowdplay data` and Dataset.open() all read it). Set {STORE_URI_VARIABLE} to the same "
            f"URI and unset {RETIRED_STORE_URI_VARIABLE}."
        )
    return environ.get(STORE_URI_VARIABLE, "").strip()


#: Session-start limits lifted (``crowdplay.admission``): for benchmarks and tests, whose simulated
#: participants stand for many people but all come from one address.
NO_START_LIMITS: dict[str, Any] = {
    "session_starts_per_client_burst": 1_000_000, "session_starts_per_client_per_min": 1e9,
    "session_starts_burst": 1_000_000, "session_starts_per_s": 1e9, "max_unconnected_sessions": 0,
    "session_starts_guard_per_10s": 0, "connections_per_client": 0,
}
#: The same for HAProxy's guard and its connections per client address, which it reads from the
#: environment of the Ray instance.
NO_START_GUARD_ENVIRONMENT = {"CROWDPLAY_SESSION_STARTS_GUARD_PER_10S": "0", "CROWDPLAY_CONNECTIONS_PER_CLIENT": "0"}

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
#: - Serve's controller waits up to 30 s, not 5, for a starting HAProxy to answer its readiness
#:   check: Ray's workers run at nice 15, and on a busy machine HAProxy's start took longer than
#:   three 5 s checks, so the controller killed it as unhealthy and ``crowdplay serve`` failed
#:   with ``ActorDiedError`` (seen in 64 of 665 Ray sessions' controller logs on the development
#:   machine under test load, one of them a failed start).
RAY_ENVIRONMENT = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "MALLOC_ARENA_MAX": "2",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "100",
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
}
#: Added for a Ray instance this process starts itself (``crowdplay serve``, the benchmarks), not
#: for clusters started from cluster.yaml, which keep Serve's defaults: a stopping ingress replica
#: is held open 2 s for HAProxy, not Serve's 30 s for external load balancers to deregister it.
#: Locally HAProxy runs on the same node and Serve reconfigures it itself, so a replica replaced
#: while the server runs need not wait for an external load balancer.
LOCAL_INSTANCE_ENVIRONMENT = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}

#: glibc's allocator for the processes that live as long as the server (the EnvsManager, the
#: TrajectoryWriter, the ingress replicas), given to each in its ``runtime_env`` so that it is in
#: the environment the process starts with (glibc reads it then): one malloc arena and no
#: per-thread caches. Each has ~30 threads (Ray's, gRPC's, the store's) that otherwise scatter
#: freed chunks over their own arena and cache, and their resident memory crept ~0.07 MB a minute
#: in 10-minute soaks while the heap in use stayed flat; with both, their private memory was flat
#: over a 30-minute soak, +0.0065 ± 0.0033 MB a minute for the three (docs/decisions/allocator.md).
#: Not for every process: set everywhere (EnvActors and Ray's daemons too) it cost ~6% more CPU
#: per session in the load benchmark at 30 sessions (median of 6 alternating runs each, 0.0406 vs
#: 0.0382 cores) and ~0.8 points of frames on time; EnvActors retire after
#: ``Settings.games_per_actor`` games.
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
#: The directory ``apply_ray_environment`` made for HAProxy's files in this process (None: it made
#: none, the variables were given): only this instance's HAProxy runs a configuration in it.
private_haproxy_directory: Path | None = None
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
        global private_haproxy_directory
        state_dir = private_haproxy_directory = short_private_dir()
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
            port = int(sock.getsockname()[1])
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
