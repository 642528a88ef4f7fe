"""The episode's stored document, built on a fake clock: what each chunk carries, who played, who
watched, how the AI's answers are counted, and the fields that close an episode."""

from __future__ import annotations

from crowdplay.controllers import Human, PolicyControl
from crowdplay.recording.episode_document import MAX_SUBSTITUTE_REASONS, EpisodeDocument, closing_fields, interrupted_fields

HUMAN = Human("p-1")
AI = PolicyControl("random")


class Clock:
    """Wall-clock seconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_episode_starts_with_the_game_the_shared_fields_its_description_and_who_plays() -> None:
    clock = Clock()
    document = EpisodeDocument("g", {"task_id": "t"}, clock)
    document.begin(3, {"env_id": "Pong", "seed": 7}, {"agent_0": HUMAN, "agent_1": AI})
    assert list(document.fields) == [
        "game_id", "episode", "started_at", "task_id", "env_id", "seed", "controllers", "participants", "policies", "human_only",
    ]
    assert document.fields["started_at"] == 1000.0
    assert document.fields["participants"] == ["p-1"] and document.fields["policies"] == ["random"]
    assert document.fields["human_only"] is False
    clock.now = 1005.0
    document.restamp_start()
    assert document.fields["started_at"] == 1005.0


def test_every_participant_and_policy_of_the_episode_stays_in_its_summary() -> None:
    document = EpisodeDocument("g", None, Clock())
    document.begin(0, {}, {"agent_0": HUMAN})
    assert document.fields["human_only"] is True
    document.note_controllers({"agent_0": AI})
    document.note_controllers({"agent_0": Human("p-2")})
    assert document.fields["participants"] == ["p-1", "p-2"] and document.fields["policies"] == ["random"]
    assert document.fields["human_only"] is False


def test_sessions_described_once_are_stored_with_every_later_episode() -> None:
    document = EpisodeDocument("g", {"task_id": "t"}, Clock())
    document.describe_agent("agent_0", {"session": "s-1"})
    document.begin(0, {}, {"agent_0": HUMAN})
    document.begin(1, {}, {"agent_0": HUMAN})
    assert document.fields["sessions"] == {"agent_0": {"session": "s-1"}}


def test_watchers_are_noted_with_their_times_and_carried_into_the_next_episode() -> None:
    clock = Clock()
    document = EpisodeDocument("g", None, clock)
    document.begin(0, {}, {"agent_0": HUMAN})
    document.note_watcher("r-1", True)
    first_chunk = document.first_chunk_fields()
    clock.now = 1010.0
    document.note_watcher("r-2", True)
    document.note_watcher("r-1", False)
    assert document.fields["watched"] == [
        {"who": "r-1", "from": 1000.0, "until": 1010.0},
        {"who": "r-2", "from": 1010.0, "until": None},
    ]
    assert first_chunk["watched"] == [{"who": "r-1", "from": 1000.0, "until": None}]  # a sealed copy keeps its own
    document.begin(1, {}, {"agent_0": HUMAN})
    assert document.fields["watched"] == [{"who": "r-2", "from": 1010.0, "until": None}]


def test_ai_answers_are_counted_per_agent_with_a_bounded_number_of_reasons() -> None:
    document = EpisodeDocument("g", None, Clock())
    document.begin(0, {}, {"agent_0": AI})
    document.count_ai_answer("agent_0", None)
    for index in range(MAX_SUBSTITUTE_REASONS + 2):
        document.count_ai_answer("agent_0", f"reason {index}")
    document.count_ai_answer("agent_0", "reason 0")
    counts = document.fields["ai_answers"]["agent_0"]
    assert counts["policy"] == 1 and counts["substituted"] == MAX_SUBSTITUTE_REASONS + 3
    assert counts["reasons"]["other"] == 2 and counts["reasons"]["reason 0"] == 2
    assert len(counts["reasons"]) == MAX_SUBSTITUTE_REASONS + 1


def test_the_last_chunk_stores_the_outcome_after_everything_else() -> None:
    clock = Clock()
    document = EpisodeDocument("g", None, clock)
    document.begin(0, {"env_id": "Pong"}, {"agent_0": HUMAN})
    clock.now = 1060.0
    closing = closing_fields(600, {"agent_0": 3.0}, True, False, {"agent_0": {"score": 3.0}})
    stored = document.close("complete", closing, 10)
    assert list(stored)[-8:] == ["steps", "returns", "terminated", "truncated", "statistics", "status", "ended_at", "chunks"]
    assert stored["status"] == "complete" and stored["ended_at"] == 1060.0 and stored["chunks"] == 10


def test_closing_fields_name_the_reason_only_when_the_game_stopped() -> None:
    assert list(closing_fields(5, {}, False, False, {})) == ["steps", "returns", "terminated", "truncated", "statistics"]
    stopped = closing_fields(5, {"agent_0": 1.0}, False, False, {"agent_0": {"score": 1.0}}, reason="left")
    assert list(stopped) == ["steps", "returns", "terminated", "truncated", "reason", "statistics"]
    assert stopped["reason"] == "left"


def test_an_episode_lost_with_its_process_is_interrupted_without_its_last_chunk() -> None:
    assert interrupted_fields("node lost", 5.0) == {"status": "interrupted", "reason": "node lost", "ended_at": 5.0, "lost_last_chunk": True}
