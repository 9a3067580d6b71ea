// taskloom dashboard: polls the JSON API and renders with textContent only (no HTML from data).
"use strict";

const STATES = ["queued", "running", "success", "failure", "aborted", "rate_limited",
  "interrupted", "init"];
const ACTIVE = new Set(["init", "queued", "running"]);
const POLL_MS = 2000;
const PAGE = 50;
const TOKEN_KEY = "taskloom-token";

const view = { limit: PAGE, selected: null, timer: null, busy: false, again: false };

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "data") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    $("login").hidden = false;
    throw new Unauthorized("token required");
  }
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error((body && body.detail) || `${response.status} ${response.statusText}`);
  return body;
}

// -- formatting ----------------------------------------------------------------------------------
const shortId = (id) => id.slice(-8);
const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");
const dateTime = (iso) => (iso ? new Date(iso).toLocaleString() : "");

function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(1)} s`;
  return `${Math.round(value / 60)} min`;
}

function badge(state) {
  return el("span", { class: `state state-${state}`, text: state.replace("_", " ") });
}

function bar(progress) {
  const fill = el("div");
  fill.style.width = `${Math.round((progress ?? 0) * 100)}%`;
  return el("div", { class: "bar", title: progress === null ? "" : `${Math.round(progress * 100)}%` }, fill);
}

// -- actions -------------------------------------------------------------------------------------
async function act(runId, action) {
  try {
    const run = await api(`api/runs/${encodeURIComponent(runId)}/${action}`, { method: "POST" });
    view.selected = run.id;
    await refresh();
  } catch (err) {
    showStatus(`${action} failed: ${err.message}`, true);
  }
}

function actionButton(run) {
  if (ACTIVE.has(run.state)) {
    return el("button", { type: "button", class: "btn-cancel", text: "cancel",
      onclick: (e) => { e.stopPropagation(); act(run.id, "cancel"); } });
  }
  return el("button", { type: "button", class: "btn-retry", text: "retry",
    onclick: (e) => { e.stopPropagation(); act(run.id, "retry"); } });
}

// -- rendering -----------------------------------------------------------------------------------
function renderStats(stats) {
  const shown = STATES.filter((s) => s !== "init" || stats.totals.init);
  const head = $("stats").tHead.rows[0];
  head.replaceChildren(el("th", { text: "task" }), ...shown.map((s) => el("th", { class: "count" }, badge(s))));
  const rows = Object.entries(stats.tasks).map(([task, counts]) =>
    el("tr", { data: { task } }, el("td", { text: task }),
      ...shown.map((s) => el("td", { class: `count${counts[s] ? "" : " zero"}`, data: { state: s },
        text: String(counts[s] || 0) }))));
  $("stats").tBodies[0].replaceChildren(...rows);
  $("stats-window").textContent = `newest ${stats.counted} runs`;
  syncOptions($("filter-task"), Object.keys(stats.tasks));
}

function syncOptions(select, values) {
  const have = new Set([...select.options].map((o) => o.value));
  for (const value of values) {
    if (!have.has(value)) select.append(el("option", { value, text: value }));
  }
}

function renderRuns(page) {
  const rows = page.runs.map((run) =>
    el("tr", { class: run.id === view.selected ? "selected" : "",
      data: { runId: run.id, state: run.state, task: run.task, fromRun: run.from_run_id || "" },
      onclick: () => { view.selected = run.id; refresh(); } },
    el("td", { class: "mono", title: run.id }, shortId(run.id),
      run.from_run_id ? el("span", { class: "retry-of", title: `retry of ${run.from_run_id}`, text: " ↻" }) : null),
    el("td", { text: run.task }),
    el("td", {}, badge(run.state)),
    el("td", { text: run.priority }),
    el("td", { title: dateTime(run.queued), text: time(run.queued) }),
    el("td", { text: seconds(run.duration) }),
    el("td", {}, bar(run.progress)),
    el("td", {}, actionButton(run))));
  $("runs").tBodies[0].replaceChildren(...rows);
  $("runs-empty").hidden = rows.length > 0;
  $("more").hidden = page.next_cursor === null;
}

function field(list, name, value) {
  if (value === null || value === undefined || value === "") return;
  list.append(el("dt", { text: name }), el("dd", { text: typeof value === "string" ? value : JSON.stringify(value) }));
}

function renderDetail(run) {
  $("detail").hidden = false;
  $("detail-id").textContent = run.id;
  $("detail").dataset.runId = run.id;
  $("detail").dataset.state = run.state;
  $("detail-cancel").hidden = !ACTIVE.has(run.state);
  $("detail-retry").hidden = ACTIVE.has(run.state);
  const progress = run.progress ?? (run.state === "success" ? 1 : null);
  $("detail-progress").parentElement.hidden = progress === null;
  $("detail-progress").style.width = `${Math.round((progress ?? 0) * 100)}%`;
  $("detail-progress-note").textContent = run.progress_note || "";
  const fields = $("detail-fields");
  fields.replaceChildren();
  fields.append(el("dt", { text: "state" }), el("dd", {}, badge(run.state)));
  field(fields, "task", run.task);
  field(fields, "priority", run.priority);
  field(fields, "queue", run.queue);
  field(fields, "queued", dateTime(run.queued));
  field(fields, "started", dateTime(run.start));
  field(fields, "ended", dateTime(run.end));
  field(fields, "due", dateTime(run.execute_after));
  field(fields, "duration", seconds(run.duration));
  field(fields, "worker", run.worker);
  field(fields, "retries", run.retry_attempt || null);
  field(fields, "retry of", run.from_run_id);
  field(fields, "parent", run.parent_id);
  field(fields, "params", run.params);
  field(fields, "result", run.result);
  const error = run.error;
  $("detail-error").hidden = !error;
  $("detail-error-message").textContent = error ? `${error.type}: ${error.message}` : "";
  $("detail-traceback").textContent = error ? error.traceback : "";
  $("detail-attempts").replaceChildren(...run.attempts.map((a) =>
    el("li", {}, badge(a.state), ` ${time(a.start)} → ${time(a.end)} `,
      a.error ? el("span", { class: "note", text: `${a.error.type}: ${a.error.message}` }) : null)));
  $("detail-children").replaceChildren(...run.children.map((c) =>
    el("li", {}, el("a", { class: "mono", text: shortId(c.id),
      onclick: () => { view.selected = c.id; refresh(); } }), ` ${c.task} `, badge(c.state))));
}

function renderWorkers(workers) {
  $("workers").tBodies[0].replaceChildren(...workers.map((w) =>
    el("tr", { data: { worker: w.worker } },
      el("td", { class: "mono", text: w.worker }),
      el("td", { title: dateTime(w.last_seen), text: `${seconds(w.age_seconds)} ago` }),
      el("td", { class: "count", text: String(w.info.active ?? "") }),
      el("td", { text: (w.info.queues || ["all"]).join(", ") }))));
  $("workers-empty").hidden = workers.length > 0;
}

function showStatus(text, down = false) {
  $("status").textContent = text;
  $("status").classList.toggle("down", down);
}

// -- polling -------------------------------------------------------------------------------------
function runsQuery() {
  const params = new URLSearchParams({ limit: String(view.limit) });
  if ($("filter-task").value) params.set("task", $("filter-task").value);
  if ($("filter-state").value) params.set("state", $("filter-state").value);
  return `api/runs?${params}`;
}

async function refresh() {
  if (view.busy) {
    view.again = true; // an action or filter change mid-poll: poll once more right after
    return;
  }
  view.busy = true;
  try {
    const [stats, page, workers] = await Promise.all([
      api("api/stats"), api(runsQuery()), api("api/workers")]);
    renderStats(stats);
    renderRuns(page);
    renderWorkers(workers);
    if (view.selected) renderDetail(await api(`api/runs/${encodeURIComponent(view.selected)}`));
    $("login").hidden = true;
    showStatus(`updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    showStatus(err instanceof Unauthorized ? "token required" : `error: ${err.message}`, true);
  } finally {
    view.busy = false;
    if (view.again) {
      view.again = false;
      refresh();
    }
  }
}

function schedule() {
  clearTimeout(view.timer);
  if ($("live").checked) view.timer = setTimeout(async () => { await refresh(); schedule(); }, POLL_MS);
}

function start() {
  syncOptions($("filter-state"), STATES);
  $("filters").addEventListener("change", () => { view.limit = PAGE; refresh(); });
  $("more").addEventListener("click", () => { view.limit = Math.min(view.limit + PAGE, 500); refresh(); });
  $("live").addEventListener("change", schedule);
  $("detail-close").addEventListener("click", () => { view.selected = null; $("detail").hidden = true; refresh(); });
  $("detail-cancel").addEventListener("click", () => act($("detail").dataset.runId, "cancel"));
  $("detail-retry").addEventListener("click", () => act($("detail").dataset.runId, "retry"));
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    refresh();
  });
  refresh().then(schedule);
}

document.addEventListener("DOMContentLoaded", start);
