"""Closing a broken connection lets go of everything its handler held (``crowdplay.wire.close_writer``).

A connection whose peer went away while frames were being written to it breaks (EPIPE or a reset);
the stream keeps that error and raises it from ``wait_closed``. Caught with its traceback, the
error held the handler's frame and the frame the stream: a reference cycle that kept a game's
objects alive until a full collection, which EnvActors, with their start-up objects frozen, run
rarely.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from crowdplay.wire import close_writer


class Game:
    """Stands for what a frame channel's handler holds: the game, through the server's bound method."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(200):  # frames, until the write fails because the participant has gone
                if writer.is_closing():
                    break
                writer.write(b"frame" * 20)
                await asyncio.sleep(0.002)
        finally:
            await close_writer(writer)


async def a_broken_connection() -> weakref.ref[Game]:
    game = Game()
    held = weakref.ref(game)
    server = await asyncio.start_server(game.serve, "127.0.0.1", 0)
    del game
    port = server.sockets[0].getsockname()[1]
    participant = socket.create_connection(("127.0.0.1", port))
    await asyncio.sleep(0.05)
    participant.close()  # gone, with frames still coming
    await asyncio.sleep(0.8)
    server.close()
    await server.wait_closed()
    del server
    await asyncio.sleep(0.05)
    return held


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_a_connection_broken_under_its_writes_frees_its_game_without_the_cyclic_collector(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    gc.collect()
    gc.disable()
    try:
        held = run(a_broken_connection())
        assert held() is None
    finally:
        gc.enable()


async def a_close_to_a_peer_that_reads_nothing() -> tuple[float, weakref.ref[Game]]:
    """A handler closes its connection with more written than the peer's socket took: the peer is
    alive but reads nothing (a stuck process, a link cut without a reset)."""
    closed_after: list[float] = []

    class Stuck(Game):
        async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"frame" * 2_000_000)  # 10 MB: more than both sockets' buffers hold
            started = asyncio.get_running_loop().time()
            await close_writer(writer, timeout_s=0.5)
            closed_after.append(asyncio.get_running_loop().time() - started)

    game = Stuck()
    held = weakref.ref(game)
    server = await asyncio.start_server(game.serve, "127.0.0.1", 0)
    del game
    participant = socket.create_connection(("127.0.0.1", server.sockets[0].getsockname()[1]))
    for _ in range(100):
        if closed_after:
            break
        await asyncio.sleep(0.05)
    server.close()
    await server.wait_closed()
    del server
    await asyncio.sleep(0.05)
    participant.close()
    return (closed_after or [float("inf")])[0], held


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_a_close_to_a_peer_that_reads_nothing_gives_up_after_its_timeout_and_frees_its_game(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    """Before, the close waited for the unsent bytes for as long as the peer lived (a cut link:
    TCP's retransmissions, many minutes), and the handler held its game all that time."""
    gc.collect()
    gc.disable()
    try:
        closed_after, held = run(a_close_to_a_peer_that_reads_nothing())
        assert 0.4 < closed_after < 2.0
        assert held() is None
    finally:
        gc.enable()
