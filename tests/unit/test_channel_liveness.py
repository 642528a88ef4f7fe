"""A frame channel whose link is cut (a frozen relay: nothing forwarded, nothing reset) is noticed by
the ingress end within its stall deadline, whatever the game is doing (playing, paused), and never
while the link is alive but the consumer is slow or the server only busy; a probe tells a silent
machine from one that answers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from crowdplay import protocol
from crowdplay.channel import HUNG_AFTER_STALLS, ChannelClient, ChannelServer, ChannelStalled, channel_answers
from crowdplay.config import Settings, free_port
from crowdplay.controllers import Human
from crowdplay.engagement import PageEvent
from crowdplay.environments import get_env
from crowdplay.lineup import Lineup
from crowdplay.realtime import LiveEnv
from tests.relay import Relay

SETTINGS = replace(Settings(), channel_stall_s=0.5)


async def game_behind_relay() -> tuple[LiveEnv, Lineup, ChannelServer, Relay]:
    live = LiveEnv(get_env("SpaceInvaders"), 0, SETTINGS)
    lineup = Lineup(live, SETTINGS)
    lineup.take("agent_0", "s1", Human("p1"), {})
    server = ChannelServer(lineup, "the-secret", SETTINGS.frame_backpressure, SETTINGS.channel_stall_s)
    port = await server.start("127.0.0.1")
    relay = Relay("127.0.0.1", port)
    await relay.start()
    return live, lineup, server, relay


async def connect(relay: Relay) -> ChannelClient:
    return await ChannelClient.connect(relay.host, relay.port, "the-secret", "agent_0", "s1", stall_s=SETTINGS.channel_stall_s)


async def until_stalled(stream) -> float:
    """Consume the stream until it stalls; the seconds from the call to ``ChannelStalled``."""
    started = time.monotonic()
    with pytest.raises(ChannelStalled):
        async for _ in stream:
            pass
    return time.monotonic() - started


async def until_play(stream) -> None:
    async for message in stream:
        if message == protocol.text("play"):
            return


def test_a_cut_link_during_play_is_noticed_within_the_deadline_and_the_game_hears_of_it_once_the_link_returns():
    async def scenario():
        live, lineup, server, relay = await game_behind_relay()
        client = await connect(relay)
        stream = client.messages()
        await until_play(stream)
        for _ in range(30):
            await stream.__anext__()
        relay.freeze()
        frozen_at = time.monotonic()
        waited = await until_stalled(stream)
        detected = time.monotonic() - frozen_at
        still_seated = lineup.seats["agent_0"].subscriber is not None  # the game cannot know yet
        await relay.thaw()  # the ingress's reset arrives now
        for _ in range(100):
            if lineup.seats["agent_0"].subscriber is None:
                break
            await asyncio.sleep(0.02)
        gone = lineup.seats["agent_0"].subscriber is None
        live.stop("test over")
        server.close()
        await relay.close()
        return waited, detected, still_seated, gone

    waited, detected, still_seated, gone = asyncio.run(scenario())
    print(f"stall noticed {detected:.2f} s after the link was cut (deadline {SETTINGS.channel_stall_s} s)")
    assert SETTINGS.channel_stall_s - 0.05 <= detected <= SETTINGS.channel_stall_s + 0.5
    assert still_seated and gone


def test_a_paused_game_stays_alive_on_heartbeats_and_its_cut_link_is_still_noticed():
    async def scenario():
        live, lineup, server, relay = await game_behind_relay()
        client = await connect(relay)
        stream = client.messages()
        await until_play(stream)
        await client.send_page(PageEvent("hidden"))
        async for message in stream:  # frames until the game says it paused
            if isinstance(message, str) and '"paused"' in message:
                break
        paused_frame = live.frame_id
        quiet = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(3 * SETTINGS.channel_stall_s)  # no frame comes while paused: only heartbeats
        alive = not quiet.done()
        relay.freeze()
        frozen_at = time.monotonic()
        with pytest.raises(ChannelStalled):
            await quiet
        detected = time.monotonic() - frozen_at
        steps_while_paused = live.frame_id - paused_frame
        live.stop("test over")
        server.close()
        await relay.close()
        return alive, detected, live.paused_for, steps_while_paused

    alive, detected, paused_for, _ = asyncio.run(scenario())
    print(f"paused game: stall noticed {detected:.2f} s after the link was cut")
    assert alive and paused_for == "agent_0"
    assert detected <= SETTINGS.channel_stall_s + 0.5


def test_a_slow_consumer_never_trips_the_deadline():
    """The deadline runs only while the ingress waits to read: a participant whose websocket holds
    a message for longer than it is not judged unreachable."""

    async def scenario():
        live, lineup, server, relay = await game_behind_relay()
        client = await connect(relay)
        stream = client.messages()
        await until_play(stream)
        await stream.__anext__()
        await asyncio.sleep(3 * SETTINGS.channel_stall_s)  # the consumer holds the message
        following = [await stream.__anext__() for _ in range(10)]
        await client.close()
        live.stop("test over")
        server.close()
        await relay.close()
        return following

    assert len(asyncio.run(scenario())) == 10


def test_a_probe_tells_a_silent_machine_from_one_that_answers():
    async def scenario():
        live, lineup, server, relay = await game_behind_relay()
        answering = await channel_answers(relay.host, relay.port, 1.0)
        relay.freeze()
        started = time.monotonic()
        silent = await channel_answers(relay.host, relay.port, 1.0)
        waited = time.monotonic() - started
        await relay.thaw()
        again = await channel_answers(relay.host, relay.port, 1.0)
        refused = await channel_answers("127.0.0.1", free_port(), 1.0)  # the machine answers: nothing listens there
        live.stop("test over")
        server.close()
        await relay.close()
        return answering, silent, waited, again, refused

    answering, silent, waited, again, refused = asyncio.run(scenario())
    assert answering and not silent and again and refused
    assert waited < 1.5  # the probe gives up after its timeout


@contextlib.contextmanager
def server_in_a_thread(settings: Settings = SETTINGS) -> Iterator[tuple[int, asyncio.AbstractEventLoop]]:
    """A game's channel server on an event loop of its own in another thread (its own process, in
    production): its port and its loop."""
    ready: dict = {}
    server_loop = asyncio.new_event_loop()

    async def start_server():
        live = LiveEnv(get_env("SpaceInvaders"), 0, settings)
        lineup = Lineup(live, settings)
        lineup.take("agent_0", "s1", Human("p1"), {})
        server = ChannelServer(lineup, "the-secret", settings.frame_backpressure, settings.channel_stall_s)
        ready.update(live=live, server=server, port=await server.start("127.0.0.1"))

    thread = threading.Thread(target=server_loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start_server(), server_loop).result(timeout=30)
    try:
        yield ready["port"], server_loop
    finally:
        async def stop():
            ready["live"].stop("test over")
            ready["server"].close()

        asyncio.run_coroutine_threadsafe(stop(), server_loop).result(timeout=30)
        server_loop.call_soon_threadsafe(server_loop.stop)
        thread.join(timeout=10)


def test_an_ingress_loop_held_up_longer_than_the_deadline_does_not_take_a_live_server_for_silent():
    """The server keeps sending while the ingress's event loop is blocked for three deadlines: when
    it runs again, the deadline's timer and the data come due together, and the data wins."""

    async def scenario(port: int):
        client = await ChannelClient.connect("127.0.0.1", port, "the-secret", "agent_0", "s1", stall_s=SETTINGS.channel_stall_s)
        stream = client.messages()
        await until_play(stream)
        await stream.__anext__()
        waiting = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)  # the read is under way, its deadline running
        time.sleep(3 * SETTINGS.channel_stall_s)  # this loop is held up; the server sends on
        following = [await waiting] + [await stream.__anext__() for _ in range(10)]
        await client.close()
        return following

    with server_in_a_thread() as (port, _):
        assert len(asyncio.run(scenario(port))) == 11


def test_a_game_server_too_busy_to_send_is_waited_for_while_its_machine_answers_and_given_up_once_hung():
    """The server's event loop is held up (a process starved of CPU on a loaded machine): its machine
    still completes TCP handshakes, so three deadlines of silence are waited out and play goes on;
    silence past ``HUNG_AFTER_STALLS`` deadlines is given up all the same."""
    settings = replace(Settings(), channel_stall_s=0.3)

    async def scenario(port: int, server_loop: asyncio.AbstractEventLoop, held_s: float) -> tuple[int, float]:
        client = await ChannelClient.connect("127.0.0.1", port, "the-secret", "agent_0", "s1", stall_s=settings.channel_stall_s)
        stream = client.messages()
        await until_play(stream)
        await stream.__anext__()
        server_loop.call_soon_threadsafe(time.sleep, held_s)
        started = time.monotonic()
        try:
            return len([await stream.__anext__() for _ in range(10)]), time.monotonic() - started
        except ChannelStalled:
            return 0, time.monotonic() - started
        finally:
            await client.close()

    with server_in_a_thread(settings) as (port, server_loop):
        received, waited = asyncio.run(scenario(port, server_loop, 3 * settings.channel_stall_s))
        assert received == 10 and waited >= 2 * settings.channel_stall_s
    hung_after = settings.channel_stall_s * HUNG_AFTER_STALLS
    with server_in_a_thread(settings) as (port, server_loop):
        received, waited = asyncio.run(scenario(port, server_loop, hung_after + 1.5))
        assert received == 0 and hung_after <= waited <= hung_after + 2 * settings.channel_stall_s


def test_a_silent_ingress_is_noted_as_a_lost_link_and_a_one_player_game_pauses_until_it_speaks_again():
    """The game server hears nothing from the seat's ingress for its deadline (the link is cut; the
    ingress's own deadline is longer here, so it waits): the participant's link is noted lost and
    the one-player game stops stepping; when the link returns, it is noted back and play goes on."""

    async def scenario():
        live, lineup, server, relay = await game_behind_relay()
        client = await ChannelClient.connect(relay.host, relay.port, "the-secret", "agent_0", "s1", stall_s=20 * SETTINGS.channel_stall_s)
        stream = client.messages()
        await until_play(stream)
        reading = asyncio.ensure_future(consume(stream))
        await asyncio.sleep(3 * SETTINGS.channel_stall_s)  # an idle participant: the ingress's heartbeats keep the link
        kept = live.paused_for is None
        relay.freeze()
        await asyncio.sleep(3 * SETTINGS.channel_stall_s)
        attention = live.statistics.attention("agent_0")
        lost, paused_for, frame = attention.link_lost, live.paused_for, live.frame_id
        await asyncio.sleep(0.5)
        steps_while_lost = live.frame_id - frame
        await relay.thaw()
        await asyncio.sleep(1.0)
        back, resumed = not attention.link_lost, live.paused_for is None
        reading.cancel()
        await client.close()
        live.stop("test over")
        server.close()
        await relay.close()
        return kept, lost, paused_for, steps_while_lost, back, resumed

    kept, lost, paused_for, steps_while_lost, back, resumed = asyncio.run(scenario())
    assert kept and lost and paused_for == "agent_0" and steps_while_lost == 0
    assert back and resumed


async def consume(stream) -> None:
    async for _ in stream:
        pass
