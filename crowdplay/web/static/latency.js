// Key-to-frame-displayed latency, as the participant sees it: from sending an input to painting
// the first frame whose header says the game applied it (docs/protocol.md, "Timing of inputs").
// Only the page knows when a frame reached the screen, so it measures this and reports it to the
// server for the researcher's dashboard (the `latency` message).

const SEQ_MODULO = 65536;
// The server checks these bounds too (crowdplay/protocol.py): a report of at most 64 samples.
const MAX_BATCH = 64;
// Inputs still waiting for their frame; more than this and the oldest is forgotten.
const MAX_PENDING = 64;
// An input not shown within this long is not measured: the game was paused or waiting for a
// key (turn-based modes, idle "wait"), so the delay would say nothing about latency.
const MAX_WAIT_MS = 5000;
// Reports go out at most this often.
export const REPORT_EVERY_MS = 5000;

/** Measures key-to-frame delays and hands them to `report` in batches, at most every REPORT_EVERY_MS. */
export class KeyToFrame {
  /** `report(message)` sends a `latency` message; it is given nothing while there is nothing to say. */
  constructor(report, { everyMs = REPORT_EVERY_MS } = {}) {
    this.report = report;
    this.everyMs = everyMs;
    this.pending = new Map(); // seq -> { at: performance.now() when sent, shown: the input_seq on screen then }
    this.shown = null; // the input_seq of the frame on screen
    this.batch = [];
    this.lastReport = -Infinity; // the first measurement goes out at once
    this.reports = 0; // reports handed out so far (for tests and the console)
    this.measured = 0; // delays measured so far
  }

  /** Input `seq` was just sent. */
  sent(seq, now = performance.now()) {
    this.pending.delete(seq); // a reused seq (after 65536 inputs) is a new input
    this.pending.set(seq, { at: now, shown: this.shown });
    if (this.pending.size > MAX_PENDING) this.pending.delete(this.pending.keys().next().value);
  }

  /**
   * A frame whose header carries `inputSeq` was just painted: every input up to it is measured.
   * An input counts only once the screen shows a newer input_seq than when it was sent, so a
   * page that resumed a seat (its seq starting again at 1 below the game's) measures nothing early.
   */
  displayed(inputSeq, now = performance.now()) {
    this.shown = inputSeq;
    for (const [seq, { at, shown }] of this.pending) {
      const waited = now - at;
      if (waited > MAX_WAIT_MS) {
        this.pending.delete(seq);
      } else if (inputSeq !== shown && (inputSeq - seq + SEQ_MODULO) % SEQ_MODULO < SEQ_MODULO / 2) {
        this.pending.delete(seq);
        this.add(waited);
      }
    }
    this.flush(now);
  }

  /** One measured delay, rounded to 0.1 ms to keep reports short; dropped when the batch is full. */
  add(delayMs) {
    this.measured++;
    if (this.batch.length < MAX_BATCH) this.batch.push(Math.round(delayMs * 10) / 10);
  }

  /** Hand the batch to `report` if there is one and the last report is old enough. */
  flush(now = performance.now()) {
    if (!this.batch.length || now - this.lastReport < this.everyMs) return;
    const samples = this.batch;
    this.batch = [];
    this.lastReport = now;
    this.reports++;
    this.report({ type: "latency", key_to_frame_ms: samples });
  }
}
