"""A researcher's own directory, as they use it: a plugin module next to them, ``crowdplay serve``
and ``crowdplay data`` run there with nothing but ``CROWDPLAY_PLUGINS`` and ``CROWDPLAY_STORE_URI``
(no PYTHONPATH), participants playing its games through the real server, and every way an
episode ends stored with the status that says what happened.

One ``crowdplay serve`` (the installed command, in a fresh temporary directory) is shared by the
tests that play; the broken plugins' servers never get past their start.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from crowdplay.client import Participant, http_json
from crowdplay.config import free_port
from crowdplay.data import Dataset
from tests.conftest import CROWDPLAY_COMMAND, researcher_environment, serve_plugin

#: The researcher's plugin: an Atari game under a name of its own, and a Gymnasium game whose
#: episodes end by themselves within seconds (MountainCar's 200-step time limit; action 1 is
#: "don't accelerate", a real no-op). A one-second reconnect grace keeps the leaving test short.
PLUGIN = '''
"""My study's games."""
from dataclasses import replace

import gymnasium as gym

from crowdplay.environments import EnvSpec, Keymap, get_env, register_env

register_env(replace(get_env("Pong"), id="MyPong", title="My Pong", reconnect_grace_s=1.0))


def make_car():
    return gym.make("MountainCar-v0", render_mode="rgb_array")


register_env(EnvSpec(
    id="MyCar", title="Mountain car", description="Reach the flag.", make_env=make_car,
    keymap=Keymap({"ArrowLeft": 0, "ArrowRight": 2}, noop=1), reconnect_grace_s=1.0,
))
'''

#: A plugin that raises while it is imported, on its line 4.
BROKEN_PLUGIN = '''
"""A study module with a mistake in it."""
GAMES = ["MyPong"]
raise RuntimeError("the study's configuration is incomplete")
'''


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Any:
    """``crowdplay serve`` running in a fresh directory holding ``my_envs.py``."""
    with serve_plugin(tmp_path_factory.mktemp("my-study"), "my_envs", PLUGIN, "crowdplay-researcher-test") as served:
        yield served


def crowdplay_data(study: dict, *args: str) -> subprocess.CompletedProcess:
    """``crowdplay data ARGS`` run in the study's directory with its two settings (no PYTHONPATH)."""
    env = researcher_environment(study["directory"], CROWDPLAY_PLUGINS="my_envs", CROWDPLAY_STORE_URI=str(study["store"]))
    done = subprocess.run([*CROWDPLAY_COMMAND, "data", *args], cwd=study["directory"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def stored_episode(store: Path, game_id: str, status: str, episode: int = 0, timeout_s: float = 30.0) -> dict:
    """The game's episode number ``episode`` once it is stored with ``status`` (the writer stores
    it a moment after it ends)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with Dataset.open(str(store)) as data:
            found = [doc for doc in data.episodes() if doc.get("game_id") == game_id and doc.get("episode") == episode]
        if found and found[0].get("status") == status:
            return found[0]
        assert time.monotonic() < deadline, f"game {game_id}: episodes {[(d['_id'], d.get('status'), d.get('reason')) for d in found]}"
        time.sleep(0.2)


async def play(player: Participant, frames: int, keys: tuple[str, ...] = ()) -> None:
    """Watch ``frames`` frames, holding ``keys`` from the first on."""
    await player.next_frame(30)
    if keys:
        await player.press(set(keys))
    for _ in range(frames):
        await player.next_frame(30)


def test_a_plugin_in_the_working_directory_is_played_finished_and_listed(study):
    """The plugin's game is offered and played; Finish through the API stores the episode as
    ``finished``; ``crowdplay data list`` run in the same directory finds it (and says which store
    it read, on stderr)."""
    url = study["url"]
    assert {"MyPong", "MyCar"} <= {env["id"] for env in http_json(f"{url}/api/environments")["environments"]}

    async def scenario() -> dict:
        player = await Participant.join(url, "MyPong")
        await play(player, 180, keys=("ArrowUp",))
        session = player.session
        summary = await asyncio.to_thread(http_json, f"{url}/api/sessions/{session['session_id']}/finish?token={session['token']}", {})
        await player.wait_closed(10)
        return {**session, "summary": summary}

    session = asyncio.run(scenario())
    assert session["summary"]["finished"] is True
    episode = stored_episode(study["store"], session["game_id"], "finished")
    assert episode["env_id"] == "MyPong" and episode["steps"] >= 180
    assert episode["reason"] == "the participant playing agent_0 finished playing"

    listed = crowdplay_data(study, "list", "--json", "--env", "MyPong", "--status", "finished")
    assert [doc["_id"] for doc in json.loads(listed.stdout)] == [episode["_id"]]
    assert f"reading the embedded store {study['store']} (CROWDPLAY_STORE_URI)" in listed.stderr
    assert json.loads(crowdplay_data(study, "list", "--json", "--env", "MyPong", "--completed").stdout) == []
    incomplete = json.loads(crowdplay_data(study, "list", "--json", "--env", "MyPong", "--incomplete").stdout)
    assert episode["_id"] in [doc["_id"] for doc in incomplete]


def test_leaving_without_finish_is_interrupted_and_a_natural_end_is_complete(study):
    """A participant who closes the page and does not come back within the reconnect grace: the
    episode is ``interrupted``, with why. A MountainCar episode its time limit ends is
    ``complete`` (truncated), and the next one, left, ``interrupted``."""

    async def scenario() -> tuple[dict, dict]:
        leaver = await Participant.join(study["url"], "MyPong")
        await play(leaver, 60)
        await leaver.close()
        car = await Participant.join(study["url"], "MyCar")
        await play(car, 230)  # the time limit is 200 steps: the first episode ends by itself
        await car.close()
        return leaver.session, car.session

    left, car = asyncio.run(scenario())
    episode = stored_episode(study["store"], left["game_id"], "interrupted")
    assert episode["reason"] == "the participant playing agent_0 left the game and no AI can take their place"
    ended = stored_episode(study["store"], car["game_id"], "complete")
    assert ended["env_id"] == "MyCar" and ended["steps"] == 200 and ended["truncated"] and not ended["terminated"]
    after = stored_episode(study["store"], car["game_id"], "interrupted", episode=1)
    with Dataset.open(str(study["store"])) as data:
        assert after["_id"] in [doc["_id"] for doc in data.episodes(status="interrupted")]
        assert after["_id"] not in [doc["_id"] for doc in data.episodes(completed=True)]


def test_a_plugin_that_raises_on_import_fails_the_start_before_ray_with_what_went_wrong(tmp_path):
    (tmp_path / "broken_envs.py").write_text(BROKEN_PLUGIN)
    env = researcher_environment(tmp_path, CROWDPLAY_PLUGINS="broken_envs", CROWDPLAY_STORE_URI=str(tmp_path / "recordings.db"))
    started = time.monotonic()
    done = subprocess.run(
        [*CROWDPLAY_COMMAND, "serve", "--port", str(free_port())], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1 and elapsed < 20, (elapsed, done.stdout[-2000:], done.stderr[-2000:])
    message = done.stderr
    assert "plugin module 'broken_envs'" in message and "cannot be imported" in message
    assert "RuntimeError: the study's configuration is incomplete" in message
    assert f"at {tmp_path / 'broken_envs.py'}, line 4" in message
    assert f"looked for in: {tmp_path} (the working directory)" in message
    assert "Traceback" not in message and "CrowdPlay is running" not in done.stdout
    assert not (tmp_path / "recordings.db").exists()  # nothing started


#: A plugin that imports in the command but raises in Ray's processes, as one whose data file is
#: missing on a node would.
RAY_ONLY_BROKEN_PLUGIN = '''
import ray

if ray.is_initialized():
    raise RuntimeError("this node lacks the study's data")
'''


def test_a_plugin_that_fails_in_rays_processes_fails_the_start_with_its_message(tmp_path):
    (tmp_path / "node_envs.py").write_text(RAY_ONLY_BROKEN_PLUGIN)
    env = researcher_environment(
        tmp_path, CROWDPLAY_PLUGINS="node_envs", CROWDPLAY_STORE_URI=str(tmp_path / "recordings.db"),
        CROWDPLAY_NAMESPACE="crowdplay-broken-node-test", RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="0",
    )
    done = subprocess.run(
        [*CROWDPLAY_COMMAND, "serve", "--port", str(free_port())], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 1, (done.stdout[-2000:], done.stderr[-3000:])
    message = done.stderr[done.stderr.index("crowdplay serve could not start"):]
    assert message.startswith("crowdplay serve could not start: a Ray process could not import a plugin.")
    assert "plugin module 'node_envs'" in message and "RuntimeError: this node lacks the study's data" in message
    assert f"at {tmp_path / 'node_envs.py'}, line 5" in message and f"{tmp_path} (the working directory)" in message
    assert "CrowdPlay is running" not in done.stdout


def test_a_missing_plugin_names_the_directories_searched(tmp_path):
    env = researcher_environment(tmp_path, CROWDPLAY_PLUGINS="my_envs", CROWDPLAY_STORE_URI=str(tmp_path / "recordings.db"))
    done = subprocess.run([*CROWDPLAY_COMMAND, "data", "list"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert "plugin module 'my_envs'" in done.stderr and "No module named 'my_envs'" in done.stderr
    assert f"looked for in: {tmp_path} (the working directory)" in done.stderr


def test_dataset_open_reads_the_store_setting_and_refuses_its_former_name(tmp_path, monkeypatch):
    from crowdplay.config import SettingsError
    from crowdplay.recording.store import TrajectoryStore

    store = TrajectoryStore.open(str(tmp_path / "new.db"))
    store.put_episode("new-0", {"env_id": "Pong", "started_at": 1.0, "status": "complete"})
    store.close()
    monkeypatch.delenv("CROWDPLAY_MONGODB_URI", raising=False)
    monkeypatch.setenv("CROWDPLAY_STORE_URI", str(tmp_path / "new.db"))
    with Dataset.open() as data:
        assert [doc["_id"] for doc in data.episodes()] == ["new-0"]

    monkeypatch.delenv("CROWDPLAY_STORE_URI")
    monkeypatch.setenv("CROWDPLAY_MONGODB_URI", str(tmp_path / "new.db"))
    with pytest.raises(SettingsError, match="CROWDPLAY_MONGODB_URI is no longer read: CROWDPLAY_STORE_URI is the one store setting"):
        Dataset.open()


def test_crowdplay_data_refuses_the_former_store_name_in_one_line(tmp_path):
    env = researcher_environment(tmp_path, CROWDPLAY_MONGODB_URI=str(tmp_path / "old.db"))
    done = subprocess.run([*CROWDPLAY_COMMAND, "data", "list", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("crowdplay: CROWDPLAY_MONGODB_URI is no longer read"), done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "old.db").exists()
