// Input devices besides the keyboard: gamepads and on-screen touch controls.
//
// Each device turns what the participant does into held KeyboardEvent.code names, the same names
// a keyboard sends, so the game's keymap alone decides the action (one rule for every device,
// combinations included). The page merges the keys held on every device into one `keys` message
// and names the device that made the latest change as its `source` (docs/protocol.md).

// The Gamepad API's standard mapping: buttons[i] is GAMEPAD_BUTTONS[i]; the sticks' directions
// are an axis and a sign (axes 1 and 3 grow downwards). The names are those of hello's `gamepads`.
export const GAMEPAD_BUTTONS = [
  "a", "b", "x", "y", "lb", "rb", "lt", "rt", "back", "start", "ls", "rs",
  "dpad_up", "dpad_down", "dpad_left", "dpad_right", "home",
];
export const GAMEPAD_STICKS = {
  left_stick_left: [0, -1], left_stick_right: [0, 1], left_stick_up: [1, -1], left_stick_down: [1, 1],
  right_stick_left: [2, -1], right_stick_right: [2, 1], right_stick_up: [3, -1], right_stick_down: [3, 1],
};
// A stick counts as pushed beyond this tilt (worn sticks rest a little off centre); an analog
// trigger counts as held beyond half its travel.
const DEAD_ZONE = 0.5;
const TRIGGER_HELD = 0.5;

function sameKeys(a, b) {
  return a.size === b.size && [...a].every((key) => b.has(key));
}

function buttonHeld(button) {
  if (button == null) return false;
  if (typeof button === "number") return button > TRIGGER_HELD; // the API's old form: a value per button
  return Boolean(button.pressed) || button.value > TRIGGER_HELD;
}

function controlHeld(pad, control) {
  const index = GAMEPAD_BUTTONS.indexOf(control);
  if (index >= 0) return buttonHeld((pad.buttons || [])[index]);
  const stick = GAMEPAD_STICKS[control];
  if (!stick) return false;
  const value = (pad.axes || [])[stick[0]] || 0;
  return value * stick[1] > DEAD_ZONE;
}

// The keys every connected gamepad holds, polled once per animation frame (the Gamepad API has
// no button events). `mapping` is hello's `gamepads` entry for this agent: {control: "Key+Key"}.
export class GamepadInput {
  constructor(mapping, onChange) {
    this.mapping = mapping || {};
    this.onChange = onChange;
    this.held = new Set();
    this.connected = 0;
    this.poll = this.poll.bind(this);
    this.raf = requestAnimationFrame(this.poll);
  }

  poll() {
    const held = new Set();
    let connected = 0;
    const pads = navigator.getGamepads ? navigator.getGamepads() : [];
    for (const pad of pads || []) {
      if (!pad || pad.connected === false) continue;
      connected++;
      for (const [control, keys] of Object.entries(this.mapping)) {
        if (controlHeld(pad, control)) for (const key of keys.split("+")) held.add(key);
      }
    }
    this.connected = connected;
    if (!sameKeys(held, this.held)) {
      this.held = held;
      this.onChange();
    }
    this.raf = requestAnimationFrame(this.poll);
  }

  stop() {
    cancelAnimationFrame(this.raf);
    this.held = new Set();
  }
}

// Where a key sits on the on-screen d-pad (grid area); the other keys become action buttons.
const PAD_PLACES = {
  ArrowUp: "up", ArrowDown: "down", ArrowLeft: "left", ArrowRight: "right",
  KeyW: "up", KeyS: "down", KeyA: "left", KeyD: "right",
};

// Whether the page should offer on-screen controls: the device's main pointer is a finger.
export function touchDevice() {
  return matchMedia("(pointer: coarse)").matches;
}

// On-screen buttons made from this agent's keymap: one per key the keymap uses, labelled with the
// action that key plays alone. A finger holds its button's key until it lifts (or slides off onto
// another button, which it then holds); several fingers hold several keys, so left + fire plays
// the keymap's LEFTFIRE as on a keyboard. Pointer events serve touch, pen and mouse alike.
export class TouchControls {
  constructor(container, hello, keyName, onChange) {
    this.container = container;
    this.onChange = onChange;
    this.fingers = new Map(); // pointerId -> the key under it (null: slid off every button)
    this.held = new Set();
    container.replaceChildren(...this.buttons(hello, keyName));
    this.handlers = {
      pointerdown: (event) => this.press(event),
      pointermove: (event) => this.slide(event),
      pointerup: (event) => this.lift(event),
      pointercancel: (event) => this.lift(event),
      contextmenu: (event) => event.preventDefault(), // a long press must not open a menu
    };
    for (const [type, handler] of Object.entries(this.handlers)) container.addEventListener(type, handler);
    container.hidden = false;
    document.body.classList.add("touch-play"); // the screen shrinks to leave the controls in view
  }

  buttons(hello, keyName) {
    const keymap = (hello.keymaps || {})[hello.agent] || {};
    const labels = (hello.action_labels || {})[hello.agent] || hello.action_meanings || [];
    const keys = [...new Set(Object.keys(keymap).flatMap((combo) => combo.split("+")))];
    const pad = document.createElement("div");
    pad.className = "touch-pad";
    const actions = document.createElement("div");
    actions.className = "touch-actions";
    for (const key of keys) {
      const alone = keymap[key];
      const label = alone == null ? keyName(key) : String(labels[alone] ?? alone);
      const button = document.createElement("button");
      button.type = "button";
      button.className = "touch-key";
      button.dataset.key = key;
      button.textContent = label;
      button.setAttribute("aria-label", `${label} (${keyName(key)})`);
      button.setAttribute("aria-pressed", "false");
      const place = PAD_PLACES[key];
      if (place && !pad.querySelector(`[data-place=${place}]`)) {
        button.dataset.place = place;
        pad.append(button);
      } else {
        actions.append(button);
      }
    }
    return [pad, actions].filter((group) => group.childElementCount);
  }

  keyAt(x, y) {
    const element = document.elementFromPoint(x, y);
    const button = element && element.closest ? element.closest(".touch-key") : null;
    return button && this.container.contains(button) ? button.dataset.key : null;
  }

  press(event) {
    const button = event.target.closest ? event.target.closest(".touch-key") : null;
    if (!button) return;
    event.preventDefault();
    // Pointer capture would keep a sliding finger on its first button: hit-test it instead.
    if (event.target.hasPointerCapture && event.target.hasPointerCapture(event.pointerId)) event.target.releasePointerCapture(event.pointerId);
    this.fingers.set(event.pointerId, button.dataset.key);
    this.update();
  }

  slide(event) {
    if (!this.fingers.has(event.pointerId)) return;
    const key = this.keyAt(event.clientX, event.clientY);
    if (key === this.fingers.get(event.pointerId)) return;
    this.fingers.set(event.pointerId, key);
    this.update();
  }

  lift(event) {
    if (!this.fingers.delete(event.pointerId)) return;
    this.update();
  }

  update() {
    const held = new Set([...this.fingers.values()].filter((key) => key != null));
    for (const button of this.container.querySelectorAll(".touch-key")) {
      const down = held.has(button.dataset.key);
      button.classList.toggle("held", down);
      button.setAttribute("aria-pressed", String(down));
    }
    if (sameKeys(held, this.held)) return;
    this.held = held;
    this.onChange();
  }

  stop() {
    for (const [type, handler] of Object.entries(this.handlers)) this.container.removeEventListener(type, handler);
    this.container.replaceChildren();
    this.container.hidden = true;
    document.body.classList.remove("touch-play");
    this.fingers.clear();
    this.held = new Set();
  }
}

// The keys held on every device, in a stable order, at most `limit` of them (the protocol's cap).
export function mergeHeld(sets, limit = 16) {
  const keys = new Set();
  for (const set of sets) if (set) for (const key of set) keys.add(key);
  return [...keys].sort().slice(0, limit);
}
