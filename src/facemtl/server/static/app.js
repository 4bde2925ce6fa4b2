// facemtl operator page: plain script, no library, no network beyond this server.
// Reads /v1/tasks once and builds its filters and columns from the model's tasks.
"use strict";

const state = { tasks: [], token: sessionStorage.getItem("facemtl-token") || "", tab: "results",
                faces: { next: null }, tracks: { next: null }, liveSource: null, liveUrl: null, timer: null,
                filters: "",      // the query of the filters last applied (Apply, Clear), not of the form as typed
                colours: {},      // per task, its groups in the order of their colours (see colour())
                ready: false, starting: false, retry: false,  // start(): done, under way, to try again
                sticky: false };  // the message is about a user's action: it stays until their next one
const $ = (sel) => document.querySelector(sel);
// each at least 3:1 against white (graphics' contrast), red and green never side by side; segments
// are also parted by a white line, so neighbours read apart without their colour
const PALETTE = ["#1f6feb", "#bc4c00", "#8250df", "#0e7490", "#cf222e", "#9a6700", "#bf3989", "#1a7f37",
                 "#57606a", "#0550ae", "#953800", "#6e40c9"];

// -- talking to the API ------------------------------------------------------------------
// An error to show, with the HTTP status that caused it (0: the server did not answer).
function failure(text, status) {
  const e = new Error(text);
  e.status = status;
  return e;
}
const refused = (e) => e.status === 400 || e.status === 422;  // the server refuses the query (its filters)

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  let res;
  try {
    res = await fetch(path, Object.assign({}, options, { headers }));
  } catch (e) {  // the browser says only "Failed to fetch"; the live-updates timer tries again
    throw failure("the server does not answer (stopped?)" + ($("#live").checked ? "; retrying" : ""), 0);
  }
  if (!res.ok) {
    let detail = res.statusText;
    try { const body = await res.json(); detail = typeof body.detail === "string" ? body.detail :
          body.detail.map((d) => (d.loc || []).slice(1).join(".") + ": " + d.msg).join("; "); } catch (e) { /* not JSON */ }
    if (res.status === 401) {
      // the keyboard's focus moves to the field only while the page starts (its first load, a token
      // just entered): a timer's refresh must not pull it from wherever the user is
      if ($("#token-box").hidden || state.tokenEntered) openToken(!state.ready || state.tokenEntered);
      state.tokenEntered = false;
      // no token yet: where to enter it; a token the server refuses: its words ("wrong API token")
      detail = state.token ? `${detail}: enter the right one above` : "this server wants its API token: enter it above";
    }
    throw failure(detail, res.status);
  }
  return res;
}
const getJson = async (path) => (await api(path)).json();

// the token's box, with the keyboard's focus where the token is typed
function openToken(focus = true) {
  $("#token-box").hidden = false;
  $("#token-button").setAttribute("aria-expanded", "true");
  if (focus) $("#token").focus();
}
function closeToken() {
  $("#token-box").hidden = true;
  $("#token-button").setAttribute("aria-expanded", "false");
}

// One message at a time. A refresh's message goes with the next refresh that works; a sticky one
// (about the user's own action, e.g. an upload refused) stays until the user's next action.
function say(text, error = false, sticky = false) {
  const m = $("#message");
  state.sticky = Boolean(text) && sticky;
  if (m.textContent === (text || "") && m.classList.contains("error") === Boolean(error) && m.hidden === !text) return;
  m.hidden = !text;
  m.textContent = text || "";
  m.classList.toggle("error", error);
}

// -- formatting -----------------------------------------------------------------------------
const pad = (n) => String(n).padStart(2, "0");
// times are shown in the browser's zone, and said so; each time cell's tooltip gives it with its own
// offset (a summer row's differs from a winter one's), as "db export --since" takes it
function offset(d) {
  const m = -d.getTimezoneOffset();
  return `${m >= 0 ? "+" : "-"}${pad(Math.floor(Math.abs(m) / 60))}:${pad(Math.abs(m) % 60)}`;
}
function isoLocal(t) {
  const d = new Date(t * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${offset(d)}`;
}
function timeCell(tr, t) {
  const td = cell(tr, when(t));
  if (t !== null && t !== undefined) td.title = isoLocal(t);
  return td;
}
// "12 s ago", "5 min ago", "3 h ago", "2 days ago"
function ago(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}
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
  const level = rec[task.name + "_level"];  // a named rank: "moderate (2, 1–3)"
  if (level) return `${level} (${Math.round(v)}` + (iv ? `, ${iv[0]}–${iv[1]})` : ")");
  return `${Math.round(v)}` + (iv ? ` (${iv[0]}–${iv[1]})` : "");
}
function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
// names: a column's heading, { hidden: "…" } for a column that needs none on screen (screen readers get
// it), or { name, title } for one whose heading needs a word of explanation (its tooltip)
function header(table, names) {
  const tr = document.createElement("tr");
  for (const n of names) {
    const th = document.createElement("th");
    th.scope = "col";
    if (typeof n === "string") th.textContent = n;
    else if (n.hidden) { const s = document.createElement("span"); s.className = "visually-hidden"; s.textContent = n.hidden; th.appendChild(s); }
    else { th.textContent = n.name; th.title = n.title; }
    tr.appendChild(th);
  }
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
    } else if (t.levels) {  // a named scale: its levels to pick from (the API takes their names)
      for (const [param, word] of [[t.filters[0], "min"], [t.filters[1], "max"]]) {
        const select = document.createElement("select");
        select.name = param;
        select.append(new Option(`(any ${word})`, ""), ...t.levels.map((l) => new Option(l, l)));
        select.setAttribute("aria-label", `${t.name} ${word}`);
        fs.appendChild(select);
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

// The tables and the charts show the filters last applied: the live-updates timer must not query
// half-typed values, nor values the form's own checks would refuse (Apply runs those checks).
function applyFilters() {
  state.filters = filterParams().toString();
  // the filters applied live in the address too: a view can be bookmarked, shared and reloaded
  history.replaceState(null, "", state.filters ? `?${state.filters}` : location.pathname);
  refresh();
}

// a filter's input set to `value`; a level's select box also takes the level's rank or another
// case of its name (an address written by hand, or by a script: the API takes both)
function setValue(input, value) {
  if (input.tagName === "SELECT" && value !== "") {
    const options = [...input.options].slice(1);
    const named = options.find((o) => o.value.toLowerCase() === value.toLowerCase());
    const ranked = /^\d+$/.test(value) ? options[Number(value)] : undefined;
    value = (named || ranked || { value: "" }).value;
  }
  input.value = value;
}

// the task filters' inputs as `params` say (of the tasks the page has)
function setTaskInputs(params) {
  const form = $("#filters");
  for (const t of state.tasks) {
    for (const param of t.filters) {
      const values = params.getAll(param);
      for (const input of form.querySelectorAll(`[name="${CSS.escape(param)}"]`)) {
        if (input.type === "checkbox") input.checked = values.includes(input.value);
        else setValue(input, values.length ? values[0] : "");
      }
    }
  }
}

// the form as the address's filters say (a bookmark, a shared link, a reload): times in the
// address are UTC (ISO 8601), the form's are the browser's
function formFromUrl() {
  const form = $("#filters");
  const localTime = (iso) => {
    const d = new Date(iso);
    return isNaN(d) ? "" : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  };
  const unread = [];
  for (const [name, value] of new URLSearchParams(location.search)) {
    if (name === "since" || name === "until") {
      form.elements[name].value = localTime(value);
      if (!form.elements[name].value) unread.push(`${name}=${value}`);
    } else if (name === "source") {
      const select = form.elements.source;
      if (![...select.options].some((o) => o.value === value)) select.appendChild(new Option(value, value));
      select.value = value;
    } else if (name === "session") {
      form.elements.session.value = value;
    } else {
      for (const input of form.querySelectorAll(`[name="${CSS.escape(name)}"]`)) {
        if (input.type === "checkbox") { if (input.value === value) input.checked = true; } else setValue(input, value);
      }
    }
  }
  state.filters = filterParams().toString();
  // (a user test: ?since=garbage showed every time without a word)
  if (unread.length) say(`The address's ${unread.join(" and ")} is no time (e.g. 2026-11-28T09:00:00Z); every time is shown.`, true, true);
}

// -- tables -------------------------------------------------------------------------------------
// A face's thumbnail never changes: each is fetched once and kept, so the refresh timer rebuilding
// the rows costs no request. The cache keeps the THUMBS used last (a Map keeps insertion order:
// oldest first) and revokes the object URL of one it drops, so a long-open page does not grow.
const THUMBS = 300;
const thumbs = new Map();  // face id -> Promise of an object URL, or of null where the face has none

function thumbUrl(id) {
  let url = thumbs.get(id);
  if (url !== undefined) {
    thumbs.delete(id);  // used again: it moves to the newest end
  } else {
    url = api(`/v1/faces/${id}/thumbnail.jpg`).then((res) => res.blob()).then((blob) => URL.createObjectURL(blob),
      (e) => {  // 404: the face has no thumbnail, keep that; any other failure is tried again next time
        if (e.status !== 404 && thumbs.get(id) === url) thumbs.delete(id);
        return null;
      });
  }
  thumbs.set(id, url);
  while (thumbs.size > THUMBS) {
    const [oldest, old] = thumbs.entries().next().value;
    thumbs.delete(oldest);
    old.then((u) => { if (u) URL.revokeObjectURL(u); });
  }
  return url;
}

async function thumbnail(td, id) {
  const url = await thumbUrl(id);
  if (!url) { td.textContent = "–"; return; }
  const img = document.createElement("img");
  img.className = "thumb"; img.alt = `face ${id}`; img.src = url;
  td.replaceChildren(img);
}

function faceRow(f) {
  const tr = document.createElement("tr");
  tr.dataset.face = f.id;
  const td = cell(tr, "");
  if (f.thumbnail) thumbnail(td, f.id);
  timeCell(tr, f.time);
  cell(tr, f.source);
  trackCell(tr, f.track_id, f.track, f.source);
  cell(tr, f.file !== null ? f.file : f.frame !== null ? `frame ${f.frame}` : "");
  for (const t of state.tasks) cell(tr, answer(f, t)).dataset.task = t.name;
  cell(tr, f.score === null ? "" : f.score.toFixed(2), "num");
  cell(tr, f.model_name ? `${f.model_name} ${f.model_version || ""}` : "");
  return tr;
}

// a track's number as a button that shows its faces (the API's track filter takes the track's id:
// the number the stream gave it repeats across sources and sessions)
function trackCell(tr, id, number, source) {
  const td = cell(tr, "", "num");
  if (id === null || id === undefined) return td;
  const b = document.createElement("button");
  b.type = "button"; b.className = "link"; b.textContent = String(number);
  b.title = `track id ${id}`;
  b.setAttribute("aria-label", `faces of track ${number} of ${source}`);
  b.addEventListener("click", () => showTrack({ id, number, source }));
  td.appendChild(b);
  return td;
}

function showTrack(track) {
  state.track = track;
  $("#track-filter").hidden = !track;
  $("#track-filter-name").textContent = track
    ? `of track ${track.number} of ${track.source} (id ${track.id}), all of them, whatever the filters` : "";
  state.faces.paged = false;
  loadTable("faces").catch((e) => say(e.message, true));
}

function trackRow(t) {
  const tr = document.createElement("tr");
  tr.dataset.track = t.id;
  cell(tr, t.source);
  trackCell(tr, t.id, t.track, t.source);
  cell(tr, t.closed ? "ended" : "open");
  timeCell(tr, t.started);
  timeCell(tr, t.ended);
  cell(tr, t.frames, "num");
  for (const task of state.tasks) cell(tr, answer(t, task)).dataset.task = task.name;
  cell(tr, t.confidence === null ? "" : t.confidence.toFixed(2), "num");
  return tr;
}

// The latest request per table or chart: an answer to an earlier one that lands later (a timer
// refresh asked with the filters before Apply) is dropped instead of replacing the newer answer.
const latest = {};
function ticket(what) { latest[what] = (latest[what] || 0) + 1; return latest[what]; }
function stale(what, t) { return latest[what] !== t; }

async function loadTable(kind, more = false) {
  const table = $("#" + kind);
  // a track's faces are all of them (the README: "a track's number shows that track's faces"): the
  // filters chose the track; applied to its faces too, they showed 16 of a track's 88 with no word
  // of the rest (a user test)
  const track = kind === "faces" && state.track;
  const p = track ? new URLSearchParams({ track: String(state.track.id) }) : new URLSearchParams(state.filters);
  p.set("limit", "50");
  if (more && state[kind].next) p.set("cursor", state[kind].next);
  // older rows ("Older faces") pause this table's live updates (see tick()); its first page resumes them
  if (!more) state[kind].paged = false;
  const t = ticket(kind);
  let page;
  try {
    page = await getJson(`/v1/${kind}?${p}`);
  } catch (e) {
    if (stale(kind, t)) return false;  // a newer request answers for this table
    if (refused(e)) {  // rows of the filters before would pass for answers to these ones: none instead
      table.tBodies[0].replaceChildren();
      state[kind].next = null;
      $(`#${kind}-more`).hidden = true;
      $(`#${kind}-count`).textContent = "(none: the filters were refused)";
    }
    throw e;
  }
  if (stale(kind, t)) return false;
  const rows = page.items.map(kind === "faces" ? faceRow : trackRow);
  // rebuilt every 3 s: a keyboard user's focus on a row's track button stays on that row's new one
  const focused = document.activeElement && document.activeElement.closest(`#${kind} tbody tr`);
  const key = kind === "faces" ? "face" : "track";
  const again = focused ? focused.dataset[key] : null;
  if (more) table.tBodies[0].append(...rows); else table.tBodies[0].replaceChildren(...rows);
  if (again !== null && again !== undefined) {
    const b = table.querySelector(`tbody tr[data-${key}="${CSS.escape(again)}"] button`);
    if (b) b.focus();
  }
  state[kind].updated = Date.now();
  table.closest(".scroll").classList.remove("stale");
  state[kind].next = page.next;
  $(`#${kind}-more`).hidden = !page.next;
  $(`#${kind}-latest`).hidden = !state[kind].paged;
  const n = table.tBodies[0].rows.length;
  $(`#${kind}-count`).textContent = n === 0 && !more
    ? (track ? "(none: deleted since)" : new URLSearchParams(state.filters).toString()
      ? "(none match the filters)" : "(none yet: nothing is stored)")
    : `(${n}${page.next ? "+" : ""} shown` + (more ? "; live updates paused on older rows" : "") + ")";
  return true;
}

// true when both answers were shown (false: a newer request overtook one of them); the timer
// (fromTimer) leaves a table a reader paged to older rows as it is, and keeps the other live
async function refreshResults(fromTimer = false) {
  const kinds = ["faces", "tracks"].filter((k) => !(fromTimer && state[k].paged));
  const done = await Promise.allSettled(kinds.map((k) => loadTable(k)));
  // rows left from the last refresh that worked must not pass for current ones (that table's only)
  done.forEach((d, i) => {
    const k = kinds[i];
    if (d.status !== "rejected" || !state[k].updated || refused(d.reason)) return;
    $(`#${k}-count`).textContent = `(not updated since ${new Date(state[k].updated).toLocaleTimeString()})`;
    $(`#${k}`).closest(".scroll").classList.add("stale");
  });
  const failed = done.find((d) => d.status === "rejected");
  if (failed) throw failed.reason;
  return done.every((d) => d.value);
}

// -- charts: stacked bars per time bucket, one chart per task, drawn as SVG --------------------
const SVG = "http://www.w3.org/2000/svg";
function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

// A group keeps its colour from view to view and from load to load, whichever groups a view has: its
// index in the task's groups (/v1/tasks: its classes, or bands such as age's "20-39"); a group
// outside them takes the next colours in the order this page first met it.
function colour(task, group) {
  if (!state.colours[task]) {
    const t = state.tasks.find((x) => x.name === task) || {};
    state.colours[task] = [...(t.groups || t.classes || [])];
  }
  const order = state.colours[task];
  if (!order.includes(group)) order.push(group);
  return PALETTE[order.indexOf(group) % PALETTE.length];
}

function drawChart(task, counts, bucket, since, until) {
  const W = 800, H = 220, L = 44, B = 26, T = 8;
  const div = document.createElement("div");
  div.className = "chart";
  div.dataset.task = task;
  const h3 = document.createElement("h3");
  const of = $("#stats-of").value === "tracks" ? "ended tracks" : "faces";
  const per = bucket % 3600 === 0 ? `${bucket / 3600} h` : bucket % 60 === 0 ? `${bucket / 60} min` : `${bucket} s`;
  h3.textContent = task;
  const unit = document.createElement("span");
  unit.className = "muted";
  unit.textContent = ` ${of} per ${per}`;
  h3.appendChild(unit);
  div.appendChild(h3);
  const totalOf = (g) => counts.buckets.reduce((a, b) => a + (b.counts[g] || 0), 0);
  const summary = counts.groups.map((g) => `${g} ${totalOf(g)}`).join(", ");
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
                             "aria-label": `${task}: ${of} per ${per} over time; in all ${summary}` });
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
  for (const b of counts.buckets) {
    const i = Math.round((b.start - first) / bucket);
    let base = 0;
    for (const g of counts.groups) {
      const c = b.counts[g] || 0;
      if (!c) continue;
      const rect = svgEl("rect", { x: L + 2 + i * bw, y: y(base + c), width: Math.max(1, bw - 1),
                                   height: y(base) - y(base + c), fill: colour(task, g), stroke: "#fff",
                                   "stroke-width": 1 });
      const tip = svgEl("title", {});
      tip.textContent = `${when(b.start)}: ${g} ${c}`;
      rect.appendChild(tip);
      svg.appendChild(rect);
      base += c;
    }
  }
  // the first label starts and the last ends at its bucket: centred, the last one ran past the right edge
  for (const [t, anchor] of [[first, "start"], [first + (n / 2) * bucket, "middle"], [first + n * bucket, "end"]]) {
    const label = svgEl("text", { x: L + 2 + ((t - first) / bucket) * bw, y: H - 8, "text-anchor": anchor });
    label.textContent = when(t).slice(5, 16);
    svg.appendChild(label);
  }
  div.appendChild(svg);
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const g of counts.groups) {
    const s = document.createElement("span");
    s.style.setProperty("--c", colour(task, g));
    s.dataset.group = g;
    s.textContent = `${g}: ${totalOf(g)}`;
    legend.appendChild(s);
  }
  div.appendChild(legend);
  return div;
}

async function refreshCharts() {
  const p = new URLSearchParams(state.filters);  // the answer filters too: the charts count what the tables list
  p.set("of", $("#stats-of").value);
  const box = $("#charts");
  const t = ticket("charts");
  let stats;
  try {
    stats = await getJson(`/v1/stats?${p}`);
  } catch (e) {
    if (stale("charts", t)) return false;  // a newer request answers for the charts
    if (refused(e)) box.replaceChildren();  // not the counts of the filters before, under the error
    throw e;
  }
  if (stale("charts", t)) return false;
  const charts = Object.entries(stats.tasks).map(([task, c]) => drawChart(task, c, stats.bucket, stats.since, stats.until));
  if (!charts.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "Nothing counted in this time range.";
    charts.push(p);
  }
  box.replaceChildren(...charts);
  // a narrow window scrolls a chart sideways: show its latest end, where the newest counts are
  for (const c of box.querySelectorAll(".chart")) c.scrollLeft = c.scrollWidth;
  return true;
}

// -- sources and the live view ------------------------------------------------------------------
async function refreshSources() {
  const sources = await getJson("/v1/sources");
  const select = $("#filters").elements.source;
  const chosen = select.value;
  const named = sources.map((s) => s.name);
  // a source the address names that is not there (yet) stays chosen, as it is applied
  if (chosen && !named.includes(chosen)) named.push(chosen);
  select.replaceChildren(new Option("any", ""), ...named.map((name) => {
    const o = new Option(name, name);
    o.title = name;  // the select is narrower than a long name
    return o;
  }));
  select.value = chosen;
  const rows = sources.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.source = s.id;
    cell(tr, s.name);
    cell(tr, s.kind);
    const st = cell(tr, "");
    const badge = document.createElement("span");
    badge.className = "state " + s.state; badge.textContent = s.state;
    if (s.state === "silent") {  // (a writer gone for good stays silent until an admin ends its session)
      badge.title = "its writer missed three heartbeats: cut off, or stopped without saying so; one gone for "
        + `good is ended with: facemtl db end --source ${s.name}`;
    }
    st.appendChild(badge);
    cell(tr, s.seconds_since_seen === null ? "" : ago(s.seconds_since_seen));
    cell(tr, s.fps === null ? "" : s.fps.toFixed(1), "num");
    cell(tr, s.host);
    const td = cell(tr, "");
    if (s.snapshot_time !== null) {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = "watch";
      b.setAttribute("aria-label", `watch ${s.name}`);
      b.addEventListener("click", () => { state.liveSource = s; $("#live-view").hidden = false; refreshLive(); });
      td.appendChild(b);
    }
    return tr;
  });
  // rebuilt every second: a keyboard user's focus on a "watch" button stays on that source's new one
  const focused = document.activeElement && document.activeElement.closest("#sources tr");
  const again = focused ? focused.dataset.source : null;
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(tr, "No source has reported yet: start one with facemtl stream SOURCE --db (or analyze --db).");
    td.colSpan = 7;
    rows.push(tr);
  }
  $("#sources").tBodies[0].replaceChildren(...rows);
  if (state.liveSource) state.liveSource = sources.find((x) => x.id === state.liveSource.id) || state.liveSource;
  if (again !== null) {
    const b = $("#sources").querySelector(`tr[data-source="${CSS.escape(again)}"] button`);
    if (b) b.focus();
  }
}

async function refreshLive() {
  const s = state.liveSource;
  if (!s) return;
  let res;
  try {
    res = await api(`/v1/sources/${s.id}/snapshot.jpg`);
  } catch (e) {
    if (state.liveSource !== s) return;  // another source was chosen meanwhile: its own request answers
    if (e.status !== 404) throw e;
    // the frame is gone (erased, purged, or the source with it): not left on screen, nor asked for again
    state.liveSource = null;
    $("#live-view").hidden = true;
    $("#live-image").removeAttribute("src");
    if (state.liveUrl) URL.revokeObjectURL(state.liveUrl);
    state.liveUrl = null;
    return;
  }
  const t = parseFloat(res.headers.get("X-Frame-Time"));
  const blob = await res.blob();
  if (state.liveSource !== s) return;  // another source was chosen meanwhile
  const url = URL.createObjectURL(blob);
  $("#live-image").src = url;
  if (state.liveUrl) URL.revokeObjectURL(state.liveUrl);
  state.liveUrl = url;
  $("#live-title").textContent = s.state === "running" ? "Live:" : `Last frame (${s.state}):`;
  $("#live-name").textContent = s.name;
  $("#live-time").textContent = isNaN(t) ? "" : `frame of ${when(t)}`;
}

// -- upload ---------------------------------------------------------------------------------------
function clearUpload() {
  $("#upload-result").hidden = true;
  $("#upload-image").removeAttribute("src");
  $("#upload-faces").tBodies[0].replaceChildren();
}

async function upload(ev) {
  ev.preventDefault();
  const file = $("#upload-file").files[0];
  if (!file) return;
  const body = new FormData();
  body.append("file", file);
  clearUpload();  // the last photo's result must not stay on screen as if it were this one's
  $("#upload-status").textContent = "analysing…";
  try {
    const reply = await api("/v1/analyze?annotate=true", { method: "POST", body });
    const res = await reply.json();
    $("#upload-image").src = res.annotated;
    $("#upload-result").hidden = false;
    const table = $("#upload-faces");
    // the tasks this server's model answers: the database's other models' tasks (state.tasks holds them
    // all) would be columns left empty
    const tasks = state.tasks.filter((t) => res.faces.some((f) => f[t.name] !== undefined && f[t.name] !== null));
    header(table, ["#", ...tasks.map((t) => t.name), { name: "box (x1, y1, x2, y2 px)",
                   title: "the face's box in the photo's pixels: left, top, right, bottom" }]);
    table.tBodies[0].replaceChildren(...res.faces.map((f, i) => {
      const tr = document.createElement("tr");
      cell(tr, i + 1, "num");
      for (const t of tasks) cell(tr, answer(f, t));
      cell(tr, f.box ? f.box.map(Math.round).join(", ") : "");
      return tr;
    }));
    if (!res.faces.length) {
      const tr = document.createElement("tr");
      cell(tr, "No face found in this photo.").colSpan = tasks.length + 2;
      table.tBodies[0].replaceChildren(tr);
    }
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
    $("#upload-status").textContent = `${file.name}: not analysed`;
    // sticky: the refresh timer must not wipe it before it is read (nor retry an upload, as the text would say)
    say(e.status === 0 ? "the server does not answer (stopped?): try again when it does" : e.message, true, true);
  }
}

// -- wiring -----------------------------------------------------------------------------------------
async function refresh(fromTimer = false) {
  try {
    let shown = true;  // false: a newer request overtook this one, and its message stands
    if (state.tab === "results") shown = await refreshResults(fromTimer);
    if (state.tab === "charts") shown = await refreshCharts();
    if (state.tab === "sources") { await refreshSources(); await refreshLive(); }
    if (shown && !state.sticky) say("");
  } catch (e) { say(e.message, true); }
}

function showTab(name) {
  state.tab = name;
  for (const b of document.querySelectorAll("#tabs button")) {
    b.classList.toggle("active", b.dataset.tab === name);
    b.setAttribute("aria-selected", String(b.dataset.tab === name));
  }
  for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== "tab-" + name;
  $("#filters").hidden = name === "upload" || name === "sources";
  refresh();
}

async function tick() {
  // not started: try again if the server did not answer (or failed); a token to enter waits for the user
  if (!state.ready) { if (state.retry) { await start(); refreshed(); } return; }
  state.ticks = (state.ticks || 0) + 1;
  if (state.ticks % 5 === 0) { try { await lookAround(); } catch (e) { /* refresh() below says why */ } }
  await refresh(true);  // a table paged to older rows keeps them until its reader asks again
  refreshed();
}
// the timer's refreshes so far, done or failed: tests wait on it to know one has run (a fixed wait may not see one)
function refreshed() { document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1); }

function schedule() {
  clearInterval(state.timer);
  if ($("#live").checked) state.timer = setInterval(tick, state.tab === "sources" ? 1000 : 3000);
}

// the filters and columns of the tasks in state.tasks (keep: the filters applied stay as they are)
function useTasks(keep = false) {
  buildFilters();
  if (!keep) state.filters = filterParams().toString();
  header($("#faces"), [{ hidden: "thumbnail" }, "time (local)", "source", "track", "file / frame",
                       ...state.tasks.map((t) => t.name),
                       { name: "score", title: "the face detector's score, on its own scale (empty: the face was "
                         + "tracked between detections, or given as an aligned crop)" }, "model"]);
  header($("#tracks"), ["source", "track", { hidden: "state" }, "first seen (local)", "last seen (local)",
                        "frames", ...state.tasks.map((t) => t.name),
                        { name: "conf.", title: "confidence 0-1: how well the track's faces agree on its answers" }]);
}

// every few refreshes: tasks a writer recorded since the page was opened (a server started before its
// cameras learns them), and the sources for the filter (the Sources tab refreshes them every second)
async function lookAround() {
  const tasks = await getJson("/v1/tasks");
  if (tasks.map((t) => t.name).join() !== state.tasks.map((t) => t.name).join()) {
    state.tasks = tasks;
    state.colours = {};
    useTasks(true);
    // the task filters as applied, plus those the address asked for before their task was known
    // (/?gender=female on an empty database); the other fields as applied, never as half-typed
    const asked = new URLSearchParams(location.search), applied = new URLSearchParams(state.filters);
    const names = new Set(tasks.flatMap((t) => t.filters));
    for (const [k, v] of applied) if (names.has(k)) asked.append(k, v);
    setTaskInputs(asked);
    const p = new URLSearchParams();
    for (const [k, v] of applied) if (!names.has(k)) p.append(k, v);
    for (const [k, v] of filterParams()) if (names.has(k)) p.append(k, v);
    state.filters = p.toString();
  }
  if (state.tab !== "sources") await refreshSources();
}

async function start() {
  if (state.starting) return;  // the timer's retry while one is under way
  state.starting = true;
  state.retry = false;
  try {
    const version = await getJson("/v1/version");
    if (version.model) $("#model").textContent = `model ${version.model.name} ${version.model.version}`;
    state.readOnly = version.database.access === "read-only";
    state.tasks = await getJson("/v1/tasks");
    state.colours = {};
    useTasks();
    await refreshSources();
    formFromUrl();
    await refresh();
    state.ready = true;
    state.tokenEntered = false;  // taken: a later 401 (the server's token changed) does not pull the focus
    document.body.dataset.ready = "1";
  } catch (e) {
    state.retry = !(e.status >= 400 && e.status < 500);  // no answer or a server error: the timer tries again
    say(e.message, true);
  } finally {
    state.starting = false;
  }
}

// the user's next action (a button, a changed field, a form sent) ends a sticky message
function unstick() { if (state.sticky) say(""); }
document.addEventListener("click", (ev) => { if (ev.target.closest("button")) unstick(); }, true);
document.addEventListener("change", unstick, true);
document.addEventListener("submit", unstick, true);

document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => { showTab(b.dataset.tab); schedule(); }));
$("#tabs").addEventListener("keydown", (ev) => {  // the arrow keys move along the tabs, as in any tab list
  const tabs = [...document.querySelectorAll("#tabs button")];
  const i = tabs.indexOf(document.activeElement);
  if (i < 0 || (ev.key !== "ArrowLeft" && ev.key !== "ArrowRight")) return;
  const next = tabs[(i + (ev.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
  next.focus();
  next.click();
});
$("#filters").addEventListener("submit", (ev) => { ev.preventDefault(); applyFilters(); });
$("#filters").addEventListener("reset", () => setTimeout(applyFilters, 0));  // after the form has cleared
$("#faces-more").addEventListener("click", () => { state.faces.paged = true; loadTable("faces", true).catch((e) => say(e.message, true)); });
$("#tracks-more").addEventListener("click", () => { state.tracks.paged = true; loadTable("tracks", true).catch((e) => say(e.message, true)); });
for (const kind of ["faces", "tracks"]) {
  $(`#${kind}-latest`).addEventListener("click", () => {
    loadTable(kind).catch((e) => say(e.message, true));
    $(`#${kind}-heading`).focus();  // the button pressed hides itself
  });
}
$("#stats-of").addEventListener("change", refresh);
$("#track-filter-clear").addEventListener("click", () => { showTrack(null); $("#faces-heading").focus(); });
$("#upload-form").addEventListener("submit", upload);
$("#live").addEventListener("change", schedule);
$("#token-button").addEventListener("click", () => { if ($("#token-box").hidden) openToken(); else closeToken(); });
$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("facemtl-token", state.token);
  state.tokenEntered = true;  // a 401 for it moves the focus back to the field
  closeToken();
  $(`#tab-button-${state.tab}`).focus();
  start();
});
start();
schedule();
