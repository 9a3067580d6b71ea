// taskloom dashboard: polls the JSON API and renders with textContent only (no HTML from data).
"use strict";

const STATES = ["queued", "running", "success", "failure", "aborted", "rate_limited",
  "interrupted", "init"];
const ACTIVE = new Set(["init", "queued", "running"]);
const POLL_MS = 2000;
const PAGE = 50;
const TOKEN_KEY = "taskloom-token";
const SVG = "http://www.w3.org/2000/svg";
const RUN_ROUTE = /^#\/runs\/([0-9a-zA-Z_-]+)$/;
// Frames of taskloom's own modules (runner, executors, store...), wherever it is installed,
// and of the standard library's machinery they run a task on (event loop, worker threads);
// a project's tests or examples that happen to live in a folder called taskloom stay visible.
const OWN_FRAME = new RegExp([
  String.raw`[\\/]taskloom[\\/](?!tests[\\/]|examples[\\/]|bench[\\/])(?:\w+[\\/])*\w+\.py$`,
  String.raw`[\\/]python3\.\d+[\\/](?:asyncio|concurrent|threading\.py)`,
].join("|"));

const view = {
  limit: PAGE, selected: null, timer: null, busy: false, again: false,
  // optional panels: null until probed, false when the server has no such endpoint
  queues: null, schedules: null, logs: null,
  reports: new Map(), // run id + state -> report exists
  lastRun: null, allFrames: false,
};

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

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  node.append(...children);
  return node;
}

class Unauthorized extends Error {}

class NotFound extends Error {}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { ...options, headers };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    $("login").hidden = false;
    throw new Unauthorized("token required");
  }
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (response.status === 404) throw new NotFound((body && body.detail) || "not found");
  if (!response.ok) throw new Error(problem(body) || `${response.status} ${response.statusText}`);
  return body;
}

function problem(body) {
  if (!body) return "";
  if (typeof body.detail === "string") return body.detail;
  if (Array.isArray(body.detail)) return body.detail.map((e) => e.msg || JSON.stringify(e)).join("; ");
  return body.title || "";
}

// An optional endpoint (queues, schedules, logs): null when the server does not offer it.
async function optional(path) {
  try {
    return await api(path);
  } catch (err) {
    if (err instanceof NotFound) return null;
    throw err;
  }
}

// -- formatting ----------------------------------------------------------------------------------
const shortId = (id) => id.slice(-8);
const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");
const dateTime = (iso) => (iso ? new Date(iso).toLocaleString() : "");

function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(1)} s`;
  if (value < 7200) return `${Math.round(value / 60)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

function until(iso) {
  if (!iso) return "";
  const left = (Date.parse(iso) - Date.now()) / 1000;
  return left > 0 ? `in ${seconds(left)}` : "due now";
}

const isDelayed = (run) =>
  run.state === "queued" && run.execute_after !== null && Date.parse(run.execute_after) > Date.now();

function badge(state) {
  return el("span", { class: `state state-${state}`, text: state.replace("_", " ") });
}

function runBadge(run) {
  if (!isDelayed(run)) return badge(run.state);
  const shown = badge("delayed");
  shown.title = `queued, due ${dateTime(run.execute_after)}`;
  return shown;
}

function bar(progress) {
  const fill = el("div");
  fill.style.width = `${Math.round((progress ?? 0) * 100)}%`;
  return el("div", { class: "bar", title: progress === null ? "" : `${Math.round(progress * 100)}%` }, fill);
}

const runLink = (id) => `#/runs/${encodeURIComponent(id)}`;

// The traceback without the frames of taskloom's own modules (each run of them becomes a note).
function userTraceback(text) {
  const lines = text.split("\n");
  const out = [];
  let hidden = 0;
  for (let i = 0; i < lines.length; i++) {
    const frame = /^\s*File "(.+)", line \d+/.exec(lines[i]);
    if (!frame || !OWN_FRAME.test(frame[1])) {
      if (hidden) out.push(`  … ${hidden} taskloom frame${hidden > 1 ? "s" : ""} hidden`);
      hidden = 0;
      out.push(lines[i]);
      continue;
    }
    hidden += 1;
    const indent = lines[i].search(/\S/);
    while (i + 1 < lines.length && lines[i + 1].search(/\S/) > indent) i++; // its source lines
  }
  if (hidden) out.push(`  … ${hidden} taskloom frame${hidden > 1 ? "s" : ""} hidden`);
  return out.join("\n");
}

// -- confirmation --------------------------------------------------------------------------------
function confirmAction(text, yes) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = yes;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// -- actions -------------------------------------------------------------------------------------
async function act(runId, action) {
  const what = action === "cancel"
    ? `Cancel run ${runId}? A queued run is aborted now; a running one is asked to stop.`
    : `Retry run ${runId}? It is queued again as a new run.`;
  if (!(await confirmAction(what, action === "cancel" ? "Cancel run" : "Retry run"))) return;
  try {
    const run = await api(`api/runs/${encodeURIComponent(runId)}/${action}`, { method: "POST" });
    select(run.id);
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

async function toggleQueue(queue) {
  const pause = !queue.paused;
  const text = pause
    ? `Pause queue ${queue.name}? Workers stop claiming its runs; running ones finish.`
    : `Resume queue ${queue.name}? Workers claim its runs again.`;
  if (!(await confirmAction(text, pause ? "Pause queue" : "Resume queue"))) return;
  try {
    await api(`api/queues/${encodeURIComponent(queue.name)}`, { method: "PATCH", body: { paused: pause } });
    refresh();
  } catch (err) {
    showStatus(`${pause ? "pause" : "resume"} failed: ${err.message}`, true);
  }
}

async function toggleSchedule(item) {
  const enable = !item.enabled;
  const text = enable
    ? `Enable schedule ${item.name}? It fires again from its next tick.`
    : `Disable schedule ${item.name}? It stops firing until enabled again.`;
  if (!(await confirmAction(text, enable ? "Enable" : "Disable"))) return;
  try {
    await api(`api/schedules/${encodeURIComponent(item.name)}`, { method: "PATCH", body: { enabled: enable } });
    refresh();
  } catch (err) {
    showStatus(`schedule change failed: ${err.message}`, true);
  }
}

async function removeSchedule(item) {
  if (!(await confirmAction(`Remove schedule ${item.name}? This cannot be undone.`, "Remove"))) return;
  try {
    await api(`api/schedules/${encodeURIComponent(item.name)}`, { method: "DELETE" });
    refresh();
  } catch (err) {
    showStatus(`remove failed: ${err.message}`, true);
  }
}

async function addSchedule(event) {
  event.preventDefault();
  const error = $("schedule-error");
  error.textContent = "";
  let params;
  try {
    params = JSON.parse($("schedule-params").value || "{}");
  } catch (err) {
    error.textContent = `params are not JSON: ${err.message}`;
    return;
  }
  const kind = $("schedule-kind").value;
  const value = $("schedule-value").value.trim();
  const every = kind === "every" ? Number(value) : null;
  if (kind === "every" && !(every > 0)) {
    error.textContent = "every needs a number of seconds above 0";
    return;
  }
  const body = {
    name: $("schedule-name").value.trim(), task: $("schedule-task").value, every,
    cron: kind === "cron" ? value : null, tz: $("schedule-tz").value.trim() || null, params,
    enabled: $("schedule-enabled").checked,
  };
  try {
    await api("api/schedules", { method: "POST", body });
    $("schedule-form").reset();
    $("schedule-params").value = "{}";
    $("schedule-add").open = false;
    refresh();
  } catch (err) {
    error.textContent = err.message;
  }
}

// -- routing and search --------------------------------------------------------------------------
function select(runId) {
  const target = runId ? runLink(runId) : "#/";
  if (location.hash !== target) location.hash = target; // the hashchange handler refreshes
  else refresh();
}

function route() {
  const match = RUN_ROUTE.exec(location.hash);
  view.selected = match ? decodeURIComponent(match[1]) : null;
  if (!view.selected) $("detail").hidden = true;
  refresh();
}

async function search(event) {
  event.preventDefault();
  const term = $("search-id").value.trim().toLowerCase();
  const box = $("search-results");
  $("search-matches").replaceChildren();
  if (!term) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  if (!/^[0-9a-f]+$/.test(term)) {
    $("search-message").textContent = `"${term}" is not a run id (ids are hexadecimal)`;
    return;
  }
  try {
    // ids sort by time and the list is newest first below a cursor: every id that starts
    // with the prefix sorts below prefix + "g", ahead of the rest
    const found = await api(`api/runs?${new URLSearchParams({ cursor: `${term}g`, limit: "20" })}`);
    const matches = found.runs.filter((r) => r.id.startsWith(term));
    if (matches.length === 1) {
      box.hidden = true;
      $("search-id").value = "";
      select(matches[0].id);
      return;
    }
    $("search-message").textContent = matches.length
      ? `${matches.length === 20 ? "20+" : matches.length} runs start with ${term}:`
      : `no run id starts with ${term}`;
    $("search-matches").replaceChildren(...matches.map((r) =>
      el("li", {}, el("a", { class: "mono", href: runLink(r.id), text: r.id,
        onclick: () => { box.hidden = true; } }), ` ${r.task} `, runBadge(r))));
  } catch (err) {
    $("search-message").textContent = `search failed: ${err.message}`;
  }
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
  $("stats-window").textContent = `all ${stats.counted} runs`;
  syncOptions($("filter-task"), Object.keys(stats.tasks));
  syncOptions($("schedule-task"), Object.keys(stats.tasks));
}

function syncOptions(select, values) {
  const have = new Set([...select.options].map((o) => o.value));
  for (const value of values) {
    if (!have.has(value)) select.append(el("option", { value, text: value }));
  }
}

function renderChart(series) {
  const chart = $("chart");
  const width = 600;
  const height = 120;
  const step = width / series.buckets.length;
  const top = Math.max(1, ...series.buckets.map((b) => b.success + b.failure));
  const bars = [];
  let ok = 0;
  let failed = 0;
  series.buckets.forEach((b, i) => {
    ok += b.success;
    failed += b.failure;
    const okHeight = (b.success / top) * (height - 4);
    const failHeight = (b.failure / top) * (height - 4);
    const label = `${time(b.start)}: ${b.success} succeeded, ${b.failure} failed`;
    bars.push(svg("g", { class: "bucket", "data-success": b.success, "data-failure": b.failure },
      svg("title", {}, label),
      svg("rect", { class: "ok", x: i * step + 1, y: height - okHeight, width: Math.max(step - 2, 1), height: okHeight }),
      svg("rect", { class: "failed", x: i * step + 1, y: height - okHeight - failHeight,
        width: Math.max(step - 2, 1), height: failHeight })));
  });
  chart.replaceChildren(svg("line", { class: "baseline", x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5 }), ...bars);
  chart.dataset.success = String(ok);
  chart.dataset.failure = String(failed);
  const minutes = Math.round(series.span_seconds / 60);
  $("chart-caption").textContent =
    `last ${minutes >= 120 ? `${minutes / 60} h` : `${minutes} min`}: ${ok} succeeded, ${failed} failed` +
    (series.truncated ? " (newest runs only)" : "");
  $("chart-from").textContent = series.buckets.length ? time(series.buckets[0].start) : "";
  $("chart-max").textContent = `max ${top} per ${seconds(series.bucket_seconds)}`;
}

function renderRuns(page) {
  const rows = page.runs.map((run) =>
    el("tr", { class: run.id === view.selected ? "selected" : "",
      data: { runId: run.id, state: run.state, task: run.task, fromRun: run.from_run_id || "",
        delayed: String(isDelayed(run)) },
      onclick: () => select(run.id) },
    el("td", { class: "mono", title: run.id }, el("a", { href: runLink(run.id), text: shortId(run.id) }),
      run.from_run_id ? el("span", { class: "retry-of", title: `retry of ${run.from_run_id}`, text: " ↻" }) : null),
    el("td", { text: run.task }),
    el("td", {}, runBadge(run)),
    el("td", { text: run.priority }),
    el("td", { title: dateTime(run.queued), text: time(run.queued) }),
    el("td", { text: isDelayed(run) ? until(run.execute_after) : seconds(run.duration) }),
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
  view.lastRun = run;
  $("detail").hidden = false;
  $("detail-id").textContent = run.id;
  $("detail-link").href = runLink(run.id);
  $("detail").dataset.runId = run.id;
  $("detail").dataset.state = run.state;
  $("detail").dataset.delayed = String(isDelayed(run));
  $("detail-cancel").hidden = !ACTIVE.has(run.state);
  $("detail-retry").hidden = ACTIVE.has(run.state);
  const progress = run.progress ?? (run.state === "success" ? 1 : null);
  $("detail-progress").parentElement.hidden = progress === null;
  $("detail-progress").style.width = `${Math.round((progress ?? 0) * 100)}%`;
  $("detail-progress-note").textContent = run.progress_note || "";
  const fields = $("detail-fields");
  fields.replaceChildren();
  fields.append(el("dt", { text: "state" }), el("dd", {}, runBadge(run)));
  field(fields, "task", run.task);
  field(fields, "priority", run.priority);
  field(fields, "queue", run.queue);
  field(fields, "queued", dateTime(run.queued));
  field(fields, "due", run.execute_after
    ? `${dateTime(run.execute_after)}${isDelayed(run) ? ` (${until(run.execute_after)})` : ""}` : null);
  field(fields, "started", dateTime(run.start));
  field(fields, "ended", dateTime(run.end));
  field(fields, "duration", seconds(run.duration));
  field(fields, "worker", run.worker);
  field(fields, "retries", run.retry_attempt || null);
  field(fields, "retry of", run.from_run_id);
  field(fields, "parent", run.parent_id);
  field(fields, "params", run.params);
  field(fields, "result", run.result);
  renderError(run.error);
  $("detail-attempts").replaceChildren(...run.attempts.map((a) =>
    el("li", {}, badge(a.state), ` ${time(a.start)} → ${time(a.end)} `,
      a.error ? el("span", { class: "note", text: `${a.error.type}: ${a.error.message}` }) : null)));
  $("detail-children").replaceChildren(...run.children.map((c) =>
    el("li", {}, el("a", { class: "mono", href: runLink(c.id), text: shortId(c.id) }), ` ${c.task} `,
      runBadge(c))));
}

function renderError(error) {
  $("detail-error").hidden = !error;
  $("detail-error-message").textContent = error ? `${error.type}: ${error.message}` : "";
  const text = error ? error.traceback : "";
  $("detail-traceback").textContent = view.allFrames ? text : userTraceback(text);
}

function renderLogs(records) {
  $("detail-logs-section").hidden = records === null;
  if (records === null) return;
  $("detail-logs").tBodies[0].replaceChildren(...records.map((r) =>
    el("tr", { class: `log-${String(r.level).toLowerCase()}` },
      el("td", { class: "mono", title: dateTime(r.ts), text: time(r.ts) }),
      el("td", { class: "level", text: r.level }),
      el("td", { class: "mono", text: r.logger }),
      el("td", { class: "message", text: r.message }))));
  $("detail-logs-empty").hidden = records.length > 0;
}

async function renderReport(run) {
  // a report exists once the run has made one: ask again when its state changes
  const key = `${run.id}:${run.state}`;
  if (!view.reports.has(key)) {
    const path = `api/runs/${encodeURIComponent(run.id)}/report`;
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    let exists = false;
    try {
      exists = (await fetch(path, { headers })).ok;
    } catch (err) {
      exists = false;
    }
    view.reports.set(key, exists);
  }
  const link = $("detail-report");
  link.hidden = !view.reports.get(key);
  link.href = `api/runs/${encodeURIComponent(run.id)}/report`;
}

function renderQueues(queues) {
  $("queues-section").hidden = queues === null;
  if (queues === null) return;
  $("queues").tBodies[0].replaceChildren(...queues.map((q) =>
    el("tr", { data: { queue: q.name, paused: String(q.paused) } },
      el("td", { class: "mono", text: q.name }),
      el("td", {}, el("span", { class: `state ${q.paused ? "state-paused" : "state-active"}`,
        text: q.paused ? "paused" : "active" })),
      el("td", { class: "count", text: String(q.depth.high) }),
      el("td", { class: "count", text: String(q.depth.medium) }),
      el("td", { class: "count", text: String(q.depth.low) }),
      el("td", { text: q.oldest_queued_age === null ? "" : seconds(q.oldest_queued_age) }),
      el("td", {}, el("button", { type: "button", class: q.paused ? "btn-resume" : "btn-pause",
        text: q.paused ? "resume" : "pause", onclick: () => toggleQueue(q) })))));
  $("queues-empty").hidden = queues.length > 0;
}

function renderSchedules(items) {
  $("schedules-section").hidden = items === null;
  if (items === null) return;
  $("schedules").tBodies[0].replaceChildren(...items.map((s) =>
    el("tr", { data: { schedule: s.name, enabled: String(s.enabled), source: s.source } },
      el("td", { title: `${s.source} schedule` }, el("span", { class: "mono", text: s.name }),
        el("small", { class: "note", text: ` ${s.source}` })),
      el("td", { text: s.task }),
      el("td", { class: "mono", text: s.schedule }),
      el("td", { class: "next-fire", title: dateTime(s.next_fire),
        text: s.enabled && s.next_fire ? `${time(s.next_fire)} (${until(s.next_fire)})` : "—" }),
      el("td", {}, s.last_run_id ? el("a", { class: "mono", href: runLink(s.last_run_id), text: shortId(s.last_run_id) }) : ""),
      el("td", {}, el("button", { type: "button", class: s.enabled ? "btn-disable" : "btn-enable",
        text: s.enabled ? "on" : "off", title: s.enabled ? "disable" : "enable",
        onclick: () => toggleSchedule(s) })),
      el("td", {}, s.source === "stored"
        ? el("button", { type: "button", class: "btn-remove", text: "remove", onclick: () => removeSchedule(s) })
        : null))));
  $("schedules-empty").hidden = items.length > 0;
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

// A panel whose endpoint answered 404 once stays hidden (that server does not offer it).
async function panel(name, path) {
  if (view[name] === false) return null;
  const data = await optional(path);
  view[name] = data !== null;
  return data;
}

async function refreshDetail() {
  if (!view.selected) return;
  let run;
  try {
    run = await api(`api/runs/${encodeURIComponent(view.selected)}`);
  } catch (err) {
    if (!(err instanceof NotFound)) throw err;
    $("detail").hidden = true;
    showStatus(`no run ${view.selected}`, true);
    view.selected = null;
    return;
  }
  const logs = await panel("logs", `api/runs/${encodeURIComponent(run.id)}/logs`);
  renderDetail(run);
  renderLogs(logs);
  await renderReport(run);
}

async function refresh() {
  if (view.busy) {
    view.again = true; // an action or filter change mid-poll: poll once more right after
    return;
  }
  view.busy = true;
  try {
    const [stats, page, workers, series, queues, schedules] = await Promise.all([
      api("api/stats"), api(runsQuery()), api("api/workers"), optional("api/stats/series"),
      panel("queues", "api/queues"), panel("schedules", "api/schedules")]);
    renderStats(stats);
    renderRuns(page);
    renderWorkers(workers);
    $("throughput").hidden = series === null;
    if (series) renderChart(series);
    renderQueues(queues);
    renderSchedules(schedules);
    await refreshDetail();
    $("login").hidden = true;
    if (view.selected !== null || !RUN_ROUTE.test(location.hash)) {
      showStatus(`updated ${new Date().toLocaleTimeString()}`);
    }
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
  $("detail-close").addEventListener("click", () => select(null));
  $("detail-cancel").addEventListener("click", () => act($("detail").dataset.runId, "cancel"));
  $("detail-retry").addEventListener("click", () => act($("detail").dataset.runId, "retry"));
  $("detail-all-frames").addEventListener("change", (e) => {
    view.allFrames = e.target.checked;
    if (view.lastRun) renderError(view.lastRun.error);
  });
  $("search").addEventListener("submit", search);
  $("schedule-form").addEventListener("submit", addSchedule);
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    view.queues = view.schedules = view.logs = null; // probe again with the token
    refresh();
  });
  window.addEventListener("hashchange", route);
  const match = RUN_ROUTE.exec(location.hash);
  view.selected = match ? decodeURIComponent(match[1]) : null;
  refresh().then(schedule);
}

document.addEventListener("DOMContentLoaded", start);
