"""The frame channel between an EnvActor and the ingress: authenticated, flow-controlled, two-way."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from crowdplay import codec, protocol
from crowdplay.channel import ChannelClient, ChannelServer
from crowdplay.config import Settings
from crowdplay.controllers import Human
from crowdplay.environments import get_env
from crowdplay.environments.replay import replay_screens
from crowdplay.inputs import ParticipantInput
from crowdplay.lineup import Lineup
from crowdplay.realtime import LiveEnv


def run(coroutine):
    return asyncio.run(coroutine)


async def serve(env_id: str = "SpaceInvaders", window: int = 2):
    """A game with its one seat taken by session "s1" (who starts it by connecting)."""
    live = LiveEnv(get_env(env_id), 0, Settings())
    lineup = Lineup(live, Settings())
    lineup.take("agent_0", "s1", Human("p1"), {})
    server = ChannelServer(lineup, "the-secret", window)
    port = await server.start("127.0.0.1")
    return live, server, port


def test_frames_and_inputs_travel_over_the_channel():
    async def scenario():
        live, server, port = await serve()
        client = await ChannelClient.connect("127.0.0.1", port, "the-secret", "agent_0", "s1")
        decoder = codec.FrameDecoder((210, 160))
        received = []
        async for message in client.messages():
            if isinstance(message, str):
                continue  # the lineup's events (lobby, play)
            header, screen = decoder.decode(message)
            received.append((header, screen.copy()))
            if len(received) == 20:
                await client.send_input(ParticipantInput.holding(["Space"], header.frame_id, 7))
            if len(received) == 40:
                break
        record, log = live.episodes[-1], list(live.input_log)
        await client.close()
        live.stop("test over")
        server.close()
        return received, record, log

    received, record, log = run(scenario())
    assert log[0].action == 1 and log[0].input.seq == 7
    assert received[-1][0].input_seq == 7
    replayed = list(replay_screens("SpaceInvaders", record.seed, record.actions["agent_0"], record.start_state))
    for header, screen in received:
        assert np.array_equal(screen, replayed[header.env_step])


def test_a_wrong_secret_gets_nothing():
    async def scenario():
        live, server, port = await serve()
        client = await ChannelClient.connect("127.0.0.1", port, "guessed", "agent_0", "s1")
        messages = [m async for m in client.messages()]
        live.stop("test over")
        server.close()
        return messages, live.stats()

    messages, stats = run(scenario())
    assert messages == []
    assert stats["subscribers"] == [] and not stats["running"]


async def next_frame(stream) -> bytes:
    """The next frame message, past any events (live statistics arrive every two seconds)."""
    while isinstance(message := await stream.__anext__(), str):
        pass
    return message


def test_a_consumer_that_stops_acknowledging_holds_only_the_window():
    """Events (the lobby, live statistics every two seconds) may take window slots at any moment,
    so the test counts frames against the game's own frame ids rather than expecting an order."""

    async def scenario():
        live, server, port = await serve(window=2)
        client = await ChannelClient.connect("127.0.0.1", port, "the-secret", "agent_0", "s1")
        stream = client.messages()
        async for message in stream:  # the waiting room's first screen and events, until play begins
            if message == protocol.text("play"):
                break
        first = await next_frame(stream)  # read one and then stall without asking for more
        sent_at_first = live.stats()["subscribers"][0]["frames_sent"]
        await asyncio.sleep(0.5)  # ~30 ticks pass
        sent_during_stall = live.stats()["subscribers"][0]["frames_sent"] - sent_at_first
        stall_ended_at = live.frame_id
        after = []  # frames read after the stall, up to and including the first one made after it
        while not after or codec.parse_header(after[-1])[0].frame_id < stall_ended_at:
            after.append(await next_frame(stream))
        await client.close()
        live.stop("test over")
        server.close()
        return first, after, sent_during_stall, stall_ended_at

    first, after, sent_during_stall, stall_ended_at = run(scenario())
    assert stall_ended_at - codec.parse_header(first)[0].frame_id > 20  # the game went on meanwhile
    assert sent_during_stall <= 1  # no backlog: at most the one frame already in the window
    stale = [m for m in after if codec.parse_header(m)[0].frame_id < stall_ended_at]
    assert len(stale) <= 1  # after the stall the newest frame comes next, not the queue


def test_refused_inputs_come_back_as_an_error_event():
    async def scenario():
        live, server, port = await serve("Pong")
        client = await ChannelClient.connect("127.0.0.1", port, "the-secret", "agent_0", "s1")
        await client.send_input(ParticipantInput.choosing(42, 0, 1))
        events = [m for m in [m async for m in client.messages()] if isinstance(m, str)]
        live.stop("test over")
        server.close()
        return events

    events = run(scenario())
    error = json.loads(events[-1])
    assert error["type"] == "error" and error["code"] == protocol.CLOSE_POLICY_VIOLATION and "42" in error["reason"]
