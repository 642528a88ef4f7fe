"""Each agent's action in effect, and the participants' inputs waiting for the next tick.

A participant's input (held keys, or an action by number) is queued when it arrives and applied
at the next tick; a later input before that tick replaces it. While no mapped key is held an agent
plays what its ``EnvSpec.idle`` says: the no-op, its last action again ("repeat"), or nothing
("wait": the game waits rather than invent an action). In the turn-based modes (``EnvSpec.mode``)
a tick steps only on a key press (``wait_for_key``) or while a key is held (``hold_keys``). A later
input before the tick replaces the one queued.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from crowdplay.environments.keymap import Keymap
from crowdplay.inputs import AppliedInput, ParticipantInput
from crowdplay.vocabulary import Mode

__all__ = ["AgentInputs", "AppliedInput", "PendingInput"]


@dataclass(frozen=True, slots=True)
class PendingInput:
    """The input waiting for the next tick of one agent, the action it resolves to, and when
    (time, frame, tick) it arrived."""

    input: ParticipantInput
    #: None: no mapped key is held and the agent's idle choice is "repeat" or "wait"
    action: int | None
    received_at: float
    received_frame: int
    received_tick: int
    #: the turn it takes in ``wait_for_key``: the action of a key pressed (or chosen by number) since
    #: the last tick, kept when a release replaces it before the tick; None: no press
    turn: int | None = None


class AgentInputs:
    """What every agent plays from this tick on, and the inputs that change it at the next."""

    def __init__(self, keymaps: Mapping[str, Keymap], idle: Mapping[str, str], mode: str = Mode.REALTIME) -> None:
        """``keymaps``: each agent's keys and no-op; ``idle``: each agent's idle choice ("noop",
        "repeat" or "wait"); ``mode``: when the game steps (``EnvSpec.mode``)."""
        agents = list(keymaps)
        self._keymaps = dict(keymaps)
        self._mode = mode
        #: the keys of each agent's newest input, to tell a press from a release
        self._keys: dict[str, frozenset[str]] = {agent: frozenset() for agent in agents}
        self._noops = {agent: keymap.noop for agent, keymap in keymaps.items()}
        self._idle = dict(idle)
        #: each agent's action from now on; None (no no-op, no key yet, or idle "wait") holds the game
        self.action: dict[str, int | None] = {agent: self._noops[agent] for agent in agents}
        #: the page's (or the policy's) frame each agent's action in effect was chosen on
        self.client_frame = {agent: 0 for agent in agents}
        #: the newest input applied per agent, echoed in its frames
        self.applied_seq = {agent: 0 for agent in agents}
        self.pending: dict[str, PendingInput] = {}
        self._held = {agent: False for agent in agents}  # holds a key (or a non-no-op action)
        #: the keys of each agent's newest applied input (sorted; none for an action by number)
        self.keys_held: dict[str, tuple[str, ...]] = {agent: () for agent in agents}

    def queue(self, agent: str, given: ParticipantInput, frame_id: int, tick: int) -> int | None:
        """Queue ``given`` for the next tick and return the action it resolves to: an action chosen by
        number (checked by the caller) as it is, a turn of its own in the turn-based modes; held keys
        as their keymap's action, or with no mapped key held the no-op for idle "noop" and None (keep
        the last action, or wait) for "repeat" and "wait"."""
        action = turn = given.action
        if action is None:
            keymap = self._keymaps[agent]
            keys = given.keys or frozenset()
            action = keymap.match(keys)
            turn = keymap.match_pressed(keys, keys - self._keys[agent])
            self._keys[agent] = keys
            if action is None and self._idle[agent] == "noop":
                action = keymap.noop
        earlier = self.pending.get(agent)
        if turn is None and earlier is not None:
            turn = earlier.turn  # a press not played yet is not undone by its release
        self.pending[agent] = PendingInput(given, action, time.monotonic(), frame_id, tick, turn)
        return action

    def release(self, agent: str) -> None:
        """``agent``'s participant is gone for now: none of their keys is held any more, so the
        agent plays what its idle choice says (nothing is queued or logged as their input)."""
        self.pending.pop(agent, None)
        self._keys[agent] = frozenset()
        self._held[agent] = False
        self.keys_held[agent] = ()
        if self._idle[agent] != "repeat":
            self.action[agent] = self._noops[agent] if self._idle[agent] == "noop" else None

    def discard(self, agent: str) -> None:
        """Forget ``agent``'s queued input (a policy plays it from now on)."""
        self.pending.pop(agent, None)

    def apply(self, next_frame: int, tick: int, env_step: int, now: float) -> tuple[list[AppliedInput], bool]:
        """The queued inputs become their agents' actions (the queue is empty after); returns them
        as applied and whether any of them pressed something."""
        applied = []
        for agent, pending in self.pending.items():
            if self._mode == Mode.WAIT_FOR_KEY and pending.turn is not None:
                self.action[agent] = pending.turn
            elif pending.action is not None or self._idle[agent] == "wait":
                self.action[agent] = pending.action  # "repeat" keeps the action in effect
            self.applied_seq[agent] = pending.input.seq
            self.client_frame[agent] = pending.input.frame
            self.keys_held[agent] = tuple(sorted(pending.input.keys or ()))
            applied.append(
                AppliedInput(
                    agent, pending.input, self.action[agent], pending.received_frame, next_frame,
                    pending.received_tick, tick, env_step, now - pending.received_at,
                )
            )
        pressed = any(pending.turn is not None for pending in self.pending.values())
        for agent, pending in self.pending.items():
            chosen = pending.input.action is not None and pending.action != self._noops[agent]
            self._held[agent] = bool(pending.input.keys) or chosen
        self.pending = {}
        return applied, pressed

    def turn_due(self, mode: str, pressed: bool) -> bool:
        """Whether this tick steps: always in real time; on a press of a mapped key (not a release,
        not a key held from before) or an explicit action in ``wait_for_key``; while a participant
        holds a key in ``hold_keys``."""
        if mode == Mode.WAIT_FOR_KEY:
            return pressed
        if mode == Mode.HOLD_KEYS:
            return any(self._held.values())
        return True
