"""Policies in shared policy actors: batching, failures, a game that never waits for its AI, and
RLlib policies as partners, opponents and fallbacks of participants, recorded step by step."""

from __future__ import annotations

import asyncio
import time

import gymnasium as gym
import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from crowdplay.ai import AtariFB, make_policy
from crowdplay.ai.actor import policy_actor
from crowdplay.ai.agent import PolicyAgent
from crowdplay.ai.atari import normalize
from crowdplay.ai.remote import PolicyClient
from crowdplay.client import Participant
from crowdplay.controllers import Human
from crowdplay.data import Dataset
from crowdplay.data.exports import export_npz, export_rllib, load_npz
from crowdplay.environments import get_env
from crowdplay.realtime import LiveEnv
from crowdplay.recording.chunk import unpack_chunk
from crowdplay.recording.recorder import Recorder
from tests.conftest import TEST_SETTINGS, run
from tests.rllib_checkpoints import checkpoint, module_greedy
from tests.test_recording_e2e import wait_for_episode

SIX_ACTIONS = 6


def atari_observations(count: int) -> list[np.ndarray]:
    """AtariFB stacks of real Pong screens."""
    from crowdplay.environments import make_adapter

    adapter = make_adapter(get_env("Pong"))
    adapter.reset(11)
    framebuffer = AtariFB()
    stacks = []
    for step in range(count * 7):
        adapter.step({"agent_0": step % 6})
        stack = framebuffer.push(adapter.palette[adapter.screen()])
        if step % 7 == 6:
            stacks.append(stack)
    return stacks


def test_a_policy_actor_answers_concurrent_games_in_batches(trained_policies, settings):
    actor = policy_actor(settings, "test-pong-ppo", SIX_ACTIONS)
    ray.get(actor.ready.remote())
    observations = atari_observations(6)
    before = ray.get(actor.stats.remote())
    answers = ray.get([actor.compute.remote(observations[i : i + 3]) for i in range(4)])
    after = ray.get(actor.stats.remote())
    expected = make_policy("test-pong-ppo", gym.spaces.Discrete(SIX_ACTIONS)).compute_actions(observations)
    assert answers == [expected[i : i + 3] for i in range(4)]  # each game gets its own observations' answers
    assert after["requests"] - before["requests"] == 4 and after["actions"] - before["actions"] == 12
    assert after["batches"] - before["batches"] < 4  # requests arriving together were answered together
    assert after["batched"]

    one_at_a_time = policy_actor(settings, "test-pong-ppo-single", SIX_ACTIONS)
    assert ray.get(one_at_a_time.compute.remote(observations)) == expected
    stats = ray.get(one_at_a_time.stats.remote())
    assert not stats["batched"] and stats["actions"] == stats["batches"] == 6
    ray.kill(one_at_a_time)


def ai_game(policy_id: str, settings, env_id: str = "SpaceInvaders", recorder: Recorder | None = None) -> tuple[LiveEnv, PolicyAgent]:
    """A started single-agent game whose agent the policy plays through its policy actor."""
    live = LiveEnv(get_env(env_id), 1, settings, recorder=recorder)
    agent = PolicyAgent(policy_id, live.adapter.action_space("agent_0"), 0, PolicyClient(settings))
    live.set_controller("agent_0", agent.controller, agent)
    live.start()
    return live, agent


def test_a_failing_policy_answers_why_and_its_actor_survives(settings):
    actor = policy_actor(settings, "test-broken", SIX_ACTIONS)
    answers = ray.get(actor.compute.remote([np.zeros(128, np.uint8)] * 2))
    assert len(answers) == 2 and all(answer.startswith("policy raised ") for answer in answers), answers
    assert ray.get(actor.compute.remote([np.zeros(128, np.uint8)])) == answers[:1]
    stats = ray.get(actor.stats.remote())
    assert stats["failures"] == 2 and stats["last_error"] == answers[0] and stats["actions"] == 0

    async def scenario():
        live, _ = ai_game("test-broken", settings)
        await asyncio.sleep(0.5)
        live.stop("done")
        return live

    live = run(scenario())
    assert live.ticks >= 20 and live.stopped == "done"  # the game went on, playing the no-op
    assert set(live.episodes[-1].actions["agent_0"]) == {0}


def recorded_ai_game(policy_id: str, settings, seconds: float) -> tuple[list[dict], PolicyAgent, PolicyClient]:
    """Play ``seconds`` of Pong with ``policy_id`` as its only agent, recording; the chunks, the
    agent and its game process's PolicyClient."""
    chunks = []

    async def deliver(episode_id, seq, blob, steps, fields):
        chunks.append({**unpack_chunk(blob), **fields})

    async def scenario():
        recorder = Recorder("ai-failures", ("agent_0",), deliver, 30, {"agent_0": Human()})
        live = LiveEnv(get_env("Pong"), 1, settings, recorder=recorder)
        client = PolicyClient(settings)
        agent = PolicyAgent(policy_id, live.adapter.action_space("agent_0"), 0, client, "agent_0")
        live.set_controller("agent_0", agent.controller, agent)
        live.start()
        await asyncio.sleep(seconds)
        live.stop("done")
        await asyncio.sleep(0.5)
        return agent, client

    agent, client = run(scenario())
    return chunks, agent, client


def test_policy_failures_are_data_never_the_policys_answer(settings):
    """A policy that raises and one Ray cannot place: every action their agents played is
    recorded as a substitute with the reason, the episode counts them, and health says why."""
    from dataclasses import replace

    chunks, agent, client = recorded_ai_game("test-broken", settings, 1.0)
    rows = [row for chunk in chunks for row in chunk["ai_actions"]]
    assert len(rows) >= 10 and all(row[5] is not None for row in rows)  # never a real answer
    assert {row[5] for row in rows[1:]} == {"policy raised RuntimeError: this model is broken"}
    last = chunks[-1]["ai_answers"]["agent_0"]
    assert last["policy"] == 0 and last["substituted"] == len(rows) and last["reasons"]["policy raised RuntimeError: this model is broken"] == len(rows) - 1
    health = client.health.snapshot()["test-broken"]
    assert health["state"] == "failing" and health["reason"] == "policy raised RuntimeError: this model is broken" and health["answers"] == 0

    quick = replace(settings, policy_start_timeout_s=1.0)
    try:
        chunks, agent, client = recorded_ai_game("test-huge", quick, 2.5)
    finally:
        ray.kill(ray.get_actor(f"policy/test-huge/{SIX_ACTIONS}/0", namespace=settings.namespace))
    reasons = {row[5] for chunk in chunks for row in chunk["ai_actions"]}
    unplaced = [reason for reason in reasons if reason != "no answer yet"]
    assert unplaced and all(reason.startswith("policy actor not placed within 1 s: it asks for CPU 64; the cluster has CPU ") for reason in unplaced), reasons
    assert client.health.snapshot()["test-huge"]["state"] == "unschedulable"
    assert set(np.concatenate([chunk["action/agent_0"] for chunk in chunks])) == {0}  # the no-op all along, recorded as a substitute


def test_a_game_never_waits_for_a_slow_policy(settings):
    """The policy takes 50 ms (three frames): the game keeps 60 fps, plays the newest answer, and
    the recording says from which frame each answer was computed and from which step it played."""
    chunks = []

    async def deliver(episode_id, seq, blob, steps, fields):
        chunks.append(unpack_chunk(blob))

    async def scenario():
        ray.get(policy_actor(settings, "test-slow", SIX_ACTIONS).ready.remote())  # started: not measuring its boot
        recorder = Recorder("slow-ai", ("agent_0",), deliver, 30, {"agent_0": Human()})
        live, agent = ai_game("test-slow", settings, "Pong", recorder)
        started = time.monotonic()
        await asyncio.sleep(2.0)
        live.stop("done")
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.5)  # the last chunks are delivered
        return live, agent, elapsed

    live, agent, elapsed = run(scenario())
    assert live.ticks >= 0.9 * 60 * elapsed and live.ticks_late <= 6  # the frame rate held
    rows = [(chunk["first_step"], chunk["frame_id"], row) for chunk in chunks for row in chunk["ai_actions"]]
    assert rows[0][2] == [0, "agent_0", 0, -1, 0.0, "no answer yet"]  # the no-op before the first answer: a substitute
    rows = rows[1:]
    assert 15 <= len(rows) <= 45  # one answer per ~50 ms, not one per frame
    assert agent.skipped >= 60  # frames observed while the previous request was out
    for _first_step, frame_ids, (step, agent_id, action, observed_frame, latency_s, substitute) in rows:
        assert agent_id == "agent_0" and action == 1 and latency_s >= 0.05 and substitute is None
        assert frame_ids[step] - observed_frame >= 3  # applied three or more frames after the frame it saw
    actions = np.concatenate([chunk["action/agent_0"] for chunk in chunks])
    first_answer = next(chunk["first_step"] + row[0] for chunk in chunks for row in chunk["ai_actions"] if row[5] is None)
    assert set(actions[:first_answer]) == {0} and set(actions[first_answer:]) == {1}  # no-op until the first answer


async def play_until_episode_end(player: Participant, keys: list[set[str]]) -> dict:
    """Play pressing ``keys`` in turn every 20 frames until the episode ends; returns ``episode_end``."""
    ended = asyncio.ensure_future(player.wait_for_event("episode_end", timeout=30))
    frames = 0
    while not ended.done():
        await player.next_frame()
        frames += 1
        if frames % 20 == 0:
            await player.press(keys[(frames // 20) % len(keys)])
    return ended.result()


@pytest.mark.parametrize(
    ("env_id", "ai_agent", "policy_id"),
    [
        ("TestPongVsPPO", "first_0", "test-pong-ppo"),  # single-agent RLlib Atari policy as the opponent
        ("TestInvadersWithPPO", "second_0", "test-invaders-second"),  # a multi-agent checkpoint's module as the partner
        ("TestPongVsDQN", "first_0", "test-pong-dqn"),  # a DQN module: it answers actions, not distribution inputs
    ],
)
def test_a_participant_plays_a_full_episode_with_an_rllib_agent(trained_policies, base_url, manager, env_id, ai_agent, policy_id, tmp_path):
    """Every recorded answer is the policy's own (no substitute after the first), and each equals
    what the module itself answers, greedily, for the input the recorded screens make."""
    if policy_id == "test-pong-dqn":
        checkpoint("dqn", "Pong")
    ray.get(policy_actor(TEST_SETTINGS, policy_id, SIX_ACTIONS).ready.remote())  # the model is loaded before play

    async def scenario():
        async with await Participant.join(base_url, env_id) as player:
            await player.wait_for_event("play")
            end = await play_until_episode_end(player, [{"ArrowUp"}, {"ArrowLeft", "Space"}, set()])
            return player.session, player.hello, end

    session, hello, end = run(scenario())
    assert hello["agent"] != ai_agent and hello["humans"] == [hello["agent"]]
    assert end["truncated"] and end["steps"] == 300
    data = Dataset.open(TEST_SETTINGS.store_uri)
    document = wait_for_episode(data, session["game_id"], "complete")
    assert document["policies"] == [policy_id] and not document["human_only"]
    assert document["controllers"][ai_agent] == {"human": False, "policy": policy_id}
    episode = data.load(document["_id"], observations=None)
    answers = [answer for answer in data.ai_actions(document["_id"]) if answer["agent"] == ai_agent]
    assert len(answers) >= 100  # most frames of the 300 got a fresh answer
    actions = episode.agents[ai_agent].actions
    assert len(actions) == 300
    for answer, following in zip(answers, answers[1:] + [{"step": len(actions)}]):
        assert answer["observed_step"] < answer["step"]  # computed from a screen shown before it played
        assert set(actions[answer["step"] : following["step"]]) == {answer["action"]}  # played until the next answer
    assert set(actions[: answers[0]["step"]]) <= {0}  # the no-op until the first answer
    waited = int(answers[0]["substitute"] == "no answer yet")  # the model answered before the first step, or not
    assert all(answer["real"] for answer in answers[waited:])
    assert document["ai_answers"][ai_agent] == {"policy": len(answers) - waited, "substituted": waited, "reasons": {"no answer yet": 1} if waited else {}}
    # per step, the substitutes are flagged in the episode and in every export (the no-op before the first answer)
    flags = episode.agents[ai_agent].infos["ai_substitute"]
    assert flags.tolist() == [step < answers[waited]["step"] for step in range(300)]
    assert not episode.agents[hello["agent"]].infos["ai_substitute"].any()  # the participant's steps: never
    exported = load_npz(export_npz([data.load(document["_id"], observations=None)], tmp_path / "npz", agent=ai_agent, progress=False)[0])
    assert exported.agents[ai_agent].infos["ai_substitute"].tolist() == flags.tolist()
    table = pq.read_table(export_rllib([data.load(document["_id"], observations="rgb")], tmp_path / "rllib", agent=ai_agent, progress=False) / f"{document['_id']}.parquet")
    assert [info["ai_substitute"] for info in table.column("infos").to_pylist()] == flags.tolist()
    # each answer is the module's own greedy action for the input its screen made (AtariFB over the recorded screens)
    screens = data.load(document["_id"], observations="rgb").agents[ai_agent].observations  # screen i: after step i - 1 (0: the start)
    framebuffer, inputs = AtariFB(), []
    for screen in screens:
        inputs.append(framebuffer.push(screen))
    module = make_policy(policy_id, gym.spaces.Discrete(SIX_ACTIONS)).module
    real = [answer for answer in answers if answer["real"]]
    expected = module_greedy(module, normalize(np.stack([inputs[answer["observed_step"] + 1] for answer in real])))
    matches = sum(int(answer["action"]) == int(action) for answer, action in zip(real, expected))
    assert matches >= 0.99 * len(real), (matches, len(real))
    data.close()


def test_an_rllib_fallback_takes_over_when_a_participant_leaves(trained_policies, base_url, manager):
    ray.get(policy_actor(TEST_SETTINGS, "test-invaders-second", SIX_ACTIONS).ready.remote())

    async def scenario():
        stayer = await Participant.join(base_url, "TestInvadersPPOFallback")
        leaver = await Participant.join(base_url, "TestInvadersPPOFallback")
        await stayer.wait_for_event("play")
        for _ in range(30):
            await stayer.next_frame()
        await leaver.close()
        took_over = await stayer.wait_for_event("player", status="ai")
        for _ in range(120):
            await stayer.next_frame()
        await stayer.close()
        return stayer.session, leaver.hello["agent"], took_over

    session, left_agent, took_over = run(scenario())
    policy_id = {"first_0": "test-invaders-first", "second_0": "test-invaders-second"}[left_agent]
    assert took_over["agent"] == left_agent and took_over["policy"] == policy_id
    data = Dataset.open(TEST_SETTINGS.store_uri)
    document = wait_for_episode(data, session["game_id"], "interrupted")
    assert policy_id in document["policies"]
    answers = [answer for answer in data.ai_actions(document["_id"]) if answer["agent"] == left_agent]
    assert len(answers) >= 30 and all(answer["observed_step"] < answer["step"] for answer in answers)
    data.close()


def test_a_policy_line_refuses_strangers_and_garbage_and_the_actor_keeps_answering(settings):
    from crowdplay.ai.line import HELLO, REQUEST, PolicyLine
    from crowdplay.wire import read_message, write_message

    actor = policy_actor(settings, "test-slow", SIX_ACTIONS)
    host, port, secret = ray.get(actor.address.remote())

    async def scenario():
        closed = []
        for hello, request in ((b"wrong secret", b""), (secret.encode(), b"\x00\x00\x00\x00not msgpack \xc1")):
            reader, writer = await asyncio.open_connection(host, port)
            write_message(writer, HELLO, hello)
            write_message(writer, REQUEST, request)
            try:
                await asyncio.wait_for(read_message(reader), timeout=5)
            except ConnectionError:
                closed.append(True)
            writer.close()
        line = await PolicyLine(host, port, secret).connect()
        answer = await line.call([np.zeros(128, np.uint8), np.ones(128, np.uint8)])
        line.close()
        return closed, answer

    closed, answer = run(scenario())
    assert closed == [True, True]  # both connections were closed without an answer
    assert answer == [1, 1]


def test_agents_play_the_no_op_while_their_policy_actor_is_down_and_resume_after_its_restart(settings, monkeypatch):
    from crowdplay.ai import remote

    monkeypatch.setattr(remote, "RETRY_S", 0.5)
    actor = policy_actor(settings, "test-slow", SIX_ACTIONS)
    ray.get(actor.ready.remote())

    async def scenario():
        live, agent = ai_game("test-slow", settings)
        await asyncio.sleep(1.0)
        before = agent.answers
        ray.kill(actor, no_restart=False)  # Ray restarts it (max_restarts=-1)
        deadline = time.monotonic() + 10  # the kill is asynchronous: the process dies a moment later
        while time.monotonic() < deadline and agent.action != 0:
            await asyncio.sleep(0.02)
        during = agent.action
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (agent.action == 1 and agent.latency_s > 0):
            await asyncio.sleep(0.1)
        resumed = agent.action
        live.stop("done")
        return before, during, resumed, live

    before, during, resumed, live = run(scenario())
    assert before >= 5 and during == 0 and resumed == 1  # answers, the no-op while down, answers again
    assert live.ticks_late <= 10


def test_a_policy_with_two_replicas_gets_two_actors_sharing_its_agents(settings):
    async def scenario():
        client = PolicyClient(settings)
        client.prepare("test-slow-pair", SIX_ACTIONS)  # both replicas start while the game waits
        agents = [PolicyAgent("test-slow-pair", gym.spaces.Discrete(SIX_ACTIONS), 0, client) for _ in range(12)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(agent.action == 1 for agent in agents):
            for frame, agent in enumerate(agents):
                agent.observe(frame, np.zeros(128, np.uint8))
            await asyncio.sleep(0.05)
        return agents

    agents = run(scenario())
    assert all(agent.action == 1 for agent in agents)
    assert {agent.replica for agent in agents} == {0, 1}
    replicas = [ray.get_actor(f"policy/test-slow-pair/{SIX_ACTIONS}/{replica}", namespace=settings.namespace) for replica in (0, 1)]
    served = [ray.get(actor.stats.remote())["actions"] for actor in replicas]
    assert all(count > 0 for count in served)


def console_reports(manager, capsys) -> str:
    """What ``crowdplay serve``'s report printer writes to the console within a second."""
    import threading

    from crowdplay.cli import print_policy_reports_until

    capsys.readouterr()
    stop = threading.Event()
    printer = threading.Thread(target=print_policy_reports_until, args=(stop, manager, 0.05))
    printer.start()
    time.sleep(1.0)
    stop.set()
    printer.join()
    return capsys.readouterr().err


def test_a_failing_policy_reaches_the_console_the_dashboard_and_metrics(base_url, manager, capsys):
    """Played through Serve: the failure is reported once to the manager, printed by ``crowdplay
    serve``'s report loop, shown in the overview the dashboard renders and in /metrics' text."""
    from crowdplay.web.metrics import prometheus_text

    async def scenario():
        async with await Participant.join(base_url, "TestPongVsBroken") as player:
            await player.wait_for_event("play")
            notice = await player.wait_for_event("player", status="ai_unavailable")  # the participant plays on, told why
            assert notice["agent"] == "first_0" and notice["policy"] == "test-broken" and notice["reason"] == "policy raised RuntimeError: this model is broken"
            for _ in range(60):
                await player.next_frame()
            return player.session

    ray.get(policy_actor(TEST_SETTINGS, "test-broken", SIX_ACTIONS).ready.remote())  # started: its failures, not its boot
    session = run(scenario())
    deadline, reports = time.monotonic() + 15, []
    while not reports and time.monotonic() < deadline:  # reports travel fire-and-forget
        reports = [report for report in ray.get(manager.policy_reports_after.remote(0)) if report.get("policy_id") == "test-broken"]
        time.sleep(0.2)
    assert [report["state"] for report in reports] == ["failing"] and reports[0]["reason"] == "policy raised RuntimeError: this model is broken"

    console = console_reports(manager, capsys)
    assert console.count("crowdplay: policy 'test-broken' is failing: policy raised RuntimeError: this model is broken") == 1

    overview = ray.get(manager.overview.remote())
    assert {report["policy_id"] for report in overview["policy_reports"]} >= {"test-broken"}
    data = Dataset.open(TEST_SETTINGS.store_uri)
    deadline = time.monotonic() + 30
    document = wait_for_episode(data, session["game_id"], None)
    while "ended_at" not in document and time.monotonic() < deadline:  # the participant left: the episode's last chunk
        time.sleep(0.25)
        document = wait_for_episode(data, session["game_id"], None)
    counts = document["ai_answers"]["first_0"]
    assert counts["policy"] == 0 and counts["reasons"]["policy raised RuntimeError: this model is broken"] >= 10
    data.close()
    policy = overview["policies"]["test-broken"]  # the game process that hosted it still knows
    assert policy["state"] == "failing" and policy["answers"] == 0 and policy["substitutes"] > 0
    metrics = prometheus_text(overview)
    assert 'crowdplay_policy_state{policy="test-broken",state="failing"} 1.0' in metrics
    assert f'crowdplay_policy_substitutes{{policy="test-broken"}} {float(policy["substitutes"])}' in metrics


def test_a_game_whose_ai_partner_is_unavailable_ends_when_its_environment_says_so(base_url, manager):
    ray.get(policy_actor(TEST_SETTINGS, "test-broken", SIX_ACTIONS).ready.remote())

    async def scenario():
        async with await Participant.join(base_url, "TestPongVsBrokenEnds") as player:
            await player.wait_for_event("play")
            return player.session, await player.wait_for_event("end")

    session, end = run(scenario())
    reason = "the AI playing first_0 (test-broken) is unavailable: policy raised RuntimeError: this model is broken"
    assert end["reason"] == reason
    data = Dataset.open(TEST_SETTINGS.store_uri)
    document = wait_for_episode(data, session["game_id"], "interrupted")
    assert document["reason"] == reason and document["ai_answers"]["first_0"]["policy"] == 0
    data.close()


POLICY_ADMIN = {"Authorization": "Bearer policy-admin-token"}


@pytest.fixture(scope="module")
def admin_url(base_url):
    """The dashboard's endpoints (an ingress application with an admin token on the same manager)."""
    from dataclasses import replace

    from ray import serve

    from crowdplay.web.ingress import build_app

    serve.run(build_app(replace(TEST_SETTINGS, admin_token="policy-admin-token")), name="crowdplay-policy-admin", route_prefix="/policy-admin")
    yield f"{base_url}/policy-admin"
    serve.delete("crowdplay-policy-admin")


def test_a_killed_policy_actor_shows_in_the_data_the_dashboard_metrics_and_the_page(base_url, admin_url, manager, monkeypatch):
    """Mid-game the policy's actor is killed (Ray restarts it): the participant is told their AI
    opponent is unavailable and then back, the dashboard's overview and /metrics (over HTTP)
    show it unavailable meanwhile, the manager's report log (the console's source) has both
    changes, and the recording marks what the agent played meanwhile as substitutes."""
    from tests.test_writer_outage import timed

    actor = policy_actor(TEST_SETTINGS, "test-slow", SIX_ACTIONS)
    ray.get(actor.ready.remote())
    reports_before = ray.get(manager.policy_reports_after.remote(0))
    seen: dict = {}

    def dashboard_shows_it_down() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not seen.get("metrics"):
            _, _, overview = timed(f"{admin_url}/api/admin/overview", "GET", POLICY_ADMIN)
            policy = overview.get("policies", {}).get("test-slow", {})
            if policy.get("state") == "unavailable":
                seen["overview"] = policy
                _, _, metrics = timed(f"{admin_url}/metrics", "GET", POLICY_ADMIN)
                if 'crowdplay_policy_state{policy="test-slow",state="unavailable"} 1.0' in metrics:
                    seen["metrics"] = metrics
            time.sleep(0.1)

    async def scenario():
        async with await Participant.join(base_url, "TestPongVsSlow") as player:
            await player.wait_for_event("play")
            for _ in range(60):
                await player.next_frame()
            ray.kill(actor, no_restart=False)
            watcher = asyncio.ensure_future(asyncio.to_thread(dashboard_shows_it_down))
            down = await player.wait_for_event("player", timeout=20, status="ai_unavailable")
            back = await player.wait_for_event("player", timeout=40, status="ai_back")
            await watcher
            return player.session, down, back

    session, down, back = run(scenario())
    assert down["agent"] == "first_0" and down["policy"] == "test-slow" and down["reason"].startswith("policy actor unavailable: ")
    assert back["policy"] == "test-slow"
    assert seen.get("overview", {}).get("reason", "").startswith("policy actor unavailable: ") and "metrics" in seen
    reports = [report for report in ray.get(manager.policy_reports_after.remote(0)) if report not in reports_before and report.get("policy_id") == "test-slow"]
    assert [report["state"] for report in reports][:2] == ["unavailable", "answering"], reports
    data = Dataset.open(TEST_SETTINGS.store_uri)
    deadline = time.monotonic() + 30
    while not any(document.get("status") == "interrupted" for document in [doc for doc in data.episodes() if doc["game_id"] == session["game_id"]]):
        assert time.monotonic() < deadline, "the game's last episode was not stored"
        time.sleep(0.25)
    documents = sorted([doc for doc in data.episodes() if doc["game_id"] == session["game_id"]], key=lambda document: document["started_at"])  # 5 s episodes
    answers = [answer for document in documents for answer in data.ai_actions(document["_id"]) if answer["agent"] == "first_0"]
    down_rows = [answer for answer in answers if not answer["real"] and answer["substitute"].startswith("policy actor unavailable: ")]
    assert down_rows and answers[-1]["real"] and all(answer["action"] == 0 for answer in down_rows)  # the no-op while down, then answers again
    assert sum(document["ai_answers"]["first_0"]["substituted"] for document in documents) >= len(down_rows)
    data.close()


def test_an_unschedulable_policy_reaches_the_console_the_dashboard_and_metrics(base_url, manager, capsys):
    """Its actor asks for 64 CPUs: after ``policy_start_timeout_s`` (20 s here) the game process
    reports it unschedulable, with what it asks and what the cluster has, everywhere."""
    from crowdplay.web.metrics import prometheus_text

    def unschedulable_reports() -> list[dict]:
        deadline, reports = time.monotonic() + 40, []
        while not reports and time.monotonic() < deadline:
            reports = [report for report in ray.get(manager.policy_reports_after.remote(0)) if report.get("policy_id") == "test-huge" and report["state"] == "unschedulable"]
            time.sleep(0.2)
        return reports

    async def scenario():
        async with await Participant.join(base_url, "TestPongVsHuge") as player:
            await player.wait_for_event("play")
            notice = await player.wait_for_event("player", timeout=40, status="ai_unavailable")
            reports = await asyncio.to_thread(unschedulable_reports)
            for _ in range(60):  # a second of play after the verdict: its substitutes carry it
                await player.next_frame()
            return player.session, notice, reports

    try:
        session, notice, reports = run(scenario())
        console = console_reports(manager, capsys)
        overview = ray.get(manager.overview.remote())
    finally:
        ray.kill(ray.get_actor(f"policy/test-huge/{SIX_ACTIONS}/0", namespace=TEST_SETTINGS.namespace))
    placed = "policy actor not placed within 20 s: it asks for CPU 64; the cluster has CPU "
    assert reports and reports[0]["reason"].startswith(placed)
    assert f"crowdplay: policy 'test-huge' is unschedulable: {placed}" in console
    assert overview["policies"]["test-huge"]["state"] == "unschedulable"
    assert 'crowdplay_policy_state{policy="test-huge",state="unschedulable"} 1.0' in prometheus_text(overview)
    assert notice["policy"] == "test-huge" and notice["reason"] in ("no answer yet", reports[0]["reason"])
    data = Dataset.open(TEST_SETTINGS.store_uri)
    deadline = time.monotonic() + 30
    while not any(document.get("status") == "interrupted" for document in data.episodes() if document["game_id"] == session["game_id"]):
        assert time.monotonic() < deadline
        time.sleep(0.25)
    rows = [answer for document in data.episodes() if document["game_id"] == session["game_id"] for answer in data.ai_actions(document["_id"])]
    data.close()
    assert rows and not any(answer["real"] for answer in rows) and any(answer["substitute"].startswith(placed) for answer in rows)
