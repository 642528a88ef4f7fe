"""Policy answers and substitutes without Ray: reasons, per-policy health and its reports, the
per-stream episodes connector pipelines read, and the recording's counts."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from crowdplay.ai.agent import PolicyAgent
from crowdplay.ai.answers import NO_ANSWER_YET, checked_action, failure_reason
from crowdplay.ai.health import PolicyHealth, merge_policy_snapshots
from crowdplay.ai.streams import HISTORY, StreamEpisodes
from crowdplay.web.metrics import prometheus_text


def test_answers_outside_the_action_space_become_reasons():
    assert checked_action(3, 6) == 3 and checked_action(np.int64(5), 6) == 5 and checked_action(2.0, 6) == 2
    assert checked_action(6, 6) == "policy answered 6, outside 0..5"
    assert checked_action(True, 6).startswith("policy answered True, not an action")
    assert checked_action(None, 6) == "policy answered None, not an action"
    assert failure_reason(KeyError("action_dist_inputs")) == "policy raised KeyError: 'action_dist_inputs'"
    assert len(failure_reason(ValueError("x" * 1000))) == 200


def test_a_policy_agent_marks_every_substitute_with_its_reason():
    agent = PolicyAgent("noop", gym.spaces.Discrete(4), noop=0, agent="agent_0")
    assert agent.substitute == NO_ANSWER_YET and agent.action == 0
    agent._answer(5, 0, 2, 0.01)
    assert (agent.action, agent.substitute, agent.real_answers) == (2, None, 1)
    agent._answer(6, 0, "policy raised RuntimeError: broken", 0.01)
    assert (agent.action, agent.substitute) == (0, "policy raised RuntimeError: broken")
    agent._answer(7, 0, 9, 0.01)  # outside the space: a substitute too, never action 9
    assert (agent.action, agent.substitute) == (0, "policy answered 9, outside 0..3")
    assert agent.substitutes == {"policy raised RuntimeError: broken": 1, "policy answered 9, outside 0..3": 1}
    agent.reset()
    assert agent.substitute == NO_ANSWER_YET and agent.observed_frame == -1
    no_noop = PolicyAgent("noop", gym.spaces.Discrete(4), noop=None, agent="agent_0")
    no_noop._answer(1, 0, 3, 0.0)
    no_noop._answer(2, 0, "policy raised ValueError: x", 0.0)
    assert no_noop.action == 3 and no_noop.substitute == "policy raised ValueError: x"  # keeps its previous action


def test_health_follows_each_policy_and_reports_each_change_once():
    now = [100.0]
    health = PolicyHealth(clock=lambda: now[0])
    health.starting("dqn")
    assert health.snapshot()["dqn"]["state"] == "starting" and health.take_reports() == []
    health.answered("dqn", [1, 2, 3], 0.004)
    assert health.take_reports() == []  # a first answer is no news
    for _ in range(3):
        health.answered("dqn", ["policy raised KeyError: 'action_dist_inputs'"] * 2, 0.003)
    reports = health.take_reports()
    assert [(r["policy_id"], r["state"], r["reason"]) for r in reports] == [("dqn", "failing", "policy raised KeyError: 'action_dist_inputs'")]
    health.answered("dqn", ["policy actor not placed within 60 s: it asks for CPU 1; the cluster has CPU 0 free"], 60.0)
    health.answered("dqn", [4], 0.005)
    assert [r["state"] for r in health.take_reports()] == ["unschedulable", "answering"]
    figures = health.snapshot()["dqn"]
    assert figures["answers"] == 4 and figures["substitutes"] == 7 and figures["answers_per_s"] == 0.4
    assert figures["substitute_rate"] == round(7 / 11, 4) and figures["latency_p50_ms"] == 4.0
    now[0] += 11  # the window moves on: rates fall, totals stay
    later = health.snapshot()["dqn"]
    assert later["answers_per_s"] == 0 and later["substitute_rate"] == 0 and later["answers"] == 4

    other = {"dqn": {**figures, "state": "unavailable", "reason": "policy actor unavailable: gone"}}
    merged = merge_policy_snapshots([health.snapshot(), other])["dqn"]
    assert merged["state"] == "unavailable" and merged["answers"] == 8
    text = prometheus_text({"policies": {"dqn": merged}}).splitlines()
    assert 'crowdplay_policy_state{policy="dqn",state="unavailable"} 1.0' in text
    assert 'crowdplay_policy_substitutes{policy="dqn"} 14.0' in text


class FakeEpisode:
    """Records what a StreamEpisodes adds (the real RLlib episodes are tested with Ray)."""

    def __init__(self) -> None:
        self.steps: list[tuple] = []

    def __len__(self) -> int:
        return max(0, len(self.steps) - 1)

    def add_env_reset(self, observation):
        self.steps.append(("reset", observation))

    def add_env_step(self, observation, action, reward):
        self.steps.append(("step", observation, action, reward))

    def cut(self, len_lookback_buffer):
        successor = FakeEpisode()
        successor.steps = self.steps[-len_lookback_buffer - 1 :]
        return successor


def test_stream_episodes_grow_per_stream_trim_and_forget():
    now = [0.0]
    streams = StreamEpisodes(FakeEpisode, None, clock=lambda: now[0])
    first = streams.episodes(["a", "b", None], [1, 2, 3])
    assert [episode.steps for episode in first] == [[("reset", 1)], [("reset", 2)], [("reset", 3)]]
    streams.answered(["a", "b", None], [4, 5, 6])
    second = streams.episodes(["a", "b"], [7, 8])
    assert second[0].steps[-1] == ("step", 7, 4, 0.0) and second[1].steps[-1] == ("step", 8, 5, 0.0)
    assert len(streams) == 2  # the unnamed stream is not kept
    streams.answered(["a"], [1])
    for observation in range(3 * HISTORY):
        episode = streams.episodes(["a"], [observation])[0]
        streams.answered(["a"], [1])
    assert len(episode) <= 2 * HISTORY  # trimmed, keeping a lookback
    continued = streams.episodes(["b"], [9])[0]  # b's last answer did not come: its previous action stands
    assert continued.steps[-1] == ("step", 9, 5, 0.0)
    now[0] += 1000
    streams.episodes(["c"], [0])
    assert len(streams) == 1  # a and b went quiet and were forgotten
