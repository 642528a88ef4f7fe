"""Controllers: stored exactly as docs/recording.md describes them, and read back as their type."""

from __future__ import annotations

import pickle

from crowdplay.controllers import Human, PolicyControl, documents, from_document


def test_controllers_are_stored_as_the_documented_dicts() -> None:
    assert Human("p-1").document() == {"human": True, "participant": "p-1"}
    assert Human().document() == {"human": True, "participant": None}
    assert PolicyControl("random").document() == {"human": False, "policy": "random"}
    assert documents({"a": Human("p"), "b": PolicyControl("x")}) == {"a": {"human": True, "participant": "p"}, "b": {"human": False, "policy": "x"}}


def test_stored_controllers_read_back_as_their_type() -> None:
    for controller in (Human("p-1"), Human(), PolicyControl("random")):
        assert from_document(controller.document()) == controller
        assert pickle.loads(pickle.dumps(controller)) == controller  # they cross Ray calls
    assert from_document({"human": True}) == Human()
