"""``crowdplay data``: the command line a researcher uses on a store with recorded episodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from crowdplay.recording.store import TrajectoryStore
from tests.test_recording_recorder import record


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("cli") / "rec.db")
    store = TrajectoryStore.open(path)
    record(store, 150, chunk_steps=50, snapshot_interval=600, presses={20: ["Space"]})
    store.close()
    return path


def crowdplay(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "crowdplay", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_list_show_and_replay_check(store_path):
    [episode] = json.loads(crowdplay("data", "--store", store_path, "list", "--json").stdout)
    assert episode["task_id"] == "invaders-study" and "start_state" not in episode  # listings stay light
    assert json.loads(crowdplay("data", "--store", store_path, "list", "--json", "--env", "Pong").stdout) == []
    assert json.loads(crowdplay("data", "--store", store_path, "list", "--json", "--completed").stdout) == []
    table = crowdplay("data", "--store", store_path, "list").stdout
    assert episode["_id"] in table and "1 episodes" in table

    shown = json.loads(crowdplay("data", "--store", store_path, "show", episode["_id"], "--json").stdout)
    assert shown["stored_steps"] == shown["steps"] == episode["steps"] and shown["inputs"] == 1
    assert "replay matches" in crowdplay("data", "--store", store_path, "replay-check", episode["_id"]).stdout
    missing = crowdplay("data", "--store", store_path, "show", "nope", check=False)
    assert missing.returncode == 2 and "no episode 'nope'" in missing.stderr


def test_export_npz_from_the_command_line(store_path, tmp_path):
    out = tmp_path / "npz"
    crowdplay("data", "--store", store_path, "export", "--format", "npz", "--out", str(out), "--observations", "atari84", "--quiet")
    [file] = sorted(out.glob("*.npz"))
    arrays = np.load(file)
    assert arrays["observations"].shape[1:] == (84, 84, 4) and len(arrays["actions"]) + 1 == len(arrays["observations"])


def test_export_minari_from_the_command_line(store_path, tmp_path):
    import minari

    out = tmp_path / "minari"
    done = crowdplay("data", "--store", store_path, "export", "--format", "minari", "--out", str(out), "--dataset-id", "crowdplay/invaders-v0", "--quiet")
    assert "wrote Minari dataset crowdplay/invaders-v0:" in done.stdout  # one agent: the id as given
    os.environ["MINARI_DATASETS_PATH"] = str(out)
    try:
        dataset = minari.load_dataset("crowdplay/invaders-v0")
        [episode] = list(dataset.iterate_episodes())
        assert episode.observations.shape[1:] == (210, 160, 3) and len(episode.actions) == dataset.total_steps
    finally:
        del os.environ["MINARI_DATASETS_PATH"]


def test_a_malformed_time_or_dataset_id_is_named_before_anything_is_read_or_written(store_path, tmp_path):
    since = crowdplay("data", "--store", store_path, "list", "--since", "2026-13-01", check=False)
    assert since.returncode == 2 and "argument --since: '2026-13-01' is neither an ISO date/time" in since.stderr and "Traceback" not in since.stderr
    assert "1 episodes" in crowdplay("data", "--store", store_path, "list", "--since", "2020-01-01T00:00", "--until", "4102444800").stdout
    out = tmp_path / "minari"
    unversioned = crowdplay("data", "--store", store_path, "export", "--format", "minari", "--out", str(out), "--dataset-id", "invaders", check=False)
    assert unversioned.returncode == 2 and "argument --dataset-id: 'invaders' is not a Minari dataset id" in unversioned.stderr
    assert not out.exists()  # before: a traceback after a partial dataset, which then blocked the id


def test_delete_participant_asks_and_removes_everything(store_path):
    refused = subprocess.run(
        [sys.executable, "-m", "crowdplay", "data", "--store", store_path, "delete-participant", "p-test"],
        input="n\n", capture_output=True, text=True, timeout=120,
    )
    assert refused.returncode == 1 and "nothing deleted" in refused.stdout
    assert "deleted 1 episodes" in crowdplay("data", "--store", store_path, "delete-participant", "p-test", "--yes").stdout
    assert json.loads(crowdplay("data", "--store", store_path, "list", "--json").stdout) == []
    assert TrajectoryStore.open(store_path).chunks.count() == 0
