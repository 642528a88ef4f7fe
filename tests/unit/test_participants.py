"""The participant fields of a session request: what is kept, and each refusal's exact reason."""

from __future__ import annotations

import pytest

from crowdplay.web.participants import MAX_FIELD_CHARS, MAX_PARAMS, participant_details


def test_an_empty_request_keeps_only_the_user_agent_cut_to_size() -> None:
    assert participant_details({}, "x" * 1000) == {"user_agent": "x" * MAX_FIELD_CHARS, "params": {}}


def test_every_field_is_kept_and_worker_ids_leave_the_params() -> None:
    body = {"participant": "p1", "params": {"PROLIFIC_PID": "w9", "lang": "en"}, "resume": "r", "consented_at": 12}
    details = participant_details(body, "agent")
    assert details == {"user_agent": "agent", "id": "p1", "resume": "r", "params": {"lang": "en"}, "consented_at": 12.0}
    assert isinstance(details["consented_at"], float)


def test_without_a_participant_the_first_worker_id_given_is_the_id() -> None:
    params = {"workerId": "w2", "PROLIFIC_PID": "", "worker_id": "w3"}
    assert participant_details({"params": params}, "")["id"] == "w2"
    assert "id" not in participant_details({"params": {"PROLIFIC_PID": ""}}, "")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"participant": ""}, f"'participant' must be a non-empty string of at most {MAX_FIELD_CHARS} characters"),
        ({"participant": 5}, f"'participant' must be a non-empty string of at most {MAX_FIELD_CHARS} characters"),
        ({"participant": "p" * (MAX_FIELD_CHARS + 1)}, f"'participant' must be a non-empty string of at most {MAX_FIELD_CHARS} characters"),
        ({"params": ["a"]}, "'params' must be an object of string values (the page's URL parameters)"),
        ({"params": {"a": 1}}, "'params' must be an object of string values (the page's URL parameters)"),
        ({"params": {str(i): "" for i in range(MAX_PARAMS + 1)}}, f"'params' takes at most {MAX_PARAMS} entries of at most {MAX_FIELD_CHARS} characters"),
        ({"params": {"a": "b" * MAX_FIELD_CHARS}}, f"'params' takes at most {MAX_PARAMS} entries of at most {MAX_FIELD_CHARS} characters"),
        ({"resume": 1}, f"'resume' must be the string the session's first answer gave (at most {MAX_FIELD_CHARS} characters)"),
        ({"resume": "r" * (MAX_FIELD_CHARS + 1)}, f"'resume' must be the string the session's first answer gave (at most {MAX_FIELD_CHARS} characters)"),
        ({"consented_at": True}, "'consented_at' must be a time in seconds since the epoch"),
        ({"consented_at": "now"}, "'consented_at' must be a time in seconds since the epoch"),
    ],
)
def test_a_bad_field_is_refused_with_its_name_and_what_it_must_be(body: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        participant_details(body, "")
    assert str(refused.value) == reason


def test_fields_are_checked_in_order_so_the_first_bad_one_is_named() -> None:
    with pytest.raises(ValueError, match="^'participant'"):
        participant_details({"participant": 1, "params": 1, "resume": 1, "consented_at": "x"}, "")
    with pytest.raises(ValueError, match="^'params'"):
        participant_details({"params": 1, "resume": 1}, "")
