// The page: browse, create, edit and delete documents through the JSON API,
// and draw the pool's recent history from /status. Plain JavaScript, no build.
"use strict";

const PAGE_SIZE = 50;
const STATUS_EVERY_MS = 2000;
const GAUGES = ["in_use", "idle", "waiting"];
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

// The document in the editor: {id, rev} once it has been loaded or saved.
let current = null;
// The "after" of the next page of the list, or null.
let nextAfter = null;

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

async function loadList(more) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const prefix = $("prefix").value.trim();
  if (prefix) params.set("prefix", prefix);
  if (more && nextAfter) params.set("after", nextAfter);
  const { ok, data } = await call("GET", "docs?" + params);
  if (!ok) {
    say(`Listing failed: ${data.reason}`, true);
    return;
  }
  const list = $("doc-list");
  if (!more) list.replaceChildren();
  for (const row of data.rows) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = row.id;
    button.title = row.rev;
    button.dataset.id = row.id;
    button.addEventListener("click", () => loadDocument(row.id));
    item.append(button);
    list.append(item);
  }
  nextAfter = data.next;
  $("more").hidden = nextAfter === null;
  markCurrent();
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

function draw(history, name) {
  const chart = $("pool-chart");
  const series = history.pools[name];
  const [width, height, pad] = [600, 160, 14];
  chart.replaceChildren();
  if (!series || series.t.length === 0) return;
  const end = series.t[series.t.length - 1];
  const start = end - history.seconds;
  const top = Math.max(1, ...series.max_size, ...series.size, ...series.waiting);
  const x = (t) => (((t - start) / history.seconds) * width).toFixed(1);
  const y = (v) => (height - pad - (v / top) * (height - 2 * pad)).toFixed(1);
  const maxSize = series.max_size[series.max_size.length - 1];
  chart.append(svg("line", { class: "max", x1: 0, x2: width, y1: y(maxSize), y2: y(maxSize) }));
  const label = svg("text", { x: 4, y: Number(y(maxSize)) - 3 });
  label.textContent = `max_size ${maxSize}`;
  chart.append(label);
  for (const gauge of GAUGES) {
    const points = series.t.map((t, i) => `${x(t)},${y(series[gauge][i])}`).join(" ");
    chart.append(svg("polyline", { class: gauge, points }));
  }
  const minutes = Math.round(history.seconds / 60);
  $("chart-span").textContent =
    `The last ${minutes} minutes, sampled every ${history.interval} s on the server.`;
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
    draw(data.history, name);
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
  loadList(false);
  refreshStatus();
  setInterval(refreshStatus, STATUS_EVERY_MS);
});
