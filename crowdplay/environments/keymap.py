"""Keymaps: which combination of held keys means which action.

Browsers report keys by ``KeyboardEvent.code`` ("ArrowLeft", "Space", "KeyW"), which does not depend on
the keyboard layout. A keymap maps combinations of codes to actions; the held set resolves to the
action of the largest combination it contains, so Left+Space picks LEFTFIRE over LEFT, and an
unmapped extra key (Shift) does not cancel the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

ATARI_KEYS = {"UP": "ArrowUp", "DOWN": "ArrowDown", "LEFT": "ArrowLeft", "RIGHT": "ArrowRight", "FIRE": "Space"}


class Keymap:
    """An immutable map from key combinations to actions, with a no-op for "nothing mapped is held"."""

    def __init__(self, combos: Mapping[str, int], noop: int) -> None:
        """``combos`` maps "Key+Key" strings (e.g. "ArrowLeft+Space") to actions."""
        parsed = [(frozenset(combo.split("+")), int(action)) for combo, action in combos.items()]
        self._by_size = sorted(parsed, key=lambda item: -len(item[0]))
        self.noop = int(noop)
        self.keys: frozenset[str] = frozenset().union(*(keys for keys, _ in parsed)) if parsed else frozenset()

    def resolve(self, held: Iterable[str]) -> int:
        held_set = frozenset(held) & self.keys
        for keys, action in self._by_size:
            if keys <= held_set:
                return action
        return self.noop

    def to_json(self) -> dict[str, int]:
        return {"+".join(sorted(keys)): action for keys, action in self._by_size}


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
