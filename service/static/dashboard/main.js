// The dashboard: controls -> one view (user, range, interval) -> tiles, charts, live mode.

import { ApiError, getJson, METRICS, seriesParams, apiKey, setApiKey } from "./api.js";
import { deviceColours, MetricChart } from "./charts.js";
import { startLive } from "./live.js";
import * as time from "./time.js";
import { describe, el, renderLegend, renderTable, renderTiles, toRow } from "./view.js";

const $ = (id) => document.getElementById(id);
const state = { user: "", range: "24h", interval: "", custom: null, live: false };
const charts = {};
let view = null;
let loading = null;
let stopLive = null;
let pending = {};
// for the browser tests and the curious: what is shown, and the window it was asked for
window.hrDashboard = { charts, state, view: () => view };

function setState(name, message = "") {
  document.body.dataset.state = name;
  $("error").hidden = name !== "error";
  $("key-prompt").hidden = name !== "key";
  if (name === "error") $("error-text").textContent = message;
  if (name !== "error" && message) $("status").textContent = message;
  if (name === "key") $("key").focus();
}

function span() {
  if (state.range !== "custom") return time.RANGES[state.range];
  return state.custom ? state.custom.endMs - state.custom.startMs : time.RANGES["24h"];
}

function fillIntervals(keep) {
  const select = $("interval");
  const spanMs = span();
  select.replaceChildren(
    ...time.INTERVALS.map(([name, , words]) => {
      const n = time.bucketsIn(spanMs, name);
      const option = el("option", { value: name }, `${words} (${n.toLocaleString()} buckets)`);
      option.disabled = n > time.MAX_BUCKETS;
      return option;
    }),
  );
  const usable = keep && time.bucketsIn(spanMs, keep) <= time.MAX_BUCKETS;
  state.interval = usable ? keep : time.defaultInterval(spanMs);
  select.value = state.interval;
}

function chooseRange(range) {
  state.range = range;
  for (const b of $("ranges").querySelectorAll("button")) {
    b.setAttribute("aria-pressed", String(b.dataset.range === range));
  }
  $("custom").hidden = range !== "custom";
  if (range === "custom" && !state.custom) {
    const now = Date.now();
    $("from").value = time.localInput(now - time.RANGES["24h"]);
    $("to").value = time.localInput(now);
    readCustom();
  }
  $("live").disabled = range === "custom";
  fillIntervals(null);
}

function readCustom() {
  const startMs = Date.parse($("from").value);
  const endMs = Date.parse($("to").value);
  state.custom = startMs < endMs ? { startMs, endMs } : null;
}

function saveHash() {
  const params = new URLSearchParams({ user: state.user, range: state.range, interval: state.interval });
  if (state.range === "custom" && state.custom) {
    params.set("from", String(state.custom.startMs));
    params.set("to", String(state.custom.endMs));
  }
  history.replaceState(null, "", `#${params}`);
}

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const range = params.get("range");
  if (range === "custom" && Number(params.get("from")) < Number(params.get("to"))) {
    state.custom = { startMs: Number(params.get("from")), endMs: Number(params.get("to")) };
    $("from").value = time.localInput(state.custom.startMs);
    $("to").value = time.localInput(state.custom.endMs);
  }
  chooseRange(range in time.RANGES || range === "custom" ? range : "24h");
  fillIntervals(params.get("interval"));
  state.user = params.get("user") || "";
  $("user").value = state.user;
  if (params.get("live") === "1") state.live = true;
}

async function fetchAll(signal) {
  const calls = {
    summary: getJson("/summary", { user_id: state.user, start: new Date(view.startMs).toISOString(), end: new Date(view.endMs).toISOString(), tz: view.zone }, signal),
  };
  for (const [metric, spec] of Object.entries(METRICS)) {
    calls[metric] = getJson(`/metrics/${spec.stem}`, seriesParams(state.user, view, true), signal);
  }
  const names = Object.keys(calls);
  const settled = await Promise.allSettled(Object.values(calls));
  return Object.fromEntries(names.map((n, i) => [n, settled[i]]));
}

function firstProblem(results) {
  const errors = Object.values(results).filter((r) => r.status === "rejected").map((r) => r.reason);
  const aborted = errors.find((e) => e.name === "AbortError");
  if (aborted) throw aborted;
  for (const kind of ["unauthorized", "network", "forbidden", "failed"]) {
    const found = errors.find((e) => e instanceof ApiError && e.kind === kind);
    if (found) return found;
  }
  const other = errors.find((e) => !(e instanceof ApiError));
  return other ? new ApiError("failed", 0, String(other)) : null;
}

async function load() {
  if (!state.user) {
    setState("idle", "Choose a user to see their readings.");
    $("user").focus();
    return;
  }
  if (state.range === "custom" && !state.custom) {
    setState("error", "The custom range needs a start before its end.");
    return;
  }
  loading?.abort();
  loading = new AbortController();
  const widthMs = time.widthOf(state.interval);
  view = { ...time.window(state.range, state.interval, Date.now(), state.custom), interval: state.interval, zone: time.ZONE, widthMs };
  saveHash();
  setState("loading", `Loading ${state.user}…`);
  let results;
  try {
    results = await fetchAll(loading.signal);
  } catch (error) {
    if (error.name === "AbortError") return;
    throw error;
  }
  const problem = firstProblem(results);
  if (problem) return showProblem(problem);
  show(results);
  if (state.live) restartLive();
}

function showProblem(problem) {
  stopStreams();
  $("summary").hidden = true;
  $("charts").hidden = true;
  if (problem.kind === "unauthorized") {
    setApiKey(null);
    $("forget-key").hidden = true;
    setState("key", "An API key is needed.");
  } else if (problem.kind === "forbidden") {
    setState("error", `This API key may not read the data of ${state.user}.`);
  } else {
    setState("error", problem.message);
  }
}

function show(results) {
  const rows = {};
  for (const metric of Object.keys(METRICS)) {
    const r = results[metric];
    rows[metric] = r.status === "fulfilled" ? r.value.data.map((b) => toRow(metric, b)) : [];
  }
  const total = Object.values(rows).reduce((n, r) => n + r.length, 0);
  const range = `${time.formatStamp(view.startMs)} and ${time.formatStamp(view.endMs)}`;
  if (results.summary.status === "fulfilled") renderTiles($("summary"), results.summary.value);
  $("summary").hidden = results.summary.status !== "fulfilled";
  $("charts").hidden = total === 0 && !state.live;
  $("forget-key").hidden = !apiKey();
  for (const metric of Object.keys(METRICS)) draw(metric, rows[metric]);
  if (total === 0) {
    setState("empty", `No readings for ${state.user} between ${range}. Try a longer range or another user.`);
  } else {
    setState("ready", `Showing ${state.user} between ${range}, ${state.interval} buckets.`);
  }
}

function draw(metric, rows) {
  const figure = $(`chart-${metric}`);
  const plot = figure.querySelector(".plot");
  charts[metric]?.destroy();
  const colours = deviceColours(rows.map((r) => r.device));
  const chart = new MetricChart(metric, plot, view, colours);
  chart.setRows(rows);
  chart.onNewDevice = () => renderLegend($("heart-legend"), colours);
  charts[metric] = chart;
  if (metric === "heart") renderLegend($("heart-legend"), colours);
  figure.querySelector("details").open = false;
  refreshWords(metric);
}

function refreshWords(metric) {
  const chart = charts[metric];
  const figure = $(`chart-${metric}`);
  const empty = chart.rows.length === 0;
  figure.querySelector(".empty").hidden = !empty;
  figure.querySelector(".plot").classList.toggle("blank", empty);
  figure.querySelector(".text").textContent = describe(metric, chart.rows, chart.colours);
  const details = figure.querySelector("details");
  if (details.open) renderTable(details.querySelector(".table"), metric, chart.rows);
}

function stopStreams() {
  stopLive?.();
  stopLive = null;
}

function restartLive() {
  stopStreams();
  if (!state.live || !state.user || !view) return;
  const user = state.user;
  stopLive = startLive(user, state.interval, {
    onRow: (metric, row) => onLiveRow(metric, row),
    onState: (text) => ($("live-state").textContent = text),
    onUnauthorized: () => showProblem(new ApiError("unauthorized", 401, "")),
  });
}

function onLiveRow(metric, row) {
  const chart = charts[metric];
  if (!chart || Number.isNaN(row.t)) return;
  if (view.widthMs >= 3_600_000) {
    later(metric, 1_000, () => refetch(metric)); // hours and days follow the local clock
    return;
  }
  if (state.range !== "custom" && row.t + view.widthMs > view.endMs) {
    view.endMs = row.t + view.widthMs;
    view.startMs = view.endMs - time.RANGES[state.range];
  }
  if (row.t < view.startMs) return;
  chart.upsert(row);
  $("charts").hidden = false;
  later(`${metric}-words`, 500, () => refreshWords(metric));
  later("summary", 3_000, refreshSummary);
}

/** The metric's series again (live mode at 1h or 1d: stream buckets are UTC hours). */
async function refetch(metric) {
  const shown = view;
  try {
    const body = await getJson(`/metrics/${METRICS[metric].stem}`, seriesParams(state.user, shown, true));
    if (shown !== view) return; // the view changed meanwhile: its own load drew it
    charts[metric].setRows(body.data.map((b) => toRow(metric, b)));
    refreshWords(metric);
  } catch {
    // the next event tries again
  }
}

function later(key, ms, fn) {
  if (pending[key]) return;
  pending[key] = setTimeout(() => {
    delete pending[key];
    fn();
  }, ms);
}

async function refreshSummary() {
  try {
    const params = { user_id: state.user, start: new Date(view.startMs).toISOString(), end: new Date(view.endMs).toISOString(), tz: view.zone };
    renderTiles($("summary"), await getJson("/summary", params));
    $("summary").hidden = false;
  } catch {
    // the next event tries again; the charts are already current
  }
}

function setLive(on) {
  state.live = on;
  $("live").setAttribute("aria-pressed", String(on));
  $("live-state").textContent = on ? "connecting…" : "off";
  if (on) restartLive();
  else stopStreams();
}

let searching = null;
async function suggest() {
  const prefix = $("user").value.trim();
  if (!prefix) return;
  searching?.abort();
  searching = new AbortController();
  try {
    const found = await getJson("/users", { prefix, limit: "20" }, searching.signal);
    $("user-list").replaceChildren(...found.users.map((u) => el("option", { value: u })));
    $("user-hint").textContent = found.users.length ? `${found.users.length}${found.next ? "+" : ""} matching users.` : "No user starts with that.";
  } catch (error) {
    if (error.name === "AbortError") return;
    if (error.kind === "unauthorized" || error.kind === "forbidden") {
      $("user-hint").textContent = "Listing users needs an admin key: type the whole user id.";
    }
  }
}

function wire() {
  let typing = null;
  $("user").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(suggest, 200);
  });
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    state.user = $("user").value.trim();
    load();
  });
  for (const b of $("ranges").querySelectorAll("button")) {
    b.addEventListener("click", () => {
      chooseRange(b.dataset.range);
      if (b.dataset.range === "custom") setLive(false);
      if (state.user) load();
    });
  }
  for (const id of ["from", "to"]) {
    $(id).addEventListener("change", () => {
      readCustom();
      fillIntervals(state.interval);
    });
  }
  $("interval").addEventListener("change", () => {
    state.interval = $("interval").value;
    if (state.user) load();
  });
  $("live").addEventListener("click", () => setLive(!state.live));
  $("retry").addEventListener("click", () => load());
  $("forget-key").addEventListener("click", () => {
    setApiKey(null);
    $("forget-key").hidden = true;
    load();
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey($("key").value.trim());
    $("key").value = "";
    load();
  });
  for (const metric of Object.keys(METRICS)) {
    const details = $(`chart-${metric}`).querySelector("details");
    details.addEventListener("toggle", () => details.open && refreshWords(metric));
  }
  setInterval(() => {
    if (!state.live || !view || state.range === "custom") return;
    const fresh = time.window(state.range, state.interval);
    view.startMs = fresh.startMs;
    view.endMs = Math.max(view.endMs, fresh.endMs);
    for (const chart of Object.values(charts)) chart.redraw();
  }, 30_000);
}

function start() {
  wire();
  readHash();
  setLive(state.live);
  if (state.user) load();
}

// uPlot is a classic deferred script: it has run before this module (modules defer too)
start();
