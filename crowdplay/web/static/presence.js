// Whether the participant is with their game, as the page alone can tell: the tab hidden or shown,
// the window losing or regaining focus, and a connection too slow to play well. Each change is
// sent to the server as a `page` message (docs/protocol.md), which records it with the frame and,
// when the task says so, pauses the game.

// The server refuses a reported round trip longer than this (crowdplay/round_trips.py).
const MAX_RTT_MS = 60000;

// The connection is judged once a second: slow when fewer than this share of the game's frames
// arrived, or the latest round trip took longer than SLOW_RTT_MS ...
const SLOW_FRAME_SHARE = 0.75;
const SLOW_RTT_MS = 250;
// ... for this many seconds in a row; it is fine again after OK_SECONDS good ones.
const SLOW_SECONDS = 3;
const OK_SECONDS = 5;
const PING_EVERY_MS = 2000;

export class PagePresence {
  // `send(event)` gets "hidden", "visible", "blur" or "focus" on every change.
  constructor(send) {
    this.send = send;
    this.onVisibility = () => send(document.hidden ? "hidden" : "visible");
    this.onBlur = () => send("blur");
    this.onFocus = () => send("focus");
    document.addEventListener("visibilitychange", this.onVisibility);
    window.addEventListener("blur", this.onBlur);
    window.addEventListener("focus", this.onFocus);
  }

  // The page's state as it is now (on every connection: the server may have missed a change).
  sendState() {
    this.send(document.hidden ? "hidden" : "visible");
    this.send(document.hasFocus() ? "focus" : "blur");
  }

  stop() {
    document.removeEventListener("visibilitychange", this.onVisibility);
    window.removeEventListener("blur", this.onBlur);
    window.removeEventListener("focus", this.onFocus);
  }
}

export class ConnectionWatch {
  // `ping(t, roundTrip)` sends a ping carrying t and the previous round trip not reported yet
  // ({rtt_ms, frame}, or null); `changed(slow)` hears when the connection turns slow or fine;
  // `measured(rttMs)` hears every round trip, to show it.
  constructor(ping, changed, measured = () => {}) {
    this.ping = ping;
    this.changed = changed;
    this.measured = measured;
    this.unreported = null;
    this.shownFrame = 0; // the frame on screen, reported with the round trip measured while it was
    this.expected = 0; // frames a second the game sends while it plays in real time (0: not judged)
    this.frames = 0;
    this.rttMs = null;
    this.badSeconds = 0;
    this.goodSeconds = 0;
    this.slow = false;
    this.timer = setInterval(() => this.judge(), 1000);
    this.pinger = setInterval(() => this.pingNow(), PING_EVERY_MS);
  }

  // A ping now (on every connection, so the round trip shows without waiting), carrying the
  // latest round trip for the server to record with the game.
  pingNow() {
    const roundTrip = this.unreported;
    this.unreported = null;
    this.ping(performance.now(), roundTrip);
  }

  // Frames are judged only while the game steps in real time and is not paused.
  expect(framesPerSecond) {
    this.expected = framesPerSecond;
    this.frames = 0;
  }

  frame() {
    this.frames++;
  }

  pong(sentAt) {
    this.rttMs = performance.now() - sentAt;
    if (this.rttMs <= MAX_RTT_MS) this.unreported = { rtt_ms: Math.round(this.rttMs * 10) / 10, frame: this.shownFrame };
    this.measured(this.rttMs);
  }

  judge() {
    const fewFrames = this.expected > 0 && this.frames < SLOW_FRAME_SHARE * this.expected;
    const bad = fewFrames || (this.rttMs != null && this.rttMs > SLOW_RTT_MS);
    this.frames = 0;
    this.badSeconds = bad ? this.badSeconds + 1 : 0;
    this.goodSeconds = bad ? 0 : this.goodSeconds + 1;
    if (!this.slow && this.badSeconds >= SLOW_SECONDS) this.turn(true);
    else if (this.slow && this.goodSeconds >= OK_SECONDS) this.turn(false);
  }

  turn(slow) {
    this.slow = slow;
    this.changed(slow);
  }

  stop() {
    clearInterval(this.timer);
    clearInterval(this.pinger);
  }
}
