"""The EnvsManager's side of the EnvActors: booting, retiring, finding and calling them through Ray.

Everything the manager's Ray-free parts (``HostPool``, ``Matchmaker``, ``GameControl``) need of a
game process goes through the classes here, which turn Ray's actor errors into the parts' own
(``HostDied``, ``NoCapacity``), so those parts are unit-tested with fake processes and this module
is the one place that knows the EnvActor's remote methods.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import Any

import ray

from crowdplay.channel import channel_answers
from crowdplay.config import Settings
from crowdplay.controllers import Controller
from crowdplay.env_actor import DASHBOARD_WAIT_S, UnknownHostedSession, env_actor_names, spawn_env_actor
from crowdplay.game_control import PROBE_TIMEOUT_S
from crowdplay.hosts import Host, NoCapacity
from crowdplay.lineup import SeatUnavailable
from crowdplay.matchmaking import HostDied, SeatGone
from crowdplay.recording.status import INTERRUPTED
from crowdplay.session_table import Game

log = logging.getLogger(__name__)

#: Seconds between stopping a session and retiring an emptied EnvActor process.
ACTOR_RETIRE_DELAY_S = 0.5
#: Warm EnvActors prepare spare environments of the last this-many games started.
RECENT_ENVS = 3
#: Seconds a restarted manager waits for an earlier incarnation's EnvActor to report its games.
ADOPT_WAIT_S = 30


class EnvActorLauncher:
    """Boots and retires EnvActor processes for the ``HostPool`` (its ``Launcher``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: the environments of the last games started, newest last: a waiting process prepares
        #: spare environments of them, so the games placed there start at once
        self.recent_envs: deque[str] = deque(maxlen=RECENT_ENVS)

    def expect(self, env_ids: list[str]) -> None:
        """Games participants will be asked to play (a study's tasks, first most likely): the
        processes booted from now on prepare spares of the first ``RECENT_ENVS`` before anyone
        starts one."""
        for env_id in reversed(env_ids[:RECENT_ENVS]):
            self.started(env_id)

    def started(self, env_id: str) -> bool:
        """A game of ``env_id`` was asked for: processes booted from now on prepare spares of it.
        True when it was not among the recent games (processes already waiting should hear of it)."""
        new = env_id not in self.recent_envs
        if not new:
            self.recent_envs.remove(env_id)
        self.recent_envs.append(env_id)
        return new

    async def boot(self) -> Host:
        """A new EnvActor. When no node has room for it, it waits for the autoscaler to add one, up
        to ``Settings.placement_timeout_s`` (the joins waiting on it wait too)."""
        actor = spawn_env_actor(self.settings)
        try:
            node_id: str = await asyncio.wait_for(actor.ready.remote(), self.settings.placement_timeout_s)
        except TimeoutError:
            ray.kill(actor)
            raise NoCapacity(f"no node had room for a game server within {self.settings.placement_timeout_s:.0f} s") from None
        actor.prepare.remote(list(self.recent_envs))  # so the first game there starts at once
        return Host(actor, node_id, key=actor._actor_id.hex())

    async def retire(self, host: Host) -> None:
        """Stop an emptied EnvActor once the writer has acknowledged all it recorded (while the
        writer or its store is down, the process keeps its chunks alive)."""
        await asyncio.sleep(ACTOR_RETIRE_DELAY_S)
        try:
            while not await host.actor.drain.remote():
                pass
        except ray.exceptions.RayActorError as error:
            log.info("game process on node %s stopped before it was retired: %s", host.node_id, type(error).__name__)
            return
        ray.kill(host.actor)


async def running_env_actors(namespace: str) -> AsyncIterator[tuple[Host, dict[str, Any]]]:
    """The EnvActors an earlier incarnation of the manager started, each as a host with what it
    reports of its games and sessions (``EnvActor.adopt``; one that does not answer is left alone)."""
    for name in env_actor_names(namespace):
        try:
            actor = ray.get_actor(name, namespace=namespace)
            state: dict[str, Any] = await asyncio.wait_for(actor.adopt.remote(), ADOPT_WAIT_S)
        except (TimeoutError, ValueError, ray.exceptions.RayActorError) as error:
            log.warning("not adopting game process %s: %s", name, type(error).__name__)
            continue
        games = set(state["games"])
        host = Host(actor, state["node_id"], games, state.get("games_opened", len(games)), key=actor._actor_id.hex(), playing=bool(games))
        builds = state.get("builds", {})
        host.built, host.opened = Counter(builds.get("built", {})), Counter(builds.get("opened", {}))
        yield host, state


async def ask_env_actor(host: Host, method: str) -> dict[str, Any]:
    """An EnvActor's answer for the dashboard, or TimeoutError if it has none within
    ``DASHBOARD_WAIT_S`` (a busy or dying process is left out of this overview)."""
    answer: dict[str, Any] = await asyncio.wait_for(getattr(host.actor, method).remote(), DASHBOARD_WAIT_S)
    return answer


class EnvActorCalls:
    """The calls the manager's parts make to a game's EnvActor (``HostCalls``), with Ray's errors
    turned into theirs."""

    async def open_game(self, host: Host, game_id: str, env_id: str, seed: int, behind_play: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        """Build the game's environment in the host's process: (hello info, frame channel);
        ``behind_play``: even behind games playing there."""
        try:
            info, channel = await host.actor.open.remote(game_id, env_id, seed, behind_play=behind_play)
            return info, channel
        except ray.exceptions.RayActorError as error:
            raise HostDied(str(error)) from error

    async def take_seat(self, host: Host, game: Game, agent: str, session_id: str, controller: Controller, details: dict[str, Any], token: str) -> None:
        """Seat the session; ``SeatGone`` if the game began or ended under it."""
        try:
            await host.actor.take_seat.remote(game.game_id, agent, session_id, controller, details, token)
        except (SeatUnavailable, UnknownHostedSession) as gone:
            raise SeatGone(str(gone)) from gone
        except ray.exceptions.RayActorError as error:
            raise HostDied(str(error)) from error

    def retoken(self, host: Host, session_id: str, token: str) -> None:
        """Tell the process a session's new token (kept there for a restarted manager's adoption),
        not waited for: the new token works at once, and a process that died loses the session anyway."""
        host.actor.retoken.remote(session_id, token)

    async def begin_unwatched(self, host: Host, game_id: str) -> None:
        """Start an AI-only game before anyone watches it."""
        await host.actor.begin_unwatched.remote(game_id)

    async def stop(self, host: Host, game_id: str, reason: str, status: str = INTERRUPTED) -> None:
        """End a game in its process (its participants get ``end`` with ``reason``; the episode
        under way is stored with ``status``)."""
        try:
            await host.actor.stop.remote(game_id, reason, status)
        except ray.exceptions.RayActorError as error:
            raise HostDied(str(error)) from error

    async def channel_answers(self, channel: dict[str, Any]) -> bool:
        """A probe of the game's frame channel (``crowdplay.channel.channel_answers``): the
        participants' path to the machine, which Ray's own links need not share."""
        return await channel_answers(channel["host"], channel["port"], PROBE_TIMEOUT_S)

    async def participant_statistics(self, host: Host, game_id: str, session_id: str, finish: bool) -> dict[str, Any]:
        """A seated participant's statistics (``finish``: their seat is given up too); {} if the
        game or its process is gone."""
        actor = host.actor
        try:
            answer: dict[str, Any] = await (actor.finish if finish else actor.participant_statistics).remote(game_id, session_id)
            return answer
        except (ray.exceptions.RayActorError, UnknownHostedSession) as gone:
            log.info("no statistics for session %s from its game %s: %s", session_id, game_id, type(gone).__name__)
            return {}

    async def withdraw(self, host: Host, game_id: str, session_id: str) -> bool:
        """Give up the seat of a session whose request was given up, unless it connected (False
        then, or if the game or its process is gone)."""
        try:
            withdrawn: bool = await host.actor.withdraw.remote(game_id, session_id)
            return withdrawn
        except (ray.exceptions.RayActorError, UnknownHostedSession):
            return False

    async def drain(self, host: Host, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until the writer has acknowledged all the process recorded."""
        drained: bool = await host.actor.drain.remote(timeout_s)
        return drained

    async def until_dead(self, host: Host) -> bool:
        """Wait until the host's EnvActor stops: True if it died, False if it stopped on purpose."""
        while True:
            try:
                await host.actor.until_stopped.remote()
                return False
            except ray.exceptions.ActorDiedError:
                return True
            except ray.exceptions.RayActorError:  # unreachable for a moment: ask again
                await asyncio.sleep(1.0)
