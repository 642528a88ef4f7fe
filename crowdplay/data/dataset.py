"""The researcher's view of the store: find episodes, load them as arrays.

    from crowdplay.data import Dataset
    data = Dataset.open()                      # the embedded store, or a mongodb:// URI
    for info in data.episodes(env="SpaceInvaders", human_only=True, completed=True, min_return=100):
        episode = data.load(info["_id"], observations="atari84")

An episode's chunks are decoded in order (each chunk is self-contained: it starts with a
keyframe). A complete episode ends with the step the environment terminated or truncated; a
finished one (the participant pressed Finish), an interrupted one (see
``crowdplay.recording.status``) or one whose EnvActor crashed (its chunks stop early) is loaded up
to the last stored step, and that step is marked truncated so RL code sees a proper end.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

from crowdplay.data.episode import Episode
from crowdplay.data.loading import StoredSteps, observation_format, trajectories
from crowdplay.engagement import engagement
from crowdplay.inputs import DEFAULT_SOURCE
from crowdplay.recording.chunk import unpack_chunk
from crowdplay.recording.status import COMPLETE, status_query
from crowdplay.recording.store import TrajectoryStore
from crowdplay.round_trips import connection

#: Large, per-step fields kept out of episode listings.
HEAVY_FIELDS = {"start_state": 0}


class EpisodeNotFound(LookupError):
    """No episode with the id asked for is in the store."""
    pass


def _timestamp(value: float | str | dt.datetime) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _equal_to(**fields: object) -> dict[str, Any]:
    """Query conditions for the fields given a value: filters left at None select everything."""
    return {name: value for name, value in fields.items() if value is not None}


def _started_between(since: float | str | dt.datetime | None, until: float | str | dt.datetime | None) -> dict[str, Any]:
    """The query condition bounding the start time: ``since`` inclusive, ``until`` exclusive."""
    bounds = {}
    if since is not None:
        bounds["$gte"] = _timestamp(since)
    if until is not None:
        bounds["$lt"] = _timestamp(until)
    return {"started_at": bounds} if bounds else {}


def _ended(completed: bool | None, status: str | Iterable[str] | None) -> dict[str, Any]:
    """The query conditions on how episodes ended, joined with ``$and`` when both filters are
    given since each is a condition on ``status``."""
    conditions: list[dict[str, Any]] = []
    if completed is not None:
        conditions.append({"status": COMPLETE if completed else {"$ne": COMPLETE}})
    if status is not None:
        conditions.append(status_query(status))
    if len(conditions) == 1:
        return conditions[0]
    return {"$and": conditions} if conditions else {}


def _session_row(document: dict[str, Any]) -> dict[str, Any]:
    """An assignment document as one flat row: who, which task, when, every statistic value, and
    the engagement values (0 where an older document has none) and the connection's round trips
    (None where none was measured) at the top, so a list of rows becomes a table as it is
    (``pandas.DataFrame(rows)``). The token's digest stays out."""
    statistics = document.get("statistics") or {}
    values = dict(statistics.get("values") or {})
    return {
        "session_id": document["_id"], "task_id": document.get("task_id"), "participant": document.get("participant"),
        "params": document.get("params") or {}, "created_at": document.get("created_at"), "consented_at": document.get("consented_at"),
        "finished_at": document.get("finished_at"), "completed_at": document.get("completed_at"), "episodes": statistics.get("episodes", 0),
        **engagement(values), **connection(values), "values": values,
    }


def _best_return(document: dict[str, Any]) -> float:
    """The highest return of any agent in the episode, minus infinity for one without returns."""
    return float(max(document.get("returns", {}).values(), default=float("-inf")))


class Dataset:
    """Queries and loads over one ``TrajectoryStore``; a context manager that closes it."""

    def __init__(self, store: TrajectoryStore) -> None:
        self.store = store

    @classmethod
    def open(cls, uri: str | None = None) -> Dataset:
        """``uri``: a mongodb:// URI or the embedded store's path. Default: the store the server
        records into, ``CROWDPLAY_STORE_URI``, else data/crowdplay.db."""
        return cls(TrajectoryStore.open(uri))

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- finding
    def episodes(
        self,
        *,
        task: str | None = None,
        env: str | None = None,
        participant: str | None = None,
        since: float | str | dt.datetime | None = None,
        until: float | str | dt.datetime | None = None,
        human_only: bool | None = None,
        min_return: float | None = None,
        completed: bool | None = None,
        status: str | Iterable[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Episode documents (without emulator states) matching every filter given, oldest first.

        ``participant`` is a pseudonym; ``since``/``until`` bound the start time (epoch seconds,
        ISO strings or datetimes); ``min_return`` applies to the best agent's return.
        ``completed=True`` selects episodes the environment ended (status ``complete``),
        ``completed=False`` every other one (``finished``, ``interrupted``, none yet).
        ``status``: one status or several, any of ``complete``, ``finished``, ``interrupted`` and
        ``unended`` (no status yet); see ``crowdplay.recording.status``."""
        query = _equal_to(task_id=task, env_id=env, participants=participant)
        query.update(_started_between(since, until))
        query.update(_equal_to(human_only=human_only))
        query.update(_ended(completed, status))
        found = self.store.find_episodes(query, HEAVY_FIELDS)
        if min_return is None:
            return found
        return [doc for doc in found if _best_return(doc) >= min_return]

    def episode(self, episode_id: str) -> dict[str, Any]:
        """The episode's store document; EpisodeNotFound if there is none."""
        document = self.store.episode(episode_id)
        if document is None:
            raise EpisodeNotFound(f"no episode {episode_id!r}")
        return document

    # ----------------------------------------------------------------- loading
    def chunks(self, episode_id: str) -> Iterator[dict[str, Any]]:
        """The episode's chunk columns in order, stopping at the first missing chunk."""
        for expected, document in enumerate(self.store.iter_chunks(episode_id)):
            if document["seq"] != expected:
                return
            yield unpack_chunk(document["data"])

    def load(self, episode_id: str, observations: str | None = "env") -> Episode:
        """The episode as arrays (``crowdplay.data.episode`` says which step each belongs to).

        ``observations``: ``env`` (the default), the environment's own observations in its own
        space (an array per step for a Box or Discrete space, a dict of arrays for a Dict space, a
        tuple for a Tuple space), or for Atari, whose observation is the screen, the screens as
        ``rgb``; ``rgb``, ``palette`` or ``atari84``, the screens the participant saw; None, no
        observations (faster when only actions and rewards are needed)."""
        meta = self.episode(episode_id)
        observations = observation_format(observations, meta.get("observation_spaces"))
        screens_wanted = observations is not None and observations != "env"
        stored = StoredSteps.read(self.chunks(episode_id), meta["screen_shape"] if screens_wanted else None)
        agents = trajectories(meta, stored, observations)
        meta["loaded_steps"] = stored.steps
        return Episode(episode_id, meta["env_id"], meta, agents, observations or "none", stored.snapshots)

    def iter_load(self, episode_ids: list[str], observations: str | None = "env") -> Iterator[Episode]:
        """``load`` one episode at a time, so an export never holds them all in memory."""
        for episode_id in episode_ids:
            yield self.load(episode_id, observations)

    def inputs(self, episode_id: str) -> list[dict[str, Any]]:
        """Every input applied in the episode: step, agent, held keys, seq, client frame, receive
        time, and the device it came from (``source``)."""
        return [event for chunk in self.chunks(episode_id) for event in self._chunk_inputs(chunk)]

    @staticmethod
    def _chunk_inputs(chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """A chunk's input rows as dicts; rows stored before the device was recorded (six
        entries) were all a keyboard's, the only device the page had then."""
        return [
            {
                "step": chunk["first_step"] + row[0], "agent": row[1], "keys": row[2], "seq": row[3], "client_frame": row[4],
                "received_at": row[5], "source": row[6] if len(row) > 6 else DEFAULT_SOURCE,
            }
            for row in chunk["inputs"]
        ]

    def ai_actions(self, episode_id: str) -> list[dict[str, Any]]:
        """Every new answer of an AI agent: the step it was applied from, agent, action, the frame
        it was computed from and the step that showed it (-1: the episode's start screen), the
        policy's answer latency, and whether it is the policy's answer (``real``) or a substitute
        played in its place (``substitute``: the reason; None for a real answer). Recordings from
        before substitutes were recorded have ``real`` None: unknown."""
        answers = []
        step_of_frame: dict[int, int] = {}  # the screen of frame f is the one after step step_of_frame[f]
        for chunk in self.chunks(episode_id):
            step_of_frame.update((int(frame), chunk["first_step"] + index) for index, frame in enumerate(chunk["frame_id"]))
            for row in chunk.get("ai_actions", ()):
                step, agent, action, observed_frame, latency_s = row[:5]
                substitute = row[5] if len(row) > 5 else None
                answers.append(
                    {
                        "step": chunk["first_step"] + step, "agent": agent, "action": action, "observed_frame": observed_frame,
                        "observed_step": step_of_frame.get(observed_frame, -1), "latency_s": latency_s,
                        "real": (substitute is None) if len(row) > 5 else None, "substitute": substitute,
                    }
                )
        return answers

    def held_keys(self, episode_id: str, agent: str) -> list[tuple[str, ...]]:
        """The keys the participant held at each step (from the inputs applied so far).

        The store keeps inputs as changes (``inputs``); analyses that line key presses up with
        actions or screens need them step by step, so this expands the changes over the steps."""
        held: list[tuple[str, ...]] = []
        current = tuple(self.episode(episode_id).get("keys_at_start", {}).get(agent, ()))  # held over from the episode before
        for chunk in self.chunks(episode_id):
            changes = {event["step"]: tuple(event["keys"]) for event in self._chunk_inputs(chunk) if event["agent"] == agent}
            for step in range(chunk["first_step"], chunk["first_step"] + chunk["steps"]):
                current = changes.get(step, current)
                held.append(current)
        return held

    # ----------------------------------------------------------------- sessions and engagement
    def sessions(self, *, task: str | None = None, participant: str | None = None) -> list[dict[str, Any]]:
        """Every participant session (its assignment) matching the filters, oldest first: a flat
        row each, with the session's engagement (``crowdplay.engagement.ENGAGEMENT_VALUES``:
        seconds hidden, idle, unfocused, paused and on a slow connection, and the pauses) beside
        its identity and times, its connection's round trips
        (``crowdplay.round_trips.CONNECTION_VALUES``: median, 95th percentile and largest in ms,
        and how many were measured; None and 0 without any), and all its statistic values under
        ``values``. Engagement is a session's, not an episode's: the totals over every episode it
        played. ``participant`` is a pseudonym."""
        query = _equal_to(task_id=task, participant=participant)
        return [_session_row(document) for document in self.store.find_assignments(query)]

    def page_events(self, episode_id: str) -> list[dict[str, Any]]:
        """The episode's ``page_events`` (each change on a participant's page and each pause and
        resume it caused), each with ``step``: how many steps had been played when it came, so
        ``agent.actions[:step]`` came before it. Recordings from before page events were
        recorded have none: an empty list."""
        return self._with_steps(episode_id, self.episode(episode_id).get("page_events") or [])

    def rtt_samples(self, episode_id: str) -> list[dict[str, Any]]:
        """The episode's ``rtt_samples``: each round trip a participant's page measured between
        it and the web server (``agent``, ``rtt_ms``, ``page_frame``, ``frame``, ``at``), each with
        ``step`` as in ``page_events``: how many steps had been played when its report came.
        Recordings from before round trips were recorded have none: an empty list."""
        return self._with_steps(episode_id, self.episode(episode_id).get("rtt_samples") or [])

    def _with_steps(self, episode_id: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``entries`` of the episode's document, each with ``step``: the steps played before its
        ``frame`` (the game's frame when it came)."""
        if not entries:
            return []
        frame_ids = [int(frame) for chunk in self.chunks(episode_id) for frame in chunk["frame_id"]]
        return [{**entry, "step": bisect.bisect_right(frame_ids, int(entry["frame"]))} for entry in entries]

    # ----------------------------------------------------------------- participants
    def pseudonym(self, participant: str) -> str:
        """The participant's pseudonym in this store, to find or filter their episodes."""
        return self.store.pseudonym(participant)

    def delete_participant(self, participant: str) -> list[str]:
        """Delete all data of a participant given by raw id or pseudonym; returns the episodes removed."""
        pseudonym = participant if self.store.find_episodes({"participants": participant}, {"_id": 1}) else self.pseudonym(participant)
        return self.store.delete_participant(pseudonym)

