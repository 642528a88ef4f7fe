"""How an episode ended: the ``status`` its last chunk stores, and how the dataset filters by it.

A researcher choosing episodes for training or analysis needs to tell apart an episode the
environment played to its end, one a participant chose to stop, and one that was cut short by
something nobody chose (a crash, a lost node, a shutdown, a participant who vanished). Each gets
its own status; the episode's ``reason`` says more (e.g. which participant left).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: The environment ended the episode: it terminated or was truncated (e.g. a time limit).
COMPLETE = "complete"
#: A participant pressed Finish (``POST /api/sessions/{id}/finish``) and the game ended with it.
FINISHED = "finished"
#: Cut short: the game failed or its process or node was lost, the server shut down, the
#: researcher ended the game, or a participant left without Finish and did not come back.
INTERRUPTED = "interrupted"
#: Cut short because the game server's machine stopped answering (a network partition, a stuck
#: VM): its participants were told and offered a new game; the episode is stored up to the last
#: chunk the writer acknowledged (``lost_last_chunk`` when Ray declared the process dead first).
SERVER_UNREACHABLE = "server_unreachable"
#: Not a stored value: the episode has no ``status`` yet. It is being played, or its process died
#: and nothing marked it (the whole cluster went down with it).
UNENDED = "unended"

#: Every status a filter accepts, with what it means (``crowdplay data list --status``).
STATUSES: dict[str, str] = {
    COMPLETE: "the environment ended it (terminated or truncated)",
    FINISHED: "a participant ended it with Finish",
    INTERRUPTED: "cut short: a crash, a lost node, a shutdown, the researcher, or a participant who left and did not return",
    SERVER_UNREACHABLE: "cut short: the game server's machine stopped answering (a partition, a stuck machine)",
    UNENDED: "no status yet: still being played, or lost with its process and never marked",
}


def status_of(document: dict[str, Any]) -> str:
    """An episode document's status, ``unended`` when it has none (any version's documents)."""
    return document.get("status") or UNENDED


def status_query(statuses: str | Iterable[str]) -> dict[str, Any]:
    """The MongoDB query selecting episodes whose status is one of ``statuses`` (``unended``
    selects those without one). Unknown names raise ValueError, listing the known ones: a typo
    must not silently select nothing."""
    wanted = [statuses] if isinstance(statuses, str) else list(statuses)
    unknown = sorted(set(wanted) - set(STATUSES))
    if unknown or not wanted:
        raise ValueError(f"unknown episode status {', '.join(map(repr, unknown)) or '(none given)'}: use one of {', '.join(STATUSES)}")
    stored = sorted({status for status in wanted if status != UNENDED})
    conditions: list[dict[str, Any]] = []
    if stored:
        conditions.append({"status": stored[0]} if len(stored) == 1 else {"status": {"$in": stored}})
    if UNENDED in wanted:
        conditions.append({"status": {"$exists": False}})
    return conditions[0] if len(conditions) == 1 else {"$or": conditions}
