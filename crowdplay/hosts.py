"""The game processes (hosts) of the cluster: a warm pool of booted ones, and where a new game goes.

Booting an EnvActor process costs ~0.6 s and ~60 MB, so a participant's Start must never wait for
one: ``HostPool`` keeps ``warm_size`` empty processes ready and boots a replacement as soon as one
is taken. A new game goes to the least-loaded node (games spread over the cluster), on the fullest
process there with room (games share processes, up to ``games_per_host``) that can open it without
building behind games already playing: building an Atari environment holds a process's
interpreter lock ~90 ms, a stall of every game there (``crowdplay.spares``). So a process where a
game plays takes a game only from its spares (or one whose builds are too short to matter,
``HARMLESS_BUILD_CPU_S``); one whose games all still wait for their participants builds (one at
a time, and its games begin only once no build is under way); a game no process can take so waits
for the next to boot. A process retires
after ``games_per_life`` games (what long-lived interpreters accumulate is let go with it), and an
emptied process beyond the warm pool lingers ``linger_s`` before it retires, so a burst of
arrivals and departures reuses processes instead of booting and stopping one each time. A node
whose machine stopped answering (``suspect``) gets no game until it is trusted again: Ray takes
many seconds to declare such a node dead, and a game placed there meanwhile would never start.

Ray-free: a ``Launcher`` boots and retires the real processes (``crowdplay.manager`` has the
Ray one), and the clock and sleep are parameters, so the rules are unit-tested with fake hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from crowdplay.background import Background
from crowdplay.spares import harmless

log = logging.getLogger(__name__)

#: Seconds without a new game after which the warm pool boots its missing processes, and the most
#: it waits for such a pause while games keep arriving.
REFILL_QUIET_S = 0.5
REFILL_MAX_WAIT_S = 1.5
#: The longest a game waits for a process that can take it without a build behind playing games;
#: then it is built where there is room (a process boots in ~1 s; on a loaded machine far longer).
BOOT_WAIT_MAX_S = 2.0


def lived_its_life(games_per_life: int, games_started: int) -> bool:
    """Whether a process that started ``games_started`` games takes no more (``games_per_life`` 0:
    no limit); the pool and the process itself judge it the same way."""
    return 0 < games_per_life <= games_started


class NoCapacity(RuntimeError):
    """No node could host another game process in time (the cluster is at its autoscaling limit)."""


@dataclass(eq=False)
class Host:
    """A game process, the node it runs on, and the games it hosts."""

    actor: Any
    node_id: str
    games: set[str] = field(default_factory=set)
    #: games placed here in the process's life (``HostPool.games_per_life`` bounds it)
    games_started: int = 0
    #: when its last game left (the pool's clock): a spare host retires only if it stays empty
    emptied_at: float = 0.0
    #: the wait before a spare host retires, while one is pending (one per host)
    lingering: asyncio.Task[None] | None = None
    #: the process's own name for itself (its actor id): how its reports find it
    key: str = ""
    #: environments the process built and games it opened so far, by environment id, as it last
    #: reported (``note_builds``), and games placed here by environment: the spares left
    built: Counter[str] = field(default_factory=Counter)
    opened: Counter[str] = field(default_factory=Counter)
    placed: Counter[str] = field(default_factory=Counter)
    #: a game here has begun since the process was last empty (it may be playing now)
    playing: bool = False
    #: games the process built behind games playing in it, as it last reported
    built_behind_play: int = 0

    def spares_of(self, env_id: str) -> int:
        """Spares of ``env_id`` ready here and not promised to a game yet."""
        return max(0, self.built[env_id] - max(self.placed[env_id], self.opened[env_id]))


class Launcher(Protocol):
    """Starts and stops the real processes behind hosts."""

    async def boot(self) -> Host:
        """A new, empty host; ``NoCapacity`` if no node has room for it in time."""

    async def retire(self, host: Host) -> None:
        """Stop an emptied host once what it recorded is safe."""


@dataclass
class PoolLimits:
    """How many processes, and how many games each: from ``Settings``."""

    warm_size: int
    games_per_host: int
    #: 0: a process takes games for ever
    games_per_life: int
    linger_s: float


class HostPool:
    """The hosts, the warm pool and placement. ``on_added`` hears of every host taken into the
    pool (the manager watches it for its death)."""

    def __init__(
        self,
        launcher: Launcher,
        limits: PoolLimits,
        background: Background,
        on_added: Callable[[Host], None] = lambda host: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.launcher = launcher
        self.limits = limits
        self.hosts: list[Host] = []
        self.boots: set[asyncio.Task[Host]] = set()
        #: nodes whose machine stopped answering: nothing is placed on their hosts
        self.suspect_nodes: set[str] = set()
        self._background = background
        self._on_added = on_added
        self._clock = clock
        self._sleep = sleep
        #: the latest build's CPU seconds of each environment, as processes reported it
        self.build_cpu_s: dict[str, float] = {}
        #: resolved when a host may have become able to take a game (placements waiting on it)
        self._news: asyncio.Future[None] | None = None
        #: when the latest game was placed, and the warm pool's refill waiting for a quiet moment
        self._placed_at = 0.0
        self._refilling: asyncio.Task[None] | None = None
        #: games the processes built behind games playing in them (each stalled those games for
        #: a build), as they reported it: the dashboard's and ``/metrics``' sign of a pool too small
        #: for its starts
        self.builds_behind_play = 0
        #: games placed where no process could open them without such a build: their process is
        #: told it may (``may_build_behind_play``)
        self._behind_play: set[str] = set()

    # ----------------------------------------------------------------- the warm pool
    def spare(self) -> list[Host]:
        """The warm pool: hosts with no games that may still take some."""
        return [host for host in self.hosts if not host.games and self.eligible(host)]

    def eligible(self, host: Host) -> bool:
        """The host may take another game, room aside: not worn out, and its node answers."""
        return not self.worn_out(host) and host.node_id not in self.suspect_nodes

    def worn_out(self, host: Host) -> bool:
        """The host has had its life's games: it takes no more."""
        return lived_its_life(self.limits.games_per_life, host.games_started)

    def refill(self) -> None:
        """Boot what the warm pool misses (boots under way count)."""
        for _ in range(self.missing()):
            self._start_boot()

    def missing(self) -> int:
        """Processes the warm pool lacks, boots under way counted."""
        return max(0, self.limits.warm_size - len(self.spare()) - len(self.boots))

    def _start_boot(self) -> asyncio.Task[Host]:
        task = self._background.start(self._boot(), "booting a game process")
        self.boots.add(task)
        task.add_done_callback(self.boots.discard)
        return task

    async def _boot(self) -> Host:
        host = await self.launcher.boot()
        self.add(host)
        return host

    def add(self, host: Host) -> None:
        """Offer a host's slots (a booted one, or one adopted from an earlier manager)."""
        self.hosts.append(host)
        self._on_added(host)
        self._announce()

    async def wait_for_boots(self, timeout_s: float) -> dict[str, int]:
        """Wait up to ``timeout_s`` for the boots under way, raising the first one's failure (a
        process that cannot start fails the server's start with its reason); boots still waiting
        (for a node to join) are counted, not judged."""
        self.refill()
        boots = set(self.boots)
        done, pending = await asyncio.wait(boots, timeout=timeout_s) if boots else (set(), set())
        for task in done:
            task.result()
        return {"ready": len(self.spare()), "booting": len(pending)}

    # ----------------------------------------------------------------- placement
    async def place(self, game_id: str, env_id: str) -> Host:
        """A host with room that can open ``env_id`` without building behind a game playing there:
        one with a spare of it (or any, if its builds are ``harmless``) or one where no game plays
        (it builds the game); on the least-loaded node, one with a spare first, the fullest first;
        else the next one to boot. The slot (and a spare) is reserved with no await in between, so concurrent games
        never overfill a host, and games arriving while processes boot wait for those instead of
        each booting its own. A failed boot fails the placement with its reason, unless a host
        with room is left: when no node has room for another process, or none boots within
        ``BOOT_WAIT_MAX_S``, a game built behind playing games is better than none or a late one."""
        failed: NoCapacity | None = None
        waited_s = 0.0
        while True:
            open_hosts = [h for h in self.hosts if len(h.games) < self.limits.games_per_host and self.eligible(h)]
            ready = {h for h in open_hosts if h.spares_of(env_id) > 0 or self.harmless(env_id)}
            quiet = [h for h in open_hosts if h in ready or not h.playing]
            if quiet:
                return self._reserve(self._best(quiet, ready.__contains__), game_id, env_id)
            if failed is not None or (open_hosts and waited_s >= BOOT_WAIT_MAX_S):
                if not open_hosts:
                    raise failed or NoCapacity("no game process could take the game")
                log.warning("no game process to spare in time: %s is built behind games playing in its process", env_id)
                self._behind_play.add(game_id)
                return self._reserve(self._best(open_hosts), game_id, env_id)
            boots = set(self.boots) or {self._start_boot()}
            waits: set[asyncio.Future[Any]] = {*boots, self._next_news()}
            started = time.monotonic()
            patience = BOOT_WAIT_MAX_S - waited_s if open_hosts else None  # nowhere else to go: wait for the boot
            done, _ = await asyncio.wait(waits, timeout=patience, return_when=asyncio.FIRST_COMPLETED)
            waited_s += time.monotonic() - started
            for task in boots & done:
                try:
                    task.result()
                except NoCapacity as error:
                    failed = error

    def harmless(self, env_id: str) -> bool:
        """Building ``env_id`` may run beside playing games (``crowdplay.spares.harmless``)."""
        return harmless(self.build_cpu_s, env_id)

    def _best(self, hosts: list[Host], ready: Callable[[Host], bool] = lambda host: True) -> Host:
        """Of ``hosts``, one on the least-loaded node (games spread over the cluster); there, one
        ``ready`` to open the game without a build before one that is not; then the fullest."""
        node_load: Counter[str] = Counter()
        for other in self.hosts:
            node_load[other.node_id] += len(other.games)
        return min(hosts, key=lambda h: (node_load[h.node_id], not ready(h), -len(h.games)))

    def _reserve(self, host: Host, game_id: str, env_id: str) -> Host:
        host.placed[env_id] += 1
        host.games.add(game_id)
        host.games_started += 1
        self._refill_when_quiet()
        return host

    def _refill_when_quiet(self) -> None:
        """Refill the warm pool once no game has been placed for ``REFILL_QUIET_S``, one process
        at a time: booting one takes ~0.6 s of a core (Ray's worker start, then the imports), and
        during a burst of starts that CPU came out of the games already playing (measured: the
        frame gaps of a game playing through 20 starts were 70-125 ms with boots during the burst)."""
        self._placed_at = self._clock()
        if self._refilling is None or self._refilling.done():
            self._refilling = self._background.start(self._refill_after_quiet(), "refilling the warm pool")

    async def _refill_after_quiet(self) -> None:
        """One boot at a time: two processes booting at once took both cores of a small machine.
        Under a steady stream of starts it never gets quiet: a boot waits ``REFILL_MAX_WAIT_S`` at most."""
        short_since = self._clock()
        while True:
            while (remaining := min(self._placed_at + REFILL_QUIET_S, short_since + REFILL_MAX_WAIT_S) - self._clock()) > 0:
                await self._sleep(remaining)
            if not self.missing():
                return
            with contextlib.suppress(Exception):  # its failure is logged by Background; placements see their own
                await self._start_boot()
            short_since = self._clock()

    def game_began(self, host: Host) -> None:
        """A game on the host began (or the process said one plays there): it builds no more."""
        host.playing = True

    def may_build_behind_play(self, game_id: str) -> bool:
        """The game was placed where it must be built behind games playing there (``place``'s
        last resort): its process is to build it rather than refuse (``crowdplay.spares.WouldStall``)."""
        return game_id in self._behind_play

    def unplace(self, host: Host, game_id: str, env_id: str) -> None:
        """A placement the host refused (a game began there first): its slot is free again."""
        self._behind_play.discard(game_id)
        host.games.discard(game_id)
        host.games_started -= 1
        host.placed[env_id] -= 1
        self.game_began(host)

    def note_builds(self, key: str, report: dict[str, Any]) -> None:
        """A process's report of what it built and opened (``SpareEnvs.report``). Its counts only
        grow, so a report overtaken by a newer one changes nothing."""
        for host in self.hosts:
            if host.key == key:
                host.built |= Counter(report.get("built", {}))
                host.opened |= Counter(report.get("opened", {}))
                reported = report.get("built_behind_play", 0)
                self.builds_behind_play += max(0, reported - host.built_behind_play)
                host.built_behind_play = max(host.built_behind_play, reported)
        self.build_cpu_s.update(report.get("build_cpu_s", {}))
        self._announce()

    def _next_news(self) -> asyncio.Future[None]:
        """A future the next ``_announce`` resolves (shared by every placement waiting now)."""
        if self._news is None:
            self._news = asyncio.get_running_loop().create_future()
        return self._news

    def _announce(self) -> None:
        """Wake the placements waiting for a host that can take their game."""
        if self._news is not None and not self._news.done():
            self._news.set_result(None)
        self._news = None

    def release(self, host: Host, game_id: str) -> None:
        """A game left its host. A worn-out host retires once empty; an emptied host beyond the
        warm pool retires once it has stayed empty for ``linger_s``."""
        self._behind_play.discard(game_id)
        host.games.discard(game_id)
        if host not in self.hosts or host.games:
            return
        host.playing = False
        self._announce()
        host.emptied_at = self._clock()
        if self.worn_out(host):
            self.retire(host)
        elif len(self.spare()) > self.limits.warm_size:
            if self.limits.linger_s <= 0:
                self.retire(host)
            elif host.lingering is None or host.lingering.done():
                host.lingering = self._background.start(self._retire_if_still_spare(host), "retiring a spare game process")

    async def _retire_if_still_spare(self, host: Host) -> None:
        while host in self.hosts and not host.games:
            remaining = host.emptied_at + self.limits.linger_s - self._clock()
            if remaining <= 0:
                if len(self.spare()) > self.limits.warm_size:
                    self.retire(host)
                return
            await self._sleep(remaining)

    def retire(self, host: Host) -> None:
        """Take the host out of the pool now and stop its process in the background."""
        self.hosts.remove(host)
        self._background.start(self.launcher.retire(host), f"retiring game process on node {host.node_id}")

    def forget(self, host: Host) -> None:
        """The host's process died: nothing more is placed on it; the warm pool is refilled."""
        if host in self.hosts:
            self.hosts.remove(host)
        self.refill()

    # ----------------------------------------------------------------- unanswering nodes
    def suspect(self, node_id: str) -> bool:
        """The node's machine stopped answering: place nothing more there, and boot the warm pool's
        missing processes (elsewhere, if Ray can). True if it was not suspect already."""
        if node_id in self.suspect_nodes:
            return False
        self.suspect_nodes.add(node_id)
        self.refill()
        return True

    def trust(self, node_id: str) -> None:
        """The node answers again: its hosts take games again."""
        self.suspect_nodes.discard(node_id)

    def on_node(self, node_id: str) -> list[Host]:
        """The hosts running on a node."""
        return [host for host in self.hosts if host.node_id == node_id]

    def loads(self) -> list[int]:
        """Games per host."""
        return [len(host.games) for host in self.hosts]
