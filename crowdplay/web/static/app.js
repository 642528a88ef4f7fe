// CrowdPlay participant page: consent, the task library, live play over one websocket, the score page.
// Frame decoding follows docs/protocol.md and crowdplay/codec.py.

import { FLAG_NEW_EPISODE, FLAG_ROW_MOVES, screenFor } from "./frames.js";
import { ConnectionWatch, PagePresence } from "./presence.js";
import { loadTexts, t, tn } from "./texts.js";
import { GamepadInput, TouchControls, mergeHeld, touchDevice } from "./controls.js";
import { KeyToFrame } from "./latency.js";

const CAPTURED_KEYS = new Set(["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "Space"]);

const $ = (id) => document.getElementById(id);
// Exposed for tests and for anyone debugging a study in the browser console.
const state = (window.crowdplay = {
  framesReceived: 0, framesDisplayed: 0, displayedFrame: 0, episode: -1, rowMoveFrames: 0,
  sessionId: null, gameId: null, agent: null, phase: null, lobby: null, events: [], reconnects: 0, errors: [], pageEvents: [], rttMs: [],
});
// Close codes (docs/protocol.md): the session ended, or this tab was replaced by another one.
const CLOSE_SESSION_ENDED = 4000;
const CLOSE_REPLACED = 4001;
// The game's server stopped (1011 while playing; 4000 with a reason when reconnecting): the page
// offers a new start.
const CLOSE_SERVER_ERROR = 1011;
// The game's server stopped answering (its machine cannot be reached): also a new start.
const CLOSE_SERVER_UNREACHABLE = 4002;
// Abnormal closures (network drop, a server replica going away) are retried for this long: the
// server keeps the participant's place for its reconnect grace period.
const RECONNECT_FOR_MS = 15000;
// Key hints: KeyboardEvent.code values as printed on keys (KeyW -> W and Digit1 -> 1 are derived).
const KEY_NAMES = {
  ArrowUp: "↑", ArrowDown: "↓", ArrowLeft: "←", ArrowRight: "→", Enter: "Enter", Escape: "Esc",
  Backspace: "Backspace", Minus: "-", Equal: "=", BracketLeft: "[", BracketRight: "]", Backslash: "\\",
  Semicolon: ";", Quote: "'", Backquote: "`", Comma: ",", Period: ".", Slash: "/",
};
// Beyond this many key combinations, they are folded away under the single keys.
const COMBOS_SHOWN = 4;

function keyName(code) {
  if (code === "Space") return t("keys.space");
  if (KEY_NAMES[code]) return KEY_NAMES[code];
  if (/^Key[A-Z]$/.test(code)) return code.slice(3);
  if (/^Digit[0-9]$/.test(code)) return code.slice(5);
  if (code.startsWith("Numpad")) return `Num ${code.slice(6)}`;
  return code.replace(/(Left|Right)$/, ""); // ShiftLeft -> Shift
}

function hintItem(combo, label) {
  const item = document.createElement("li");
  item.dataset.keys = combo;
  const keys = document.createElement("span");
  keys.className = "keys";
  combo.split("+").forEach((code, i) => {
    if (i) keys.append("+");
    const kbd = document.createElement("kbd");
    kbd.textContent = keyName(code);
    keys.append(kbd);
  });
  const name = document.createElement("span");
  name.className = "label";
  name.textContent = label;
  item.append(keys, name);
  return item;
}

// "key -> action label" for an agent, from a game's description (hello, or a task's controls):
// single keys first, combinations after (folded away when there are many), and what happens
// with no key held.
function agentControls(description, agent) {
  const keymap = (description.keymaps || {})[agent] || {};
  const labels = (description.action_labels || {})[agent] || description.action_meanings || [];
  const entries = Object.entries(keymap).sort(([a], [b]) => a.split("+").length - b.split("+").length);
  const combos = entries.filter(([combo]) => combo.includes("+"));
  const inline = combos.length <= COMBOS_SHOWN;
  const item = ([combo, action]) => hintItem(combo, labels[action] ?? String(action));
  const idle = (description.idle || {})[agent] || "noop";
  const noop = (description.noop_actions || {})[agent];
  return {
    shown: (inline ? entries : entries.filter(([combo]) => !combo.includes("+"))).map(item),
    folded: (inline ? [] : combos).map(item),
    combos: combos.length,
    idleHint: idle === "repeat" || idle === "wait" ? t(`keys.idle_${idle}`) : noop == null ? "" : t("keys.idle_action", { action: labels[noop] ?? noop }),
    keys: new Set(entries.flatMap(([combo]) => combo.split("+"))),
  };
}

// The keys panel beside the game, for this participant's agent; the keys it captures.
function showControls(hello) {
  const controls = agentControls(hello, hello.agent);
  $("key-hints").replaceChildren(...controls.shown);
  $("key-combo-hints").replaceChildren(...controls.folded);
  $("key-combos-summary").textContent = t("keys.combinations", { n: controls.combos });
  $("key-combos").hidden = !controls.folded.length;
  $("idle-hint").textContent = controls.idleHint;
  $("controls").hidden = controls.keys.size === 0;
  return controls.keys;
}

// The task page's "how to play", before Start: per agent people play, the researcher's
// instructions and the keys (which agent a participant gets is decided when they start).
function controlsOverview(description) {
  const humans = description.humans || description.agents || [];
  return humans.map((agent) => {
    const controls = agentControls(description, agent);
    const section = document.createElement("section");
    section.className = "agent-controls";
    section.dataset.agent = agent;
    if (humans.length > 1) {
      const heading = document.createElement("h4");
      heading.textContent = t("task.if_you_play", { agent });
      section.append(heading);
    }
    const instructions = document.createElement("div");
    instructions.className = "instructions";
    instructions.innerHTML = (description.instructions || {})[agent] || ""; // the researcher's own HTML
    const keys = document.createElement("ul");
    keys.className = "key-hints";
    keys.setAttribute("aria-label", t("keys.heading"));
    keys.append(...controls.shown, ...controls.folded);
    const idle = document.createElement("p");
    idle.className = "idle-hint";
    idle.textContent = controls.idleHint;
    section.append(instructions, keys, idle);
    return section;
  });
}

class Game {
  constructor(session) {
    this.session = session;
    this.held = new Set();
    this.seq = 0;
    // Key-to-frame delays, reported for the researcher's dashboard (latency.js).
    this.latency = state.latency = new KeyToFrame((report) => this.ws.readyState === WebSocket.OPEN && this.ws.send(JSON.stringify(report)));
    this.dirty = false;
    this.header = null;
    this.decoding = Promise.resolve();
    this.fpsCount = 0;
    this.reconnectUntil = 0;
    this.connect();
    this.onKey = this.onKey.bind(this);
    this.onBlur = () => { this.held.clear(); this.sendKeys(); };
    // Gamepads and on-screen touch controls hold keys too; sendKeys merges every device's.
    this.gamepad = new GamepadInput({}, () => this.sendKeys("gamepad"));
    window.addEventListener("keydown", this.onKey);
    window.addEventListener("keyup", this.onKey);
    window.addEventListener("blur", this.onBlur);
    // The page tells the game when the participant is away, and them when their connection is slow.
    this.presence = new PagePresence((event) => this.sendPage(event));
    this.connection = new ConnectionWatch(
      (t, roundTrip) => this.sendJson({ type: "ping", t, ...(roundTrip || {}) }),
      (slow) => this.connectionChanged(slow),
      (rttMs) => this.showRoundTrip(rttMs),
    );
    this.fpsTimer = setInterval(() => { $("fps").textContent = this.fpsCount; this.fpsCount = 0; }, 1000);
    this.raf = requestAnimationFrame(() => this.render());
    state.snapshot = () => this.snapshot();
  }

  connect() {
    this.ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${this.session.ws}`);
    this.ws.binaryType = "arraybuffer";
    this.ws.onmessage = (event) => this.onMessage(event.data);
    this.ws.onclose = (event) => this.onClose(event);
  }

  // The decoded screen (palette indices or RGB bytes, base64) and where it sits in the episode.
  snapshot() {
    let binary = "";
    for (const byte of this.decoder.screen) binary += String.fromCharCode(byte);
    return { frameId: this.header.frameId, envStep: this.header.envStep, episode: state.episode, screen: btoa(binary) };
  }

  onMessage(data) {
    if (typeof data === "string") return this.onEvent(JSON.parse(data));
    state.framesReceived++;
    this.connection.frame();
    // Decoding is asynchronous (DecompressionStream) but deltas must apply in order: chain them.
    this.decoding = this.decoding.then(async () => {
      try {
        this.header = await this.decoder.decode(data);
        if (this.header.flags & FLAG_NEW_EPISODE) state.episode++;
        if (this.header.flags & FLAG_ROW_MOVES) state.rowMoveFrames++;
        this.dirty = true;
      } catch (error) {
        state.errors.push(String(error));
        setStatus(t("status.display_error", { reason: error.message }));
      }
    });
  }

  onEvent(message) {
    state.events.push(message.type);
    if (message.type === "hello") {
      this.hello = message;
      this.reconnectUntil = 0;
      state.agent = message.agent;
      const several = message.agents.length > 1;
      $("role").hidden = !several && !message.watching;
      if (message.watching) $("role").textContent = t("game.you_watch");
      else $("role").textContent = several ? t("game.you_play", { agent: message.agent, number: message.agents.indexOf(message.agent) + 1, count: message.agents.length }) : "";
      ({ decoder: this.decoder, context: this.context, image: this.image } = screenFor(message, $("screen")));
      applyScale();
      $("instructions").innerHTML = message.instructions || ""; // the researcher's own HTML
      this.captured = message.watching ? new Set() : new Set([...CAPTURED_KEYS, ...showControls(message)]);
      if (message.watching) $("controls").hidden = true;
      this.gamepad.mapping = ((message.gamepads || {})[message.agent]) || {};
      if (!this.touch && !message.watching && study.touch === "allowed" && touchDevice()) {
        this.touch = new TouchControls($("touch-controls"), message, keyName, () => this.sendKeys("touch"));
      }
      setStatus(t(state.phase === "playing" ? "status.reconnected" : "status.connected"));
      if (!message.watching) this.presence.sendState();
      this.connection.pingNow();
      canvas.focus();
    } else if (message.type === "pong") {
      this.connection.pong(message.t);
    } else if (message.type === "paused" || message.type === "resumed") {
      this.showPaused(message.type === "paused");
    } else if (message.type === "lobby") {
      this.showLobby(message);
    } else if (message.type === "countdown") {
      this.countDown(message.seconds);
    } else if (message.type === "play") {
      state.phase = "playing";
      this.hideLobby();
      if (this.hello && (this.hello.env || {}).mode === "realtime") this.connection.expect(this.hello.fps);
      setStatus(t(this.hello && this.hello.watching ? "status.watching" : this.touch ? "status.playing_touch" : "status.playing_keyboard"));
      $("screen").focus();
    } else if (message.type === "player") {
      const who = message.agent === state.agent ? t("status.you") : t("status.the_participant", { agent: message.agent });
      if (message.status === "left") setStatus(t("status.player_left", { who, seconds: message.grace_s }));
      else if (message.status === "back") setStatus(t("status.player_back", { who }));
      else if (message.status === "ai") setStatus(t("status.ai_took_over", { agent: message.agent, policy: message.policy }));
      else if (message.status === "ai_unavailable") setStatus(t("status.ai_unavailable", { agent: message.agent, reason: message.reason }));
      else if (message.status === "ai_back") setStatus(t("status.ai_back", { agent: message.agent }));
    } else if (message.type === "stats") {
      showStats(message);
    } else if (message.type === "episode_end") {
      $("episode").textContent = message.episode + 2;
      setStatus(t("status.episode_over", { episode: message.episode + 1, points: Object.values(message.returns)[0] }));
    } else if (message.type === "error") {
      state.errors.push(message.reason);
      this.finished = true;
      $("start-again").hidden = ![CLOSE_SERVER_ERROR, CLOSE_SESSION_ENDED, CLOSE_SERVER_UNREACHABLE].includes(message.code);
      if (message.code === CLOSE_SERVER_UNREACHABLE) setStatus(t("status.server_unreachable"));
      else setStatus(message.code === CLOSE_REPLACED ? t("status.replaced") : t("status.error", { reason: message.reason }));
    } else if (message.type === "end") {
      this.finished = true;
      state.phase = "ended";
      this.hideLobby();
      setStatus(t("status.game_over", { reason: message.reason }));
    }
  }

  // The waiting room: who is in, who is awaited, and how long until AI fills the empty seats.
  showLobby(lobby) {
    state.lobby = lobby;
    state.phase = lobby.phase;
    if (lobby.phase === "playing") return this.hideLobby();
    const list = $("seats");
    list.replaceChildren();
    for (const [agent, status] of Object.entries(lobby.seats)) {
      const item = document.createElement("li");
      item.dataset.agent = agent;
      item.dataset.status = status;
      const seatStatus = ["open", "joining", "ready", "ai"].includes(status) ? t(`lobby.seat_${status}`) : status;
      item.textContent = t("lobby.seat", { agent: agent === state.agent ? t("lobby.you", { agent }) : agent, status: seatStatus });
      list.append(item);
    }
    const waiting = lobby.awaiting.filter((agent) => agent !== state.agent);
    let note = waiting.length ? tn("lobby.waiting", waiting.length) : t("lobby.everyone_here");
    if (lobby.timeout_s != null && waiting.length) note += ` ${t("lobby.ai_in", { seconds: Math.ceil(lobby.timeout_s) })}`;
    $("lobby-note").textContent = note;
    $("lobby").hidden = false;
    clearInterval(this.lobbyTimer);
    if (lobby.timeout_s != null && waiting.length) {
      const deadline = performance.now() + lobby.timeout_s * 1000;
      this.lobbyTimer = setInterval(() => {
        const left = Math.max(0, Math.ceil((deadline - performance.now()) / 1000));
        $("lobby-note").textContent = `${tn("lobby.waiting", waiting.length)} ${t("lobby.ai_in", { seconds: left })}`;
      }, 250);
    }
  }

  countDown(seconds) {
    clearInterval(this.lobbyTimer);
    const deadline = performance.now() + seconds * 1000;
    const show = () => {
      const left = Math.ceil((deadline - performance.now()) / 1000);
      $("countdown").textContent = left > 0 ? t("lobby.starting_in", { seconds: left }) : t("lobby.go");
    };
    $("countdown").hidden = false;
    show();
    this.lobbyTimer = setInterval(show, 100);
  }

  hideLobby() {
    clearInterval(this.lobbyTimer);
    $("lobby").hidden = true;
    $("countdown").hidden = true;
  }

  render() {
    if (this.dirty && this.decoder) {
      this.decoder.paint(this.image);
      this.context.putImageData(this.image, 0, 0);
      this.dirty = false;
      this.fpsCount++;
      state.framesDisplayed++;
      state.displayedFrame = this.connection.shownFrame = this.header.frameId;
      this.latency.displayed(this.header.inputSeq);
      $("score").textContent = this.header.score;
    }
    this.raf = requestAnimationFrame(() => this.render());
  }

  onKey(event) {
    // The game's keys do not scroll the page or trigger browser shortcuts, except while typing.
    const typing = event.target instanceof HTMLElement && event.target.matches("input, textarea, select");
    if (!typing && (this.captured || CAPTURED_KEYS).has(event.code)) event.preventDefault();
    if (event.repeat || !event.code) return;
    const before = this.held.size;
    const had = this.held.has(event.code);
    if (event.type === "keydown") this.held.add(event.code);
    else this.held.delete(event.code);
    if (had !== this.held.has(event.code) || before !== this.held.size) this.sendKeys();
  }

  // The keys held on every device, sent when that set changes, naming the device that changed it.
  sendKeys(source = "keyboard") {
    if (this.hello && this.hello.watching) return; // a watcher's keys go nowhere
    if (this.ws.readyState !== WebSocket.OPEN) return;
    const keys = mergeHeld([this.held, this.gamepad.held, this.touch && this.touch.held]);
    if (keys.join("+") === this.sentKeys) return; // another device already holds them
    this.sentKeys = keys.join("+");
    this.seq = (this.seq + 1) % 65536;
    this.ws.send(JSON.stringify({ type: "keys", keys, frame: state.displayedFrame, seq: this.seq, source }));
    this.latency.sent(this.seq);
  }

  onClose(event) {
    // A dropped connection (1006) or a server replica going away (1001, 1012) is retried: the
    // participant keeps their place for the server's grace period and gets it back.
    const retriable = !this.finished && !this.leaving && [1001, 1006, 1012].includes(event.code);
    $("round-trip").hidden = true;
    if (retriable) {
      const now = performance.now();
      if (!this.reconnectUntil) this.reconnectUntil = now + RECONNECT_FOR_MS;
      if (now < this.reconnectUntil) {
        state.reconnects++;
        setStatus(t("status.reconnecting"));
        this.retry = setTimeout(() => this.connect(), 500);
        return;
      }
    }
    if (event.code !== 1000 && event.code !== CLOSE_SESSION_ENDED && event.code !== CLOSE_REPLACED && !state.errors.length) {
      setStatus(t("status.connection_closed", { reason: `${event.code}${event.reason ? ": " + event.reason : ""}` }));
    }
    this.stop();
  }

  sendJson(message) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  // A change on the page, for the game to record; a task that ends when its participant leaves
  // the page ends here, once the server has the reason.
  sendPage(event) {
    if (!this.hello || this.hello.watching || this.finished) return;
    state.pageEvents.push(event);
    this.sendJson({ type: "page", event, frame: state.displayedFrame });
    if ((event === "hidden" || event === "blur") && this.hello.when_away === "end" && state.phase === "playing") {
      this.finished = true;
      this.stop();
      $("start-again").hidden = false;
      setStatus(t("status.left_page"));
    }
  }

  showPaused(paused) {
    state.paused = paused;
    $("paused-note").hidden = !paused;
    this.connection.expect(paused || (this.hello.env || {}).mode !== "realtime" ? 0 : this.hello.fps);
    if (!paused) setStatus(t("status.welcome_back"));
  }

  // The connection's latest round trip, in plain words beside the score: what the participant's
  // keys and screen wait on the way to the server and back. Hidden while there is no connection.
  showRoundTrip(rttMs) {
    state.rttMs.push(rttMs);
    $("round-trip").textContent = t("game.round_trip", { ms: Math.round(rttMs) });
    $("round-trip").title = t("game.round_trip_help");
    $("round-trip").hidden = false;
  }

  connectionChanged(slow) {
    $("connection-note").hidden = !slow;
    this.sendPage(slow ? "slow_connection" : "connection_ok");
  }

  stop() {
    this.leaving = true;
    clearTimeout(this.retry);
    this.hideLobby();
    window.removeEventListener("keydown", this.onKey);
    window.removeEventListener("keyup", this.onKey);
    window.removeEventListener("blur", this.onBlur);
    this.gamepad.stop();
    if (this.touch) this.touch.stop();
    clearInterval(this.fpsTimer);
    this.presence.stop();
    this.connection.stop();
    $("connection-note").hidden = true;
    $("round-trip").hidden = true;
    $("paused-note").hidden = true;
    cancelAnimationFrame(this.raf);
    if (this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "participant left");
  }
}

function setStatus(text) {
  $("status").textContent = text;
}

function applyScale() {
  const canvas = $("screen");
  const scale = Number($("scale").value);
  canvas.style.width = `${canvas.width * scale}px`;
  canvas.style.height = `${canvas.height * scale}px`;
}

// ---------------------------------------------------------------- the participant's journey
// landing (URL parameters) -> consent -> library or automatic assignment -> instructions ->
// waiting room -> play (live statistics, progress, bonus) -> finish -> score page -> completion.
const params = new URLSearchParams(location.search);
const platform = params.get("assignmentId") || params.get("workerId") ? "mturk" : params.get("PROLIFIC_PID") ? "prolific" : "generic";
let study = null;
let chosen = null;
let game = null;

function show(sectionId) {
  for (const id of ["consent", "library", "game", "score-page"]) $(id).hidden = id !== sectionId;
  state.page = sectionId;
}

function keyboardMissing() {
  // Touch-only devices (phones, tablets without a keyboard) cannot play keyboard games.
  return matchMedia("(pointer: coarse)").matches && !matchMedia("(any-pointer: fine)").matches;
}

async function landing() {
  // Frames per second are for whoever debugs a study (?debug=1), not for participants: a number
  // they can do nothing about only worries them.
  $("fps-box").hidden = !params.has("debug");
  if (platform === "mturk" && params.get("assignmentId") === "ASSIGNMENT_ID_NOT_AVAILABLE") {
    $("preview-note").hidden = false; // MTurk's preview: the worker has not accepted the HIT yet
  }
  const response = await fetch("/api/study");
  study = await response.json();
  state.language = await loadTexts(study, params);
  // A study that allows touch shows on-screen controls instead (controls.js).
  if (keyboardMissing() && study.touch !== "allowed") $("touch-warning").hidden = false;
  const title = (study.titles || {})[state.language] || study.title;
  document.title = title;
  $("study-title").textContent = title;
  const consentKey = `crowdplay-consent-${study.consent.version}`;
  if (study.consent.html && !localStorage.getItem(consentKey)) {
    $("consent-text").innerHTML = (study.consent.by_language || {})[state.language] || study.consent.html; // the researcher's own text
    show("consent");
    $("agree").onclick = () => {
      localStorage.setItem(consentKey, String(Date.now() / 1000));
      afterConsent();
    };
    return;
  }
  afterConsent();
}

function consentedAt() {
  const value = localStorage.getItem(`crowdplay-consent-${study.consent.version}`);
  return value ? Number(value) : undefined;
}

function afterConsent() {
  show("library");
  if (study.assignment === "auto") {
    $("games").hidden = true;
    choose({ id: "auto", title: t("library.auto_title"), description: t("library.auto_description"), requirements: [], open: true });
    return;
  }
  showLibrary();
}

function showLibrary() {
  const list = $("games");
  list.replaceChildren();
  for (const task of study.tasks) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.envId = task.id;
    button.dataset.taskId = task.id;
    if (task.image) {
      const image = document.createElement("img");
      image.src = task.image;
      image.alt = "";
      button.append(image);
    }
    const title = document.createElement("strong");
    title.textContent = task.title;
    if (task.players > 1) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = t("library.players", { n: task.players });
      title.append(badge);
    }
    button.append(title, task.description);
    if (!task.open) {
      button.disabled = true;
      const reason = document.createElement("em");
      reason.textContent = ` (${task.closed_reason})`;
      button.append(reason);
    }
    button.addEventListener("click", () => (task.redirect ? location.assign(task.redirect) : choose(task)));
    item.append(button);
    list.append(item);
  }
  $("games").hidden = false;
  $("chosen").hidden = true;
}

// A statistic's name as the participant reads it (the catalogue's "stats.<name>", else the name).
const label = (name) => (t(`stats.${name}`) === `stats.${name}` ? name.replaceAll("_", " ") : t(`stats.${name}`));
const number = (value) => (Number.isInteger(value) ? String(value) : value.toFixed(1));

function choose(task) {
  chosen = task;
  $("chosen-title").textContent = task.title;
  $("chosen-instructions").textContent = task.description;
  const list = $("requirements");
  list.replaceChildren();
  for (const requirement of task.requirements || []) {
    const item = document.createElement("li");
    item.textContent = t("task.requirement", { name: label(requirement.name), threshold: requirement.threshold });
    list.append(item);
  }
  if (task.max_hidden_s != null) {
    const item = document.createElement("li");
    item.dataset.requirement = "max_hidden_s";
    item.textContent = t("task.max_hidden", { seconds: number(task.max_hidden_s) });
    list.append(item);
  }
  $("requirements-note").hidden = !list.children.length;
  $("games").hidden = true;
  $("chosen").hidden = false;
  $("how-to-play").hidden = true;
  if (task.id !== "auto") showHowToPlay(task.id);
  $("start").focus();
}

async function showHowToPlay(taskId) {
  const response = await fetch(`/api/tasks/${encodeURIComponent(taskId)}/controls`);
  if (!response.ok || chosen?.id !== taskId) return; // the keys show beside the game anyway
  const controls = await response.json();
  const away = document.createElement("p");
  away.id = "when-away";
  away.textContent = ["pause", "play", "end"].includes(controls.when_away) ? t(`away.${controls.when_away}`) : "";
  $("task-controls").replaceChildren(...controlsOverview(controls), away);
  $("how-to-play").hidden = false;
}

function resumeKey(taskId) {
  return `crowdplay-resume-${taskId}`;
}

// Ask for a session; when the server says too many are starting (429), wait as long as it asks
// and try again, saying so.
async function requestSession() {
  for (;;) {
    const response = await fetch("/api/sessions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      // The page's URL parameters travel with the session (a crowd platform's worker id among them
      // is stored only as a pseudonym).
      body: JSON.stringify({
        task_id: chosen.id,
        params: Object.fromEntries(params),
        consented_at: consentedAt(),
        resume: localStorage.getItem(resumeKey(chosen.id)) || undefined,
      }),
    });
    const body = await response.json();
    if (response.ok) return body;
    if (response.status !== 429) throw new Error(body.reason || response.statusText);
    const waitS = Number(response.headers.get("Retry-After")) || 5;
    setStatus(t("status.busy", { seconds: waitS }));
    await new Promise((resolve) => setTimeout(resolve, waitS * 1000));
  }
}

async function start() {
  $("start").disabled = true;
  setStatus(t("status.starting"));
  // On a cluster at capacity the server waits for a new machine before it answers: say so.
  const slow = setTimeout(() => {
    state.waitingForServer = true;
    setStatus(t("status.new_server"));
  }, 3000);
  try {
    const asked = chosen.id;
    const body = await requestSession();
    // Only this browser holds the resume secret: with it, another tab of this page gets the same
    // seat back; a participant id alone does not.
    if (body.resume) localStorage.setItem(resumeKey(asked), body.resume);
    state.sessionId = body.session_id;
    state.gameId = body.game_id;
    state.token = body.token;
    state.taskId = body.task_id;
    document.body.dataset.session = body.session_id;
    const task = study.tasks.find((candidate) => candidate.id === body.task_id);
    if (task) chosen = task;
    $("game-title").textContent = chosen.title;
    $("stats").replaceChildren();
    $("progress").replaceChildren();
    $("bonus").hidden = true;
    show("game");
    $("start-again").hidden = true;
    game = new Game(body);
  } catch (error) {
    setStatus(t("status.could_not_start", { reason: error.message }));
  } finally {
    clearTimeout(slow);
    state.waitingForServer = false;
    $("start").disabled = false;
  }
}

// Live statistics from the server (every two seconds): values, each requirement's progress, bonus.
function showStats(message) {
  state.stats = message;
  const stats = $("stats");
  stats.replaceChildren();
  for (const name of chosen?.statistics || Object.keys(message.values)) {
    if (!(name in message.values)) continue;
    const row = document.createElement("div");
    row.dataset.stat = name;
    row.textContent = `${label(name)}: ${number(message.values[name])}`;
    stats.append(row);
  }
  const progress = $("progress");
  progress.replaceChildren();
  for (const [name, fraction] of Object.entries(message.progress)) {
    const item = document.createElement("li");
    item.dataset.requirement = name;
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = fraction;
    item.append(`${label(name)} `, bar, ` ${Math.round(fraction * 100)}%`);
    progress.append(item);
  }
  if (message.bonus != null) {
    $("bonus").hidden = false;
    $("bonus").textContent = t("stats.bonus", { amount: message.bonus.toFixed(2) });
  }
  $("finish").classList.toggle("ready", message.complete);
  if (message.hidden_too_long) setStatus(t("status.hidden_too_long"));
  else if (message.complete && Object.keys(message.progress).length) setStatus(t("status.requirements_met"));
}

async function sessionApi(path, method = "GET") {
  const response = await fetch(`/api/sessions/${state.sessionId}/${path}?token=${encodeURIComponent(state.token)}`, { method });
  return { ok: response.ok, status: response.status, body: await response.json() };
}

async function finish() {
  $("finish").disabled = true;
  const { ok, body } = await sessionApi("finish", "POST");
  if (game) game.stop();
  game = null;
  $("finish").disabled = false;
  if (!ok) return setStatus(t("status.could_not_finish", { reason: body.reason }));
  showScorePage(body);
}

// The histogram of everyone's scores (round-width bins from the server), the participant's bin
// marked "You", its axis labelled at a few edges: readable with one finisher or ten thousand.
function histogramSvg(ranking) {
  const svgNS = "http://www.w3.org/2000/svg";
  const make = (tag, attributes, text) => {
    const node = document.createElementNS(svgNS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    if (text != null) node.textContent = text;
    return node;
  };
  const { edges, counts, own_bin: ownBin } = ranking.histogram;
  const width = 320, height = 110, top = 16, axis = 16;
  const svg = make("svg", { viewBox: `0 0 ${width} ${top + height + axis}`, role: "img" });
  const others = ranking.participants - 1;
  svg.append(make("title", {}, tn("score.chart", ranking.participants, { low: number(edges[0]), high: number(edges[edges.length - 1]), score: number(ranking.score) })));
  const most = Math.max(1, ...counts);
  const barWidth = width / counts.length;
  counts.forEach((count, i) => {
    if (!count) return;
    const barHeight = Math.max(2, (count / most) * height);
    svg.append(make("rect", { x: i * barWidth + 1, y: top + height - barHeight, width: Math.max(1, barWidth - 2), height: barHeight, class: i === ownBin ? "bar own" : "bar" }));
  });
  const ownX = (ownBin + 0.5) * barWidth;
  svg.append(make("text", { x: ownX, y: 11, "text-anchor": "middle", class: "you" }, t("score.you")));
  const labelEvery = Math.ceil(counts.length / 5);
  edges.forEach((edge, i) => {
    if (i % labelEvery && i !== edges.length - 1) return;
    const anchor = i === 0 ? "start" : i === edges.length - 1 ? "end" : "middle";
    svg.append(make("text", { x: i * barWidth, y: top + height + 13, "text-anchor": anchor }, number(edge)));
  });
  svg.append(make("text", { x: 0, y: top + 8, class: "most" }, others ? `${most}` : ""));
  return svg;
}

function rankingSentence(ranking, percentileFrom) {
  if (ranking.percentile != null) return t("score.percentile", { percent: Math.round(ranking.percentile), others: ranking.others });
  if (!ranking.others) return t("score.first");
  return tn("score.others", ranking.others, { others: ranking.others, needed: percentileFrom });
}

async function showScorePage(summary) {
  state.summary = summary;
  show("score-page");
  setStatus(""); // the game's last word ("Game over: you finished playing") is not the page's
  const ranking = summary.ranking;
  $("final-score").textContent = number(ranking ? ranking.score : summary.values.score || 0);
  $("percentile").textContent = ranking ? rankingSentence(ranking, study.score_page.percentile_from) : "";
  $("histogram").replaceChildren(...(ranking ? [histogramSvg(ranking)] : []));
  $("completion-code-box").hidden = true;
  $("continue-box").hidden = true;
  const completion = await sessionApi("completion");
  state.completion = completion.body;
  if (completion.ok && completion.body.code) {
    $("completion-code").textContent = completion.body.code;
    $("completion-code-box").hidden = false;
    $("completion-note").textContent = t("score.code_note");
  } else if (completion.ok && completion.body.redirect) {
    $("completion-note").textContent = t("score.continue_note");
    offerContinue(completion.body.redirect);
  } else if (completion.status === 403) {
    $("completion-note").textContent = t(summary.hidden_too_long ? "score.hidden_too_long" : "score.not_complete");
  } else {
    $("completion-note").textContent = t("score.thanks");
  }
}

// The participant leaves the score page when they choose to (the button), or after the study's
// auto-continue delay with a countdown on screen; writing feedback stops the countdown.
function offerContinue(url) {
  const button = $("continue");
  button.href = url;
  button.textContent = t(platform === "prolific" ? "score.return_prolific" : "score.continue");
  button.onclick = async (event) => {
    event.preventDefault();
    await continueTo(url);
  };
  $("continue-box").hidden = false;
  const delayS = study.score_page.auto_continue_s;
  if (delayS == null) return;
  const deadline = performance.now() + delayS * 1000;
  const tick = () => {
    const left = Math.max(0, Math.ceil((deadline - performance.now()) / 1000));
    $("auto-continue").textContent = t("score.taken_in", { seconds: left });
    if (left === 0) continueTo(url);
  };
  const stop = (note) => {
    clearInterval(state.autoContinue);
    state.autoContinue = null;
    $("stay").hidden = true;
    $("auto-continue").textContent = note;
  };
  tick();
  state.autoContinue = setInterval(tick, 1000);
  $("stay").hidden = false;
  $("stay").onclick = () => stop(t("score.take_your_time"));
  $("feedback").addEventListener("focus", () => state.autoContinue && stop(t("score.take_your_time")), { once: true });
}

async function continueTo(url) {
  clearInterval(state.autoContinue);
  if ($("feedback").value.trim() && !$("send-feedback").disabled) await sendFeedback(); // what they wrote is not lost
  location.assign(url);
}

// The server takes a note's body up to this many bytes (docs/protocol.md, Request bodies). A
// textarea counts characters, and one character can take up to six bytes as JSON: the page
// checks the bytes itself and says how much to cut rather than sending what would be refused.
const NOTE_BODY_LIMIT = 4096;

function noteBody(fields, status) {
  const body = JSON.stringify(fields);
  const excess = new TextEncoder().encode(body).length - NOTE_BODY_LIMIT;
  if (excess <= 0) return body;
  $(status).textContent = t("note.too_long", { characters: Math.ceil(excess / 3) });
  return null;
}

async function sendFeedback() {
  const text = $("feedback").value.trim();
  if (!text) return;
  const body = noteBody({ session_id: state.sessionId, token: state.token, text, page: "score" }, "feedback-status");
  if (body === null) return;
  const response = await fetch("/api/feedback", { method: "POST", headers: { "Content-Type": "application/json" }, body });
  $("feedback-status").textContent = t(response.ok ? "feedback.thanks" : "feedback.failed");
  if (response.ok) $("send-feedback").disabled = true;
}

async function sendReport() {
  const text = $("report-text").value.trim();
  if (!text) return;
  const body = noteBody({ text, page: state.page || "", session_id: state.sessionId || undefined, token: state.token || undefined }, "report-status");
  if (body === null) return;
  const response = await fetch("/api/report", { method: "POST", headers: { "Content-Type": "application/json" }, body });
  $("report-status").textContent = t(response.ok ? "report.thanks" : "report.failed");
  if (response.ok) $("report-text").value = "";
}

function leave() {
  if (game) game.stop();
  game = null;
  show("library");
  if (study.assignment === "auto") return choose(chosen);
  showLibrary();
}

$("start").addEventListener("click", start);
$("back-to-list").addEventListener("click", showLibrary);
$("leave").addEventListener("click", leave);
$("start-again").addEventListener("click", () => { if (game) game.stop(); game = null; start(); });
$("finish").addEventListener("click", finish);
$("send-feedback").addEventListener("click", sendFeedback);
$("report-button").addEventListener("click", () => { $("report-status").textContent = ""; $("report-dialog").showModal(); });
$("send-report").addEventListener("click", sendReport);
$("close-report").addEventListener("click", () => $("report-dialog").close());
$("scale").addEventListener("change", applyScale);
landing();
