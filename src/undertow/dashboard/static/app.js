// The dashboard page: one event stream (/api/events) brings a snapshot of the cluster
// at each change; older pages of the job and data lists are read from /api/jobs and
// /api/data. Every value is written with textContent: nothing from the cluster is parsed
// as HTML.
"use strict";

const state = { snapshot: null, jobs: null, data: null, selected: null };

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function ago(at, now) {
  if (!at) return "";
  const s = Math.max(0, now - at);
  if (s < 60) return `${s.toFixed(1)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

function clock(at) {
  return at ? new Date(at * 1000).toLocaleTimeString() : "";
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function fillRows(table, rows, makeRow) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows.map(makeRow));
  if (!rows.length) {
    const empty = el("tr");
    const cell = el("td", "none", "muted");
    cell.colSpan = table.tHead.rows[0].cells.length;
    empty.appendChild(cell);
    body.appendChild(empty);
  }
}

function row(cells, attrs) {
  const tr = el("tr");
  for (const [key, value] of Object.entries(attrs || {})) tr.dataset[key] = value;
  for (const cell of cells) tr.appendChild(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function health(ok) {
  return el("td", ok ? "healthy" : "unhealthy", `health ${ok ? "healthy" : "unhealthy"}`);
}

function plotCell(values, width) {
  const cell = el("td", null, "plot");
  drawPlot(cell, [{ name: "", values }], width || 140, 28, false);
  return cell;
}

// -- the overview ---------------------------------------------------------------------

function renderOverview(snap) {
  const instances = snap.services.flatMap((s) => s.instances);
  fillRows(document.getElementById("services"), instances, (i) => row([
    i.service, el("td", i.id.slice(0, 12), "mono"), el("td", i.address, "mono"), i.host, i.pid,
    ago(i.beat, snap.now), health(i.healthy),
  ], { instance: i.id }));
  fillRows(document.getElementById("workers"), snap.workers, (w) => row([
    el("td", w.name, "mono"), w.queues.join(", "),
    el("td", w.runs.map((r) => (r.count > 1 ? `${r.function} ×${r.count}` : r.function)).join(", "), "runs"),
    w.running, w.concurrency, w.done, w.failed,
    ago(w.beat, snap.now), health(w.healthy),
  ], { worker: w.name }));
  fillRows(document.getElementById("queues"), snap.queues, (q) => row([
    q.name, el("td", q.length, "depth"), q.workers, q.states.queued || 0, q.states.running || 0,
    q.states.done || 0, q.states.failed || 0, q.states.dead || 0,
    plotCell(q.depth), plotCell(q.throughput),
  ], { queue: q.name }));
}

// -- jobs -----------------------------------------------------------------------------

function jobRow(j) {
  const took = j.finished && j.submitted ? `${(j.finished - j.submitted).toFixed(2)} s` : "";
  const tr = row([
    el("td", j.id.slice(0, 12), "mono"), j.function, el("td", j.state, `state state-${j.state}`),
    j.queues.join(", "), `${j.attempts}/${j.max_attempts}`, el("td", j.worker, "mono"),
    clock(j.submitted), took,
  ], { job: j.id });
  tr.classList.add("clickable");
  if (state.selected === j.id) tr.classList.add("selected");
  tr.addEventListener("click", () => showJob(j.id));
  return tr;
}

function renderJobs() {
  const paged = state.jobs !== null;
  const rows = paged ? state.jobs.rows : (state.snapshot ? state.snapshot.jobs : []);
  fillRows(document.getElementById("jobs"), rows, jobRow);
  document.getElementById("jobs-mode").textContent = paged
    ? `page ${state.jobs.number} (not live)` : "newest, live";
  document.getElementById("jobs-older").disabled = paged ? !state.jobs.next : rows.length < 50;
}

async function getJSON(url) {
  const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  const body = await answer.json();
  if (!answer.ok) throw new Error(body.error || `HTTP ${answer.status}`);
  return body;
}

async function pageOfJobs(after, number) {
  const params = new URLSearchParams({ limit: "50" });
  const wanted = document.getElementById("job-state").value;
  const queue = document.getElementById("job-queue").value.trim();
  if (wanted) params.set("state", wanted);
  if (queue) params.set("queue", queue);
  if (after) params.set("after", after);
  try {
    const page = await getJSON(`/api/jobs?${params}`);
    state.jobs = { rows: page.jobs, next: page.next, number };
  } catch (error) {
    state.jobs = { rows: [], next: null, number };
    setStatus(`jobs: ${error.message}`, "down");
  }
  renderJobs();
}

function olderJobs() {
  const rows = state.jobs ? state.jobs.rows : state.snapshot.jobs;
  const last = state.jobs ? state.jobs.next : (rows.length ? rows[rows.length - 1].id : null);
  if (last) pageOfJobs(last, state.jobs ? state.jobs.number + 1 : 2);
}

function jobFilterChanged() {
  const filtered = document.getElementById("job-state").value
    || document.getElementById("job-queue").value.trim();
  if (filtered) pageOfJobs(null, 1); else { state.jobs = null; renderJobs(); }
}

async function showJob(id) {
  state.selected = id;
  const box = document.getElementById("job-detail");
  try {
    const job = await getJSON(`/api/jobs/${id}`);
    document.getElementById("job-title").textContent = `${job.id} · ${job.function} · ${job.state}`;
    document.getElementById("job-error").textContent = job.error || job.reason || "";
    document.getElementById("job-explain").textContent = job.explain;
    document.getElementById("job-output").textContent = job.output || "(nothing printed)";
    box.hidden = false;
  } catch (error) {
    document.getElementById("job-title").textContent = `${id}: ${error.message}`;
  }
  renderJobs();
}

// -- data -----------------------------------------------------------------------------

function dataRow(d) {
  return row([
    el("td", d.key.slice(0, 12), "mono"), d.type, bytes(d.size), d.owner, d.tags.join(", "),
    d.hosts.join(", "), clock(d.created),
  ], { key: d.key });
}

function renderData() {
  const paged = state.data !== null;
  const rows = paged ? state.data.rows : (state.snapshot ? state.snapshot.data : []);
  fillRows(document.getElementById("data"), rows, dataRow);
  document.getElementById("data-mode").textContent = paged
    ? `page ${state.data.number} (not live)` : "newest, live";
  document.getElementById("data-older").disabled = paged ? !state.data.next : rows.length < 50;
}

async function pageOfData(after, number) {
  const params = new URLSearchParams({ limit: "50" });
  const tag = document.getElementById("data-tag").value.trim();
  const owner = document.getElementById("data-owner").value.trim();
  if (tag) params.set("tag", tag);
  if (owner) params.set("owner", owner);
  if (after) params.set("after", after);
  try {
    const page = await getJSON(`/api/data?${params}`);
    state.data = { rows: page.data, next: page.next, number };
  } catch (error) {
    state.data = { rows: [], next: null, number };
    setStatus(`data: ${error.message}`, "down");
  }
  renderData();
}

function olderData() {
  const rows = state.data ? state.data.rows : state.snapshot.data;
  const last = state.data ? state.data.next : (rows.length ? rows[rows.length - 1].key : null);
  if (last) pageOfData(last, state.data ? state.data.number + 1 : 2);
}

function dataFilterChanged() {
  const filtered = document.getElementById("data-tag").value.trim()
    || document.getElementById("data-owner").value.trim();
  if (filtered) pageOfData(null, 1); else { state.data = null; renderData(); }
}

// -- functions ------------------------------------------------------------------------

function renderFunctions(snap) {
  const functions = snap.functions;
  drawPlot(document.getElementById("latency-plot"),
    functions.slice(0, 6).map((f) => ({ name: f.name, values: f.latency })), 0, 220, true);
  fillRows(document.getElementById("functions"), functions, (f) => row([
    el("td", f.name, "mono"), f.calls, f.errors,
    f.mean_ms === null ? "" : f.mean_ms.toFixed(2), plotCell(f.latency, 200),
  ], { function: f.name }));
}

// -- the stream and the views -----------------------------------------------------------

function setStatus(text, kind) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = `status ${kind}`;
}

function render(snap) {
  state.snapshot = snap;
  renderOverview(snap);
  renderJobs();
  renderData();
  renderFunctions(snap);
  if (snap.error) setStatus(snap.error, "down");
  else setStatus(`live · ${clock(snap.now)}`, "live");
}

function showView() {
  const wanted = (location.hash || "#overview").slice(1);
  for (const view of document.querySelectorAll(".view")) {
    view.classList.toggle("shown", view.id === `view-${wanted}`);
  }
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === wanted);
  }
  if (state.snapshot) renderFunctions(state.snapshot);  // the plot takes its view's width
}

function connect() {
  const events = new EventSource("/api/events");
  events.addEventListener("snapshot", (event) => render(JSON.parse(event.data)));
  events.addEventListener("error", () => setStatus("reconnecting…", "down"));
}

function start() {
  showView();
  window.addEventListener("hashchange", showView);
  document.getElementById("jobs-older").addEventListener("click", olderJobs);
  document.getElementById("jobs-newest").addEventListener("click", () => {
    document.getElementById("job-state").value = "";
    document.getElementById("job-queue").value = "";
    state.jobs = null;
    renderJobs();
  });
  document.getElementById("job-state").addEventListener("change", jobFilterChanged);
  document.getElementById("job-queue").addEventListener("change", jobFilterChanged);
  document.getElementById("data-older").addEventListener("click", olderData);
  document.getElementById("data-newest").addEventListener("click", () => {
    document.getElementById("data-tag").value = "";
    document.getElementById("data-owner").value = "";
    state.data = null;
    renderData();
  });
  document.getElementById("data-tag").addEventListener("change", dataFilterChanged);
  document.getElementById("data-owner").addEventListener("change", dataFilterChanged);
  connect();
}

document.addEventListener("DOMContentLoaded", start);
