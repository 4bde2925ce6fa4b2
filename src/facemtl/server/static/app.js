// facemtl operator page: plain script, no library, no network beyond this server.
// Reads /v1/tasks once and builds its filters and columns from the model's tasks.
"use strict";

const state = { tasks: [], token: sessionStorage.getItem("facemtl-token") || "", tab: "results",
                faces: { next: null }, tracks: { next: null }, liveSource: null, liveUrl: null, timer: null };
const $ = (sel) => document.querySelector(sel);
const PALETTE = ["#1f6feb", "#e5534b", "#2da44e", "#d4a72c", "#8250df", "#1b9aaa", "#f47067", "#768390",
                 "#bf8700", "#57ab5a", "#c69026", "#6cb6ff"];

// -- talking to the API ------------------------------------------------------------------
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (res.status === 401) {
    $("#token-box").hidden = false;
    throw new Error("this server wants its API token: enter it above");
  }
  if (!res.ok) {
    let detail = res.statusText;
    try { const body = await res.json(); detail = typeof body.detail === "string" ? body.detail :
          body.detail.map((d) => (d.loc || []).slice(1).join(".") + ": " + d.msg).join("; "); } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  return res;
}
const getJson = async (path) => (await api(path)).json();

function say(text, error = false) {
  const m = $("#message");
  m.hidden = !text;
  m.textContent = text || "";
  m.classList.toggle("error", error);
}

// -- formatting -----------------------------------------------------------------------------
const pad = (n) => String(n).padStart(2, "0");
function when(t) {
  if (t === null || t === undefined) return "";
  const d = new Date(t * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function answer(rec, task) {
  const v = rec[task.name];
  if (v === undefined || v === null) return "";
  if (typeof v === "string") {
    const p = rec[task.name + "_probability"];
    return p === undefined || p === null ? v : `${v} ${Math.round(p * 100)}%`;
  }
  const iv = rec[task.name + "_interval"];
  return `${Math.round(v)}` + (iv ? ` (${iv[0]}–${iv[1]})` : "");
}
function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
function header(table, names) {
  const tr = document.createElement("tr");
  for (const n of names) { const th = document.createElement("th"); th.textContent = n; tr.appendChild(th); }
  table.tHead.replaceChildren(tr);
}

// -- filters (built from the tasks) ------------------------------------------------------------
function buildFilters() {
  const box = $("#task-filters");
  box.replaceChildren();
  for (const t of state.tasks) {
    const fs = document.createElement("fieldset");
    const legend = document.createElement("legend");
    legend.textContent = t.name;
    fs.appendChild(legend);
    if (t.classes) {
      for (const c of t.classes) {
        const label = document.createElement("label");
        const input = document.createElement("input");
        input.type = "checkbox"; input.name = t.filters[0]; input.value = c;
        label.append(input, " " + c);
        fs.appendChild(label);
      }
    } else {
      for (const [param, word] of [[t.filters[0], "min"], [t.filters[1], "max"]]) {
        const input = document.createElement("input");
        input.type = "number"; input.name = param; input.placeholder = word; input.step = "any";
        input.setAttribute("aria-label", `${t.name} ${word}`);
        fs.appendChild(input);
      }
    }
    box.appendChild(fs);
  }
}

function filterParams(withAnswers = true) {
  const p = new URLSearchParams();
  const form = $("#filters");
  for (const name of ["since", "until"]) {
    const v = form.elements[name].value;
    if (v) p.set(name, new Date(v).toISOString());
  }
  if (form.elements.source.value) p.set("source", form.elements.source.value);
  if (form.elements.session.value) p.set("session", form.elements.session.value);
  if (withAnswers) {
    for (const t of state.tasks) {
      for (const param of t.filters) {
        for (const input of form.querySelectorAll(`[name="${CSS.escape(param)}"]`)) {
          if (input.type === "checkbox" ? input.checked : input.value !== "") p.append(param, input.value);
        }
      }
    }
  }
  return p;
}

// -- tables -------------------------------------------------------------------------------------
async function thumbnail(td, id) {
  try {
    const blob = await (await api(`/v1/faces/${id}/thumbnail.jpg`)).blob();
    const img = document.createElement("img");
    img.className = "thumb"; img.alt = `face ${id}`; img.src = URL.createObjectURL(blob);
    td.replaceChildren(img);
  } catch (e) { td.textContent = "–"; }
}

function faceRow(f) {
  const tr = document.createElement("tr");
  tr.dataset.face = f.id;
  const td = cell(tr, "");
  if (f.thumbnail) thumbnail(td, f.id);
  cell(tr, when(f.time));
  cell(tr, f.source);
  cell(tr, f.track === null ? "" : f.track, "num");
  cell(tr, f.file !== null ? f.file : f.frame !== null ? `frame ${f.frame}` : "");
  for (const t of state.tasks) cell(tr, answer(f, t)).dataset.task = t.name;
  cell(tr, f.score === null ? "" : f.score.toFixed(2), "num");
  cell(tr, f.model_name ? `${f.model_name} ${f.model_version || ""}` : "");
  return tr;
}

function trackRow(t) {
  const tr = document.createElement("tr");
  tr.dataset.track = t.id;
  cell(tr, t.source);
  cell(tr, t.track, "num");
  cell(tr, t.closed ? "ended" : "open");
  cell(tr, when(t.started));
  cell(tr, when(t.ended));
  cell(tr, t.frames, "num");
  for (const task of state.tasks) cell(tr, answer(t, task)).dataset.task = task.name;
  cell(tr, t.confidence === null ? "" : t.confidence.toFixed(2), "num");
  return tr;
}

async function loadTable(kind, more = false) {
  const table = $("#" + kind);
  const p = filterParams();
  p.set("limit", "50");
  if (more && state[kind].next) p.set("cursor", state[kind].next);
  const page = await getJson(`/v1/${kind}?${p}`);
  const rows = page.items.map(kind === "faces" ? faceRow : trackRow);
  if (more) table.tBodies[0].append(...rows); else table.tBodies[0].replaceChildren(...rows);
  state[kind].next = page.next;
  $(`#${kind}-more`).hidden = !page.next;
  $(`#${kind}-count`).textContent = `(${table.tBodies[0].rows.length}${page.next ? "+" : ""} shown)`;
}

async function refreshResults() {
  await Promise.all([loadTable("faces"), loadTable("tracks")]);
}

// -- charts: stacked bars per time bucket, one chart per task, drawn as SVG --------------------
const SVG = "http://www.w3.org/2000/svg";
function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function drawChart(task, counts, bucket, since, until) {
  const W = 800, H = 220, L = 44, B = 26, T = 8;
  const div = document.createElement("div");
  div.className = "chart";
  div.dataset.task = task;
  const h3 = document.createElement("h3");
  h3.textContent = task;
  div.appendChild(h3);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `counts of ${task} over time` });
  const n = Math.max(1, Math.round((until - since) / bucket));
  const first = Math.floor(since / bucket) * bucket;
  const totals = counts.buckets.map((b) => Object.values(b.counts).reduce((a, c) => a + c, 0));
  const top = Math.max(1, ...totals);
  const bw = (W - L - 4) / (n + 1);
  const y = (v) => H - B - (v / top) * (H - B - T);
  for (const frac of [0, 0.5, 1]) {
    const v = Math.round(top * frac);
    svg.appendChild(svgEl("line", { x1: L, x2: W, y1: y(v), y2: y(v), stroke: "#e3e6ea" }));
    const label = svgEl("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = v;
    svg.appendChild(label);
  }
  const colour = (g) => PALETTE[counts.groups.indexOf(g) % PALETTE.length];
  for (const b of counts.buckets) {
    const i = Math.round((b.start - first) / bucket);
    let base = 0;
    for (const g of counts.groups) {
      const c = b.counts[g] || 0;
      if (!c) continue;
      const rect = svgEl("rect", { x: L + 2 + i * bw, y: y(base + c), width: Math.max(1, bw - 1),
                                   height: y(base) - y(base + c), fill: colour(g) });
      const tip = svgEl("title", {});
      tip.textContent = `${when(b.start)}: ${g} ${c}`;
      rect.appendChild(tip);
      svg.appendChild(rect);
      base += c;
    }
  }
  for (const t of [first, first + (n / 2) * bucket, first + n * bucket]) {
    const label = svgEl("text", { x: L + 2 + ((t - first) / bucket) * bw, y: H - 8, "text-anchor": "middle" });
    label.textContent = when(t).slice(5, 16);
    svg.appendChild(label);
  }
  div.appendChild(svg);
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const g of counts.groups) {
    const s = document.createElement("span");
    s.style.setProperty("--c", colour(g));
    s.textContent = g;
    legend.appendChild(s);
  }
  div.appendChild(legend);
  return div;
}

async function refreshCharts() {
  const p = filterParams();  // the answer filters too: the charts count what the tables list
  p.set("of", $("#stats-of").value);
  const stats = await getJson(`/v1/stats?${p}`);
  const box = $("#charts");
  const charts = Object.entries(stats.tasks).map(([task, c]) => drawChart(task, c, stats.bucket, stats.since, stats.until));
  if (!charts.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "Nothing counted in this time range.";
    charts.push(p);
  }
  box.replaceChildren(...charts);
}

// -- sources and the live view ------------------------------------------------------------------
async function refreshSources() {
  const sources = await getJson("/v1/sources");
  const select = $("#filters").elements.source;
  const chosen = select.value;
  select.replaceChildren(new Option("any", ""), ...sources.map((s) => new Option(s.name, s.name)));
  select.value = chosen;
  const rows = sources.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.source = s.id;
    cell(tr, s.name);
    cell(tr, s.kind);
    const st = cell(tr, "");
    const badge = document.createElement("span");
    badge.className = "state " + s.state; badge.textContent = s.state;
    st.appendChild(badge);
    cell(tr, s.seconds_since_seen === null ? "" : `${Math.round(s.seconds_since_seen)} s ago`);
    cell(tr, s.fps === null ? "" : s.fps.toFixed(1), "num");
    cell(tr, s.host);
    const td = cell(tr, "");
    if (s.snapshot_time !== null) {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = "watch";
      b.addEventListener("click", () => { state.liveSource = s; $("#live-view").hidden = false; refreshLive(); });
      td.appendChild(b);
    }
    return tr;
  });
  $("#sources").tBodies[0].replaceChildren(...rows);
}

async function refreshLive() {
  const s = state.liveSource;
  if (!s) return;
  const res = await api(`/v1/sources/${s.id}/snapshot.jpg`);
  const t = parseFloat(res.headers.get("X-Frame-Time"));
  const url = URL.createObjectURL(await res.blob());
  $("#live-image").src = url;
  if (state.liveUrl) URL.revokeObjectURL(state.liveUrl);
  state.liveUrl = url;
  $("#live-name").textContent = s.name;
  $("#live-time").textContent = isNaN(t) ? "" : `frame of ${when(t)}`;
}

// -- upload ---------------------------------------------------------------------------------------
async function upload(ev) {
  ev.preventDefault();
  const file = $("#upload-file").files[0];
  if (!file) return;
  const body = new FormData();
  body.append("file", file);
  $("#upload-status").textContent = "analysing…";
  try {
    const reply = await api("/v1/analyze?annotate=true", { method: "POST", body });
    const res = await reply.json();
    $("#upload-image").src = res.annotated;
    $("#upload-result").hidden = false;
    const table = $("#upload-faces");
    header(table, ["#", ...state.tasks.map((t) => t.name), "box"]);
    table.tBodies[0].replaceChildren(...res.faces.map((f, i) => {
      const tr = document.createElement("tr");
      cell(tr, i + 1, "num");
      for (const t of state.tasks) cell(tr, answer(f, t));
      cell(tr, f.box ? f.box.map(Math.round).join(", ") : "");
      return tr;
    }));
    const notes = {  // X-Facemtl-Stored: what the server did with the faces (see the README)
      no: state.readOnly ? " (not stored: this server's database is read-only)" : " (not stored)",
      kept: " (not stored yet: the database does not answer; the server keeps it in memory and writes it when "
        + "the database answers, unless the server stops first)",
      refused: " (not stored: the database refused it; the server log says why)",
    };
    const note = notes[reply.headers.get("X-Facemtl-Stored")] || "";
    $("#upload-status").textContent = `${res.faces.length} face${res.faces.length === 1 ? "" : "s"} in ${res.file}${note}`;
    refreshResults().catch((e) => say(e.message, true));
  } catch (e) {
    $("#upload-status").textContent = "";
    say(e.message, true);
  }
}

// -- wiring -----------------------------------------------------------------------------------------
async function refresh() {
  try {
    if (state.tab === "results") await refreshResults();
    if (state.tab === "charts") await refreshCharts();
    if (state.tab === "sources") { await refreshSources(); await refreshLive(); }
    say("");
  } catch (e) { say(e.message, true); }
}

function showTab(name) {
  state.tab = name;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== "tab-" + name;
  $("#filters").hidden = name === "upload" || name === "sources";
  refresh();
}

function schedule() {
  clearInterval(state.timer);
  if ($("#live").checked) state.timer = setInterval(() => {
    // a page reader scrolled to older rows keeps them until they ask again
    if (state.tab === "results" && (state.faces.paged || state.tracks.paged)) return;
    refresh();
  }, state.tab === "sources" ? 1000 : 3000);
}

async function start() {
  try {
    const version = await getJson("/v1/version");
    if (version.model) $("#model").textContent = `model ${version.model.name} ${version.model.version}`;
    state.readOnly = version.database.access === "read-only";
    state.tasks = await getJson("/v1/tasks");
    buildFilters();
    header($("#faces"), ["", "time", "source", "track", "file / frame", ...state.tasks.map((t) => t.name), "score", "model"]);
    header($("#tracks"), ["source", "track", "", "first seen", "last seen", "frames", ...state.tasks.map((t) => t.name), "conf."]);
    await refreshSources();
    await refresh();
    document.body.dataset.ready = "1";
  } catch (e) { say(e.message, true); }
}

document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => { showTab(b.dataset.tab); schedule(); }));
$("#filters").addEventListener("submit", (ev) => { ev.preventDefault(); state.faces.paged = state.tracks.paged = false; refresh(); });
$("#filters").addEventListener("reset", () => setTimeout(() => { state.faces.paged = state.tracks.paged = false; refresh(); }, 0));
$("#faces-more").addEventListener("click", () => { state.faces.paged = true; loadTable("faces", true).catch((e) => say(e.message, true)); });
$("#tracks-more").addEventListener("click", () => { state.tracks.paged = true; loadTable("tracks", true).catch((e) => say(e.message, true)); });
$("#stats-of").addEventListener("change", refresh);
$("#upload-form").addEventListener("submit", upload);
$("#live").addEventListener("change", schedule);
$("#token-button").addEventListener("click", () => { $("#token-box").hidden = !$("#token-box").hidden; });
$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("facemtl-token", state.token);
  $("#token-box").hidden = true;
  start();
});
start();
schedule();
