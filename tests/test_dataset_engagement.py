"""Each session's engagement and each episode's page events, as a researcher reads them back: a
real game with a page hidden and shown again, recording into a real store, its participant's
assignment stored as the manager stores it, beside documents from before engagement was counted."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys

import pytest

from crowdplay.assignments import Assignment
from crowdplay.data import Dataset
from crowdplay.engagement import ENGAGEMENT_VALUES, PageEvent
from crowdplay.inputs import ParticipantInput
from crowdplay.recording.store import TrajectoryStore
from tests.recorded_games import recorded_game

SESSION = "session-agent_0"  # recorded_game seats session-<agent>
ZEROS = dict.fromkeys(ENGAGEMENT_VALUES, 0)


def play_with_the_page_hidden(store: TrajectoryStore) -> tuple[dict, dict]:
    """Space Invaders played, hidden for half a second (the game pauses), shown again and played
    on: (the lineup's engagement while playing, the participant's statistics at the end)."""

    async def scenario() -> tuple[dict, dict]:
        game = recorded_game("SpaceInvaders", store)
        live, [agent] = game.live, game.agents
        live.submit(agent, ParticipantInput.holding(["Space"], live.frame_id, 1))
        await asyncio.sleep(0.4)
        live.note_page(agent, PageEvent("hidden", live.latest.frame_id))
        await asyncio.sleep(0.5)
        live.note_page(agent, PageEvent("visible", live.latest.frame_id))
        await asyncio.sleep(0.4)
        engagement = game.lineup.engagement()
        statistics = game.lineup.statistics(SESSION)
        await game.end()
        return engagement, statistics

    return asyncio.run(scenario())


def old_documents(store: TrajectoryStore) -> None:
    """An assignment and an episode stored before engagement was counted, and an assignment
    whose participant never played (no statistics at all)."""
    old = Assignment("session-old", "invaders-study", "p-old", {}, "token", created_at=1.0, finished_at=2.0)
    old.statistics = {"values": {"score": 15.0, "time_played": 30.0, "active_time": 20.0}, "episodes": 1}
    store.put_assignment(old.document())
    store.put_assignment(Assignment("session-never", "other-task", "p-never", {}, "token", created_at=3.0).document())
    store.put_episode("old-game-0", {"game_id": "old-game", "episode": 0, "env_id": "SpaceInvaders", "started_at": 1.0, "status": "complete"})


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[str, dict, dict]:
    """The store's path, the live engagement and the final statistics of the played session."""
    path = str(tmp_path_factory.mktemp("engagement") / "store.db")
    store = TrajectoryStore.open(path)
    engagement, statistics = play_with_the_page_hidden(store)
    played = Assignment(SESSION, "invaders-study", "p-agent_0", {"STUDY_ID": "s1"}, "token", created_at=10.0)
    played.statistics = statistics
    played.finished_at = 20.0
    store.put_assignment(played.document())
    old_documents(store)
    store.close()
    return path, engagement, statistics


def test_the_lineup_answers_each_seated_sessions_engagement_for_the_dashboard(recorded) -> None:
    _, engagement, _ = recorded
    assert list(engagement) == [SESSION] and list(engagement[SESSION]) == list(ENGAGEMENT_VALUES)
    assert 0.4 <= engagement[SESSION]["time_hidden"] < 1.0 and engagement[SESSION]["pauses"] == 1


def test_sessions_give_each_sessions_engagement_and_old_ones_read_as_zero(recorded) -> None:
    path, _, statistics = recorded
    with Dataset.open(path) as data:
        old, never, played = data.sessions()  # oldest first
        assert data.sessions(task="other-task") == [never]
        assert data.sessions(participant="p-agent_0") == [played]
    values = statistics["values"]
    assert played["session_id"] == SESSION and played["task_id"] == "invaders-study" and played["params"] == {"STUDY_ID": "s1"}
    assert played["finished_at"] == 20.0 and played["completed_at"] is None and played["values"] == values
    assert {name: played[name] for name in ENGAGEMENT_VALUES} == {name: values[name] for name in ENGAGEMENT_VALUES}
    assert 0.4 <= played["time_hidden"] < 1.0 and played["pauses"] == 1 and played["time_paused"] >= 0.4
    assert played["idle_time"] == pytest.approx(values["time_played"] - values["active_time"], abs=0.01)
    assert "token_sha256" not in played
    assert {name: old[name] for name in ENGAGEMENT_VALUES} == ZEROS and old["values"]["score"] == 15.0 and old["episodes"] == 1
    assert {name: never[name] for name in ENGAGEMENT_VALUES} == ZEROS and never["values"] == {} and never["episodes"] == 0


def test_page_events_say_at_which_step_they_came(recorded) -> None:
    path, _, _ = recorded
    with Dataset.open(path) as data:
        [episode_id] = [doc["_id"] for doc in data.episodes(env="SpaceInvaders") if doc["_id"] != "old-game-0"]
        events = data.page_events(episode_id)
        steps = data.load(episode_id, observations=None).agents["agent_0"].actions.shape[0]
        assert data.page_events("old-game-0") == []  # recorded before page events were
    assert [event["event"] for event in events] == ["hidden", "pause", "visible", "resume"]
    hidden, pause, visible, resume = (event["step"] for event in events)
    assert 15 <= hidden == pause == visible == resume < steps  # the game stood still while the page was hidden
    assert all(event["agent"] == "agent_0" and event["frame"] > 0 for event in events)


def crowdplay(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "crowdplay", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_command_line_lists_and_exports_each_sessions_engagement(recorded) -> None:
    path, _, statistics = recorded
    rows = json.loads(crowdplay("data", "--store", path, "sessions", "--json"))
    assert [row["session_id"] for row in rows] == ["session-old", "session-never", SESSION]
    assert rows[2]["time_hidden"] == statistics["values"]["time_hidden"] and rows[0]["pauses"] == 0

    table = list(csv.DictReader(io.StringIO(crowdplay("data", "--store", path, "sessions", "--csv", "--task", "invaders-study"))))
    assert [row["session_id"] for row in table] == ["session-old", SESSION]
    assert float(table[1]["time_hidden"]) == statistics["values"]["time_hidden"] and table[1]["pauses"] == "1"
    assert table[0]["idle_time"] == "0" and table[0]["finished_at"] == "2.0"

    listing = crowdplay("data", "--store", path, "sessions").splitlines()
    assert listing[0].split() == ["session", "task", "participant", "finished", "played", "hidden", "idle", "pauses", "rtt_p95", "completed"]
    assert listing[-1] == "3 sessions" and any(line.startswith(SESSION) and line.split()[-3:] == ["1", "-", "no"] for line in listing)
