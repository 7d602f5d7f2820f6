// The page: browse, create, edit and delete documents through the JSON API,
// and draw the pool's recent history from /status. Plain JavaScript, no build.
"use strict";

const PAGE_SIZE = 50;
const STATUS_EVERY_MS = 2000;
const LIST_EVERY_MS = 3000;
// Drawn in this order: the first is under the others. "waiting" sits at 0
// most of the time, where it would hide "idle" if it were drawn over it.
const GAUGES = ["waiting", "in_use", "idle"];
const SVG = "http://www.w3.org/2000/svg";
// The chart's height and margins, in pixels; "p99" is the right margin when
// the wait_time_p99 axis is drawn there.
const CHART = { height: 180, top: 10, right: 14, p99: 52, bottom: 22, left: 32 };

const $ = (id) => document.getElementById(id);

// The document in the editor: {id, rev} once it has been loaded or saved.
let current = null;
// The "after" of the next page of the list, or null.
let nextAfter = null;
// The prefix the list shows (what was filtered, not what is being typed).
let listPrefix = "";
// A listing under way: the periodic refresh skips a turn rather than race it.
let listing = false;
// The last /status answer drawn, for a redraw when the page is resized.
let lastStatus = null;
// [t, seconds] of each wait_time_p99 seen, when /status reports it.
const p99History = [];

async function call(method, url, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = { error: "not_json", reason: `${response.status} ${response.statusText}` };
  }
  return { status: response.status, ok: response.ok, data };
}

function say(text, isError) {
  const message = $("message");
  message.textContent = text;
  message.className = isError ? "error" : "";
}

function docUrl(id) {
  return "docs/" + encodeURIComponent(id);
}

// -- the list ---------------------------------------------------------------

function listParams(limit, after) {
  const params = new URLSearchParams({ limit: String(limit) });
  if (listPrefix) params.set("prefix", listPrefix);
  if (after) params.set("after", after);
  return params;
}

function listItem(row) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = row.id;
  button.title = `${row.id}\nrevision ${row.rev}`;
  button.dataset.id = row.id;
  button.dataset.rev = row.rev;
  button.addEventListener("click", () => loadDocument(row.id));
  item.append(button);
  return item;
}

async function loadList(more) {
  if (!more) listPrefix = $("prefix").value.trim();
  listing = true;
  try {
    const { ok, data } = await call("GET", "docs?" + listParams(PAGE_SIZE, more ? nextAfter : ""));
    if (!ok) {
      say(`Listing failed: ${data.reason}`, true);
      return;
    }
    const list = $("doc-list");
    if (!more) list.replaceChildren();
    list.append(...data.rows.map(listItem));
    nextAfter = data.next;
    $("more").hidden = nextAfter === null;
    markCurrent();
  } finally {
    listing = false;
  }
}

// Others write too: fetch again as many rows as are shown, and redraw the
// list only if it changed (so its scroll position and hover stay put).
async function refreshList() {
  if (listing || document.hidden) return;
  const list = $("doc-list");
  const shown = list.querySelectorAll("button").length;
  const limit = Math.min(1000, Math.max(PAGE_SIZE, shown));
  listing = true;
  try {
    const { ok, data } = await call("GET", "docs?" + listParams(limit, ""));
    if (!ok) return;
    const was = [...list.querySelectorAll("button")].map((b) => `${b.dataset.id} ${b.dataset.rev}`);
    const now = data.rows.map((row) => `${row.id} ${row.rev}`);
    if (was.join("\n") !== now.join("\n")) {
      const scroll = list.scrollTop;
      list.replaceChildren(...data.rows.map(listItem));
      list.scrollTop = scroll;
      markCurrent();
    }
    nextAfter = data.next;
    $("more").hidden = nextAfter === null;
  } catch (err) {
    // The server is away: try again at the next tick.
  } finally {
    listing = false;
  }
}

function markCurrent() {
  for (const button of $("doc-list").querySelectorAll("button")) {
    button.setAttribute("aria-current", String(current !== null && button.dataset.id === current.id));
  }
}

// -- the editor -------------------------------------------------------------

function edit(id, rev, content) {
  current = rev === null ? null : { id, rev };
  $("doc-id").value = id;
  $("doc-rev").textContent = rev === null ? "(new)" : rev;
  $("doc-body").value = JSON.stringify(content, null, 2);
  markCurrent();
}

async function loadDocument(id) {
  const { ok, data } = await call("GET", docUrl(id));
  if (!ok) {
    say(`Loading ${id} failed: ${data.reason}`, true);
    return;
  }
  const { _id, _rev, ...content } = data;
  edit(_id, _rev, content);
  say(`Loaded ${_id}.`);
}

async function save(event) {
  event.preventDefault();
  const id = $("doc-id").value.trim();
  let content;
  try {
    content = JSON.parse($("doc-body").value);
  } catch (err) {
    say(`The content is not JSON: ${err.message}`, true);
    return;
  }
  if (content === null || typeof content !== "object" || Array.isArray(content)) {
    say("The content must be a JSON object: { ... }", true);
    return;
  }
  delete content._id;
  delete content._rev;
  const body = current !== null && current.id === id ? { ...content, _rev: current.rev } : content;
  const { status, ok, data } = await call("PUT", docUrl(id), body);
  if (!ok) {
    const hint = status === 409 ? " (someone else changed it: load it again)" : "";
    say(`Saving ${id} failed: ${data.reason}${hint}`, true);
    return;
  }
  edit(id, data.rev, content);
  say(`${status === 201 ? "Created" : "Saved"} ${id}, revision ${data.rev}.`);
  await loadList(false);
}

async function remove() {
  if (current === null) {
    say("Load a document first.", true);
    return;
  }
  const { id, rev } = current;
  if (!window.confirm(`Delete ${id} (revision ${rev})? This cannot be undone.`)) {
    say(`Not deleted: ${id}.`);
    return;
  }
  const { ok, data } = await call("DELETE", `${docUrl(id)}?rev=${encodeURIComponent(rev)}`);
  if (!ok) {
    say(`Deleting ${id} failed: ${data.reason}`, true);
    return;
  }
  edit("", null, {});
  say(`Deleted ${id}.`);
  await loadList(false);
}

// -- the pool chart -----------------------------------------------------------

function svg(name, attributes) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  return node;
}

function text(content, attributes) {
  const node = svg("text", attributes);
  node.textContent = content;
  return node;
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
}

// A step for about `count` ticks over `span`, from `steps` (ascending).
function niceStep(span, count, steps) {
  return steps.find((step) => span / step <= count) || steps[steps.length - 1];
}

// The chart, drawn to the pixel size it has on the page. `series` null: the
// empty state (axes and a note), as long as there is no sample to draw.
function drawChart(series, interval) {
  const chart = $("pool-chart");
  const width = Math.max(200, Math.round(chart.getBoundingClientRect().width) || 600);
  const { height, top, bottom, left } = CHART;
  const p99Seen = series !== null && p99History.some(([t, v]) => t >= series.t[0] && v !== null);
  const right = p99Seen ? CHART.p99 : CHART.right;
  const [x0, x1, y0, y1] = [left, width - right, top, height - bottom];
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.replaceChildren();
  chart.append(svg("rect", { class: "plot", x: x0, y: y0, width: x1 - x0, height: y1 - y0 }));

  const samples = series ? series.t.length : 0;
  const peak = samples ? Math.max(1, ...series.max_size, ...series.size, ...series.waiting) : 4;
  // 0 sits a little above the x axis, so that a line at 0 is not hidden in it.
  const y = (v) => (y1 - 3 - (v / peak) * (y1 - 3 - y0)).toFixed(1);
  const yStep = niceStep(peak, 4, [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]);
  for (let v = 0; v <= peak; v += yStep) {
    if (v > 0) chart.append(svg("line", { class: "grid", x1: x0, x2: x1, y1: y(v), y2: y(v) }));
    chart.append(text(String(v), { x: x0 - 6, y: Number(y(v)) + 4, "text-anchor": "end" }));
  }
  chart.append(svg("line", { class: "axis", x1: x0, x2: x0, y1: y0, y2: y1 }));
  chart.append(svg("line", { class: "axis", x1: x0, x2: x1, y1: y1, y2: y1 }));
  if (!samples) {
    chart.append(text("No samples yet: waiting for the server's /status.", {
      class: "empty", x: (x0 + x1) / 2, y: (y0 + y1) / 2, "text-anchor": "middle",
    }));
    return;
  }

  // From the first sample to the last: the window fills as it grows, up to
  // the server's history (5 minutes), instead of a fixed, mostly empty span.
  const start = series.t[0];
  const end = Math.max(series.t[samples - 1], start + interval);
  const x = (t) => (x0 + ((t - start) / (end - start)) * (x1 - x0)).toFixed(1);

  const labels = [[start, "start"], [end, "end"]];
  const tStep = niceStep(end - start, Math.max(1, Math.floor((x1 - x0) / 80)),
    [1, 2, 5, 10, 15, 30, 60, 120, 300, 600]);
  for (let t = Math.ceil(start / tStep) * tStep; t < end; t += tStep) {
    // Clear of the end labels, which are anchored inwards.
    const far = Number(x(t)) - x0 > 100 && x1 - Number(x(t)) > 100;
    if (far && clock(t) !== clock(start) && clock(t) !== clock(end)) labels.push([t, "middle"]);
  }
  for (const [t, anchor] of labels) {
    chart.append(svg("line", { class: "axis", x1: x(t), x2: x(t), y1: y1, y2: y1 + 4 }));
    chart.append(text(clock(t), { class: "time", x: x(t), y: height - 6, "text-anchor": anchor }));
  }

  const maxSize = series.max_size[samples - 1];
  chart.append(svg("line", { class: "max", x1: x0, x2: x1, y1: y(maxSize), y2: y(maxSize) }));
  chart.append(text(`max_size ${maxSize}`, { x: x0 + 4, y: Number(y(maxSize)) - 3 }));
  for (const gauge of GAUGES) {
    const points = series.t.map((t, i) => `${x(t)},${y(series[gauge][i])}`).join(" ");
    chart.append(svg("polyline", { class: gauge, points }));
  }
  drawP99(chart, start, x, [x1, y0, y1]);
}

// wait_time_p99 (seconds, from /status when the server reports it) on its
// own axis, in milliseconds, on the right.
function drawP99(chart, start, x, [x1, y0, y1]) {
  const seen = p99History.filter(([t, v]) => t >= start && v !== null);
  if (seen.length === 0) return;
  const ms = seen.map(([, v]) => v * 1000);
  const peak = niceStep(Math.max(...ms), 1, [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000,
    5000, 10000, 30000, 60000]);
  const y = (v) => (y1 - (v / peak) * (y1 - y0)).toFixed(1);
  chart.append(svg("line", { class: "axis", x1: x1, x2: x1, y1: y0, y2: y1 }));
  for (const v of [0, peak / 2, peak]) {
    chart.append(text(`${v} ms`, { class: "p99", x: x1 + 4, y: Number(y(v)) + 4 }));
  }
  const points = seen.map(([t], i) => `${x(t)},${y(ms[i])}`).join(" ");
  chart.append(svg("polyline", { class: "wait_p99", points }));
  const [last] = seen.slice(-1); // a dot, so that a single value shows too
  chart.append(svg("circle", { class: "wait_p99", cx: x(last[0]), cy: y(ms[ms.length - 1]), r: 2.5 }));
}

function redraw() {
  if (lastStatus === null) {
    drawChart(null, 1);
    return;
  }
  const { history, name } = lastStatus;
  const series = history.pools[name];
  drawChart(series && series.t.length ? series : null, history.interval);
  const span = series && series.t.length ? clock(series.t[0]) : "now";
  $("chart-span").textContent = `Since ${span}, up to the last ${Math.round(history.seconds / 60)} ` +
    `minutes, sampled every ${history.interval} s on the server.`;
}

async function refreshStatus() {
  try {
    const { ok, data } = await call("GET", "status");
    if (!ok) return;
    const names = Object.keys(data.pools);
    const name = names.includes("default") ? "default" : names[0];
    if (name === undefined) return;
    $("pool-name").textContent = `"${name}"`;
    const stats = data.pools[name];
    for (const key of ["in_use", "idle", "waiting", "size", "max_size", "checkouts", "timeouts"]) {
      $(`stat-${key}`).textContent = String(stats[key]);
    }
    if ("wait_time_p99" in stats) {
      const p99 = stats.wait_time_p99;
      const series = data.history.pools[name];
      const t = series && series.t.length ? series.t[series.t.length - 1] : Date.now() / 1000;
      p99History.push([t, typeof p99 === "number" ? p99 : null]);
      while (p99History.length && p99History[0][0] < t - data.history.seconds) p99History.shift();
      $("legend-wait_p99").hidden = false;
      $("stat-wait_time_p99").textContent =
        typeof p99 === "number" ? `${(p99 * 1000).toFixed(1)} ms` : "-";
    }
    lastStatus = { history: data.history, name };
    redraw();
  } catch (err) {
    // The server is away (restarting, say): try again at the next tick.
  }
}

// -- start ------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("filter").addEventListener("submit", (event) => {
    event.preventDefault();
    loadList(false);
  });
  $("more").addEventListener("click", () => loadList(true));
  $("doc-form").addEventListener("submit", save);
  $("delete").addEventListener("click", remove);
  $("new").addEventListener("click", () => {
    edit("", null, {});
    say("");
    $("doc-id").focus();
  });
  redraw(); // the empty state, before any answer
  window.addEventListener("resize", redraw);
  loadList(false);
  refreshStatus();
  setInterval(refreshStatus, STATUS_EVERY_MS);
  setInterval(refreshList, LIST_EVERY_MS);
});
