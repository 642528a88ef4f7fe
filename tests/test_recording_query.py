"""The embedded store's MongoDB matcher answers the dataset API's queries as MongoDB does."""

from __future__ import annotations

import pytest

from crowdplay.recording.query import matches

EPISODES = {
    "done": {"status": "complete", "participants": ["p-1", "p-2"], "started_at": 1.0, "returns": {"agent_0": 3}},
    "left": {"status": "interrupted", "participants": [], "started_at": 5},
    "playing": {"participants": ["p-2"], "started_at": "not a time"},
}


@pytest.mark.parametrize("query, expected", [
    ({}, {"done", "left", "playing"}),
    ({"participants": "p-2"}, {"done", "playing"}),  # a value in an array field matches
    ({"status": {"$ne": "complete"}}, {"left", "playing"}),  # a missing field is not equal either
    ({"status": None}, {"playing"}),
    ({"$or": [{"status": {"$in": ["interrupted"]}}, {"status": {"$exists": False}}]}, {"left", "playing"}),
    ({"started_at": {"$gte": 1, "$lt": 5.0}}, {"done"}),  # numbers of any type; a string never orders with them
    ({"returns.agent_0": {"$gt": 2}}, {"done"}),
    ({"$nor": [{"status": "complete"}], "participants": {"$nin": ["p-2"]}}, {"left"}),
])
def test_documents_match_as_in_mongodb(query: dict, expected: set[str]) -> None:
    assert {name for name, document in EPISODES.items() if matches(document, query)} == expected


@pytest.mark.parametrize("query", [{"$where": "true"}, {"status": {"$regex": "^comp"}}])
def test_an_unknown_operator_is_refused_by_name(query: dict) -> None:
    with pytest.raises(ValueError, match=r"\$where|\$regex"):
        matches(EPISODES["done"], query)
