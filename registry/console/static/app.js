// webhookd console. Everything on the page is built with DOM calls and
// textContent, never innerHTML: URLs, descriptions and response snippets
// come from users and receivers and are shown as text. The API key lives in
// sessionStorage and goes out only in the x-copy-ai-api-key header.
"use strict";

const EVENT_TYPES = ["workflowRun.started", "workflowRun.completed", "workflowRun.failed", "workflowCreditLimit.reached"];
const KEY = "webhookd.apiKey";
const $ = (id) => document.getElementById(id);
let current = null; // the endpoint shown
let replayTimer = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function notice(msg, isError) {
  const n = $("notice");
  n.textContent = msg || "";
  n.className = isError ? "error" : "";
}

class APIError extends Error {
  constructor(status, env) {
    super((env && env.errorCode ? env.errorCode : "HTTP " + status) +
      (env && env.details ? ": " + JSON.stringify(env.details) : ""));
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { "x-copy-ai-api-key": sessionStorage.getItem(KEY) || "" };
  const init = { method, headers, credentials: "omit", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let env = null;
  try { env = await resp.json(); } catch (_) { /* not JSON */ }
  if (resp.status === 401) {
    sessionStorage.removeItem(KEY);
    show("signin");
    throw new APIError(401, env);
  }
  if (!resp.ok || !env || env.status !== "success") throw new APIError(resp.status, env);
  return env;
}

function show(section) {
  for (const id of ["signin", "endpoints", "endpoint"]) $(id).hidden = id !== section;
  $("nav").hidden = section === "signin";
}

function fillTypes(select) {
  select.replaceChildren(...EVENT_TYPES.map((t) => el("option", { value: t, text: t })));
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

// ---- endpoints list ----

async function renderEndpoints() {
  show("endpoints");
  const body = $("endpoint-table").tBodies[0];
  const env = await api("GET", "/api/webhook?limit=1000");
  body.replaceChildren();
  if (env.data.length === 0) {
    body.append(el("tr", {}, el("td", { colspan: "6", text: "No endpoints yet: create one below." })));
  }
  for (const w of env.data) {
    const last = el("td", { text: "…" });
    const health = (w.health && w.health.state) || "healthy";
    body.append(el("tr", { "data-id": w.id },
      el("td", { class: "url" }, el("a", { href: "#/endpoint/" + encodeURIComponent(w.id), text: w.url })),
      el("td", { text: w.eventType }),
      el("td", { text: w.workflowId || "all" }),
      el("td", { class: "health-" + health, text: health.replace("_", " ") }),
      el("td", { text: w.enabled === false ? "disabled" : "enabled" }),
      last));
    api("GET", "/api/webhook/" + encodeURIComponent(w.id) + "/deliveries?limit=1").then((d) => {
      const x = d.data[0];
      last.textContent = x ? x.state + ", " + when(x.lastAttemptAt) : "none";
    }).catch(() => { last.textContent = "unknown"; });
  }
}

async function createEndpoint(ev) {
  ev.preventDefault();
  const body = { url: $("new-url").value, eventType: $("new-event-type").value };
  if ($("new-workflow").value) body.workflowId = $("new-workflow").value;
  if ($("new-description").value) body.description = $("new-description").value;
  try {
    const env = await api("POST", "/api/webhook", body);
    $("created-secret").textContent = env.data.secret;
    $("created").hidden = false;
    $("create-form").reset();
    notice("Created " + env.data.id + ".");
    await renderEndpoints();
  } catch (e) { notice("Create failed: " + e.message, true); }
}

// ---- one endpoint ----

async function renderEndpoint(id) {
  show("endpoint");
  clearInterval(replayTimer);
  $("secret-value").textContent = "hidden";
  $("test-result").textContent = "";
  $("replay-progress").textContent = "";
  const env = await api("GET", "/api/webhook/" + encodeURIComponent(id));
  current = env.data;
  const w = current;
  $("ep-id").textContent = w.id;
  $("ep-url").textContent = w.url;
  $("ep-event-type").textContent = w.eventType;
  $("ep-workflow").textContent = w.workflowId || "all workflows";
  $("ep-description").textContent = w.description || "";
  const h = w.health || { state: "healthy" };
  $("ep-health").textContent = h.state.replace("_", " ") + (h.consecutiveFailures ? " (" + h.consecutiveFailures + " failures in a row)" : "");
  $("ep-health").className = "health-" + h.state;
  $("ep-enabled").textContent = w.enabled === false ? "disabled" + (w.disabledReason ? " (" + w.disabledReason + ")" : "") : "enabled";
  $("toggle-enabled").textContent = w.enabled === false ? "Enable" : "Disable";
  $("edit-url").value = w.url;
  $("edit-event-type").value = w.eventType;
  $("edit-workflow").value = w.workflowId || "";
  $("edit-description").value = w.description || "";
  $("replay-until").value = "";
  $("replay-since").value = localInput(new Date(Date.now() - 3600e3));
  await renderDeliveries();
}

function localInput(d) {
  const p = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + "T" + p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
}

function path(suffix) { return "/api/webhook/" + encodeURIComponent(current.id) + suffix; }

async function act(what, fn) {
  try { await fn(); } catch (e) { notice(what + " failed: " + e.message, true); }
}

async function renderDeliveries() {
  const status = $("filter-status").value;
  const env = await api("GET", path("/deliveries?limit=100" + (status ? "&status=" + status : "")));
  const body = $("delivery-table").tBodies[0];
  body.replaceChildren();
  if (env.data.length === 0) body.append(el("tr", {}, el("td", { colspan: "5", text: "No deliveries yet." })));
  for (const d of env.data) {
    const attempts = el("ol", { class: "attempts" });
    for (const a of d.attempts) {
      const line = el("li", {}, el("span", {
        text: when(a.at) + ": " + (a.status ? "HTTP " + a.status : a.errorClass || "no answer") +
          " in " + a.durationMs.toFixed(1) + " ms" + (a.error && !a.status ? " (" + a.error + ")" : "") +
          (a.trigger ? " [" + a.trigger + "]" : ""),
      }));
      if (a.response) line.append(el("pre", { class: "snippet", text: a.response }));
      attempts.append(line);
    }
    const details = el("details", {}, el("summary", { text: d.attempts.length + " attempt" + (d.attempts.length === 1 ? "" : "s") }), attempts);
    const retry = el("button", { type: "button", class: "retry", text: "Retry now", onclick: () => act("Retry", async () => {
      await api("POST", path("/deliveries/" + encodeURIComponent(d.id) + "/retry"));
      notice("Delivery " + d.id + " queued again.");
      setTimeout(() => act("Refresh", renderDeliveries), 1000);
    }) });
    const state = d.state + (d.nextAttemptAt ? ", next " + when(d.nextAttemptAt) : "") + (d.reason ? " (" + d.reason + ")" : "");
    body.append(el("tr", { "data-id": d.id, "data-state": d.state },
      el("td", {}, el("code", { text: d.id })),
      el("td", { text: d.eventId }),
      el("td", { class: "state-" + d.state, text: state }),
      el("td", {}, details),
      el("td", {}, retry)));
  }
  await renderChart();
}

// renderChart draws attempts of the last hour per 5 minutes from the
// delivery log (an SVG built with DOM calls; no library, no Prometheus).
async function renderChart() {
  const since = new Date(Date.now() - 3600e3);
  const env = await api("GET", path("/deliveries?limit=500&since=" + encodeURIComponent(since.toISOString().replace(/\.\d+Z$/, "Z"))));
  const ok = new Array(12).fill(0), bad = new Array(12).fill(0);
  for (const d of env.data) {
    for (const a of d.attempts) {
      const i = Math.floor((new Date(a.at) - since) / 300e3);
      if (i < 0 || i > 11) continue;
      if (a.state === "succeeded") ok[i]++; else bad[i]++;
    }
  }
  const max = Math.max(1, ...ok.map((v, i) => v + bad[i]));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 600 150");
  svg.setAttribute("aria-hidden", "true");
  const bar = (x, y, h, cls) => {
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("x", x); r.setAttribute("y", y); r.setAttribute("width", 40); r.setAttribute("height", Math.max(h, 0));
    r.setAttribute("fill", cls === "ok" ? "#1a7f37" : "#cf222e");
    const t = document.createElementNS(ns, "title");
    t.textContent = cls === "ok" ? "succeeded" : "failed";
    r.append(t);
    svg.append(r);
  };
  for (let i = 0; i < 12; i++) {
    const hOk = (ok[i] / max) * 130, hBad = (bad[i] / max) * 130;
    bar(i * 50 + 5, 140 - hOk, hOk, "ok");
    bar(i * 50 + 5, 140 - hOk - hBad, hBad, "bad");
  }
  const axis = document.createElementNS(ns, "line");
  axis.setAttribute("x1", 0); axis.setAttribute("x2", 600); axis.setAttribute("y1", 140); axis.setAttribute("y2", 140);
  axis.setAttribute("stroke", "#57606a");
  svg.append(axis);
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 0); label.setAttribute("y", 12); label.setAttribute("font-size", 11);
  label.textContent = "max " + max + " per 5 min";
  svg.append(label);
  $("chart").replaceChildren(svg);
  $("chart").setAttribute("aria-label", "Last hour, per 5 minutes: " + ok.reduce((a, b) => a + b, 0) + " succeeded and " +
    bad.reduce((a, b) => a + b, 0) + " failed attempts");
}

async function startReplay(ev) {
  ev.preventDefault();
  const iso = (v) => new Date(v).toISOString().replace(/\.\d+Z$/, "Z");
  const body = { since: iso($("replay-since").value), status: $("replay-status").value };
  if ($("replay-until").value) body.until = iso($("replay-until").value);
  await act("Replay", async () => {
    const env = await api("POST", path("/replay"), body);
    followReplay(env.data.id);
  });
}

function followReplay(id) {
  clearInterval(replayTimer);
  const tick = () => act("Replay progress", async () => {
    const j = (await api("GET", "/api/replays/" + encodeURIComponent(id))).data;
    $("replay-progress").textContent = "Replay " + j.id + ": " + j.state + ", " + j.enqueued + " re-delivered of " +
      j.matched + " matching (" + j.scanned + " events read)" + (j.error ? ": " + j.error : "");
    if (["succeeded", "failed", "canceled"].includes(j.state)) {
      clearInterval(replayTimer);
      await renderDeliveries();
    }
  });
  tick();
  replayTimer = setInterval(tick, 1000);
}

// ---- wiring ----

function route() {
  if (!sessionStorage.getItem(KEY)) { show("signin"); $("api-key").focus(); return; }
  const m = location.hash.match(/^#\/endpoint\/(.+)$/);
  if (m) notice(""); // a notice belongs to the page it was given on
  const go = m ? renderEndpoint(decodeURIComponent(m[1])) : renderEndpoints();
  go.catch((e) => notice(e.message, true));
}

document.addEventListener("DOMContentLoaded", () => {
  fillTypes($("new-event-type"));
  fillTypes($("edit-event-type"));
  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("api-key").value);
    $("api-key").value = "";
    try {
      await api("GET", "/api/webhook?limit=1");
      notice("");
      route();
    } catch (e) { notice("Sign-in failed: " + e.message, true); }
  });
  $("sign-out").addEventListener("click", () => { sessionStorage.removeItem(KEY); location.hash = "#/"; route(); });
  $("create-form").addEventListener("submit", createEndpoint);
  $("filter-form").addEventListener("submit", (ev) => { ev.preventDefault(); act("Refresh", renderDeliveries); });
  $("replay-form").addEventListener("submit", startReplay);
  $("edit-form").addEventListener("submit", (ev) => { ev.preventDefault(); act("Save", async () => {
    await api("PATCH", path(""), { url: $("edit-url").value, eventType: $("edit-event-type").value,
      workflowId: $("edit-workflow").value || null, description: $("edit-description").value || null });
    notice("Saved.");
    await renderEndpoint(current.id);
  }); });
  $("toggle-enabled").addEventListener("click", () => act("Change", async () => {
    await api("PATCH", path(""), { enabled: current.enabled === false });
    await renderEndpoint(current.id);
  }));
  $("send-test").addEventListener("click", () => act("Test", async () => {
    $("test-result").textContent = "Sending…";
    const r = (await api("POST", path("/test"))).data;
    $("test-result").textContent = (r.delivered ? "Delivered: " : "Not delivered: ") + (r.status ? "HTTP " + r.status : "no answer") +
      " in " + r.durationMs + " ms" + (r.error ? " (" + r.error + ")" : "") + (r.response ? ". Answer: " + r.response : "");
  }));
  $("reveal-secret").addEventListener("click", () => act("Reveal", async () => {
    $("secret-value").textContent = (await api("GET", path("/secret"))).data.secret;
  }));
  $("rotate-form").addEventListener("submit", (ev) => { ev.preventDefault(); act("Rotate", async () => {
    const r = (await api("POST", path("/rotate-secret"), { grace: $("rotate-grace").value })).data;
    $("secret-value").textContent = r.secret;
    notice("Secret rotated; the old one signs too until " + when(r.previousSecretExpiresAt) + ".");
  }); });
  $("delete-endpoint").addEventListener("click", () => act("Delete", async () => {
    if (!confirm("Delete endpoint " + current.url + "? Its pending deliveries are dropped.")) return;
    await api("DELETE", path(""));
    notice("Deleted " + current.id + ".");
    location.hash = "#/";
  }));
  window.addEventListener("hashchange", route);
  route();
});
