"""AI-only games and watching, through Serve: a participant joining an AI-only environment
watches a game of their own (a demonstration); a researcher starts one from the dashboard and
watches it, or watches any participant's live game, read-only. Every watch is noted in the
episode's document, and nobody's inputs reach an AI-only game."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import replace

import pytest
from ray import serve

from crowdplay.client import Participant, ServerError
from crowdplay.data import Dataset
from crowdplay.web.ingress import build_app
from tests.conftest import TEST_SETTINGS, episodes_of, run

ADMIN_TOKEN = "watch-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def admin_url(base_url):
    serve.run(build_app(replace(TEST_SETTINGS, admin_token=ADMIN_TOKEN)), name="crowdplay-watch-admin", route_prefix="/watch-admin")
    yield f"{base_url}/watch-admin"
    serve.delete("crowdplay-watch-admin")


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=ADMIN)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def frames_for(viewer: Participant, seconds: float) -> int:
    count, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        await viewer.next_frame()
        count += 1
    return count


def test_a_participant_watches_an_ai_only_game_of_their_own(base_url, manager):
    async def scenario():
        async with await Participant.join(base_url, "TestAIPong") as viewer:
            await viewer.wait_for_event("play", timeout=20)
            await viewer.press({"ArrowUp"})  # a watcher's keys go nowhere
            frames = await frames_for(viewer, 2.0)
            return viewer.session, viewer.hello, frames

    session, hello, frames = run(scenario())
    assert session["watching"] and session["agent"] is None
    assert hello["watching"] and hello["agent"] is None and hello["humans"] == [] and hello["env"]["players"] == 0
    assert frames >= 60  # the demonstration plays (its frame rate is tests/test_watching.py's, timed alone)
    documents = episodes_of(session["game_id"], manager)  # it ends once its only watcher has been gone for the grace (1 s)
    assert documents[-1]["reason"] == "nobody is watching this AI-only game any more"
    assert documents[0]["controllers"] == {"first_0": {"human": False, "policy": "test-ram-bot"}, "second_0": {"human": False, "policy": "test-ram-bot"}}
    assert documents[0]["watched"][0]["who"] == session["participant"] and documents[-1]["watched"][-1]["until"] is not None
    data = Dataset.open(TEST_SETTINGS.store_uri)
    assert all(not data.inputs(document["_id"]) for document in documents)  # no input reached the game
    data.close()


def test_the_dashboard_starts_an_ai_only_game_and_watches_it(admin_url, manager):
    status, started = post(f"{admin_url}/api/admin/games", {"env_id": "TestAIPong"})
    assert status == 201 and started["env_id"] == "TestAIPong"
    assert post(f"{admin_url}/api/admin/games", {"env_id": "Pong"}) [0] == 409  # people play Pong: not without them
    assert post(f"{admin_url}/api/admin/games", {"env_id": "NoSuchGame"})[0] == 404

    async def scenario():
        watch = f"/watch-admin/api/admin/games/{started['game_id']}/watch?token={ADMIN_TOKEN}"
        async with await Participant.connect(admin_url.rsplit("/watch-admin", 1)[0], {"ws": watch}) as viewer:
            frames = await frames_for(viewer, 1.5)
            return viewer.hello, frames

    hello, frames = run(scenario())
    assert hello["watching"] and hello["game_id"] == started["game_id"] and hello["session_id"] is None
    assert frames >= 45
    documents = episodes_of(started["game_id"], manager)
    assert [entry["who"] for entry in documents[0]["watched"]] == ["dashboard"]


def test_the_dashboard_watches_a_participants_game_without_touching_it(base_url, admin_url, manager):
    async def scenario():
        async with await Participant.join(base_url, "SpaceInvaders") as player:
            await player.wait_for_event("play")
            watch = f"/watch-admin/api/admin/games/{player.session['game_id']}/watch?token={ADMIN_TOKEN}"
            viewer = await Participant.connect(base_url, {"ws": watch})
            watched = await frames_for(viewer, 1.0)
            await viewer.websocket.send(json.dumps({"type": "keys", "keys": ["Space"], "frame": 0, "seq": 1}))  # goes nowhere
            played = await frames_for(player, 1.0)
            await viewer.close()
            with pytest.raises(ServerError) as refused:
                await Participant.connect(base_url, {"ws": watch.replace(ADMIN_TOKEN, "wrong")})
            return player.session, watched, played, refused.value

    session, watched, played, refused = run(scenario())
    assert watched >= 30 and played >= 30
    assert refused.body["type"] == "error" and "admin token" in refused.body["reason"]
    documents = episodes_of(session["game_id"], manager)
    assert documents[0]["watched"][0]["who"] == "dashboard" and documents[0]["watched"][0]["until"] is not None
    assert documents[0]["controllers"]["agent_0"]["human"]


@pytest.mark.parametrize(("env_id", "expected"), [
    ("TestMisconfigured", "crowdplay: environment 'TestMisconfigured' could not be built: ValueError: environment 'TestMisconfigured': "
                          "instructions names agents ['agent_1'] the environment does not have (['agent_0']) (crowdplay check tries every environment)"),
    # before, a game without a screen failed after its build, and the participant was told to retry (503), the console nothing
    ("TestNoScreen", "crowdplay: environment 'TestNoScreen' could not be built: TypeError: environment 'TestNoScreen' must be made with "
                     "render_mode='rgb_array': its render() returned None, not an HxWx3 image (crowdplay check tries every environment)"),
])
def test_a_game_that_cannot_be_built_is_refused_with_why_not_please_retry(base_url, manager, capsys, env_id, expected):
    from tests.test_policy_actors import console_reports

    status, body = None, None
    request = urllib.request.Request(f"{base_url}/api/sessions", data=json.dumps({"env_id": env_id}).encode(), method="POST")
    for _ in range(2):  # and again: the same answer, not a retry that might work
        try:
            urllib.request.urlopen(request, timeout=60)
        except urllib.error.HTTPError as error:
            status, body = error.code, json.loads(error.read())
        assert status == 500 and body["error"] == "environment_failed" and env_id in body["reason"]
    console = console_reports(manager, capsys)
    assert console.count(expected) == 1, console
