"""Gamepads: which gamepad control holds which key of the keymap.

Why keys, not actions: the page turns a gamepad's pressed buttons and tilted sticks into the same
``KeyboardEvent.code`` names a keyboard sends, so the keymap alone decides the action (one rule
for every device, combinations included: d-pad left with A held is ArrowLeft+Space, LEFTFIRE).

Controls are named after the browser Gamepad API's *standard mapping* (buttons 0..16, axes 0..3):
``a``, ``b``, ``x``, ``y`` (the face buttons: bottom, right, left, top), ``lb``, ``rb``, ``lt``,
``rt``, ``back``, ``start``, ``ls``, ``rs`` (stick presses), ``dpad_up``... ``dpad_right``,
``home``, and the sticks' directions ``left_stick_up``... ``right_stick_right`` (an axis tilted
beyond the page's dead zone).

The default, made from the agent's keymap: the d-pad and the left stick hold the arrow keys (W, A,
S, D for a keymap that uses those and no arrow), A holds Space when the keymap uses it, and every
other key of the keymap goes to the next free button (A, B, X, Y, LB, RB, LT, RT, Back, Start), in
the order of the actions it plays. ``GamepadMap`` overrides it per environment or task.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from crowdplay.environments.keymap import KEY_CODES, Keymap

#: The standard mapping's buttons, in index order (``Gamepad.buttons[i]``).
BUTTONS: tuple[str, ...] = (
    "a", "b", "x", "y", "lb", "rb", "lt", "rt", "back", "start", "ls", "rs",
    "dpad_up", "dpad_down", "dpad_left", "dpad_right", "home",
)
#: The sticks' directions: (axis index, sign) of the standard mapping (axis 1 and 3 grow downwards).
STICKS: dict[str, tuple[int, int]] = {
    "left_stick_left": (0, -1), "left_stick_right": (0, 1), "left_stick_up": (1, -1), "left_stick_down": (1, 1),
    "right_stick_left": (2, -1), "right_stick_right": (2, 1), "right_stick_up": (3, -1), "right_stick_down": (3, 1),
}
CONTROLS: tuple[str, ...] = BUTTONS + tuple(STICKS)
#: Buttons that take the keymap's other keys, in the order they are given out.
FREE_BUTTONS = ("a", "b", "x", "y", "lb", "rb", "lt", "rt", "back", "start")
_ARROWS = {"up": "ArrowUp", "down": "ArrowDown", "left": "ArrowLeft", "right": "ArrowRight"}
_WASD = {"up": "KeyW", "down": "KeyS", "left": "KeyA", "right": "KeyD"}


class GamepadMap:
    """An environment's gamepad controls: ``{control: "Key" or "Key+Key", or None to leave the
    control unmapped}``, laid over the default made from the keymap (``replace=True``: these
    controls alone). Checked when the environment is registered (control names, key codes) and
    when its game is built (every key must be one the keymap uses)."""

    def __init__(self, controls: Mapping[str, str | None], replace: bool = False) -> None:
        """Nothing is refused here: ``problems`` names what is wrong, so the error can name the
        environment, the agent and the option."""
        self.controls: dict[str, str | None] = dict(controls)
        self.replace = replace

    def __repr__(self) -> str:
        return f"GamepadMap({self.controls!r}{', replace=True' if self.replace else ''})"

    def problems(self) -> list[str]:
        """Unknown control names (with the closest known one) and keys that are not key codes."""
        found = []
        for control, keys in self.controls.items():
            if control not in CONTROLS:
                close = difflib.get_close_matches(str(control), CONTROLS, n=1)
                found.append(f"unknown control {control!r}" + (f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(CONTROLS)})"))
            elif keys is not None and (not isinstance(keys, str) or not all(key in KEY_CODES for key in keys.split("+"))):
                found.append(f"{control!r} holds {keys!r}, which is not a key code or 'Key+Key' (KeyboardEvent.code names such as 'Space', 'KeyZ')")
        return found

    def resolve(self, keymap: Keymap) -> dict[str, str]:
        """The controls the page maps for an agent with ``keymap``: ``{control: "Key" or "Key+Key"}``.
        A ValueError names a control whose keys the keymap does not use (nothing would happen)."""
        mapping = {} if self.replace else default_gamepad(keymap)
        for control, keys in self.controls.items():
            if keys is None:
                mapping.pop(control, None)
                continue
            unused = [key for key in keys.split("+") if key not in keymap.keys]
            if unused:
                raise ValueError(f"{control!r} holds {unused}, which the keymap does not use (its keys: {sorted(keymap.keys)})")
            mapping[control] = keys
        return {control: mapping[control] for control in CONTROLS if control in mapping}


def default_gamepad(keymap: Keymap) -> dict[str, str]:
    """The default controls for ``keymap`` (the module's docstring says which)."""
    uses = keymap.keys
    directions = _WASD if not uses & set(_ARROWS.values()) and uses & set(_WASD.values()) else _ARROWS
    mapping = {f"{pad}_{way}": key for way, key in directions.items() for pad in ("dpad", "left_stick")}
    free = list(FREE_BUTTONS)
    if "Space" in uses:
        mapping["a"] = "Space"
        free.remove("a")
    reached = set(mapping.values())
    for key in _keys_by_action(keymap):
        if key not in reached and free:
            mapping[free.pop(0)] = key
    return {control: mapping[control] for control in CONTROLS if control in mapping}


def _keys_by_action(keymap: Keymap) -> list[str]:
    """The keymap's keys in the order of the first action each plays (then by name), so the
    buttons given out follow the action list a participant reads."""
    first: dict[str, int] = {}
    for combo, action in keymap.to_json().items():
        for key in combo.split("+"):
            first[key] = min(action, first.get(key, action))
    return sorted(first, key=lambda key: (first[key], key))
