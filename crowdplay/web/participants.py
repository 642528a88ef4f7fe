"""The participant fields of a session request (``POST /api/sessions``), checked one field at a time.

A study page passes on what its URL carried (a crowd platform's worker id, the page's parameters)
and when the participant consented; all of it is stored with the session, so each field is
checked for type and size here, before anything reaches the manager. A refusal is a ``ValueError``
whose text names the field and what it must be (the app answers it as 400 ``invalid_participant``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_FIELD_CHARS = 256
MAX_PARAMS = 32
#: URL parameters that identify a person (crowd platforms' worker ids): never stored raw.
PARTICIPANT_ID_PARAMS = ("participant", "PROLIFIC_PID", "workerId", "worker_id")


def participant_details(body: Mapping[str, Any], user_agent: str) -> dict[str, Any]:
    """The optional participant fields of a session request, checked: ``participant`` (an id such
    as a crowd-worker id; stored only pseudonymised), ``params`` (the page's URL parameters, string
    to string), ``resume`` (an earlier answer's, to get that seat back), ``consented_at`` (epoch
    seconds). Without ``participant``, the first worker-id URL parameter given is the id."""
    details: dict[str, Any] = {"user_agent": user_agent[:MAX_FIELD_CHARS]}
    participant = checked_participant(body.get("participant"))
    if participant is not None:
        details["id"] = participant
    params = checked_params(body.get("params", {}))
    resume = checked_resume(body.get("resume"))
    if resume is not None:
        details["resume"] = resume
    if participant is None:
        given = id_from_params(params)
        if given is not None:
            details["id"] = given
    details["params"] = {key: value for key, value in params.items() if key not in PARTICIPANT_ID_PARAMS}
    consented_at = checked_consented_at(body.get("consented_at"))
    if consented_at is not None:
        details["consented_at"] = consented_at
    return details


def checked_participant(value: object) -> str | None:
    """``participant``: absent, or a non-empty id short enough to store."""
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_FIELD_CHARS:
        raise ValueError(f"'participant' must be a non-empty string of at most {MAX_FIELD_CHARS} characters")
    return value


def checked_params(value: object) -> dict[str, str]:
    """``params``: the page's URL parameters, string to string, few and short enough to store."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("'params' must be an object of string values (the page's URL parameters)")
    if len(value) > MAX_PARAMS or any(len(k) + len(v) > MAX_FIELD_CHARS for k, v in value.items()):
        raise ValueError(f"'params' takes at most {MAX_PARAMS} entries of at most {MAX_FIELD_CHARS} characters")
    return value


def checked_resume(value: object) -> str | None:
    """``resume``: absent, or the string a session's first answer gave (compared by the manager)."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
        raise ValueError(f"'resume' must be the string the session's first answer gave (at most {MAX_FIELD_CHARS} characters)")
    return value


def checked_consented_at(value: object) -> float | None:
    """``consented_at``: absent, or a number of seconds since the epoch (a JSON bool is not one)."""
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError("'consented_at' must be a time in seconds since the epoch")
    return float(value)


def id_from_params(params: Mapping[str, str]) -> str | None:
    """The participant id a crowd platform put in the URL: the first non-empty worker-id parameter
    in ``PARTICIPANT_ID_PARAMS``' order."""
    return next((params[key] for key in PARTICIPANT_ID_PARAMS if params.get(key)), None)
