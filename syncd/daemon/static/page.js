// The status page: polls /api/status and /api/log once a second and redraws.
// Every value from the daemon is written with textContent (never as markup), so a file
// named <img src=x onerror=...> shows as that name and runs nothing.
"use strict";

const POLL_MS = 1000;
const PAGE = 100;
const view = { offset: 0, q: "", total: 0 };
let timer = null;
let generation = 0; // a poll started later (a new filter or page) outruns an older one

function $(id) { return document.getElementById(id); }

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function row(cells, cls) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c);
  if (cls) tr.className = cls;
  return tr;
}

// A class name from a word the daemon chose (a phase, a status): letters and dashes only.
function token(word) { return String(word || "").toLowerCase().replace(/[^a-z]+/g, "-"); }

function bytes(n) {
  if (n == null) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : String(v)) + " " + units[i];
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (s < 0) return iso + " (in " + duration(-s) + ")";
  return iso + " (" + duration(s) + " ago)";
}

function duration(s) {
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 172800) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " d";
}

function kv(tbody, pairs) {
  tbody.replaceChildren(...pairs.map(([k, v, cls]) => row([cell(k), cell(v, "n")], cls)));
}

function header(d) {
  $("project").textContent = d.project || "";
  $("root").textContent = d.root || "";
  const phase = d.source === "daemon" ? d.phase : "not running";
  $("phase").textContent = phase;
  $("phase").className = "phase " + token(phase);
  const remote = d.remote || {};
  $("daemon").textContent = d.source === "daemon"
    ? "pid " + d.pid + " · up " + duration(Math.round(d.uptime_s || 0)) + " · queue " +
      (d.queue || 0) + " · watching by " + (d.watch_mode || "nothing yet") + " · remote " +
      (remote.reachable === false ? "unreachable since " + remote.unreachable_since : "reachable")
    : "";
  const err = d.last_error;
  $("error").hidden = !err;
  $("error").textContent = err ? "last error: " + err.message + " (" + err.at + ")" : "";
}

function files(d) {
  const counts = Object.entries(d.counts || {}).sort();
  const body = $("counts");
  body.replaceChildren(...counts.map(([k, v]) => {
    const tr = row([cell(k), cell(v, "n")], token(k));
    tr.dataset.status = k;
    return tr;
  }));
  if (!counts.length) body.appendChild(row([cell("none known yet"), cell("")]));
  const ours = d.ours;
  $("ours").textContent = ours
    ? ours.files + " paths synced in " + ours.remote_files + " remote files, " + bytes(ours.bytes)
    : "";
}

function gauge(id, used, max, fmt) {
  const m = $(id);
  m.max = max || 1;
  m.value = used || 0;
  m.low = 0.8 * (max || 1);
  m.high = 0.95 * (max || 1);
  $(id + "-text").textContent =
    (used == null ? "not listed yet" : fmt(used)) + " of " + (max == null ? "?" : fmt(max));
}

function account(d) {
  const q = d.quota || {};
  const a = d.account || {};
  const limits = d.limits || {};
  gauge("gauge-files", q.files != null ? q.files : a.files,
        q.max_files != null ? q.max_files : limits.max_files, String);
  gauge("gauge-bytes", q.bytes != null ? q.bytes : a.bytes,
        q.max_bytes != null ? q.max_bytes : limits.max_bytes, bytes);
  $("listed").textContent = "listed " + (q.listed_at || a.at || "never");
}

function reconcile(d) {
  const last = d.last_reconcile || {};
  const pairs = [
    ["last", ago(last.at)],
    ["exit code", last.exit_code == null ? "" : last.exit_code,
     last.exit_code ? "error" : "synced"],
    ["took", last.duration_s == null ? "" : last.duration_s + " s"],
    ["uploaded / deleted", last.uploaded == null ? "" : last.uploaded + " / " + last.deleted],
    ["last success", ago(d.last_success_at)],
    ["next", d.next_reconcile ? ago(d.next_reconcile) : "not scheduled"],
  ];
  kv($("reconcile"), pairs);
}

function pacer(d) {
  const rows = Object.entries(d.pacer || {}).sort().map(([cls, p]) => row([
    cell(cls), cell(p.rate_per_s + "/s", "n"), cell(p.ceiling_estimate_per_s + "/s", "n"),
    cell(p.ceiling_per_s + "/s", "n"), cell(p.recent_429, "n"), cell(p.throttled_total, "n"),
  ], p.paused ? "quota" : ""));
  $("pacer").replaceChildren(...rows);
}

function failing(d) {
  const list = d.not_synced || [];
  view.total = d.not_synced_total != null ? d.not_synced_total : list.length;
  $("failing-total").textContent = "(" + view.total + ")";
  $("failing").replaceChildren(...list.map((r) =>
    row([cell(r.path, "path"), cell(r.status), cell(r.reason)], token(r.status))));
  const first = view.total ? view.offset + 1 : 0;
  $("range").textContent = first + "–" + (view.offset + list.length) + " of " + view.total;
  $("prev").disabled = view.offset === 0;
  $("next").disabled = view.offset + PAGE >= view.total;
}

function actions(entries) {
  $("actions").replaceChildren(...entries.map((e) => row([
    cell(e.at, "at"), cell(e.action), cell(e.path, "path"), cell(e.file_id, "id"),
    cell([e.status, e.reason].filter(Boolean).join(": ")),
  ], token(e.action))));
}

async function fetchJSON(url) {
  const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  if (!r.ok) throw new Error(url + " answered " + r.status);
  return r.json();
}

async function poll() {
  clearTimeout(timer);
  const mine = ++generation;
  const query = "?offset=" + view.offset + "&limit=" + PAGE + "&q=" + encodeURIComponent(view.q);
  try {
    const [d, log] = await Promise.all([fetchJSON("/api/status" + query),
                                        fetchJSON("/api/log?limit=30")]);
    if (mine !== generation) return;
    header(d); files(d); account(d); reconcile(d); pacer(d); failing(d);
    actions(log.entries || []);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (mine !== generation) return;
    $("phase").textContent = "offline";
    $("phase").className = "phase offline";
    $("updated").textContent = "the daemon does not answer (" + e.message + ")";
  }
  timer = setTimeout(poll, POLL_MS);
}

function start() {
  let typing = null;
  $("filter").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { view.q = $("filter").value; view.offset = 0; poll(); }, 250);
  });
  $("prev").addEventListener("click", () => { view.offset = Math.max(0, view.offset - PAGE); poll(); });
  $("next").addEventListener("click", () => { view.offset += PAGE; poll(); });
  poll();
}

document.addEventListener("DOMContentLoaded", start);
