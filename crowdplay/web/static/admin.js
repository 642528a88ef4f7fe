// The researcher dashboard: polls /api/admin/overview with the admin token and draws it.
// Everything that comes from the server reaches the DOM as text nodes or attribute values,
// never as HTML, so task titles or participant pseudonyms cannot inject markup.

import { screenFor } from "./frames.js";

const TOKEN_KEY = "crowdplay-admin-token";
const POLL_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

// Exposed for tests and for poking at from the console.
const state = (window.crowdplayAdmin = {
  renders: 0,       // overviews drawn so far
  overview: null,   // the last overview drawn
  timer: null,      // the pending poll
  inFlight: false,  // a poll is waiting for the server
  pollAgain: false, // someone asked for a refresh while a poll was in flight
  gamesSignature: null,
});

// ---------------------------------------------------------------- small helpers

/** Text for the DOM: null and undefined show as nothing rather than "null". */
const text = (value) => (value === null || value === undefined ? "" : String(value));

/** An HTML element; string children become text nodes (Element.append never parses HTML). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, text(value));
  node.append(...children.map((child) => (child instanceof Node ? child : text(child))));
  return node;
}

/** The same for SVG, which needs its own namespace. */
function svgEl(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, text(value));
  node.append(...children.map((child) => (child instanceof Node ? child : text(child))));
  return node;
}

const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const formatNumber = (value) => (Number.isFinite(Number(value)) ? numberFormat.format(Number(value)) : "–");

/** Ray node ids and game ids are long; the table shows a prefix and keeps the full id in a tooltip. */
const shortId = (id) => (text(id).length > 12 ? `${text(id).slice(0, 10)}…` : text(id));

/** Age relative to the server's clock, so a skewed browser clock does not distort it. */
function relativeTime(then, now) {
  const seconds = now - then;
  if (!Number.isFinite(seconds)) return "–";
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

const clockTime = (epochSeconds) => new Date(epochSeconds * 1000).toLocaleTimeString();

/** Bytes as KB below a megabyte, else MB (one decimal). */
function formatBytes(bytes) {
  const value = Number(bytes) || 0;
  return value < 1e6 ? `${formatNumber(value / 1e3)} KB` : `${(value / 1e6).toFixed(1)} MB`;
}

/** A duration in seconds, as "12 s", "3 min 5 s" or "2 h 4 min"; "–" when unknown. */
function formatAge(seconds) {
  const value = Number(seconds);
  if (seconds === null || seconds === undefined || !Number.isFinite(value)) return "–";
  if (value < 60) return `${Math.round(value)} s`;
  if (value < 3600) return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
  return `${Math.floor(value / 3600)} h ${Math.floor((value % 3600) / 60)} min`;
}

function setError(message) {
  $("error").textContent = text(message);
}

// ---------------------------------------------------------------- the token

const getToken = () => sessionStorage.getItem(TOKEN_KEY);
const authHeaders = (token) => ({ Authorization: `Bearer ${token}` });

/** A ?token= link works once: the token moves to sessionStorage and leaves the address bar and history. */
function takeTokenFromUrl() {
  const url = new URL(window.location.href);
  if (!url.searchParams.has("token")) return;
  const token = url.searchParams.get("token").trim();
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
}

function showTokenForm(message = "") {
  clearTimeout(state.timer);
  state.timer = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("overview").hidden = true;
  $("forget-token").hidden = true;
  $("token-form").hidden = false;
  setError(message);
  $("token-input").focus();
}

/** The server's explanation: the JSON `reason` (or `error`), else the body text, else the status. */
async function reasonOf(response) {
  const body = await response.text().catch(() => "");
  try {
    const data = JSON.parse(body);
    if (data && (data.reason || data.error)) return text(data.reason || data.error);
  } catch {
    // not JSON: fall through to the raw text
  }
  return body.trim() || `${response.status} ${response.statusText}`;
}

// ---------------------------------------------------------------- polling

/** Fetch and draw the overview now, then again in POLL_MS; one request at a time. */
async function poll() {
  clearTimeout(state.timer);
  state.timer = null;
  const token = getToken();
  if (!token) {
    showTokenForm();
    return;
  }
  if (state.inFlight) {
    state.pollAgain = true;
    return;
  }
  state.inFlight = true;
  try {
    const response = await fetch("/api/admin/overview", { headers: authHeaders(token), cache: "no-store" });
    if (getToken() !== token) return; // the token was replaced or forgotten meanwhile
    if (response.status === 401) {
      showTokenForm(await reasonOf(response));
      return;
    }
    if (!response.ok) throw new Error(`the server answered ${await reasonOf(response)}`);
    render(await response.json());
    setError("");
  } catch (error) {
    setError(`Could not load the overview: ${error.message}`);
  } finally {
    state.inFlight = false;
    if (getToken()) {
      state.timer = setTimeout(poll, state.pollAgain ? 0 : POLL_MS);
    }
    state.pollAgain = false;
  }
}

// ---------------------------------------------------------------- rendering

function render(overview) {
  const generatedAt = Number(overview.generated_at) || Date.now() / 1000;
  const totals = overview.totals || {};

  $("study-title").textContent = text(overview.study);
  document.title = overview.study ? `CrowdPlay · ${overview.study}` : "CrowdPlay · Researcher dashboard";
  const generated = $("generated-at");
  generated.dateTime = new Date(generatedAt * 1000).toISOString();
  generated.textContent = new Date(generatedAt * 1000).toLocaleString();

  $("total-live-sessions").textContent = formatNumber(totals.live_sessions ?? 0);
  $("total-waiting").textContent = formatNumber(totals.waiting ?? 0);
  $("total-completed").textContent = formatNumber(totals.completed ?? 0);
  $("total-participants").textContent = formatNumber(totals.participants ?? 0);
  $("total-abandoned-starts").textContent = formatNumber(totals.abandoned_starts ?? 0);
  $("total-withdrawn-requests").textContent = formatNumber(totals.withdrawn_requests ?? 0);
  $("total-builds-behind-play").textContent = formatNumber(totals.builds_behind_play ?? 0);
  $("total-data").textContent = `${((Number(totals.data_bytes) || 0) / 1e6).toFixed(1)} MB`;

  renderTasks(overview.tasks || []);
  renderNodes(overview.nodes || []);
  renderGames(overview.games || [], generatedAt);
  renderFinishedSessions(overview.finished_sessions || [], generatedAt);
  const histograms = overview.histograms || {};
  renderHistogram($("frame-histogram"), histograms.frame_interval_ms, "frame interval (ms)");
  renderHistogram($("latency-histogram"), histograms.input_latency_ms, "receive to apply (ms)");
  renderHistogram($("key-to-frame-histogram"), histograms.key_to_frame_ms, "key to frame displayed (ms)");
  renderCompletions(overview.completions_timeline || [], generatedAt);
  renderRecording(overview.recording);
  renderPolicies(overview.policies || {});
  renderAiGames(overview.ai_only_envs || []);

  $("token-form").hidden = true;
  $("forget-token").hidden = false;
  $("overview").hidden = false;
  state.overview = overview;
  state.renders += 1;
}

function emptyRow(columns, message) {
  return el("tr", { class: "empty" }, el("td", { colspan: columns }, message));
}

function renderTasks(tasks) {
  const rows = tasks.map((task) => {
    const target = Number(task.target) || 0;
    const completed = Number(task.completed) || 0;
    const progress = el("td", { class: "progress" }, `${formatNumber(completed)} / ${target ? formatNumber(target) : "–"}`);
    if (target) progress.append(el("progress", { max: target, value: Math.min(completed, target) }));
    const open = Boolean(task.open);
    return el(
      "tr",
      { "data-task-id": task.task_id },
      el("td", {}, el("code", {}, task.task_id)),
      el("td", {}, task.title),
      el("td", { class: "number" }, formatNumber(task.live_sessions ?? 0)),
      el("td", { class: "number" }, formatNumber(task.waiting ?? 0)),
      progress,
      el("td", { class: "number" }, formatNumber(task.participants ?? 0)),
      el("td", { class: open ? "state open" : "state closed" }, open ? "open" : "closed"),
    );
  });
  $("tasks-table").tBodies[0].replaceChildren(...(rows.length ? rows : [emptyRow(7, "No tasks.")]));
}

// Rows visible before the list of nodes scrolls (the summary above it covers them all).
const NODES_SHOWN = 12;

/** Nodes busiest first: a labelled bar each, scaled to the busiest, readable at one node or fifty. */
function renderNodes(nodes) {
  const box = $("nodes-chart");
  if (!nodes.length) {
    box.replaceChildren(el("p", { class: "empty" }, "No nodes reported."));
    return;
  }
  const rows = nodes
    .map((node) => ({ nodeId: text(node.node_id), sessions: Number(node.sessions) || 0, games: Number(node.games) || 0 }))
    .sort((a, b) => b.sessions - a.sessions || b.games - a.games || a.nodeId.localeCompare(b.nodeId));
  const most = Math.max(1, ...rows.map((row) => row.sessions));
  const list = el("ol", { class: rows.length > NODES_SHOWN ? "bars scrolls" : "bars", "aria-label": "Sessions per node" }, ...rows.map((row) => nodeBar(row, most)));
  box.replaceChildren(el("p", { class: "summary" }, nodesSummary(rows)), list);
}

/** One node: its short id (the full one in the tooltip), a bar of its sessions, and the numbers. */
function nodeBar(row, most) {
  const bar = el("span", { class: "bar", "data-node-id": row.nodeId, "data-sessions": row.sessions });
  bar.style.width = `${(row.sessions / most) * 100}%`;
  return el(
    "li",
    { "data-node-id": row.nodeId, title: `${row.nodeId}: ${counted(row.sessions, "session")}, ${counted(row.games, "game")}` },
    el("code", { class: "label" }, shortId(row.nodeId)),
    el("span", { class: "track" }, bar),
    el("span", { class: "value" }, `${counted(row.sessions, "session")} · ${counted(row.games, "game")}`),
  );
}

/** "1 session", "12 sessions". */
const counted = (count, noun) => `${formatNumber(count)} ${noun}${count === 1 ? "" : "s"}`;

/** The whole picture in one line, since a long list scrolls: nodes, sessions, busiest, idle. */
function nodesSummary(rows) {
  const sessions = rows.reduce((sum, row) => sum + row.sessions, 0);
  const idle = rows.filter((row) => row.sessions === 0).length;
  const parts = [counted(rows.length, "node"), counted(sessions, "session")];
  if (rows.length > 1) parts.push(`busiest ${formatNumber(rows[0].sessions)}`, `${formatNumber(idle)} without sessions`);
  return parts.join(" · ");
}

function gameRow(game) {
  const seats = el("ul", { class: "seats" });
  for (const [agent, status] of Object.entries(game.seats || {})) {
    seats.append(el("li", { "data-agent": agent, "data-status": status }, `${agent}: ${text(status)}`));
  }
  const sessions = el("ul", { class: "sessions" });
  for (const session of game.sessions || []) {
    sessions.append(
      el(
        "li",
        {},
        el("span", { class: "agent" }, session.agent),
        " ",
        el("span", { class: "participant", title: text(session.session_id) }, session.participant),
        " ",
        el("span", { class: "engagement", "data-session-id": session.session_id }),
        " ",
        el("button", { type: "button", class: "end-session danger", "data-session-id": session.session_id }, "End"),
      ),
    );
  }
  return el(
    "tr",
    { "data-game-id": game.game_id },
    el(
      "td",
      { title: text(game.game_id) },
      el("code", {}, shortId(game.game_id)),
      " ",
      el("button", { type: "button", class: "watch-game", "data-game-id": game.game_id }, "Watch"),
    ),
    el("td", { title: text(game.env_id) }, game.task_id),
    el("td", { title: text(game.node_id) }, el("code", {}, shortId(game.node_id))),
    el("td", { class: "phase", "data-phase": game.phase }, game.phase),
    el("td", {}, seats),
    el("td", { class: "started", "data-started-at": game.started_at }),
    el("td", {}, sessions),
  );
}

/** Rows are rebuilt only when the games change, so an End button is not swapped out under the pointer every poll;
 * engagement changes every poll, so it is left out of that comparison and written into the rows in place. */
function renderGames(games, now) {
  const body = $("games-table").tBodies[0];
  const signature = JSON.stringify(games, (key, value) => (key === "engagement" ? undefined : value));
  if (signature !== state.gamesSignature) {
    body.replaceChildren(...(games.length ? games.map(gameRow) : [emptyRow(7, "No live games.")]));
    state.gamesSignature = signature;
  }
  for (const cell of body.querySelectorAll("td.started")) {
    const startedAt = Number(cell.dataset.startedAt);
    cell.textContent = relativeTime(startedAt, now);
    cell.title = Number.isFinite(startedAt) ? new Date(startedAt * 1000).toLocaleString() : "";
  }
  const engagementOf = new Map(games.flatMap((game) => (game.sessions || []).map((session) => [text(session.session_id), session.engagement])));
  for (const span of body.querySelectorAll("span.engagement")) showEngagement(span, engagementOf.get(span.dataset.sessionId));
}

// ---------------------------------------------------------------- engagement

/** "hidden 12 s · idle 30 s · 2 pauses"; "–" when the game process has not said yet. */
function engagementText(engagement) {
  if (!engagement) return "–";
  const pauses = Number(engagement.pauses) || 0;
  return `hidden ${formatAge(engagement.time_hidden ?? 0)} · idle ${formatAge(engagement.idle_time ?? 0)} · ${counted(pauses, "pause")}`;
}

/** The rest of it, for the tooltip: the row stays one short line. */
function engagementDetail(engagement) {
  if (!engagement) return "engagement not known yet";
  return [
    `unfocused ${formatAge(engagement.time_unfocused ?? 0)}`,
    `paused ${formatAge(engagement.time_paused ?? 0)}`,
    `slow connection ${formatAge(engagement.time_slow_connection ?? 0)}`,
  ].join(" · ");
}

function showEngagement(span, engagement) {
  span.textContent = engagementText(engagement);
  span.title = engagementDetail(engagement);
}

function finishedSessionRow(session, now) {
  const engagement = el("td", { class: "engagement" });
  showEngagement(engagement, session.engagement);
  const finishedAt = Number(session.finished_at);
  return el(
    "tr",
    { "data-session-id": session.session_id },
    el("td", { class: "participant", title: text(session.session_id) }, session.participant),
    el("td", {}, el("code", {}, session.task_id)),
    el("td", { title: Number.isFinite(finishedAt) ? new Date(finishedAt * 1000).toLocaleString() : "" }, relativeTime(finishedAt, now)),
    el("td", { class: "number" }, formatAge(session.time_played)),
    el("td", { class: session.completed ? "state open" : "state closed" }, session.completed ? "yes" : "no"),
    engagement,
  );
}

/** The latest finished sessions the manager holds, newest first, with their final engagement. */
function renderFinishedSessions(sessions, now) {
  $("finished-section").hidden = sessions.length === 0;
  $("finished-table").tBodies[0].replaceChildren(...sessions.map((session) => finishedSessionRow(session, now)));
}

/** Where a value falls on the bar axis: bars have equal width, so interpolate inside its bucket. */
function histogramX(value, edges, left, barWidth) {
  const last = edges.length - 1;
  if (value <= edges[0]) return left;
  if (value >= edges[last]) return left + last * barWidth;
  for (let i = 0; i < last; i += 1) {
    if (value < edges[i + 1]) return left + (i + (value - edges[i]) / (edges[i + 1] - edges[i])) * barWidth;
  }
  return left + last * barWidth;
}

/** A bar per bucket, all equally wide: the buckets span very different ranges (a few ms around 16.7 ms, 50 ms at the tail). */
// A chart's size and the plot area inside its margins (axis labels go in the margins).
function plotArea(width, height, margins) {
  return { width, height, ...margins, plotWidth: width - margins.left - margins.right, plotHeight: height - margins.top - margins.bottom };
}

function renderHistogram(box, histogram, xLabel) {
  const edges = (histogram && histogram.edges) || [];
  const counts = (histogram && histogram.counts) || [];
  if (!counts.length || edges.length !== counts.length + 1) {
    box.replaceChildren(el("p", { class: "empty" }, "No data yet."));
    return;
  }
  const { width, height, left, top, plotWidth, plotHeight } = plotArea(440, 230, { left: 52, right: 14, top: 20, bottom: 42 });
  const barWidth = plotWidth / counts.length;
  const most = Math.max(1, ...counts);
  const baseline = top + plotHeight;
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `Histogram of ${xLabel}` });

  counts.forEach((count, index) => {
    // A non-empty bucket stays visible next to a tall one.
    const barHeight = count > 0 ? Math.max(1.5, (count / most) * plotHeight) : 0;
    svg.append(
      svgEl(
        "rect",
        { class: "bar", x: left + index * barWidth + 1, y: baseline - barHeight, width: Math.max(barWidth - 2, 1), height: barHeight, "data-count": count },
        svgEl("title", {}, `${edges[index]}–${edges[index + 1]} ms: ${formatNumber(count)}`),
      ),
    );
  });
  edges.forEach((edge, index) => {
    svg.append(svgEl("text", { class: "tick", x: left + index * barWidth, y: baseline + 13, "text-anchor": "middle" }, formatNumber(edge)));
  });
  svg.append(
    svgEl("line", { class: "axis", x1: left, y1: baseline, x2: left + plotWidth, y2: baseline }),
    svgEl("line", { class: "axis", x1: left, y1: top, x2: left, y2: baseline }),
    svgEl("text", { class: "tick", x: left - 4, y: top + 4, "text-anchor": "end" }, formatNumber(most)),
    svgEl("text", { class: "tick", x: left - 4, y: baseline, "text-anchor": "end" }, "0"),
    svgEl("text", { class: "axis-label", x: left + plotWidth / 2, y: height - 6, "text-anchor": "middle" }, xLabel),
    svgEl("text", { class: "axis-label", transform: `translate(14 ${top + plotHeight / 2}) rotate(-90)`, "text-anchor": "middle" }, "count"),
  );

  // p50 labelled to the left of its line and p99 to the right, so close percentiles do not overlap.
  const summary = [];
  for (const [name, anchor] of [["p50", "end"], ["p99", "start"]]) {
    const value = Number(histogram[name]);
    if (histogram[name] === null || histogram[name] === undefined || !Number.isFinite(value)) continue;
    const x = histogramX(value, edges, left, barWidth);
    const nudge = anchor === "end" ? -3 : 3;
    svg.append(
      svgEl("line", { class: `marker ${name}`, x1: x, y1: top - 4, x2: x, y2: baseline }),
      svgEl("text", { class: `marker-label ${name}`, x: x + nudge, y: top - 8, "text-anchor": anchor }, `${name} ${formatNumber(value)}`),
    );
    summary.push(`${name} ${formatNumber(value)} ms`);
  }
  summary.push(`n = ${formatNumber(counts.reduce((sum, count) => sum + count, 0))}`);
  box.replaceChildren(svg, el("p", { class: "summary" }, summary.join(" · ")));
}

/** Cumulative completions as a step line, extended to the overview's time because the count holds until then. */
function renderCompletions(timeline, now) {
  const section = $("completions-section");
  const points = timeline
    .map(([time, count]) => [Number(time), Number(count)])
    .filter(([time, count]) => Number.isFinite(time) && Number.isFinite(count))
    .sort((a, b) => a[0] - b[0]);
  if (!points.length) {
    section.hidden = true;
    $("completions-chart").replaceChildren();
    return;
  }
  section.hidden = false;
  const { width, height, left, top, plotWidth, plotHeight } = plotArea(640, 220, { left: 52, right: 16, top: 12, bottom: 40 });
  const start = points[0][0];
  const end = Math.max(points[points.length - 1][0], now);
  const span = Math.max(end - start, 1);
  const most = Math.max(1, ...points.map(([, count]) => count));
  const x = (time) => left + ((time - start) / span) * plotWidth;
  const y = (count) => top + plotHeight - (count / most) * plotHeight;

  let path = `M ${x(points[0][0])} ${y(0)} V ${y(points[0][1])}`;
  for (const [time, count] of points.slice(1)) path += ` H ${x(time)} V ${y(count)}`;
  path += ` H ${x(end)}`;

  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Completed assignments over time" });
  svg.append(
    svgEl("line", { class: "axis", x1: left, y1: top + plotHeight, x2: left + plotWidth, y2: top + plotHeight }),
    svgEl("line", { class: "axis", x1: left, y1: top, x2: left, y2: top + plotHeight }),
    svgEl("path", { class: "line", d: path }),
    svgEl("text", { class: "tick", x: left - 4, y: top + 4, "text-anchor": "end" }, formatNumber(most)),
    svgEl("text", { class: "tick", x: left - 4, y: top + plotHeight, "text-anchor": "end" }, "0"),
    svgEl("text", { class: "tick", x: left, y: top + plotHeight + 14, "text-anchor": "start" }, clockTime(start)),
    svgEl("text", { class: "tick", x: left + plotWidth, y: top + plotHeight + 14, "text-anchor": "end" }, clockTime(end)),
    svgEl("text", { class: "axis-label", x: left + plotWidth / 2, y: height - 6, "text-anchor": "middle" }, "time"),
    svgEl("text", { class: "axis-label", transform: `translate(14 ${top + plotHeight / 2}) rotate(-90)`, "text-anchor": "middle" }, "completed"),
  );
  $("completions-chart").replaceChildren(svg);
}

// ---------------------------------------------------------------- recording health

/** A status cell: its level (ok, warning, failing) colours the state; the detail goes below it. */
function setStatus(cell, level, state, detail) {
  cell.dataset.state = level;
  cell.replaceChildren(el("span", { class: "state" }, state), el("span", { class: "detail" }, detail));
}

const WRITER_LEVELS = { ok: "ok", late: "failing", unavailable: "failing", unknown: "warning" };
const STORE_LEVELS = { healthy: "ok", draining: "warning", failing: "failing", unknown: "warning" };

function writerStatus(writer) {
  const level = WRITER_LEVELS[writer.state] || "warning";
  if (writer.state === "ok") return [level, "answering", writer.pid ? `process ${writer.pid}` : ""];
  if (writer.state === "late") return [level, "late", `no answer; its figures below are ${formatAge(writer.age_s)} old`];
  if (writer.state === "unavailable") return [level, "unavailable", text(writer.error)];
  return [level, "unknown", "has not answered yet"];
}

function storeStatus(store) {
  const state = text(store.state || "unknown");
  const asOf = store.stale ? ` (as of ${formatAge(store.as_of_age_s)} ago)` : "";
  const error = store.last_error;
  const detail = error ? `last error ${text(error.kind)} ${formatAge(error.age_s)} ago` : "no errors";
  return [STORE_LEVELS[state] || "warning", state + asOf, detail];
}

/** The dashboard's one-word summary: the first thing wrong, writer first. */
function recordingSummary(recording) {
  const writer = recording.writer || {};
  const store = recording.store || {};
  if (writer.state !== "ok") return [WRITER_LEVELS[writer.state] || "warning", `writer ${text(writer.state || "unknown")}`];
  if (store.state !== "healthy") return [STORE_LEVELS[store.state] || "warning", `store ${text(store.state || "unknown")}`];
  if (Number((recording.spool || {}).batches) > 0) return ["warning", "spooling"];
  return ["ok", "ok"];
}

function unackedRow(process) {
  return el(
    "tr",
    { "data-actor-id": process.actor_id },
    el("td", { title: text(process.actor_id) }, el("code", {}, shortId(process.actor_id))),
    el("td", { title: text(process.node_id) }, el("code", {}, shortId(process.node_id))),
    el("td", { class: "number" }, formatNumber(process.chunks ?? 0)),
    el("td", { class: "number" }, formatBytes(process.memory_bytes)),
    el("td", { class: "number" }, formatBytes(process.disk_bytes)),
    el("td", { class: "number" }, formatAge(process.oldest_age_s)),
    el("td", { class: "number" }, formatNumber(process.calls_out ?? 0)),
  );
}

function renderRecording(recording) {
  const section = $("recording-section");
  const total = $("total-recording");
  if (!recording || !recording.writer || recording.writer.state === "off") {
    section.hidden = true;
    total.dataset.state = "unknown";
    total.textContent = recording && recording.writer ? "off" : "–";
    return;
  }
  section.hidden = false;
  const [level, summary] = recordingSummary(recording);
  total.dataset.state = level;
  total.textContent = summary;

  setStatus($("recording-writer"), ...writerStatus(recording.writer));
  setStatus($("recording-store"), ...storeStatus(recording.store || {}));
  const spool = recording.spool || {};
  const batches = Number(spool.batches) || 0;
  setStatus(
    $("recording-spool"),
    batches ? "warning" : "ok",
    batches ? `${formatNumber(batches)} batches, ${formatBytes(spool.bytes)}` : "empty",
    batches ? `oldest ${formatAge(spool.oldest_age_s)} old` : "",
  );
  const unacked = recording.unacked || {};
  const chunks = Number(unacked.chunks) || 0;
  setStatus(
    $("recording-unacked"),
    Number(unacked.disk_bytes) > 0 || Number(unacked.oldest_age_s) > 30 ? "warning" : "ok",
    `${formatNumber(chunks)} chunks`,
    chunks ? `${formatBytes(unacked.memory_bytes)} in memory, ${formatBytes(unacked.disk_bytes)} on disk, oldest ${formatAge(unacked.oldest_age_s)} old` : "all acknowledged",
  );
  const saves = recording.pending_saves || {};
  const count = Number(saves.saves) || 0;
  setStatus($("recording-saves"), count ? "warning" : "ok", `${formatNumber(count)} saves`, count ? `oldest ${formatAge(saves.oldest_age_s)} old` : "all stored");

  const processes = unacked.processes || [];
  $("unacked-table").tBodies[0].replaceChildren(...(processes.length ? processes.map(unackedRow) : [emptyRow(7, "No game servers.")]));
}

// ---------------------------------------------------------------- AI policies

const POLICY_LEVELS = { answering: "ok", starting: "warning", failing: "failing", unavailable: "failing", unschedulable: "failing" };

function policyRow([policyId, policy]) {
  const state = el("td", { "data-testid": "policy-state" });
  setStatus(state, POLICY_LEVELS[policy.state] || "warning", text(policy.state), text(policy.reason || ""));
  const rate = Number(policy.substitute_rate) || 0;
  return el(
    "tr",
    { "data-policy-id": policyId },
    el("td", {}, el("code", {}, text(policyId))),
    state,
    el("td", { class: "number" }, formatNumber(policy.answers_per_s ?? 0)),
    el("td", { class: "number" }, policy.latency_p50_ms == null ? "–" : `${policy.latency_p50_ms} ms`),
    el("td", { class: "number" }, `${formatNumber(policy.substitutes ?? 0)} (${(rate * 100).toFixed(1)}% lately)`),
    el("td", { class: "number" }, formatNumber(policy.answers ?? 0)),
  );
}

function renderPolicies(policies) {
  const entries = Object.entries(policies);
  $("policies-section").hidden = entries.length === 0;
  $("policies-table").tBodies[0].replaceChildren(...entries.map(policyRow));
}

function renderAiGames(envIds) {
  $("ai-games-section").hidden = envIds.length === 0;
  const select = $("ai-game-env");
  if (JSON.stringify(envIds) === select.dataset.signature) return; // keep the researcher's choice
  select.dataset.signature = JSON.stringify(envIds);
  select.replaceChildren(...envIds.map((envId) => el("option", { value: envId }, envId)));
}

// ---------------------------------------------------------------- watching a game (read-only)

const watching = (state.watching = { socket: null, gameId: null, frames: 0, decoder: null, context: null, image: null, chain: Promise.resolve() });

function stopWatching() {
  if (watching.socket) watching.socket.close();
  watching.socket = null;
  watching.gameId = null;
  $("watch-section").hidden = true;
}

/** Frames of a running game, over the admin token's websocket; nothing is ever sent to the game. */
function watchGame(gameId) {
  const token = getToken();
  if (!token) return showTokenForm();
  stopWatching();
  watching.gameId = gameId;
  watching.frames = 0;
  $("watch-game").textContent = shortId(gameId);
  $("watch-status").textContent = "Connecting...";
  $("watch-section").hidden = false;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/admin/games/${encodeURIComponent(gameId)}/watch?token=${encodeURIComponent(token)}`);
  socket.binaryType = "arraybuffer";
  watching.socket = socket;
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") {
      watching.chain = watching.chain.then(async () => {
        if (!watching.decoder) return;
        await watching.decoder.decode(event.data);
        watching.decoder.paint(watching.image);
        watching.context.putImageData(watching.image, 0, 0);
        watching.frames += 1;
      }).catch((error) => { $("watch-status").textContent = `Display error: ${error.message}`; });
      return;
    }
    const message = JSON.parse(event.data);
    if (message.type === "hello") {
      Object.assign(watching, screenFor(message, $("watch-screen")));
      $("watch-status").textContent = `Watching ${message.env.title} (read-only).`;
    } else if (message.type === "end" || message.type === "error") {
      $("watch-status").textContent = `The game ended: ${message.reason}`;
    }
  };
  socket.onclose = () => {
    if (watching.socket === socket) watching.socket = null;
  };
}

async function startAiGame(envId) {
  const token = getToken();
  if (!token) return showTokenForm();
  try {
    const response = await fetch("/api/admin/games", {
      method: "POST",
      headers: { ...authHeaders(token), "Content-Type": "application/json" },
      body: JSON.stringify({ env_id: envId }),
    });
    if (!response.ok) throw new Error(await reasonOf(response));
    watchGame((await response.json()).game_id);
  } catch (error) {
    setError(`Could not start a game of ${envId}: ${error.message}`);
  }
  poll();
}

// ---------------------------------------------------------------- actions

async function endSession(button) {
  const sessionId = button.dataset.sessionId;
  if (!window.confirm(`End session ${sessionId}? The participant's game stops now.`)) return;
  const token = getToken();
  if (!token) {
    showTokenForm();
    return;
  }
  button.disabled = true;
  try {
    const response = await fetch(`/api/admin/sessions/${encodeURIComponent(sessionId)}/end`, {
      method: "POST",
      headers: authHeaders(token),
    });
    if (response.status === 401) {
      showTokenForm(await reasonOf(response));
      return;
    }
    if (!response.ok) throw new Error(await reasonOf(response));
  } catch (error) {
    setError(`Could not end session ${sessionId}: ${error.message}`);
    button.disabled = false;
  }
  poll();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("token-input");
  const token = input.value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  input.value = "";
  setError("");
  poll();
});

$("forget-token").addEventListener("click", () => showTokenForm());

// One listener for the whole table: rows come and go with every change.
$("games-table").addEventListener("click", (event) => {
  const button = event.target.closest("button.end-session");
  if (button && !button.disabled) endSession(button);
  const watch = event.target.closest("button.watch-game");
  if (watch) watchGame(watch.dataset.gameId);
});

$("watch-stop").addEventListener("click", stopWatching);

$("ai-game-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const envId = $("ai-game-env").value;
  if (envId) startAiGame(envId);
});

takeTokenFromUrl();
poll();
