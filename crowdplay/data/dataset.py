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

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from crowdplay import codec
from crowdplay.data.episode import AgentTrajectory, Episode
from crowdplay.data.observations import FORMATS, convert
from crowdplay.environments.spaces import Description, assemble, leaves
from crowdplay.recording.chunk import unpack_chunk
from crowdplay.recording.observations import column_name
from crowdplay.recording.status import COMPLETE, status_query
from crowdplay.recording.store import TrajectoryStore

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
        query: dict[str, Any] = {}
        if task is not None:
            query["task_id"] = task
        if env is not None:
            query["env_id"] = env
        if participant is not None:
            query["participants"] = participant
        if since is not None or until is not None:
            query["started_at"] = {}
            if since is not None:
                query["started_at"]["$gte"] = _timestamp(since)
            if until is not None:
                query["started_at"]["$lt"] = _timestamp(until)
        if human_only is not None:
            query["human_only"] = human_only
        conditions = []
        if completed is not None:
            conditions.append({"status": COMPLETE if completed else {"$ne": COMPLETE}})
        if status is not None:
            conditions.append(status_query(status))
        if len(conditions) == 1:
            query.update(conditions[0])
        elif conditions:
            query["$and"] = conditions
        found = self.store.find_episodes(query, HEAVY_FIELDS)
        if min_return is not None:
            found = [doc for doc in found if max(doc.get("returns", {}).values(), default=float("-inf")) >= min_return]
        return found

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
        agents: list[str] = meta["agents"]
        spaces = meta.get("observation_spaces")
        if observations == "env" and not spaces:
            observations = "rgb"  # Atari (or a recording from before observations were kept): the screen
        elif observations is not None and observations != "env" and observations not in FORMATS:
            raise ValueError(f"unknown observation format {observations!r}; choose one of env, {', '.join(FORMATS)}")
        screens_wanted = observations is not None and observations != "env"
        screens: list[np.ndarray] = []
        columns: dict[str, list[Any]] = {}
        controllers: list[dict[str, Any]] = []
        snapshots: dict[int, bytes] = {}
        step_infos: list[list[Any]] = []
        ai_rows: list[list[Any]] = []
        for chunk in self.chunks(episode_id):
            if chunk["start_state"] is not None:
                snapshots[chunk["first_step"]] = chunk["start_state"]
            if screens_wanted:
                screens.extend(self._decode(chunk, meta["screen_shape"], first=not screens))
            for name, value in chunk.items():
                if isinstance(value, np.ndarray):
                    columns.setdefault(name, []).append(value)
            controllers += [chunk["controllers"]] * chunk["steps"]
            step_infos += [[chunk["first_step"] + step, agent, info] for step, agent, info in chunk.get("infos", ())]
            ai_rows += [[chunk["first_step"] + row[0], row[1], row[5] if len(row) > 5 else None] for row in chunk.get("ai_actions", ())]
        steps = sum(len(part) for part in columns.get("frame_id", []))
        joined = {name: np.concatenate(parts) for name, parts in columns.items()}
        terminated = joined.get("terminated", np.zeros(0, bool)).copy()
        truncated = joined.get("truncated", np.zeros(0, bool)).copy()
        if steps and not (terminated[-1] or truncated[-1]):
            truncated[-1] = True  # interrupted or cut short: still a proper end for RL code
        screen_array = None
        if screens_wanted:
            screen_array = convert(np.stack(screens), meta.get("palette"), str(observations)) if screens else np.zeros((0,))
        trajectories = {}
        for agent in agents:
            infos: dict[str, np.ndarray] = {name: joined[name] for name in ("frame_id", "tick_time", "ram") if name in joined}
            infos["client_frame"] = joined.get(f"client_frame/{agent}", np.zeros(0, np.int64))
            infos["human"] = np.array([bool(c[agent].get("human")) for c in controllers], dtype=bool)
            infos["ai_substitute"] = ai_substitutes([c[agent] for c in controllers], [row for row in ai_rows if row[1] == agent])
            env_infos: list[dict[str, Any]] = [{} for _ in range(steps)]
            for step, owner, info in step_infos:
                if owner == agent and step < steps:
                    env_infos[step] = info
            own = env_observations(spaces[agent], joined, agent) if observations == "env" and spaces else None
            trajectories[agent] = AgentTrajectory(
                observations=own if own is not None else screen_array,
                actions=joined.get(f"action/{agent}", np.zeros(0, np.int64)),
                rewards=joined.get(f"reward/{agent}", np.zeros(0, np.float64)),
                terminations=terminated,
                truncations=truncated,
                action_count=int(meta.get("action_counts", {}).get(agent, 0)),
                infos=infos,
                env_infos=env_infos,
            )
        meta["loaded_steps"] = steps
        return Episode(episode_id, meta["env_id"], meta, trajectories, observations or "none", snapshots)

    def iter_load(self, episode_ids: list[str], observations: str | None = "env") -> Iterator[Episode]:
        """``load`` one episode at a time, so an export never holds them all in memory."""
        for episode_id in episode_ids:
            yield self.load(episode_id, observations)

    @staticmethod
    def _decode(chunk: dict[str, Any], shape: list[int], first: bool) -> list[np.ndarray]:
        """The chunk's screens: its keyframe (the screen before its first step) only for the first
        chunk, since every later chunk's keyframe repeats the previous chunk's last screen."""
        decoder = codec.FrameDecoder(tuple(shape))
        screens = [decoder.decode(message)[1].copy() for message in chunk["frames"]]
        return screens if first else screens[1:]

    def inputs(self, episode_id: str) -> list[dict[str, Any]]:
        """Every input applied in the episode: step, agent, held keys, seq, client frame, receive time."""
        return [event for chunk in self.chunks(episode_id) for event in self._chunk_inputs(chunk)]

    @staticmethod
    def _chunk_inputs(chunk: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"step": chunk["first_step"] + step, "agent": agent, "keys": keys, "seq": seq, "client_frame": client_frame, "received_at": received_at}
            for step, agent, keys, seq, client_frame, received_at in chunk["inputs"]
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
        """The keys the participant held at each step (from the inputs applied so far)."""
        held: list[tuple[str, ...]] = []
        current: tuple[str, ...] = ()
        for chunk in self.chunks(episode_id):
            changes = {event["step"]: tuple(event["keys"]) for event in self._chunk_inputs(chunk) if event["agent"] == agent}
            for step in range(chunk["first_step"], chunk["first_step"] + chunk["steps"]):
                current = changes.get(step, current)
                held.append(current)
        return held

    # ----------------------------------------------------------------- participants
    def pseudonym(self, participant: str) -> str:
        """The participant's pseudonym in this store, to find or filter their episodes."""
        return self.store.pseudonym(participant)

    def delete_participant(self, participant: str) -> list[str]:
        """Delete all data of a participant given by raw id or pseudonym; returns the episodes removed."""
        pseudonym = participant if self.store.find_episodes({"participants": participant}, {"_id": 1}) else self.pseudonym(participant)
        return self.store.delete_participant(pseudonym)


def env_observations(space: Description, joined: dict[str, np.ndarray], agent: str) -> Any:
    """An agent's recorded observations in its space's structure, ``T + 1`` of them: the one
    ``reset`` returned (``obs0``), then one after each step."""
    columns = {}
    for leaf in leaves(space):
        first = joined.get(column_name("obs0", agent, leaf.path), np.zeros((0, *leaf.shape), leaf.dtype))
        after = joined.get(column_name("obs", agent, leaf.path), np.zeros((0, *leaf.shape), leaf.dtype))
        columns[leaf.path] = np.concatenate([first, after])
    return assemble(space, columns)


def ai_substitutes(controllers: list[dict[str, Any]], rows: list[list[Any]]) -> np.ndarray:
    """Per step, whether the agent's action was a substitute played in place of its policy's answer.

    ``controllers`` is the agent's controller at each step and ``rows`` its ``[step, agent,
    substitute]`` AI answers in order: an answer holds from its step until the next one. A step
    played by its policy before any answer is a substitute too (there was no answer yet); steps
    a person played are not, and neither are those of recordings made before substitutes were
    recorded (their rows carry no reason)."""
    flags = np.zeros(len(controllers), dtype=bool)
    current: str | None = "no answer yet"
    answer = 0
    for step, controller in enumerate(controllers):
        while answer < len(rows) and rows[answer][0] <= step:
            current = rows[answer][2]
            answer += 1
        flags[step] = bool(controller.get("policy")) and not controller.get("human") and current is not None
    return flags
