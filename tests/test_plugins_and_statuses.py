"""The small pieces behind a researcher's plugins, the one store setting and the episode statuses,
each on its own (no Ray): the import path, the failure messages, what is shipped to a cluster's
nodes, the status filters, and the status each way of ending a game stores, with real games."""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
import warnings
from pathlib import Path

import pytest

from crowdplay.config import Settings, SettingsError, store_uri_from_environment
from crowdplay.data import Dataset
from crowdplay.lineup import Lineup
from crowdplay.plugins import PluginImportError, describe_import_failure, load_plugins, plugin_failure, plugin_runtime_env, share_import_path
from crowdplay.recording.status import STATUSES, status_of, status_query
from crowdplay.recording.store import TrajectoryStore, absolute_store_uri, store_origin
from tests.recorded_games import recorded_game


@pytest.fixture
def study_dir(tmp_path, monkeypatch) -> Path:
    """A researcher's directory as the working directory, its modules forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def failure(name: str) -> str:
    with pytest.raises(PluginImportError) as caught:
        load_plugins(Settings(plugins=name))
    assert caught.value.module == name
    return str(caught.value)


# ----------------------------------------------------------------- the import path
def test_the_working_directory_becomes_importable_first_here_and_for_child_processes(study_dir):
    (study_dir / "my_games.py").write_text("LOADED = True\n")
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != str(study_dir)]
    assert share_import_path() == str(study_dir)
    assert sys.path[0] == str(study_dir)
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(study_dir), "/elsewhere"]
    assert load_plugins(Settings(plugins=" my_games , ")) == ["my_games"]
    share_import_path()  # twice changes nothing
    assert sys.path.count(str(study_dir)) == 1 and os.environ["PYTHONPATH"].count(str(study_dir)) == 1


# ----------------------------------------------------------------- failure messages
def test_a_missing_plugin_names_where_it_was_looked_for(study_dir):
    share_import_path()
    message = failure("not_my_games")
    assert message.startswith("plugin module 'not_my_games' (Settings.plugins, CROWDPLAY_PLUGINS) cannot be imported: No module named 'not_my_games'")
    assert f"looked for in: {study_dir} (the working directory)" in message


def test_a_plugin_that_raises_says_what_where_and_from_which_line_of_the_plugin(study_dir):
    share_import_path()
    (study_dir / "raising.py").write_text('"""doc"""\nimport math\nmath.sqrt(-1)\n')
    message = failure("raising")
    assert "it raised ValueError: math domain error" in message
    assert f"at {study_dir / 'raising.py'}, line 3, in <module>" in message
    # Raised inside a library the plugin called: both the library's line and the plugin's.
    (study_dir / "bad_registration.py").write_text(
        "from dataclasses import replace\nfrom crowdplay.environments import get_env\n\nreplace(get_env('Pong'), id='no spaces')\n"
    )
    message = failure("bad_registration")
    assert "it raised ValueError: environment id 'no spaces'" in message
    assert "crowdplay/environments/spec.py, line" in message and f"from {study_dir / 'bad_registration.py'}, line 4" in message
    # A dependency of the plugin that is missing is the plugin's error, not a missing plugin.
    (study_dir / "needs_more.py").write_text("import a_package_nobody_installed\n")
    message = failure("needs_more")
    assert "it raised ModuleNotFoundError: No module named 'a_package_nobody_installed'" in message
    assert f"at {study_dir / 'needs_more.py'}, line 1" in message
    (study_dir / "typo.py").write_text("x = 1\ndef f(:\n")
    assert f"at {study_dir / 'typo.py'}, line 2: def f(:" in failure("typo")


def test_a_missing_module_in_a_package_names_the_package_directory(study_dir):
    share_import_path()
    (study_dir / "my_study").mkdir()
    (study_dir / "my_study" / "__init__.py").write_text("")
    message = failure("my_study.gamez")
    assert "No module named 'my_study.gamez'" in message and f"looked for in: {study_dir / 'my_study'}" in message


def test_the_error_crosses_processes_whole_and_is_found_in_a_remote_traceback(study_dir):
    share_import_path()
    (study_dir / "raising.py").write_text("raise KeyError('level')\n")
    with pytest.raises(PluginImportError) as caught:
        load_plugins(Settings(plugins="raising"))
    again = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(again, PluginImportError) and str(again) == str(caught.value) and again.module == "raising"
    remote = f"Traceback (most recent call last):\n  File \"x.py\", line 1\ncrowdplay.plugins.PluginImportError: {caught.value}\n\nThe actor died."
    assert plugin_failure(remote) == str(caught.value)
    assert plugin_failure("some other failure") is None
    assert describe_import_failure("raising", caught.value.__cause__).startswith("plugin module 'raising'")


# ----------------------------------------------------------------- shipping plugins to a cluster
def test_the_plugins_under_the_working_directory_are_shipped_to_every_node(study_dir):
    share_import_path()
    (study_dir / "my_games.py").write_text("")
    (study_dir / "my_study").mkdir()
    (study_dir / "my_study" / "__init__.py").write_text("")
    (study_dir / "my_study" / "games.py").write_text("")
    names = load_plugins(Settings(plugins="my_games,my_study.games,json,crowdplay.ai"))
    assert plugin_runtime_env(names, str(study_dir)) == {"py_modules": [str(study_dir / "my_games.py"), str(study_dir / "my_study")]}
    assert plugin_runtime_env(["json", "crowdplay.ai"], str(study_dir)) == {}  # installed: on every node already


# ----------------------------------------------------------------- one store setting
def test_the_store_setting_and_its_former_name(tmp_path, monkeypatch):
    monkeypatch.delenv("CROWDPLAY_STORE_URI", raising=False)
    monkeypatch.delenv("CROWDPLAY_MONGODB_URI", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing set, or only the store setting: no warning
        assert store_uri_from_environment() == "" and Settings.from_env().store_uri == ""
        assert store_origin() == "the default; set CROWDPLAY_STORE_URI or --store for another"
        monkeypatch.setenv("CROWDPLAY_STORE_URI", "mongodb://db:27017")
        assert Settings.from_env().store_uri == "mongodb://db:27017" and store_origin() == "CROWDPLAY_STORE_URI"
    monkeypatch.setenv("CROWDPLAY_MONGODB_URI", "mongodb://db:27017")  # the former name: refused, even when it agrees
    with pytest.raises(SettingsError, match="CROWDPLAY_MONGODB_URI is no longer read: CROWDPLAY_STORE_URI is the one store setting"):
        store_uri_from_environment()
    with pytest.raises(SettingsError, match="CROWDPLAY_MONGODB_URI is no longer read"):
        Settings.from_env()
    assert store_origin("x.db") == "given"
    monkeypatch.delenv("CROWDPLAY_MONGODB_URI")
    monkeypatch.delenv("CROWDPLAY_STORE_URI")
    monkeypatch.chdir(tmp_path)
    assert absolute_store_uri() == str(tmp_path / "data" / "crowdplay.db")  # where the Ray processes record
    assert absolute_store_uri("mongodb://db:27017/x") == "mongodb://db:27017/x"


# ----------------------------------------------------------------- statuses and filters
def test_every_status_filter_over_old_and_new_episodes(tmp_path):
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))
    for index, status in enumerate(["complete", "finished", "interrupted", None, "complete"]):
        fields = {"env_id": "Pong", "started_at": float(index)} | ({"status": status} if status else {})
        store.put_episode(f"e{index}-{status}", fields)
    with Dataset(store) as data:
        def ids(**filters) -> list[str]:
            return [doc["_id"] for doc in data.episodes(**filters)]

        assert ids(completed=True) == ["e0-complete", "e4-complete"]
        assert ids(completed=False) == ["e1-finished", "e2-interrupted", "e3-None"]
        assert ids(status="finished") == ["e1-finished"]
        assert ids(status=["finished", "complete"]) == ["e0-complete", "e1-finished", "e4-complete"]
        assert ids(status="unended") == ["e3-None"]
        assert ids(status=["interrupted", "unended"]) == ["e2-interrupted", "e3-None"]
        assert ids(status="complete", completed=False) == []
        assert ids(status=["finished", "unended"], completed=False, env="Pong") == ["e1-finished", "e3-None"]
        assert [status_of(doc) for doc in data.episodes()] == ["complete", "finished", "interrupted", "unended", "complete"]
        with pytest.raises(ValueError, match="unknown episode status 'done': use one of complete, finished, interrupted, server_unreachable, unended"):
            data.episodes(status="done")
    assert list(STATUSES) == ["complete", "finished", "interrupted", "server_unreachable", "unended"]
    assert status_query("complete") == {"status": "complete"}


async def game(env_id: str, store: TrajectoryStore, grace_s: float = 0.3) -> tuple[Lineup, dict]:
    """A real game recording into ``store``, every seat taken and connected (so it plays)."""

    recorded = recorded_game(env_id, store, seed=0, lineup_settings=Settings(reconnect_grace_s=grace_s, countdown_s=0.0))
    live, lineup, subscribers = recorded.live, recorded.lineup, recorded.subscribers
    await asyncio.sleep(0.5)  # ~30 steps
    assert live.episodes.steps > 10
    return lineup, subscribers


def ended_as(store: TrajectoryStore, env_id: str) -> tuple[str, str]:
    [episode] = store.find_episodes({"game_id": f"game-{env_id}"})
    return episode["status"], episode["reason"]


@pytest.mark.parametrize("ending", ["finish", "leave", "researcher"])
def test_each_way_a_game_ends_stores_its_status(tmp_path, ending):
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))

    async def scenario() -> None:
        lineup, subscribers = await game("SpaceInvaders", store)
        if ending == "finish":
            lineup.finish("session-agent_0")
        elif ending == "leave":
            lineup.disconnect(subscribers["agent_0"])
            await asyncio.sleep(0.5)  # past the grace: gone for good
        else:
            lineup.end("the researcher ended this session")
        await asyncio.sleep(1.0)  # the last chunk sealed and stored

    asyncio.run(scenario())
    assert ended_as(store, "SpaceInvaders") == {
        "finish": ("finished", "the participant playing agent_0 finished playing"),
        "leave": ("interrupted", "the participant playing agent_0 left the game and no AI can take their place"),
        "researcher": ("interrupted", "the researcher ended this session"),
    }[ending]


def test_one_of_two_players_finishing_ends_a_game_without_a_fallback_as_finished(tmp_path):
    store = TrajectoryStore.open(str(tmp_path / "rec.db"))

    async def scenario() -> None:
        lineup, _ = await game("SpaceInvaders2P", store)
        lineup.finish("session-first_0")
        await asyncio.sleep(1.0)

    asyncio.run(scenario())
    assert ended_as(store, "SpaceInvaders2P") == ("finished", "the participant playing first_0 finished playing and no AI can take their place")
