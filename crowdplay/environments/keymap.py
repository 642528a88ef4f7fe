"""Keymaps: which combination of held keys means which action.

Browsers report keys by ``KeyboardEvent.code`` ("ArrowLeft", "Space", "KeyW"), which does not depend on
the keyboard layout. A keymap maps combinations of codes to actions; the held set resolves to the
action of the largest combination it contains, so Left+Space picks LEFTFIRE over LEFT, and an
unmapped extra key (Shift) does not cancel the rest.

A keymap's no-op is what is applied while no mapped combination is held. Many environments have no
such action (CartPole pushes left or right), so a keymap may have none (``noop=None``): the spec's
``idle`` option then says what "no key" means, instead of a made-up action 0 being recorded as the
participant's choice. The helpers below build keymaps from action labels (arrows, WASD, digits).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence

ATARI_KEYS = {"UP": "ArrowUp", "DOWN": "ArrowDown", "LEFT": "ArrowLeft", "RIGHT": "ArrowRight", "FIRE": "Space"}
#: Label words the named-key helpers understand, with the key each means.
ARROW_KEYS = {"up": "ArrowUp", "down": "ArrowDown", "left": "ArrowLeft", "right": "ArrowRight", "fire": "Space"}
WASD_KEYS = {"up": "KeyW", "left": "KeyA", "down": "KeyS", "right": "KeyD", "fire": "Space"}
#: Labels (lower case, separators removed) that name "do nothing": the keymap's no-op, given no key.
NOOP_LABELS = frozenset({"noop", "none", "nothing", "idle"})
#: The ``KeyboardEvent.code`` values a keymap may name (W3C UI Events KeyboardEvent code values of
#: a standard keyboard); a typo such as "Arrowleft" would otherwise be a key nobody can press.
KEY_CODES: frozenset[str] = frozenset(
    [f"Key{letter}" for letter in string.ascii_uppercase]
    + [f"Digit{digit}" for digit in range(10)]
    + [f"Numpad{digit}" for digit in range(10)]
    + [f"F{number}" for number in range(1, 13)]
    + [f"{modifier}{side}" for modifier in ("Shift", "Control", "Alt", "Meta") for side in ("Left", "Right")]
    + ["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "Space", "Enter", "Tab", "Backspace", "Escape", "CapsLock"]
    + ["Minus", "Equal", "BracketLeft", "BracketRight", "Backslash", "Semicolon", "Quote", "Backquote", "Comma", "Period", "Slash", "IntlBackslash"]
    + ["Insert", "Delete", "Home", "End", "PageUp", "PageDown", "ContextMenu"]
    + ["NumpadAdd", "NumpadSubtract", "NumpadMultiply", "NumpadDivide", "NumpadDecimal", "NumpadEnter"]
)


class Keymap:
    """An immutable map from key combinations to actions, with an optional no-op for "nothing
    mapped is held" (``None``: the action space has none; the spec's ``idle`` option decides)."""

    def __init__(self, combos: Mapping[str, int], noop: int | None = None) -> None:
        """``combos`` maps "Key+Key" strings (e.g. "ArrowLeft+Space") to actions.

        Nothing is refused here but values that are not actions at all: key codes and the action
        range are checked by ``problems`` when the environment is registered or built, so the
        error can name the environment and the agent."""
        parsed = [(frozenset(combo.split("+")), _action(action, combo)) for combo, action in combos.items()]
        self._by_size = sorted(parsed, key=lambda item: -len(item[0]))
        self.noop: int | None = None if noop is None else _action(noop, "noop")
        self.keys: frozenset[str] = frozenset().union(*(keys for keys, _ in parsed)) if parsed else frozenset()
        seen: dict[frozenset[str], str] = {}
        self._duplicates: list[str] = []
        for combo in combos:
            keys = frozenset(combo.split("+"))
            if keys in seen:
                self._duplicates.append(f"{seen[keys]!r} and {combo!r} are the same combination")
            seen[keys] = combo

    def match(self, held: Iterable[str]) -> int | None:
        """The action of the largest mapped combination within ``held``; None when none is held.
        (Every combination has a key, so each one within ``held`` has a key of ``held`` in it.)"""
        held_set = frozenset(held)
        return self.match_pressed(held_set, held_set)

    def match_pressed(self, held: Iterable[str], pressed: Iterable[str]) -> int | None:
        """The action of the largest mapped combination within ``held`` that has a key of
        ``pressed`` (keys just pressed) in it: a turn-based game plays the key pressed, not one
        held from before. None when no such combination is held."""
        held_set, pressed_set = frozenset(held) & self.keys, frozenset(pressed)
        for keys, action in self._by_size:
            if keys <= held_set and keys & pressed_set:
                return action
        return None

    def resolve(self, held: Iterable[str]) -> int | None:
        """The action for ``held``: its match, else the no-op (None when the keymap has none)."""
        action = self.match(held)
        return self.noop if action is None else action

    def actions(self) -> set[int]:
        """Every action some combination selects."""
        return {action for _, action in self._by_size}

    def problems(self, action_count: int | None) -> list[str]:
        """What makes this keymap unusable for an action space of ``action_count`` actions (not
        checked against a count when it is None): unknown key codes, actions outside the space, a
        combination given twice, no key at all."""
        found = list(self._duplicates)
        if not self._by_size:
            found.append("it maps no key to any action")
        unknown = sorted(key for key in self.keys if key not in KEY_CODES)
        if unknown:
            found.append(f"unknown key codes {unknown} (KeyboardEvent.code names such as 'ArrowLeft', 'KeyW', 'Digit1', 'Space')")
        found.extend(self._out_of_range(action_count - 1 if action_count is not None else None))
        return found

    def _out_of_range(self, top: int | None) -> list[str]:
        """The combinations, and the no-op, whose action is outside 0..``top`` (below 0 only, when
        ``top`` is not known yet)."""
        span = f"0..{top if top is not None else 'n-1'}"
        found = [
            f"{'+'.join(sorted(keys))!r} maps to action {action}, outside the action space {span}"
            for keys, action in self._by_size
            if not _within(action, top)
        ]
        if self.noop is not None and not _within(self.noop, top):
            found.append(f"its noop {self.noop} is outside the action space {span}")
        return found

    def to_json(self) -> dict[str, int]:
        """The keymap as the page receives it: ``{"Key1+Key2": action}``, codes sorted within each combination."""
        return {"+".join(sorted(keys)): action for keys, action in self._by_size}


def _within(action: int, top: int | None) -> bool:
    """Whether ``action`` is in 0..``top`` (any non-negative action when ``top`` is None)."""
    return action >= 0 and (top is None or action <= top)


def _action(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"keymap {where}: action {value!r} is not an int")
    return value


def atari_keymap(action_meanings: Sequence[str], renames: Mapping[str, str] | None = None) -> Keymap:
    """Arrows and Space for ALE's action names (e.g. "UPLEFTFIRE" -> ArrowUp+ArrowLeft+Space).

    ``renames`` swaps direction words where a game's names mislead (Pong's paddle moves up on RIGHT).
    """
    keys_for = dict(ATARI_KEYS)
    for word, key in (renames or {}).items():
        keys_for[word] = key
    combos: dict[str, int] = {}
    noop = 0
    for action, meaning in enumerate(action_meanings):
        if meaning == "NOOP":
            noop = action
            continue
        words = [word for word in ("UP", "DOWN", "LEFT", "RIGHT", "FIRE") if word in meaning]
        combos["+".join(keys_for[word] for word in words)] = action
    return Keymap(combos, noop)


def _compact(label: str) -> str:
    """A label in lower case without spaces, '_', '-' or '+': "Up-Left", "UP_LEFT" -> "upleft"."""
    return re.sub(r"[\s_+\-]", "", label.lower())


def _label_words(label: str, words: Iterable[str]) -> list[str] | None:
    """``label`` read as a run of ``words`` ("UPLEFTFIRE" -> up, left, fire), each at most once;
    None when it is something else."""
    rest, found = _compact(label), []
    while rest:
        word = next((word for word in words if rest.startswith(word) and word not in found), None)
        if word is None:
            return None
        found.append(word)
        rest = rest[len(word):]
    return found or None


def named_keymap(action_labels: Sequence[str], keys: Mapping[str, str]) -> Keymap:
    """A keymap for actions named with the words of ``keys`` (word -> key code), in any case and
    combined ("up", "Left", "UP_LEFT", "UPLEFTFIRE"): each action gets the keys of its words held
    together. A label meaning nothing ("noop", "NOOP", "no-op", "none", "nothing", "idle") becomes
    the no-op and gets no key; without one the keymap has no no-op.

    Refuses labels it cannot read and two labels that need the same keys: a participant could
    not reach every action otherwise, or could not tell which one a key plays."""
    vocabulary = sorted((word.lower() for word in keys), key=len, reverse=True)
    keys_for = {word.lower(): key for word, key in keys.items()}
    combos: dict[str, int] = {}
    owner: dict[str, str] = {}
    noop: int | None = None
    unreadable: list[str] = []
    for action, label in enumerate(action_labels):
        if _compact(label) in NOOP_LABELS:
            if noop is not None:
                raise ValueError(f"labels {action_labels[noop]!r} and {label!r} both mean no-op")
            noop = action
            continue
        words = _label_words(label, vocabulary)
        if words is None:
            unreadable.append(label)
            continue
        combo = "+".join(sorted(keys_for[word] for word in words))
        if combo in combos:
            raise ValueError(f"labels {owner[combo]!r} and {label!r} both need the keys {combo}")
        combos[combo], owner[combo] = action, label
    if unreadable:
        raise ValueError(
            f"labels {unreadable} are not made of {sorted(keys_for)} or a no-op word; "
            "give the actions such labels (action_labels) or write a Keymap"
        )
    return Keymap(combos, noop)


def arrow_keymap(action_labels: Sequence[str]) -> Keymap:
    """Arrow keys for "up"/"down"/"left"/"right" (and their combinations), Space for "fire",
    no key for a no-op label (``named_keymap``). Usable as a spec's ``keymap`` as it is."""
    return named_keymap(action_labels, ARROW_KEYS)


def wasd_keymap(action_labels: Sequence[str]) -> Keymap:
    """W/A/S/D for "up"/"left"/"down"/"right", Space for "fire", no key for a no-op label."""
    return named_keymap(action_labels, WASD_KEYS)


def number_keymap(action_labels: Sequence[str]) -> Keymap:
    """Digit key i+1 for action i ("Digit1" plays action 0, "Digit0" the tenth): any discrete
    environment of up to ten actions, whatever its labels say. Every action has its key; an action
    labelled as a no-op (see ``named_keymap``) is also the keymap's no-op, otherwise it has none."""
    if len(action_labels) > 10:
        raise ValueError(f"{len(action_labels)} actions do not fit on the ten digit keys")
    combos = {f"Digit{(action + 1) % 10}": action for action in range(len(action_labels))}
    noop = next((action for action, label in enumerate(action_labels) if _compact(label) in NOOP_LABELS), None)
    return Keymap(combos, noop)
