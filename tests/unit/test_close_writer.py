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
