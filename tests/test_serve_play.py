"""Playing through the real path: HTTP + websocket via Ray Serve, EnvsManager, EnvActor, real ALE."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import numpy as np
import pytest
import ray
import websockets

from crowdplay import protocol
from crowdplay.client import Participant, ServerError, http_json
from crowdplay.env_actor import UnknownHostedSession
from crowdplay.environments.replay import replay_screens
from tests.conftest import run


def session_actor(manager, session_id: str):
    return ray.get(manager.session_actor.remote(session_id))


def test_the_library_lists_the_seven_games(base_url):
    ids = {env["id"] for env in http_json(f"{base_url}/api/environments")["environments"]}
    assert {"SpaceInvaders", "Breakout", "Pong", "MontezumaRevenge", "Riverraid", "Qbert", "BeamRider"} <= ids


def test_play_frames_are_lossless_and_keys_apply_on_the_next_tick(base_url, manager):
    async def scenario():
        async with await Participant.join(base_url, "SpaceInvaders") as player:
            assert player.hello["width"] == 160 and player.hello["height"] == 210 and player.hello["palette"]
            frames = [await player.next_frame() for _ in range(120)]
            seq = await player.press({"Space"})
            after = [await player.next_frame() for _ in range(30)]
            await player.press(set())
            frames += after + [await player.next_frame() for _ in range(10)]
            return player.session["session_id"], frames, seq, after

    session_id, frames, seq, after = run(scenario())
    actor = session_actor(manager, session_id)
    episode = ray.get(actor.episodes.remote(session_id))[-1]
    log = ray.get(actor.input_log.remote(session_id))

    # Every received frame equals the emulator's screen at that step (replayed from seed + actions).
    replayed = list(replay_screens("SpaceInvaders", episode["seed"], episode["actions"]["agent_0"], episode["start_state"]))
    assert frames[0][0].keyframe
    for header, screen in frames:
        assert np.array_equal(screen, replayed[header.env_step])

    # The key was applied on the tick right after it arrived, and frames acknowledge it.
    fire = next(entry for entry in log if entry["seq"] == seq)
    assert fire["action"] == 1 and fire["keys"] == ["Space"]
    assert fire["applied_tick"] == fire["received_tick"] + 1
    assert episode["actions"]["agent_0"][fire["env_step"]] == 1
    assert all(action == 0 for action in episode["actions"]["agent_0"][: frames[100][0].env_step])
    assert any(header.input_seq == seq for header, _ in after)


def test_unknown_environment_is_a_404_with_a_reason(base_url):
    with pytest.raises(ServerError) as refused:
        http_json(f"{base_url}/api/sessions", {"env_id": "NoSuchGame"})
    assert refused.value.status == 404
    assert "NoSuchGame" in refused.value.body["reason"]


@pytest.mark.parametrize("body", [b"{oops", b'{"env": 1}', b'["SpaceInvaders"]', b"x" * 5000])
def test_bad_session_requests_are_4xx_with_a_reason(base_url, body):
    request = urllib.request.Request(f"{base_url}/api/sessions", data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code in (400, 413)
    assert json.loads(refused.value.read())["reason"]


def test_unknown_routes_answer_json(base_url):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base_url}/api/nothing-here", timeout=10)
    assert refused.value.code == 404
    assert json.loads(refused.value.read())["reason"]


BAD_MESSAGES = [
    ("{not json", protocol.CLOSE_INVALID_PAYLOAD),
    (json.dumps({"type": "keys", "keys": ["Space"], "pad": "x" * 4000}), protocol.CLOSE_TOO_BIG),
    (json.dumps({"type": "warp", "to": 9}), protocol.CLOSE_POLICY_VIOLATION),
    (json.dumps({"type": "action", "action": 99}), protocol.CLOSE_POLICY_VIOLATION),
    (json.dumps({"type": "action", "action": -1}), protocol.CLOSE_POLICY_VIOLATION),
    (b"\x00\x01binary", protocol.CLOSE_UNSUPPORTED_DATA),
]


@pytest.mark.parametrize(("message", "code"), BAD_MESSAGES)
def test_bad_websocket_messages_get_an_error_and_a_close_code_and_the_game_survives(base_url, manager, message, code):
    async def scenario():
        player = await Participant.join(base_url, "Pong")
        await player.next_frame()
        await player.send_raw(message)
        await player.wait_closed()
        # The same participant reconnects to the same session, which kept running.
        again = await Participant.connect(base_url, player.session)
        header, _ = await again.next_frame()
        await again.press({"ArrowUp"})
        await again.close()
        return player, header

    player, header = run(scenario())
    errors = [event for event in player.events if event["type"] == "error"]
    assert errors and errors[-1]["reason"] and errors[-1]["code"] == code
    assert player.websocket.close_code == code
    assert header.keyframe and header.frame_id > 0
    actor = session_actor(manager, player.session["session_id"])
    assert ray.get(actor.game_state.remote(player.session["session_id"]))["running"]


@pytest.mark.parametrize(
    ("path", "code"),
    [("/ws/nosuchsession?token=x", protocol.CLOSE_UNKNOWN_SESSION), (None, protocol.CLOSE_UNAUTHORIZED)],
)
def test_unknown_sessions_and_wrong_tokens_are_refused(base_url, path, code):
    async def scenario():
        nonlocal path
        if path is None:
            session = http_json(f"{base_url}/api/sessions", {"env_id": "Pong"})
            path = f"/ws/{session['session_id']}?token=not-the-token"
        async with websockets.connect(base_url.replace("http", "ws") + path) as ws:
            error = json.loads(await ws.recv())
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return error, ws.close_code

    error, close_code = run(scenario())
    assert error["type"] == "error" and error["code"] == code
    assert close_code == code


def watch_game(env_actor, session_id: str) -> None:
    """Inside an EnvActor: weak references to one game's objects, so a test can tell whether they
    were freed without counting the other games that share the process."""
    import weakref

    hosted = env_actor._game(session_id)
    env_actor.watched = {
        type(game_object).__name__: weakref.ref(game_object)
        for game_object in (hosted.lineup, hosted.live, hosted.live.adapter, hosted.channel)
    }


def still_alive(env_actor) -> list[str]:
    return [name for name, ref in env_actor.watched.items() if ref() is not None]


def holders(env_actor) -> dict[str, list[str]]:
    """What still refers to each watched object that outlived its game (so a failure names the
    cycle or the reference instead of only the survivors)."""
    import gc
    import types

    def describe(referrer: object) -> str:
        if isinstance(referrer, types.FrameType):
            return f"frame {referrer.f_code.co_qualname} line {referrer.f_lineno}"
        if isinstance(referrer, types.CoroutineType):
            return f"coroutine {referrer.__qualname__}"
        if isinstance(referrer, dict):
            owners = [type(owner).__name__ for owner in gc.get_referrers(referrer) if getattr(owner, "__dict__", None) is referrer]
            return f"dict of {owners or 'no object'} keys {sorted(map(str, referrer))[:8]}"
        return type(referrer).__qualname__ + (f" {referrer.__qualname__}" if hasattr(referrer, "__qualname__") else "")

    found = {}
    for name, ref in env_actor.watched.items():
        survivor = ref()
        if survivor is not None:
            found[name] = [describe(referrer) for referrer in gc.get_referrers(survivor) if referrer is not env_actor.watched][:12]
    return found


def collect_then_disable_gc(env_actor) -> None:
    import gc

    gc.collect()
    gc.disable()


def enable_gc(env_actor) -> None:
    import gc

    gc.enable()


def test_leaving_ends_the_session_after_the_grace_period_and_frees_its_slot(base_url, manager, settings):
    # An ended game must be freed by reference counting the moment it ends: a reference cycle
    # left each ended game's emulator (~2 MB) to the rare full collections of a process whose
    # start-up objects are frozen (gc.freeze), and EnvActors grew in the soak. With the cyclic
    # collector off, anything a cycle holds stays alive for good; a reference held by a task
    # that is just finishing lets go within a tick or two.
    async def scenario():
        player = await Participant.join(base_url, "Breakout")
        await player.next_frame()
        actor = await manager.session_actor.remote(player.session["session_id"])
        await actor.__ray_call__.remote(watch_game, player.session["session_id"])
        await actor.__ray_call__.remote(collect_then_disable_gc)
        await player.next_frame()
        await player.close()
        return player.session["session_id"], actor

    session_id, actor = run(scenario())
    assert any(s["session_id"] == session_id for s in ray.get(manager.list_sessions.remote()))

    async def wait_gone():
        for _ in range(int(settings.reconnect_grace_s * 10) + 50):
            sessions = await manager.list_sessions.remote()
            if all(s["session_id"] != session_id for s in sessions):
                return True
            await asyncio.sleep(0.1)
        return False

    async def wait_freed():
        for _ in range(50):  # a loaded machine can take a few ticks longer to let go
            alive = await actor.__ray_call__.remote(still_alive)
            if not alive:
                return alive
            await asyncio.sleep(0.1)
        return alive

    try:
        assert run(wait_gone())
        with pytest.raises(UnknownHostedSession):  # its slot in the EnvActor process is free again
            ray.get(actor.game_state.remote(session_id))
        assert run(wait_freed()) == [], ray.get(actor.__ray_call__.remote(holders))
    finally:
        ray.get(actor.__ray_call__.remote(enable_gc))


def test_a_participant_whose_env_actor_dies_is_told_so(base_url, manager):
    async def scenario():
        player = await Participant.join(base_url, "Qbert")
        await player.next_frame()
        ray.kill(await manager.session_actor.remote(player.session["session_id"]))
        await player.wait_closed(timeout=30)
        return player

    player = run(scenario())
    errors = [event for event in player.events if event["type"] == "error"]
    assert errors and errors[-1]["code"] == protocol.CLOSE_INTERNAL_ERROR
    assert player.websocket.close_code == protocol.CLOSE_INTERNAL_ERROR
