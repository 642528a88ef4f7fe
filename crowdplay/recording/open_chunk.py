"""OpenChunk: the chunk a Recorder is filling, one list per column, and the columns it seals into.

The tick path pays a few list appends per step: no object per step for the garbage collector to
track (measured: per-step tuples set off collections that paused a process for ~40 ms). The
columns are built once, when the chunk is sealed, off the tick path.

Chunk columns (``crowdplay.data`` reads them; docs/recording.md is their reference):

* ``frames``: frame messages (``crowdplay.codec``); ``frames[0]`` is a keyframe of the screen
  before the chunk's first step, ``frames[i + 1]`` the screen after step ``i``, so a chunk decodes
  on its own and holds ``steps + 1`` observations;
* ``frame_id``, ``tick_time``, ``terminated``, ``truncated``, ``ram`` (steps x 128 for ALE);
* per agent ``action/<agent>``, ``reward/<agent>``, ``client_frame/<agent>`` (the frame the
  participant had displayed when the action was applied);
* ``inputs``: every applied input: ``[step, agent, held keys, seq, client_frame, received_at,
  source]`` (wall-clock seconds; ``source``: the device, ``crowdplay.inputs.KEY_SOURCES``, or
  "action" for an action chosen by number; rows recorded before it was stored have six entries
  and came from a keyboard); the held keys of any step are those of the agent's latest input before it;
* ``ai_actions``: every new answer of an AI agent's policy: ``[step, agent, action,
  observed_frame, latency_s, substitute]``: applied from ``step`` on, computed from the screen of
  frame ``observed_frame`` (``client_frame/<agent>`` then holds that frame too), answered
  ``latency_s`` after it was asked; ``substitute`` is None for the policy's own answer, else the
  reason the action played is a substitute (the policy raised, its actor is down, "no answer
  yet" after a reset with ``observed_frame`` -1...; the action is None when the agent has no
  no-op and keeps its previous action);
* ``controllers``: who played each agent in this chunk (``{"human": true, "participant": ...}``
  or ``{"human": false, "policy": ...}``); a change of controller starts a new chunk;
* ``start_state``: the emulator state before the chunk's first step, in every chunk whose
  ``first_step`` is a multiple of the snapshot interval (so replay can start there), else None;
* ``first_step``: the episode step the chunk starts at;
* for environments whose observation is not the screen (every non-ALE env): ``obs/<agent>[/<path>]``
  (each agent's observation after each step, one column per leaf of its space), ``obs0/...`` (the
  observation ``reset`` returned; first chunk only) and ``infos`` (the JSON-able part of step
  infos, sparse); see ``crowdplay.recording.observations``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crowdplay import codec
from crowdplay.inputs import AppliedInput
from crowdplay.recording.observations import ObservationColumns
from crowdplay.recording.step import Observed, Stepped

__all__ = ["Observed", "OpenChunk"]


@dataclass
class OpenChunk:
    """The chunk being filled: what it starts from and the steps so far."""

    episode_id: str
    seq: int
    first_step: int
    screen: codec.Screen  # before the first step; keyframe-encoded when sealed, off the tick path
    start_state: bytes | None
    #: who plays each agent, as stored (``crowdplay.controllers``)
    controllers: dict[str, dict[str, Any]]
    agents: tuple[str, ...] = ()
    frame_ids: list[int] = field(default_factory=list)
    tick_times: list[float] = field(default_factory=list)
    terminated: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    deltas: list[bytes] = field(default_factory=list)
    delta_flags: list[int] = field(default_factory=list)
    rams: list[bytes] = field(default_factory=list)
    actions: list[list[int]] = field(default_factory=list)  # [agent index][step]
    rewards: list[list[float]] = field(default_factory=list)
    client_frames: list[list[int]] = field(default_factory=list)
    inputs: list[list[Any]] = field(default_factory=list)
    ai_actions: list[list[Any]] = field(default_factory=list)
    #: the environment's own observations and step infos (None for ALE: the screen is its observation)
    observations: ObservationColumns | None = None

    def __post_init__(self) -> None:
        self.actions = [[] for _ in self.agents]
        self.rewards = [[] for _ in self.agents]
        self.client_frames = [[] for _ in self.agents]

    @property
    def steps(self) -> int:
        """Steps recorded in the chunk so far."""
        return len(self.frame_ids)

    def add_step(self, step: Stepped, delta: codec.Payload) -> None:
        """One step's row of every column (the screen after it as ``delta``, the codec's payload)."""
        if self.observations is not None and step.observed is not None:
            self.observations.add(self.steps, *step.observed)  # first: an observation outside its space records nothing
        self.frame_ids.append(step.frame_id)
        self.tick_times.append(time.time())
        self.terminated.append(step.terminated)
        self.truncated.append(step.truncated)
        self.deltas.append(delta.data)
        self.delta_flags.append(delta.flags)
        if step.ram is not None:
            self.rams.append(step.ram)
        actions, rewards, client_frames = step.actions, step.rewards, step.client_frames
        for index, agent in enumerate(self.agents):
            self.actions[index].append(actions[agent])
            self.rewards[index].append(rewards.get(agent, 0.0))
            self.client_frames[index].append(client_frames[agent])

    def add_input(self, applied: AppliedInput, received_at: float) -> None:
        """A participant's input applied at the coming step: its held keys, sequence number, frame and device."""
        given = applied.input
        self.inputs.append([self.steps, applied.agent, list(given.held), given.seq, given.frame, received_at, given.source])

    def add_ai_action(self, agent: str, action: int | None, observed_frame: int, latency_s: float, substitute: str | None) -> None:
        """A policy's answer (or its substitute) applied at the coming step."""
        self.ai_actions.append([self.steps, agent, action, observed_frame, round(latency_s, 6), substitute])

    def columns(self) -> dict[str, Any]:
        """The chunk's columns, ready for ``pack_chunk``."""
        count = self.steps
        message = codec.frame_message
        # A fast keyframe: ~30 us instead of ~130 us for ~600 more bytes in a ~6 KB chunk.
        frames = [message(codec.keyframe_payload(self.screen, level=1), flags=0, frame_id=0, env_step=0, score=0.0, input_seq=0)]
        frames += [
            message(codec.Payload(data, flags), flags=0, frame_id=frame_id, env_step=0, score=0.0, input_seq=0)
            for data, flags, frame_id in zip(self.deltas, self.delta_flags, self.frame_ids)
        ]
        columns: dict[str, Any] = {
            "steps": count,
            "first_step": self.first_step,
            "frames": frames,
            "frame_id": np.asarray(self.frame_ids, dtype=np.int64),
            "tick_time": np.asarray(self.tick_times, dtype=np.float64),
            "terminated": np.asarray(self.terminated, dtype=bool),
            "truncated": np.asarray(self.truncated, dtype=bool),
            "ram": np.frombuffer(b"".join(self.rams), dtype=np.uint8).reshape(count, -1) if self.rams else None,
            "inputs": self.inputs,
            "ai_actions": self.ai_actions,
            "controllers": self.controllers,
            "start_state": self.start_state,
        }
        if self.observations is not None:
            columns.update(self.observations.columns())
        for index, agent in enumerate(self.agents):
            columns[f"action/{agent}"] = np.asarray(self.actions[index], dtype=np.int64)
            columns[f"reward/{agent}"] = np.asarray(self.rewards[index], dtype=np.float64)
            columns[f"client_frame/{agent}"] = np.asarray(self.client_frames[index], dtype=np.int64)
        return columns
