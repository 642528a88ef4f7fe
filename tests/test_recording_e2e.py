"""Recording end to end: play through Serve with ``crowdplay.client`` (real EnvActor, real
TrajectoryWriter, embedded store), then read the episode back through the dataset API; and kill
the writer or the EnvActor mid-episode."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import numpy as np
import ray

from crowdplay import protocol
from crowdplay.client import Participant, ServerError
from crowdplay.data import Dataset, replay_check
from crowdplay.manager import HOST_LOST
from crowdplay.recording.writer import get_or_create_writer
from tests.conftest import TEST_SETTINGS, run

PRESSES = {30: {"Space"}, 150: {"ArrowRight"}, 170: {"ArrowRight", "Space"}, 200: set()}


async def play(base_url: str, frames: int, participant: str | None = None, during=None) -> tuple[dict, list, dict]:
    """Play ``frames`` frames pressing PRESSES; ``during(frame_index)`` runs between frames."""
    params = {"PROLIFIC_PID": participant, "study": "recording-e2e"} if participant else None
    async with await Participant.join(base_url, "SpaceInvaders", participant=participant, params=params) as player:
        shown, sent = [], {}
        for index in range(frames):
            shown.append(await player.next_frame())
            if index in PRESSES:
                sent[await player.press(PRESSES[index])] = sorted(PRESSES[index])
            if during is not None:
                await during(index)
        return player.session, shown, sent


def wait_for_episode(data: Dataset, game_id: str, status: str | None, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [doc for doc in data.episodes() if doc["game_id"] == game_id]
        if found and (status is None or found[0].get("status") == status):
            return found[0]
        time.sleep(0.25)
    raise AssertionError(f"episode of game {game_id} with status {status} not stored within {timeout_s} s")


def assert_matches_what_was_shown(episode, shown: list) -> None:
    """Every frame the participant displayed is the stored observation of that frame id, and the
    score in its header is the return so far."""
    trajectory = episode.agents["agent_0"]
    index_of = {int(frame_id): step for step, frame_id in enumerate(trajectory.infos["frame_id"])}
    returns = np.cumsum(trajectory.rewards)
    checked = 0
    for header, screen in shown:
        step = index_of.get(header.frame_id)
        if step is None:
            continue  # the episode's first frame (before any step)
        assert np.array_equal(trajectory.observations[step + 1], screen), f"frame {header.frame_id}"
        assert header.score == returns[step]
        checked += 1
    assert checked >= len(shown) - 1


def test_a_played_episode_reads_back_as_shown_and_sent(base_url, manager):
    session, shown, sent = run(play(base_url, 260, participant="worker-42"))
    data = Dataset.open(TEST_SETTINGS.store_uri)
    info = wait_for_episode(data, session["game_id"], "interrupted")  # ends after the reconnect grace
    assert info["participants"] == [session["participant"]] and session["participant"].startswith("p-")
    assert info["sessions"]["agent_0"]["params"] == {"study": "recording-e2e"}  # the worker id is never stored raw
    assert "worker-42" not in repr(info)
    assert info["sessions"]["agent_0"]["user_agent"] and info["task_id"] == "SpaceInvaders" and info["human_only"]

    episode = data.load(info["_id"], observations="palette")
    assert episode.steps == info["steps"] >= len(shown)
    assert_matches_what_was_shown(episode, shown)
    inputs = data.inputs(info["_id"])
    assert {event["seq"]: event["keys"] for event in inputs} == sent
    actions = episode.agents["agent_0"].actions
    fire_step = next(event["step"] for event in inputs if event["keys"] == ["Space"])
    assert actions[fire_step] == 1 and (actions[:fire_step] == 0).all()
    assert replay_check(data, info["_id"]).ok

    # Deleting the participant (by the id the study knows) removes everything of theirs.
    assert data.delete_participant("worker-42") == [info["_id"]]
    assert not data.episodes(participant=session["participant"]) and not list(data.store.iter_chunks(info["_id"]))
    data.close()


def process_of(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def test_killing_the_writer_mid_episode_loses_no_chunk(base_url, manager):
    writer = get_or_create_writer(TEST_SETTINGS)
    pid = process_of(writer)

    async def kill_at(index: int) -> None:
        if index == 120:
            os.kill(pid, signal.SIGKILL)

    session, shown, _ = run(play(base_url, 420, during=kill_at))
    data = Dataset.open(TEST_SETTINGS.store_uri)
    info = wait_for_episode(data, session["game_id"], "interrupted", timeout_s=60)
    assert process_of(writer) != pid  # a new incarnation took the resent chunks
    episode = data.load(info["_id"], observations="palette")
    assert episode.steps == info["steps"] and len(list(data.chunks(info["_id"]))) == info["chunks"]
    assert_matches_what_was_shown(episode, shown)
    data.close()


def test_killing_the_env_actor_tells_the_participant_frees_the_seat_and_loses_at_most_the_last_second(base_url, manager):
    async def scenario():
        player = await Participant.join(base_url, "SpaceInvaders")
        shown_ids = [(await player.next_frame())[0].frame_id for _ in range(240)]
        actor = await asyncio.to_thread(ray.get, manager.session_actor.remote(player.session["session_id"]))
        os.kill(await asyncio.to_thread(process_of, actor), signal.SIGKILL)
        await player.wait_closed(timeout=10)
        shown_ids += [header.frame_id for header, _ in drain(player.frames)]

        # The seat is freed: the manager noticed the death without anyone calling the process.
        deadline = time.monotonic() + 15
        while player.session["session_id"] in {s["session_id"] for s in await asyncio.to_thread(ray.get, manager.list_sessions.remote())}:
            assert time.monotonic() < deadline, "the dead game's session was never freed"
            await asyncio.sleep(0.2)
        try:  # the page's reconnect hears why, not "no such session"
            await Participant.connect(base_url, player.session)
            refused = None
        except ServerError as error:
            refused = error.body

        # And the participant can start again.
        async with await Participant.join(base_url, "SpaceInvaders") as again:
            await again.next_frame()
        return player, shown_ids, refused, again

    player, shown_ids, refused, again = run(scenario())
    assert player.events[-1]["type"] == "error" and player.events[-1]["reason"] == HOST_LOST
    assert player.websocket.close_code == protocol.CLOSE_INTERNAL_ERROR
    assert refused == {"type": "error", "reason": HOST_LOST, "code": protocol.CLOSE_SESSION_ENDED}
    assert again.session["game_id"] != player.session["game_id"]

    data = Dataset.open(TEST_SETTINGS.store_uri)
    info = wait_for_episode(data, player.session["game_id"], "interrupted")  # marked by the manager
    assert info["reason"] == HOST_LOST and info["lost_last_chunk"]
    episode = data.load(info["_id"], observations="palette")
    frame_ids = episode.agents["agent_0"].infos["frame_id"]
    assert frame_ids[0] <= shown_ids[1] and shown_ids[-1] - frame_ids[-1] <= 60  # at most one second lost
    assert np.all(np.diff(frame_ids) >= 1)  # everything before it is there, in order
    data.close()


def drain(queue: asyncio.Queue) -> list:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
