"""Each example in examples/ runs exactly as its README.md says, from a copy of its directory.

For every example the commands of its README's ```sh blocks are read and run as written: ``cd``
names the example's directory, ``export NAME=value`` lines are the only variables set (on top of
a fresh machine's environment: no PYTHONPATH, no other ``CROWDPLAY_*``), ``crowdplay serve`` is
started as written (with ``--port``, which the README offers for a taken port 8000), simulated
participants (``crowdplay.client.Participant``, the browser's protocol) play the game the README
describes, Ctrl-C stops the server, and then each ``crowdplay data ...`` line runs in order, with
``<episode>`` replaced by an episode ``crowdplay data list`` printed (one the environment
ended). The README's ```python block runs there too, on the recordings just made.

One ``crowdplay serve`` per example (a module-scoped fixture, parametrised by example), started
and stopped before the example's checks run.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from crowdplay.client import Participant, http_json
from crowdplay.config import free_port
from tests.conftest import CROWDPLAY_COMMAND, fresh_environment
from tests.test_docs import code_blocks

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["mountain_car", "frozen_lake", "cooperative_pong"]


@dataclass
class Readme:
    """What an example's README tells the user to type."""

    directory: str = ""  # the ``cd`` target
    exports: dict[str, str] = field(default_factory=dict)
    serve: list[str] = field(default_factory=list)  # the words after ``crowdplay``
    data: list[list[str]] = field(default_factory=list)  # each ``crowdplay data ...`` line's words after ``crowdplay``
    python: str = ""  # the README's python block


def read_readme(name: str) -> Readme:
    readme = Readme()
    for block in code_blocks(ROOT / "examples" / name / "README.md"):
        if block.language == "python":
            assert not readme.python, f"examples/{name}/README.md: one python block expected"
            readme.python = block.text
            continue
        if block.language not in ("sh", "bash"):
            continue
        for line in block.text.splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            if words[0] == "cd":
                readme.directory = words[1]
            elif words[0] == "export":
                name_, value = words[1].split("=", 1)
                readme.exports[name_] = value
            elif words[:2] == ["crowdplay", "serve"]:
                assert not readme.serve, f"examples/{name}/README.md: one `crowdplay serve` expected"
                readme.serve = words[1:]
            elif words[:2] == ["crowdplay", "data"]:
                readme.data.append(words[1:])
            else:
                pytest.fail(f"examples/{name}/README.md: a command the test does not know how to run: {line!r}")
    assert readme.directory == f"examples/{name}", readme.directory
    assert readme.serve and readme.data, f"examples/{name}/README.md has no `crowdplay serve` or `crowdplay data` lines"
    return readme


def users_environment(readme: Readme) -> dict[str, str]:
    """A fresh machine's environment with the README's exports, and nothing else of CrowdPlay's."""
    env = {name: value for name, value in fresh_environment().items() if not name.startswith("CROWDPLAY_") and name != "PYTHONPATH"}
    return {**env, **readme.exports}


@dataclass
class Played:
    name: str
    directory: Path
    readme: Readme
    env: dict[str, str]
    url: str
    #: what the scenario observed (first frames, events, summaries)
    seen: dict
    serve_output: str
    #: the output of each README data command run so far, by its words
    outputs: dict[tuple[str, ...], subprocess.CompletedProcess] = field(default_factory=dict)


def start_serve(readme: Readme, directory: Path, env: dict[str, str], port: int) -> tuple[subprocess.Popen, list[str]]:
    process = subprocess.Popen(
        [*CROWDPLAY_COMMAND, *readme.serve, "--port", str(port)], cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    deadline = time.monotonic() + 180
    for line in process.stdout:
        lines.append(line)
        if f"http://127.0.0.1:{port}" in line or time.monotonic() > deadline:
            break
    if process.poll() is not None or f"http://127.0.0.1:{port}" not in lines[-1]:
        process.kill()
        pytest.fail("crowdplay serve did not start:\n" + "".join(lines[-40:]))
    return process, lines


def stop_serve(process: subprocess.Popen, lines: list[str]) -> None:
    """Ctrl-C, as the README says; the server must save everything and exit 0."""
    process.send_signal(signal.SIGINT)
    try:
        rest, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        rest, _ = process.communicate()
    lines.append(rest)
    assert process.returncode == 0, "crowdplay serve did not stop cleanly:\n" + "".join(lines)[-4000:]


@pytest.fixture(scope="module", params=EXAMPLES)
def played(request, tmp_path_factory) -> Played:
    """The example copied to a fresh directory, served as its README says, played by the
    example's scenario, and stopped with Ctrl-C."""
    name = request.param
    readme = read_readme(name)
    directory = tmp_path_factory.mktemp(name) / name
    shutil.copytree(ROOT / "examples" / name, directory, ignore=shutil.ignore_patterns("__pycache__", "data", "datasets"))
    env = users_environment(readme)
    port = free_port()
    process, lines = start_serve(readme, directory, env, port)
    url = f"http://127.0.0.1:{port}"
    try:
        seen = asyncio.run(asyncio.wait_for(SCENARIOS[name](url), 120))
    finally:
        stop_serve(process, lines)
    return Played(name, directory, readme, env, url, seen, "".join(lines))


def crowdplay_data(played: Played, words: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run([*CROWDPLAY_COMMAND, *words], cwd=played.directory, env=played.env, capture_output=True, text=True, timeout=300)
    played.outputs[tuple(words)] = done
    return done


def readme_line(played: Played, subcommand: str) -> list[str]:
    lines = [words for words in played.readme.data if words[1] == subcommand]
    assert len(lines) == 1, f"examples/{played.name}/README.md: one `crowdplay data {subcommand}` line expected"
    return lines[0]


def listed_episodes(played: Played) -> list[dict]:
    """The README's ``crowdplay data list`` line, run, its table read back: id, env, steps, status."""
    words = readme_line(played, "list")
    done = played.outputs.get(tuple(words)) or crowdplay_data(played, words)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = []
    for line in done.stdout.splitlines()[1:-1]:
        columns = line.split()
        rows.append({"id": columns[0], "env": columns[1], "steps": int(columns[5]), "status": columns[7]})
    assert done.stdout.splitlines()[-1] == f"{len(rows)} episodes", done.stdout
    return rows


# ----------------------------------------------------------------------------- scenarios
async def first_frame(player: Participant) -> dict:
    """The connection's first frame, and the events that came before it."""
    header, _ = await player.next_frame(30)
    return {"env_step": header.env_step, "keyframe": header.keyframe, "new_episode": header.new_episode, "events_before": [e["type"] for e in player.events]}


async def frames_until(player: Participant, done, timeout_s: float = 60) -> None:
    """Take frames (so they do not pile up) until ``done()`` is true."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"gave up waiting; events: {player.events[-5:]}"
        try:
            await player.next_frame(1)
        except TimeoutError:
            pass


def events(player: Participant, kind: str) -> list[dict]:
    return [event for event in player.events if event["type"] == kind]


async def finish(url: str, player: Participant) -> dict:
    """The page's Finish button: ``POST /api/sessions/{id}/finish?token=...``."""
    session = player.session
    summary = await asyncio.to_thread(http_json, f"{url}/api/sessions/{session['session_id']}/finish?token={session['token']}", {})
    await player.wait_closed(15)
    return summary


async def play_mountain_car(url: str) -> dict:
    """Push right, then left, until the 200-step time limit ends the episode; play on a little
    and press Finish."""
    player = await Participant.join(url, "MountainCar")
    seen = {"hello": player.hello, "first": await first_frame(player)}
    await player.press({"ArrowRight"})
    await frames_until(player, lambda: len(player.timings) > 40)
    await player.press({"ArrowLeft"})
    await frames_until(player, lambda: events(player, "episode_end"))
    await player.press(set())
    count = len(player.timings)
    await frames_until(player, lambda: len(player.timings) > count + 20)
    seen["episode_end"] = events(player, "episode_end")[0]
    seen["summary"] = await finish(url, player)
    seen["end"] = events(player, "end")
    return seen


LAKE_PATH = ["ArrowRight", "ArrowRight", "ArrowDown", "ArrowDown", "ArrowDown", "ArrowRight"]


async def play_frozen_lake(url: str) -> dict:
    """Walk to the goal, one key press a step (the reset screen comes instead of the last step's),
    take one step into the next episode and press Finish."""
    player = await Participant.join(url, "FrozenLake")
    seen = {"hello": player.hello, "first": await first_frame(player), "steps": []}
    for key in [*LAKE_PATH, "ArrowLeft"]:
        await player.press({key})
        header, _ = await player.next_frame(10)
        seen["steps"].append((header.env_step, header.new_episode))
        await player.press(set())
    await asyncio.sleep(0.5)  # a release is not a turn: no frame comes of it
    seen["frames_after_release"] = player.frames.qsize()
    seen["episode_end"] = events(player, "episode_end")
    seen["summary"] = await finish(url, player)
    return seen


async def play_cooperative_pong(url: str) -> dict:
    """Two participants share one game: both hold Up, out of the ball's way, until it leaves the
    screen; they play a little of the next episode, and the left player presses Finish, which ends
    the game for both."""
    left = await Participant.join(url, "CooperativePong")
    seen = {"hello": left.hello, "first": await first_frame(left)}
    right = await Participant.join(url, "CooperativePong")
    seen["sessions"] = [left.session, right.session]
    seen["first_right"] = await first_frame(right)
    for player in (left, right):
        await player.wait_for_event("play", timeout=30)
        await player.press({"ArrowUp"})
    await frames_until(left, lambda: events(left, "episode_end"), timeout_s=60)
    await frames_until(right, lambda: events(right, "episode_end"), timeout_s=10)
    count = len(left.timings)  # the next episode's first steps, so that Finish has one to end
    await frames_until(left, lambda: len(left.timings) > count + 20)
    seen["left_events"] = [event["type"] for event in left.events]
    seen["episode_end"] = events(left, "episode_end")[0]
    seen["summary"] = await finish(url, left)
    await right.wait_closed(15)
    seen["right_end"] = events(right, "end")
    return seen


SCENARIOS = {"mountain_car": play_mountain_car, "frozen_lake": play_frozen_lake, "cooperative_pong": play_cooperative_pong}
#: The environment's id and agents, and the steps of the episode the scenario plays to its end.
EXPECTED = {
    "mountain_car": {"env": "MountainCar", "agents": ["agent_0"], "steps": 200},
    "frozen_lake": {"env": "FrozenLake", "agents": ["agent_0"], "steps": len(LAKE_PATH)},
    "cooperative_pong": {"env": "CooperativePong", "agents": ["paddle_0", "paddle_1"], "steps": None},
}


# ----------------------------------------------------------------------------- checks
def test_the_example_plays_as_its_readme_describes(played: Played):
    seen, name = played.seen, played.name
    assert "Recording to the embedded store " + str(played.directory / "data" / "crowdplay.db") in played.serve_output
    hello = seen["hello"]
    assert hello["env"]["id"] == EXPECTED[name]["env"] and hello["agents"] == EXPECTED[name]["agents"]
    assert seen["first"]["keyframe"] and seen["first"]["new_episode"]
    if name == "mountain_car":
        assert hello["keymaps"]["agent_0"] == {"ArrowLeft": 0, "ArrowRight": 2} and hello["noop_actions"]["agent_0"] == 1
        assert hello["action_labels"]["agent_0"] == ["left", "noop", "right"] and hello["idle"]["agent_0"] == "noop"
        # a single-player game starts at once: lobby (waiting, then countdown), play, then the first frame
        assert seen["first"]["events_before"] == ["lobby", "lobby", "play"] and seen["first"]["env_step"] <= 2
        assert seen["episode_end"]["steps"] == 200 and seen["episode_end"]["truncated"] is True
        assert seen["summary"]["finished"] is True and [e["reason"] for e in seen["end"]] == ["you finished playing"]
    elif name == "frozen_lake":
        assert hello["env"]["mode"] == "wait_for_key" and hello["idle"]["agent_0"] == "wait" and hello["noop_actions"]["agent_0"] is None
        assert seen["first"]["env_step"] == 0  # turn-based: nothing steps before the first key
        # one step per press; the goal ends the episode and the next one's reset screen comes instead
        assert seen["steps"] == [(1, False), (2, False), (3, False), (4, False), (5, False), (0, True), (1, False)]
        assert seen["frames_after_release"] == 0
        assert [(e["steps"], e["returns"], e["truncated"]) for e in seen["episode_end"]] == [(6, {"agent_0": 1.0}, False)]
    else:
        assert hello["env"]["players"] == 2 and hello["instructions"].startswith("You are the <b>left</b> paddle")
        assert seen["sessions"][0]["game_id"] == seen["sessions"][1]["game_id"]
        assert [s["agent"] for s in seen["sessions"]] == ["paddle_0", "paddle_1"]
        # a multi-player game shows its reset screen while it waits, counts down, then plays
        assert seen["first"]["env_step"] == 0 and seen["first"]["events_before"] == ["lobby"]
        events_ = seen["left_events"]
        assert events_.index("countdown") < events_.index("play") < events_.index("episode_end")
        assert seen["right_end"] and "finished playing" in seen["right_end"][0]["reason"]


def test_crowdplay_data_list(played: Played):
    rows = listed_episodes(played)
    expected = EXPECTED[played.name]
    assert [row["env"] for row in rows] == [expected["env"]] * 2
    assert [row["status"] for row in rows] == ["complete", "finished"], rows
    if expected["steps"] is not None:
        assert rows[0]["steps"] == expected["steps"]
    assert "reading the embedded store " + str(played.directory / "data" / "crowdplay.db") in played.outputs[tuple(readme_line(played, "list"))].stderr


def test_crowdplay_data_replay_check(played: Played):
    """The README's replay-check on the episode the environment ended: it matches."""
    words = readme_line(played, "replay-check")
    complete = next(row["id"] for row in listed_episodes(played) if row["status"] == "complete")
    words = [complete if word == "<episode>" else word for word in words]
    done = crowdplay_data(played, words)
    assert done.returncode == 0 and f"{complete}: replay matches" in done.stdout, (done.stdout[-2000:], done.stderr[-3000:])


def test_crowdplay_data_export_minari(played: Played, monkeypatch):
    """The README's Minari export: the environment's own observation space, every episode, the
    dataset id as given (one per agent for the two-player game)."""
    import gymnasium as gym
    import minari

    words = readme_line(played, "export")
    done = crowdplay_data(played, words)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    out = played.directory / words[words.index("--out") + 1]
    dataset_id = words[words.index("--dataset-id") + 1]
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(out))
    agents = EXPECTED[played.name]["agents"]
    expected_ids = [dataset_id] if len(agents) == 1 else [dataset_id.replace("-v0", f"-{agent}-v0") for agent in agents]
    assert sorted(minari.list_local_datasets()) == sorted(expected_ids)
    spaces = {
        "mountain_car": gym.make("MountainCar-v0").observation_space,
        "frozen_lake": gym.spaces.Discrete(16),
        "cooperative_pong": gym.spaces.Box(0, 255, (280, 480, 3), "uint8"),
    }
    for dataset_id in expected_ids:
        dataset = minari.load_dataset(dataset_id)
        assert dataset.total_episodes == 2
        assert dataset.observation_space == spaces[played.name]
        assert dataset.action_space == gym.spaces.Discrete(3 if played.name != "frozen_lake" else 4)
        if len(agents) == 1:
            # a registered Gymnasium environment: the dataset rebuilds it, and it plays
            env = dataset.recover_environment()
            observation, _ = env.reset(seed=0)
            assert observation in dataset.observation_space
            assert env.step(0)[0] in dataset.observation_space
            env.close()
        else:
            assert dataset.env_spec is None  # PettingZoo environments have no Gymnasium spec
    export_bytes = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    store_bytes = sum(path.stat().st_size for path in (played.directory / "data").rglob("*") if path.is_file())
    print(f"{played.name}: Minari export {export_bytes:,} B for the store's {store_bytes:,} B")


def test_the_readme_python_reads_the_recordings(played: Played):
    """The README's Python, run in the example's directory on what was recorded."""
    program = played.directory / "read_recordings.py"
    program.write_text(played.readme.python)
    env = {**played.env}
    done = subprocess.run([sys.executable, program.name], cwd=played.directory, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"\S", done.stdout), "the README's python printed nothing"
    played.seen["python_output"] = done.stdout
