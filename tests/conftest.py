"""Fixtures that start the real system: one Ray instance per test session, Serve on a free port."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import serve

from crowdplay.config import NO_START_GUARD_ENVIRONMENT, NO_START_LIMITS, Settings, apply_ray_environment, free_port
from crowdplay.manager import get_or_create_manager
from crowdplay.plugins import load_plugins, share_import_path
from crowdplay.web.ingress import build_app

#: The system under test records into its own embedded store, never the repository's data/.
TEST_DATA = Path(tempfile.mkdtemp(prefix="crowdplay-test-"))
TEST_SETTINGS = Settings(
    namespace="crowdplay-test",
    reconnect_grace_s=5.0,
    warm_pool_size=2,
    store_uri=str(TEST_DATA / "recordings.db"),
    spool_dir=str(TEST_DATA / "spool"),
    plugins="tests.study_envs",
    countdown_s=0.5,
    policy_start_timeout_s=20.0,  # an unplaceable policy actor is reported within the test's patience
    spare_envs_per_actor=2,  # each spare costs ~125 ms of CPU to build: the default 16 per process would cost the suite minutes
    **NO_START_LIMITS,  # every test's participants come from 127.0.0.1; test_admission runs its own limits
)
load_plugins(TEST_SETTINGS)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def start_ray() -> None:
    """A fresh local Ray instance for this test process (never a cluster already running here)."""
    os.environ.update(NO_START_GUARD_ENVIRONMENT)  # HAProxy's start guard off too (tests/test_admission.py runs it)
    apply_ray_environment()
    share_import_path(str(Path(__file__).parent.parent))  # the Ray processes import the tests' plugins
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)


def start_serve(settings: Settings) -> str:
    """The CrowdPlay app on Serve at a free port; returns its base URL."""
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(settings), name="crowdplay", route_prefix="/")
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    start_ray()
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (which never downloads a browser of its own)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def trained_policies(ray_session: None) -> None:
    """The tiny RLlib policies of ``tests.study_envs``, trained by ``policies.train`` (~10 s each)
    and kept in tests/.cache until the training code changes."""
    from policies.train import train
    from tests.study_envs import CHECKPOINTS, INVADERS_PPO, PONG_PPO

    root = Path(__file__).parent.parent
    sources = [root / "policies" / "train.py", root / "policies" / "atari_agents.py", root / "crowdplay" / "ai" / "atari.py", root / "crowdplay" / "ai" / "rllib.py"]
    fingerprint = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
    marker = CHECKPOINTS / "fingerprint"
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    with open(CHECKPOINTS.parent / "checkpoints.lock", "w") as lock:  # one pytest worker trains, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == fingerprint:
            return
        for env_id, path in (("Pong", PONG_PPO), ("SpaceInvaders2P", INVADERS_PPO)):
            shutil.rmtree(path, ignore_errors=True)
            train(env_id, path, iterations=1, batch=128, minibatch=64)
        marker.write_text(fingerprint)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return TEST_SETTINGS


@pytest.fixture(scope="session")
def base_url(ray_session: None, settings: Settings) -> Iterator[str]:
    yield start_serve(settings)
    serve.shutdown()


@pytest.fixture(scope="session")
def manager(base_url: str, settings: Settings):
    return get_or_create_manager(settings)


SEPARATE_SUITES = ("cluster", "study", "autoscaling", "netlab")


#: Tests that assert a wall-clock bound the machine's load moves (a newcomer's start during a
#: flood, a reply within a second, a page's key held for a second, 60 fps kept): ``make test`` runs
#: them after the rest, one at a time; the rest run two files at a time (``pytest -n 2``).
SERIAL_MODULES = {
    "test_admission.py", "test_browser.py", "test_store_link.py", "test_writer_outage.py",
    "test_realtime.py", "test_policy_actors.py", "test_watching.py", "test_connection_limits.py", "test_starts_beside_play.py",
    "test_request_bodies.py",
}


#: Tests that need no Ray, no server and no browser, and run in seconds: ``make test-fast`` runs
#: them (with everything in tests/unit) as the tier to run after every change.
UNIT_MODULES = {
    "test_assignments.py", "test_channel.py", "test_codec.py", "test_protocol_messages.py", "test_recording_store.py",
    "test_recording_query.py", "test_recording_recorder.py", "test_settings.py", "test_study_config.py", "test_tcp.py",
    "test_store_health.py", "test_store_link.py", "test_timing.py", "test_parallel_adapter.py", "test_environments.py",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "serial: a test that times something; make test runs these alone (SERIAL_MODULES)")
    config.addinivalue_line("markers", "unit: Ray-free and quick; make test-fast runs these (UNIT_MODULES and tests/unit)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)
        if item.path.name in UNIT_MODULES or item.path.parent.name == "unit":
            item.add_marker(pytest.mark.unit)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/cluster (its own multi-node Ray cluster), tests/study (a deployment with a study
    loaded), tests/autoscaling (Ray's fake autoscaler; stops every Ray process on the machine) and
    tests/netlab (a cluster of network namespaces; needs root) each run in a pytest process of
    their own: only when named on the command line (``make test`` does)."""
    if collection_path.name in SEPARATE_SUITES and collection_path.parent == Path(__file__).parent:
        return not any(collection_path.name in str(arg) for arg in config.args)
    return None


def fresh_environment(**values: str) -> dict[str, str]:
    """This process's environment without what the tests' own Ray instance was given: a fresh
    machine's, plus ``values``."""
    given = ("RAY_SERVE_", "CROWDPLAY_HAPROXY_", "RAY_TMPDIR", *NO_START_GUARD_ENVIRONMENT)
    return {**{name: value for name, value in os.environ.items() if not name.startswith(given)}, **values}


#: The ``crowdplay`` command as installed (a console script: its sys.path holds the venv's bin
#: directory, not the working directory, unlike ``python -m crowdplay``).
CROWDPLAY_COMMAND = [str(Path(sys.executable).with_name("crowdplay"))] if Path(sys.executable).with_name("crowdplay").exists() else [sys.executable, "-m", "crowdplay"]


@contextlib.contextmanager
def crowdplay_serve(port: int, env: dict[str, str], timeout_s: float = 120, cwd: str | Path | None = None) -> Iterator[str]:
    """``crowdplay serve --port`` in a process (and Ray instance) of its own, as a user starts it
    (the installed command, in ``cwd``: the researcher's directory); yields its URL once printed,
    and stops it with Ctrl-C (SIGINT), which must exit 0."""
    process = subprocess.Popen(
        [*CROWDPLAY_COMMAND, "serve", "--port", str(port)], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + timeout_s
        for line in process.stdout:  # until the URL is printed (serve.run has returned) or it exits
            lines.append(line)
            if f"http://127.0.0.1:{port}" in line or time.monotonic() > deadline:
                break
        assert process.poll() is None and f"http://127.0.0.1:{port}" in lines[-1], "crowdplay serve did not start:\n" + "".join(lines[-30:])
        yield f"http://127.0.0.1:{port}"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:  # a failed test: stopped as a user would, so its HAProxy and Ray go too
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def researcher_environment(directory: Path, **values: str) -> dict[str, str]:
    """What a researcher's shell has: a fresh machine's environment (no PYTHONPATH, no old
    store variable), plus ``values``."""
    env = fresh_environment(**values)
    for name in ("PYTHONPATH", "CROWDPLAY_MONGODB_URI", "CROWDPLAY_PLUGINS", "CROWDPLAY_STORE_URI"):
        env.pop(name, None)
    return {**env, **values}


@contextlib.contextmanager
def serve_plugin(directory: Path, module: str, source: str, namespace: str) -> Iterator[dict[str, Any]]:
    """``crowdplay serve`` as a researcher starts it in ``directory``, which holds their plugin
    ``module`` (``source``) and a store of its own; yields its URL, directory, store and environment."""
    (directory / f"{module}.py").write_text(source)
    store = directory / "recordings.db"
    env = researcher_environment(
        directory, CROWDPLAY_PLUGINS=module, CROWDPLAY_STORE_URI=str(store), CROWDPLAY_SPOOL_DIR=str(directory / "spool"),
        CROWDPLAY_NAMESPACE=namespace, CROWDPLAY_WARM_POOL_SIZE="1", RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="0",
    )
    with crowdplay_serve(free_port(), env, cwd=directory) as url:
        yield {"url": url, "directory": directory, "store": store, "env": env}


def run(coroutine):
    """Run a coroutine to completion from a synchronous test: in a thread of its own when this
    thread already runs an event loop (Playwright's sync API keeps one while a module's browser
    is open)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def wait_until(condition: Callable[[], bool], message: str, timeout: float = 10.0) -> None:
    """For state another process learns of asynchronously (e.g. the EnvsManager hearing that a
    game ended: EnvActors report it without waiting for an answer)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def spawn_seated_game(settings: Settings, participant: str) -> tuple[Any, Any, str, dict]:
    """An EnvActor and the writer of ``settings``, and a Space Invaders game on that EnvActor with
    ``participant`` seated as agent_0 (session "s1"), not yet connected: the actor, the writer,
    the game's id and its frame channel's address. Both actors are killed if the game cannot open."""
    import uuid

    import ray

    from crowdplay.controllers import Human
    from crowdplay.env_actor import spawn_env_actor
    from crowdplay.recording.writer import get_or_create_writer

    actor = spawn_env_actor(settings)
    ray.get(actor.ready.remote(), timeout=120)
    writer = get_or_create_writer(settings)
    ray.get(writer.stats.remote(), timeout=60)
    game_id = uuid.uuid4().hex
    try:
        _, channel = ray.get(actor.open.remote(game_id, "SpaceInvaders", 7), timeout=60)
        ray.get(actor.take_seat.remote(game_id, "agent_0", "s1", Human(participant), {}, "token"), timeout=30)
    except BaseException:
        ray.kill(actor)
        ray.kill(writer)
        raise
    return actor, writer, game_id, channel


def stored_episode_and_seqs(store_uri: str, game_id: str) -> tuple[dict, list[int]]:
    """The game's one stored episode and its chunks' sequence numbers, in order (the episode
    arrived whole when they are ``0..chunks-1``)."""
    from crowdplay.recording.store import TrajectoryStore

    store = TrajectoryStore.open(store_uri)
    try:
        [episode] = store.find_episodes({"game_id": game_id})
        return episode, [chunk["seq"] for chunk in store.iter_chunks(episode["_id"])]
    finally:
        store.close()


def episodes_of(game_id: str, manager, timeout_s: float = 30, settle_s: float = 3.0) -> list[dict]:
    """The game's stored episodes, oldest first, once the game is over. The episode under way at
    the end is stored "interrupted"; a game that ended just after an episode did (before the next
    one took a step, which is then not kept) has none, so the wait also ends once the manager no
    longer lists the game and every stored episode has had a status for ``settle_s``."""
    from crowdplay.data import Dataset

    data = Dataset.open(TEST_SETTINGS.store_uri)
    try:
        deadline = time.monotonic() + timeout_s
        gone_at: float | None = None
        while True:
            found = sorted((d for d in data.episodes() if d["game_id"] == game_id), key=lambda d: d["started_at"])
            if any(document.get("status") == "interrupted" for document in found):
                return found
            if gone_at is None and all(game["game_id"] != game_id for game in ray.get(manager.list_games.remote())):
                gone_at = time.monotonic()
            if gone_at is not None and found and all(d.get("status") for d in found) and time.monotonic() - gone_at > settle_s:
                return found
            assert time.monotonic() < deadline, f"game {game_id}: not over, or its last episode not stored ({found})"
            time.sleep(0.25)
    finally:
        data.close()


@pytest.fixture(scope="module")
def fuzz_connection(base_url: str, manager):
    """A websocket to one game that fuzzing tests keep sending to (see tests/test_fuzz.py)."""
    from tests.test_fuzz import Connection

    connection = Connection(base_url, manager)
    yield connection
    if connection.ws is not None:
        connection.run(connection.ws.close())
    connection.loop.close()


@pytest.fixture(scope="session")
def mountain_car_export(tmp_path_factory):
    """A recorded MountainCar game (a participant's actions), exported as RLlib offline data."""
    from crowdplay.data.exports import export_rllib
    from tests.test_exports_any_env import _record, _with_steps

    directory = tmp_path_factory.mktemp("car")
    with _record(directory, "ExportCar", 1.0, [0, 0, 2, 2, 2, 1]) as data:
        ids = _with_steps(data)
        export_rllib(data.iter_load(ids), directory / "rllib", agent="agent_0", progress=False)
        observations = [observation for episode in data.iter_load(ids) for observation in episode.agents["agent_0"].observations]
    return directory / "rllib", observations
