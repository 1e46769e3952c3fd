// Agent Lightning dashboard: plain JavaScript, no build step, no dependency.
// Everything shown comes from agents and is untrusted: the DOM is built with createElement and
// textContent only (never innerHTML), so a span holding "<script>" is shown as text.
"use strict";

const API = "/v1/agl";
const POLL_MS = 2000;
const STATUSES = ["queuing", "preparing", "running", "succeeded", "failed", "cancelled", "requeuing"];
const COLORS = {
  queuing: "#9aa3b5", requeuing: "#c49a2a", preparing: "#7fb0e8", running: "#3563e9",
  succeeded: "#2e9d5b", failed: "#d64545", cancelled: "#6b7385",
};
const SVG_NS = "http://www.w3.org/2000/svg";

// -- DOM helpers ----------------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "href") node.setAttribute("href", safeHref(value));
    else if (key === "style") node.style.cssText = value; // CSSOM: allowed by the page's CSP, a style attribute is not
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
function safeHref(value) { const text = String(value); return text.startsWith("#") ? text : "#"; }
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children.flat(Infinity)) if (child) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}
function badge(status) { return el("span", { class: "badge " + (STATUSES.includes(status) || ["idle", "busy"].includes(status) ? status : "") }, status || "-"); }
function fmtTime(t) { return t ? new Date(t * 1000).toLocaleString() : "-"; }
function fmtDur(s) {
  if (s === null || s === undefined || !isFinite(s)) return "-";
  return s < 1 ? (s * 1000).toFixed(1) + " ms" : s < 120 ? s.toFixed(2) + " s" : (s / 60).toFixed(1) + " min";
}
function fmtNum(x) { return x === null || x === undefined ? "-" : typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(3)) : String(x); }
function pretty(value) {
  if (typeof value === "string") {
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch (_) { return value; }
  }
  return JSON.stringify(value, null, 2);
}
// JSON with lists of numbers (token ids, logprobs) kept on one line.
function compactJSON(value) { return JSON.stringify(value, null, 2).replace(/\[[\s\d.,eE+-]*\]/g, (m) => m.replace(/\s+/g, " ")); }
function parseJSON(value) { if (typeof value !== "string") return value; try { return JSON.parse(value); } catch (_) { return null; } }
function rolloutLink(id) { return el("a", { href: "#/rollout/" + encodeURIComponent(id) }, id); }

// -- API with the token, ETags and one request per page per interval ------------------------------
const etags = new Map();
class Unauthorized extends Error {}

async function api(path, { poll = false } = {}) {
  const headers = {};
  const token = sessionStorage.getItem("agl-token");
  if (token) headers.Authorization = "Bearer " + token;
  if (poll && etags.has(path)) headers["If-None-Match"] = etags.get(path).etag;
  const response = await fetch(API + path, { headers, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized();
  if (response.status === 304) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || response.status + " " + response.statusText);
  const etag = response.headers.get("ETag");
  if (etag) etags.set(path, { etag });
  return body;
}

function showLogin(message) {
  const input = el("input", { type: "password", id: "token", placeholder: "token", autocomplete: "off", size: 40 });
  const form = el("form", { class: "login panel", onsubmit: (event) => {
    event.preventDefault();
    sessionStorage.setItem("agl-token", input.value);
    etags.clear();
    route();
  } },
  el("h1", {}, "Token required"),
  el("p", { class: "muted" }, message || "This store server requires a bearer token (its --token or AGL_STORE_TOKEN)."),
  input, " ", el("button", { type: "submit" }, "Open"));
  setMain(form);
  input.focus();
}

function setMain(...nodes) { document.getElementById("main").replaceChildren(...nodes); }

// -- charts (SVG) ---------------------------------------------------------------------------------
// Drawn in its own coordinates and scaled to the panel's width.
function chartRoot(width, height) {
  return svg("svg", { viewBox: `0 0 ${width} ${height + 20}`, width: "100%", class: "chart", role: "img" });
}

function stackedBars(series, width = 560, height = 180) {
  const statuses = STATUSES.filter((s) => series.started[s]);
  const n = statuses.length ? series.started[statuses[0]].length : 0;
  const totals = Array.from({ length: n }, (_, i) => statuses.reduce((sum, s) => sum + series.started[s][i], 0));
  const max = Math.max(1, ...totals);
  const bw = (width - 40) / Math.max(n, 1);
  const root = chartRoot(width, height);
  root.append(svg("text", { x: 0, y: 10 }, String(max)), svg("text", { x: 0, y: height }, "0"));
  for (let i = 0; i < n; i++) {
    let y = height;
    for (const s of statuses) {
      const h = (series.started[s][i] / max) * (height - 14);
      if (h > 0) {
        y -= h;
        root.append(svg("rect", { x: 40 + i * bw, y, width: Math.max(bw - 1, 1), height: h, fill: COLORS[s] },
          svg("title", {}, s + ": " + series.started[s][i])));
      }
    }
  }
  if (series.start) {
    root.append(svg("text", { x: 40, y: height + 14 }, new Date(series.start * 1000).toLocaleTimeString()));
    const end = series.start + series.bucket_seconds * n;
    root.append(svg("text", { x: width - 70, y: height + 14 }, new Date(end * 1000).toLocaleTimeString()));
  }
  const legend = el("div", { class: "legend" }, statuses.map((s) => el("span", {}, el("i", { style: "background:" + COLORS[s] }), s)));
  return el("div", {}, root, legend);
}

function lineChart(points, { width = 560, height = 180, color = "#3563e9", label = "" } = {}) {
  const root = chartRoot(width, height);
  if (!points.length) return el("p", { class: "muted" }, "No data yet.");
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y1 += 0.5; y0 -= 0.5; }
  const X = (x) => 46 + ((x - x0) / (x1 - x0)) * (width - 56);
  const Y = (y) => 6 + (1 - (y - y0) / (y1 - y0)) * (height - 12);
  root.append(svg("text", { x: 0, y: 12 }, fmtNum(y1)), svg("text", { x: 0, y: height }, fmtNum(y0)));
  root.append(svg("polyline", { fill: "none", stroke: color, "stroke-width": 1.5,
    points: points.map((p) => X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" ") }));
  if (points.length <= 400) for (const p of points) root.append(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2, fill: color }, svg("title", {}, fmtNum(p[1]))));
  if (label) root.append(svg("text", { x: 46, y: height + 14 }, label));
  return root;
}

function movingAverage(values, k = 10) {
  return values.map((_, i) => { const w = values.slice(Math.max(0, i - k + 1), i + 1); return w.reduce((a, b) => a + b, 0) / w.length; });
}

// -- pages ----------------------------------------------------------------------------------------
const pages = {};

pages.overview = async function (_params, poll) {
  const data = await api("/dashboard/overview", { poll });
  if (!data) return null;
  const stats = data.statistics || {};
  const byStatus = stats.rollouts_by_status || {};
  const card = (k, v) => el("div", { class: "card" }, el("div", { class: "v" }, fmtNum(v)), el("div", { class: "k" }, k));
  const rewards = data.rewards.map((r, i) => [i + 1, r[1]]);
  const avg = movingAverage(rewards.map((r) => r[1]));
  return [
    el("h1", {}, "Run overview"),
    el("div", { class: "cards" },
      card("rollouts", stats.total_rollouts), card("spans", stats.total_spans), card("workers", stats.total_workers),
      card("resources versions", stats.total_resources), card("finished in the last active minute", data.throughput_per_minute),
      STATUSES.filter((s) => byStatus[s]).map((s) => card(s, byStatus[s]))),
    el("div", { class: "grid" },
      el("div", { class: "panel" }, el("h2", {}, "Rollouts by status over time"),
        el("p", { class: "muted" }, `newest ${data.charted_rollouts} of ${data.total_rollouts} rollouts, by start time`),
        stackedBars(data.series)),
      el("div", { class: "panel" }, el("h2", {}, "Reward"),
        el("p", { class: "muted" }, `final reward of the newest ${rewards.length} succeeded rollouts, in finishing order (line: mean of 10)`),
        lineChart(rewards.map((r, i) => [r[0], avg[i]]), { label: "rollouts →" })),
      el("div", { class: "panel" }, el("h2", {}, "Throughput"),
        el("p", { class: "muted" }, "rollouts finished per time bucket"),
        lineChart(data.series.finished.map((v, i) => [i, v]), { color: "#2e9d5b", label: "time →" }))),
    el("h2", {}, "Recent failures"),
    data.failures.length ? rolloutTable(data.failures) : el("p", { class: "muted" }, "None."),
  ];
};

function rolloutTable(rows) {
  return el("table", { class: "rollouts" },
    el("thead", {}, el("tr", {}, ["rollout", "status", "mode", "resources", "input", "reward", "attempts", "started", "duration", "error"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", { "data-rollout": r.rollout_id },
      el("td", {}, rolloutLink(r.rollout_id)), el("td", {}, badge(r.status)), el("td", {}, r.mode || "-"),
      el("td", {}, r.resources_id || "-"), el("td", { class: "input", title: r.input_preview }, r.input_preview),
      el("td", {}, fmtNum(r.reward)), el("td", {}, r.attempts), el("td", {}, fmtTime(r.start_time)),
      el("td", {}, r.end_time ? fmtDur(r.end_time - r.start_time) : "-"), el("td", { class: "error-box" }, r.error || "")))));
}

pages.rollouts = async function (params, poll) {
  const query = new URLSearchParams();
  for (const key of ["status", "mode", "resources_id", "q", "sort_by", "sort_order", "offset"]) if (params.get(key)) query.set(key, params.get(key));
  query.set("limit", params.get("limit") || "50");
  const data = await api("/dashboard/rollouts?" + query, { poll });
  if (!data) return null;
  const go = (changes) => {
    const next = new URLSearchParams(params);
    for (const [k, v] of Object.entries(changes)) { if (v === "" || v === null) next.delete(k); else next.set(k, v); }
    location.hash = "#/rollouts?" + next;
  };
  const select = (name, options, label) => el("select", { name, "aria-label": label, onchange: (e) => go({ [name]: e.target.value, offset: "" }) },
    options.map(([value, text]) => el("option", { value, selected: (params.get(name) || "") === value }, text)));
  const search = el("input", { name: "q", type: "search", placeholder: "search the input…", value: params.get("q") || "" });
  const offset = data.offset, limit = data.limit;
  return [
    el("h1", {}, "Rollouts"),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); go({ q: search.value, offset: "" }); } },
      select("status", [["", "any status"], ...STATUSES.map((s) => [s, s])], "status"),
      select("mode", [["", "any mode"], ["train", "train"], ["val", "val"], ["test", "test"]], "mode"),
      select("resources_id", [["", "any resources"], ...data.resources_ids.map((r) => [r, r])], "resources"),
      search, el("button", { type: "submit" }, "Search"),
      select("sort_by", [["", "sort: start time"], ["end_time", "sort: end time"], ["status", "sort: status"], ["rollout_id", "sort: id"]], "sort by"),
      select("sort_order", [["", "newest first"], ["asc", "oldest first"]], "order")),
    rolloutTable(data.items),
    el("div", { class: "pager" },
      el("button", { id: "prev", disabled: offset <= 0, onclick: () => go({ offset: String(Math.max(0, offset - limit)) }) }, "‹ Previous"),
      el("span", { id: "page-info" }, data.total ? `${offset + 1}–${Math.min(offset + limit, data.total)} of ${data.total}` : "no rollouts"),
      el("button", { id: "next", disabled: offset + limit >= data.total, onclick: () => go({ offset: String(offset + limit) }) }, "Next ›")),
  ];
};

// -- one rollout ----------------------------------------------------------------------------------
const openSpans = new Set();
const loadedSpans = new Map(); // span id -> the span with long values cut, fetched on its first click
const fullSpans = new Map(); // span id -> the span in full ("Show in full")

function spanKind(span) {
  const a = span.attributes || {};
  const op = a["gen_ai.operation.name"];
  if (span.status && span.status.status_code === "ERROR" || span.name === "agentlightning.exception") return "error";
  if (span.name === "agentlightning.reward" || Object.keys(a).some((k) => k.startsWith("agentlightning.reward"))) return "reward";
  if (op === "execute_tool" || a["gen_ai.tool.name"]) return "tool";
  if (op === "chat" || op === "text_completion" || a["gen_ai.request.model"]) return "llm";
  return "";
}

function messageView(message) {
  const role = message.role || "?";
  let content = message.content;
  if (Array.isArray(content)) content = content.map((part) => (part && part.text !== undefined ? part.text : JSON.stringify(part))).join("\n");
  const calls = (message.tool_calls || []).map((call) => {
    const fn = call.function || {};
    return el("div", { class: "tool-call" }, el("b", {}, "tool call " + (fn.name || "?")), " ", el("span", { class: "muted" }, call.id || ""), el("pre", {}, pretty(fn.arguments ?? "")));
  });
  return el("div", { class: "msg " + role }, el("div", { class: "role" }, role + (message.name ? " · " + message.name : "") + (message.tool_call_id ? " · " + message.tool_call_id : "")),
    content !== null && content !== undefined && content !== "" ? el("pre", {}, typeof content === "string" ? content : JSON.stringify(content, null, 2)) : null, calls);
}

function tokenCount(span, key) {
  const ids = (span.attributes || {})[key];
  if (!Array.isArray(ids)) return undefined;
  const full = (span.agl_lengths || {})[key];
  return full ? `${full} (${ids.length} here)` : String(ids.length);
}

function spanDetail(span) {
  const a = span.attributes || {};
  const parts = [];
  const kv = (pairs) => el("div", { class: "kv" }, pairs.filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => [el("span", { class: "k" }, k), el("span", {}, fmtNum(v))]));
  parts.push(kv([["span", span.span_id], ["attempt", span.attempt_id], ["sequence", span.sequence_id], ["status", span.status && span.status.status_code],
    ["duration", fmtDur(span.end_time - span.start_time)], ["model", a["gen_ai.request.model"] || a["gen_ai.response.model"]],
    ["agent", a["gen_ai.agent.name"]], ["input tokens", a["gen_ai.usage.input_tokens"]], ["output tokens", a["gen_ai.usage.output_tokens"]],
    ["prompt token ids", tokenCount(span, "agentlightning.llm.prompt_token_ids")], ["response token ids", tokenCount(span, "agentlightning.llm.response_token_ids")],
    ["token ids source", a["agentlightning.llm.token_ids_source"]], ["reward", a["agentlightning.reward.0.value"] ?? a["agentlightning.reward"]]]));
  const request = parseJSON(a["agentlightning.llm.request"]);
  const response = parseJSON(a["agentlightning.llm.response"]);
  if (request && Array.isArray(request.messages)) parts.push(el("h2", {}, "Messages"), request.messages.map(messageView));
  else if (request && request.prompt !== undefined) parts.push(el("h2", {}, "Prompt"), el("pre", {}, String(request.prompt)));
  if (response && Array.isArray(response.choices)) {
    parts.push(el("h2", {}, "Response"), response.choices.map((c) => (c.message ? messageView(c.message) : el("pre", {}, String(c.text ?? "")))));
  }
  if (a["gen_ai.tool.name"]) {
    parts.push(el("h2", {}, "Tool " + a["gen_ai.tool.name"]), el("div", { class: "muted" }, "arguments"), el("pre", {}, pretty(a["gen_ai.tool.call.arguments"] ?? "")),
      el("div", { class: "muted" }, "result"), el("pre", {}, pretty(a["gen_ai.tool.call.result"] ?? "")));
  }
  if (a["exception.type"] || a["exception.stacktrace"]) {
    parts.push(el("h2", {}, "Error"), el("pre", { class: "error-box" }, `${a["exception.type"] || ""}: ${a["exception.message"] || ""}\n\n${a["exception.stacktrace"] || ""}`));
  }
  if (span.status && span.status.description) parts.push(el("div", { class: "error-box" }, span.status.description));
  parts.push(el("h2", {}, "Attributes"), el("pre", { class: "attributes" }, compactJSON(a)));
  if (span.events && span.events.length) parts.push(el("h2", {}, "Events"), el("pre", {}, JSON.stringify(span.events, null, 2)));
  if (span.agl_truncated) {
    parts.unshift(el("p", {}, "Long values are cut here. ", el("button", { class: "full", onclick: async (e) => {
      e.stopPropagation();
      const q = new URLSearchParams({ span_id: span.span_id, attempt_id: span.attempt_id });
      const page = await api(`/rollouts/${encodeURIComponent(span.rollout_id)}/spans?` + q);
      if (page.items.length) { fullSpans.set(span.span_id, page.items[0]); render(false); }
    } }, "Show in full")));
  }
  return el("div", { class: "detail" }, parts);
}

function waterfall(spans) {
  if (!spans.length) return el("p", { class: "muted" }, "No spans.");
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  for (const s of spans) {
    const parent = s.parent_id && ids.has(s.parent_id) ? s.parent_id : "";
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(s);
  }
  const t0 = Math.min(...spans.map((s) => s.start_time ?? Infinity));
  const t1 = Math.max(...spans.map((s) => s.end_time ?? s.start_time ?? -Infinity));
  const total = Math.max(t1 - t0, 1e-6);
  const rows = [];
  const seen = new Set();
  const walk = (parent, depth) => {
    for (const s of children.get(parent) || []) {
      if (seen.has(s.span_id)) continue;
      seen.add(s.span_id);
      const shown = fullSpans.get(s.span_id) || loadedSpans.get(s.span_id);
      const kind = spanKind(s);
      const start = ((s.start_time ?? t0) - t0) / total * 100;
      const width = (((s.end_time ?? s.start_time ?? t0) - (s.start_time ?? t0)) / total) * 100;
      const row = el("div", { class: "row" + (kind === "error" ? " error" : ""), "data-span": s.span_id, onclick: async () => {
        if (openSpans.has(s.span_id)) openSpans.delete(s.span_id);
        else {
          if (!loadedSpans.has(s.span_id)) {
            const path = `/dashboard/rollouts/${encodeURIComponent(s.rollout_id)}/spans/${encodeURIComponent(s.span_id)}?attempt_id=${encodeURIComponent(s.attempt_id)}`;
            loadedSpans.set(s.span_id, await api(path));
          }
          openSpans.add(s.span_id);
        }
        render(false);
      } },
      el("div", { class: "name", style: "padding-left:" + depth * 14 + "px", title: s.name }, (children.has(s.span_id) ? "▾ " : "· ") + s.name),
      el("div", { class: "track" }, el("div", { class: "bar " + kind, style: `left:${start.toFixed(3)}%;width:${width.toFixed(3)}%` })),
      el("div", { class: "dur" }, fmtDur((s.end_time ?? 0) - (s.start_time ?? 0))));
      rows.push(row);
      if (openSpans.has(s.span_id) && shown) rows.push(spanDetail(shown));
      walk(s.span_id, depth + 1);
    }
  };
  walk("", 0);
  return el("div", { class: "waterfall panel" }, el("div", { class: "muted" }, `${spans.length} spans over ${fmtDur(total)} · click a span for its messages, tool calls and attributes`), rows);
}

pages.rollout = async function (params, poll, id) {
  const data = await api("/dashboard/rollouts/" + encodeURIComponent(id), { poll });
  if (!data) return null;
  const r = data.rollout;
  return [
    el("h1", {}, "Rollout ", el("span", { id: "rollout-id" }, r.rollout_id), " ", badge(r.status)),
    el("div", { class: "kv panel" },
      [["mode", r.mode || "-"], ["resources", r.resources_id ? el("a", { href: "#/resources?id=" + encodeURIComponent(r.resources_id) }, r.resources_id) : "-"],
        ["started", fmtTime(r.start_time)], ["duration", r.end_time ? fmtDur(r.end_time - r.start_time) : "running"],
        ["final reward", fmtNum(data.reward)], ["spans", data.spans.length]].map(([k, v]) => [el("span", { class: "k" }, k), el("span", {}, v)])),
    el("h2", {}, "Input"), el("pre", { class: "rollout-input" }, JSON.stringify(r.input, null, 2)),
    r.metadata ? [el("h2", {}, "Metadata"), el("pre", {}, JSON.stringify(r.metadata, null, 2))] : null,
    el("h2", {}, "Attempts"),
    el("table", {}, el("thead", {}, el("tr", {}, ["#", "attempt", "status", "worker", "started", "duration", "last heartbeat", "error"].map((h) => el("th", {}, h)))),
      el("tbody", {}, data.attempts.map((a) => el("tr", {}, el("td", {}, a.sequence_id), el("td", {}, a.attempt_id), el("td", {}, badge(a.status)),
        el("td", {}, a.worker_id || "-"), el("td", {}, fmtTime(a.start_time)), el("td", {}, a.end_time ? fmtDur(a.end_time - a.start_time) : "-"),
        el("td", {}, fmtTime(a.last_heartbeat_time)),
        el("td", {}, a.error ? el("details", {}, el("summary", { class: "error-box" }, `${a.error.type}: ${a.error.message}`), el("pre", {}, a.error.traceback || "")) : ""))))),
    el("h2", {}, "Spans"), waterfall(data.spans),
  ];
};

// -- resources ------------------------------------------------------------------------------------
function templatesOf(update) {
  const out = {};
  for (const [name, resource] of Object.entries(update.resources || {})) {
    out[name] = resource && typeof resource.template === "string" ? resource.template : JSON.stringify(resource, null, 2);
  }
  return out;
}

function lineDiff(a, b) {
  // Longest common subsequence over lines: kept, removed (left) and added (right) lines.
  const x = a.split("\n"), y = b.split("\n");
  if (x.length * y.length > 4e6) return [x.map((l) => ["del", l]), y.map((l) => ["add", l])];
  const dp = Array.from({ length: x.length + 1 }, () => new Uint32Array(y.length + 1));
  for (let i = x.length - 1; i >= 0; i--) for (let j = y.length - 1; j >= 0; j--) dp[i][j] = x[i] === y[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const left = [], right = [];
  let i = 0, j = 0;
  while (i < x.length || j < y.length) {
    if (i < x.length && j < y.length && x[i] === y[j]) { left.push(["", x[i++]]); right.push(["", y[j++]]); }
    else if (j >= y.length || (i < x.length && dp[i + 1][j] >= dp[i][j + 1])) left.push(["del", x[i++]]);
    else right.push(["add", y[j++]]);
  }
  return [left, right];
}

pages.resources = async function (params, poll) {
  const data = await api("/resources?sort_by=create_time&sort_order=asc", { poll });
  if (!data) return null;
  const versions = data.items;
  if (!versions.length) return [el("h1", {}, "Resources versions"), el("p", { class: "muted" }, "No resources yet.")];
  const ids = versions.map((v) => v.resources_id);
  const right = ids.includes(params.get("id")) ? params.get("id") : ids[ids.length - 1];
  const left = ids.includes(params.get("base")) ? params.get("base") : ids[Math.max(0, ids.indexOf(right) - 1)];
  const go = (changes) => { const next = new URLSearchParams(params); for (const [k, v] of Object.entries(changes)) next.set(k, v); location.hash = "#/resources?" + next; };
  const pick = (name, value) => el("select", { name, onchange: (e) => go({ [name]: e.target.value }) }, ids.map((id) => el("option", { value: id, selected: id === value }, id)));
  const a = templatesOf(versions.find((v) => v.resources_id === left)), b = templatesOf(versions.find((v) => v.resources_id === right));
  const names = [...new Set([...Object.keys(a), ...Object.keys(b)])];
  return [
    el("h1", {}, "Resources versions"),
    el("table", {}, el("thead", {}, el("tr", {}, ["resources", "version", "created", "updated", "names"].map((h) => el("th", {}, h)))),
      el("tbody", {}, versions.map((v) => el("tr", {}, el("td", {}, v.resources_id), el("td", {}, v.version), el("td", {}, fmtTime(v.create_time)),
        el("td", {}, fmtTime(v.update_time)), el("td", {}, Object.keys(v.resources || {}).join(", ")))))),
    el("h2", {}, "Compare ", pick("base", left), " with ", pick("id", right)),
    names.map((name) => {
      const [l, r] = lineDiff(a[name] ?? "", b[name] ?? "");
      const side = (lines) => el("pre", {}, lines.map(([cls, text]) => el("span", { class: cls || null }, (cls === "del" ? "- " : cls === "add" ? "+ " : "  ") + text + "\n")));
      return el("div", { class: "panel" }, el("h2", {}, name), el("div", { class: "diff" }, side(l), side(r)));
    }),
  ];
};

// -- workers --------------------------------------------------------------------------------------
pages.workers = async function (params, poll) {
  const data = await api("/workers?sort_by=worker_id", { poll });
  if (!data) return null;
  const now = Date.now() / 1000;
  return [
    el("h1", {}, "Workers"),
    data.items.length ? el("table", {}, el("thead", {}, el("tr", {}, ["worker", "status", "last heartbeat", "current rollout", "attempt", "heartbeat stats"].map((h) => el("th", {}, h)))),
      el("tbody", {}, data.items.map((w) => el("tr", {}, el("td", {}, w.worker_id), el("td", {}, badge(w.status)),
        el("td", {}, w.last_heartbeat_time ? fmtDur(now - w.last_heartbeat_time) + " ago" : "-"),
        el("td", {}, w.current_rollout_id ? rolloutLink(w.current_rollout_id) : "-"), el("td", {}, w.current_attempt_id || "-"),
        el("td", {}, w.heartbeat_stats ? el("pre", {}, JSON.stringify(w.heartbeat_stats, null, 2)) : "-")))))
      : el("p", { class: "muted" }, "No workers have reported yet."),
  ];
};

// -- metrics.jsonl --------------------------------------------------------------------------------
pages.metrics = async function (params, poll) {
  let data;
  try { data = await api("/dashboard/metrics", { poll }); } catch (error) {
    if (error instanceof Unauthorized) throw error;
    return [el("h1", {}, "Metrics"), el("p", { class: "muted" }, error.message)];
  }
  if (!data) return null;
  if (!data.rows.length) return [el("h1", {}, "Metrics"), el("p", { class: "muted" }, `No metrics in ${data.path} yet.`)];
  const keys = [...new Set(data.rows.flatMap((r) => Object.keys(r)))].filter((k) => k !== "step");
  return [
    el("h1", {}, "Metrics"), el("p", { class: "muted" }, data.path),
    el("div", { class: "grid" }, keys.map((key) => {
      const points = data.rows.map((r, i) => [r.step ?? i, r[key]]).filter((p) => typeof p[1] === "number");
      return el("div", { class: "panel metric", "data-metric": key }, el("h2", {}, key), lineChart(points, { label: "step →" }));
    })),
  ];
};

// -- router and polling ---------------------------------------------------------------------------
let current = "";
let polling = false;

function parseHash() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const parts = path.split("/").map(decodeURIComponent);
  return { page: parts[0] || "overview", arg: parts.slice(1).join("/"), params: new URLSearchParams(query || "") };
}

async function render(poll) {
  const { page, arg, params } = parseHash();
  const view = pages[page];
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === (page === "rollout" ? "rollouts" : page)));
  if (!view) { setMain(el("p", {}, "No such page.")); return; }
  try {
    const nodes = await view(params, poll, arg);
    document.getElementById("live").classList.remove("stale");
    if (nodes === null) return; // 304: nothing changed
    const scroll = window.scrollY;
    setMain(...[nodes].flat(Infinity).filter(Boolean));
    if (poll) window.scrollTo(0, scroll);
  } catch (error) {
    if (error instanceof Unauthorized) {
      showLogin(sessionStorage.getItem("agl-token") ? "The token was not accepted." : null);
      return;
    }
    document.getElementById("live").classList.add("stale");
    if (!poll) setMain(el("p", { class: "error-box" }, String(error.message || error)));
  }
}

function route() {
  current = location.hash;
  etags.clear();
  return render(false);
}

async function poll() {
  if (polling || document.hidden || document.querySelector("form.login")) return;
  if (document.activeElement && document.activeElement.tagName === "INPUT") return; // do not disturb typing
  polling = true;
  try { await render(true); } finally { polling = false; }
}

window.addEventListener("hashchange", () => { if (location.hash !== current) route(); });
window.addEventListener("DOMContentLoaded", () => { route(); setInterval(poll, POLL_MS); });
