// hookrelay dashboard: plain JavaScript over the public API (/v1) and the
// WebSocket feed. Server data is only ever written with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("hookrelay.key"), me: null, catalog: [], webhooks: [] };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${state.key}`, ...(body !== undefined ? { "Content-Type": "application/json" } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  return { status: res.status, ok: res.ok, body: json };
}

const fmtDate = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
function relative(ts) {
  const s = Math.max(0, Math.round((Date.now() - ts) / 1000));
  if (s < 60) return `${s} sec ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}
const TYPE_STYLE = {
  "desktop.app_tracking.captured": { cls: "t-app", label: "Tracking Event", icon: "🧭" },
  "desktop.screenshot_tracking.captured": { cls: "t-shot", label: "Screenshot Event", icon: "📸" },
  "desktop.activity_tracking.captured": { cls: "t-activity", label: "Activity Event", icon: "🔄" },
};
const styleOf = (t) => TYPE_STYLE[t] || { cls: "t-other", label: t, icon: "📨" };

async function copyText(text, button) {
  try { await navigator.clipboard.writeText(text); } catch { /* clipboard may be unavailable; the text is shown */ }
  if (button) { const old = button.textContent; button.textContent = "✅"; setTimeout(() => (button.textContent = old), 1500); }
}
function copyButton(getText, label = "📋") {
  const b = el("button", { type: "button", class: "copy", "aria-label": "Copy" }, label);
  b.addEventListener("click", async () => copyText(await getText(), b));
  return b;
}

/* ---------- sign-in and navigation ---------- */

async function signIn(key) {
  state.key = key;
  const me = await api("GET", "/v1/me");
  if (!me.ok) { state.key = null; return false; }
  sessionStorage.setItem("hookrelay.key", key);
  state.me = me.body;
  const types = await api("GET", "/v1/event-types");
  state.catalog = types.ok ? types.body.data.map((t) => t.name) : [];
  $("whoami").textContent = me.body.kind === "admin" ? "Signed in as admin" : `Signed in as ${me.body.name} (${me.body.kind})`;
  $("signin").hidden = true; $("nav").hidden = false; $("sign-out").hidden = false;
  show("webhooks");
  connectFeed();
  return true;
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("signin-error").textContent = "";
  if (!(await signIn($("api-key").value.trim()))) $("signin-error").textContent = "That API key was not accepted.";
});
$("sign-out").addEventListener("click", () => { sessionStorage.removeItem("hookrelay.key"); location.reload(); });

function show(view) {
  for (const b of document.querySelectorAll("#nav .tab")) b.classList.toggle("active", b.dataset.view === view);
  for (const v of ["webhooks", "deliveries", "simulations", "feed"]) $(`view-${v}`).hidden = v !== view;
  if (view === "webhooks") loadWebhooks();
  if (view === "deliveries") loadDeliveries(true);
  if (view === "simulations") loadSimulations();
}
for (const b of document.querySelectorAll("#nav .tab")) b.addEventListener("click", () => show(b.dataset.view));

/* ---------- webhooks ---------- */

async function fetchWebhooks() {
  const res = await api("GET", "/v1/webhooks");
  state.webhooks = res.ok ? res.body.data : [];
  return state.webhooks;
}

async function loadWebhooks() {
  const hooks = await fetchWebhooks();
  $("webhooks-empty").hidden = hooks.length > 0;
  $("webhook-cards").replaceChildren(...hooks.map(webhookCard));
}

function webhookCard(w) {
  const secret = el("span", { class: "mono grow", "data-role": "secret" }, w.secret_masked);
  const reveal = copyButton(async () => {
    const res = await api("GET", `/v1/webhooks/${w.id}/secret`);
    if (!res.ok) return "";
    secret.textContent = res.body.secret;
    setTimeout(() => (secret.textContent = w.secret_masked), 10000);
    return res.body.secret;
  });
  const toggle = el("input", { type: "checkbox", "aria-label": "Active", ...(w.active ? { checked: true } : {}) });
  toggle.addEventListener("change", async () => {
    const res = await api("PATCH", `/v1/webhooks/${w.id}`, { active: toggle.checked });
    if (!res.ok) toggle.checked = !toggle.checked; else loadWebhooks();
  });
  const status = w.status === "enabled"
    ? el("span", { class: "badge on" }, "enabled")
    : el("span", { class: "badge bad", title: w.disabled_reason || "" }, `disabled: ${w.disabled_reason || "by the system"}`);
  return el("article", { class: "card", "data-webhook-id": w.id },
    el("div", { class: "row" }, el("strong", { class: "grow" }, w.name), status),
    el("div", { class: "url" }, w.url),
    el("div", { class: "badges" }, w.events.map((e) => el("span", { class: "badge" }, e === "*" ? "All Events" : e))),
    el("div", { class: "row" }, el("span", { class: "muted" }, "Secret"), secret, reveal),
    el("div", { class: "row muted" }, `Created ${fmtDate(w.created_at)}`, el("span", { class: "grow" }), `Failures: ${w.failure_count}`),
    el("div", { class: "row" },
      el("label", { class: "check grow" }, toggle, "Active"),
      el("button", { type: "button", "aria-label": `Edit ${w.name}`, onclick: () => openWebhookForm(w) }, "✏️ Edit"),
      el("button", { type: "button", "aria-label": `Delete ${w.name}`, onclick: () => confirmDelete(w) }, "🗑️ Delete")));
}

let editing = null;
function openWebhookForm(w = null) {
  editing = w;
  $("webhook-form-title").textContent = w ? "Edit Webhook" : "Add Webhook";
  $("wh-submit").textContent = w ? "Update Webhook" : "Create Webhook";
  $("wh-name").value = w ? w.name : "";
  $("wh-url").value = w ? w.url : "";
  $("wh-scheme").value = w ? w.signature_scheme : "trackpilots";
  $("wh-ordered").checked = w ? w.ordered : false;
  const chosen = new Set(w ? w.events : []);
  $("wh-all").checked = chosen.has("*");
  $("wh-events").replaceChildren(...state.catalog.map((name) =>
    el("label", { class: "check" }, el("input", { type: "checkbox", value: name, ...(chosen.has(name) ? { checked: true } : {}) }), name)));
  for (const p of document.querySelectorAll("[data-error-for]")) p.textContent = "";
  $("webhook-dialog").showModal();
}
$("add-webhook").addEventListener("click", () => openWebhookForm());
$("wh-cancel").addEventListener("click", () => $("webhook-dialog").close());
$("webhook-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  for (const p of document.querySelectorAll("[data-error-for]")) p.textContent = "";
  const events = $("wh-all").checked ? ["*"] : [...$("wh-events").querySelectorAll("input:checked")].map((i) => i.value);
  const body = { name: $("wh-name").value, url: $("wh-url").value, events, ordered: $("wh-ordered").checked, signature_scheme: $("wh-scheme").value };
  const res = editing ? await api("PATCH", `/v1/webhooks/${editing.id}`, body) : await api("POST", "/v1/webhooks", body);
  if (res.ok) { $("webhook-dialog").close(); loadWebhooks(); restartFeed(); return; }
  const err = res.body && res.body.error;
  const slot = document.querySelector(`[data-error-for="${err && err.field}"]`) || document.querySelector('[data-error-for="form"]');
  slot.textContent = err ? err.message : `The server answered ${res.status}.`;
});

function confirmDelete(w) {
  $("confirm-name").textContent = w.name;
  const dialog = $("confirm-dialog");
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "delete") return;
    await api("DELETE", `/v1/webhooks/${w.id}`);
    loadWebhooks();
    restartFeed();
  };
  dialog.showModal();
}

/* ---------- deliveries ---------- */

let deliveriesCursor = null;
function fillWebhookSelect(select, hooks) {
  const current = select.value;
  select.replaceChildren(...hooks.map((w) => el("option", { value: w.id }, `${w.name} — ${w.url}`)));
  if (hooks.some((w) => w.id === current)) select.value = current;
}

async function loadDeliveries(fresh) {
  if (fresh) { fillWebhookSelect($("deliveries-webhook"), await fetchWebhooks()); deliveriesCursor = null; $("deliveries-table").tBodies[0].replaceChildren(); }
  const id = $("deliveries-webhook").value;
  if (!id) { $("deliveries-empty").hidden = false; $("deliveries-more").hidden = true; return; }
  const q = deliveriesCursor ? `&before=${deliveriesCursor}` : "";
  const res = await api("GET", `/v1/webhooks/${id}/deliveries?limit=25${q}`);
  if (!res.ok) return;
  const rows = res.body.data.map((d) => el("tr", { "data-outcome": d.outcome },
    el("td", {}, fmtDate(d.attempted_at)),
    el("td", {}, d.event, d.simulation ? el("span", { class: "badge" }, " simulation") : null),
    el("td", {}, d.attempt),
    el("td", {}, el("span", { class: `badge ${d.outcome === "delivered" ? "on" : d.outcome === "failed" ? "bad" : ""}` }, d.outcome)),
    el("td", {}, d.status_code ?? (d.error ? d.error.kind : "—")),
    el("td", {}, `${d.latency_ms} ms`),
    el("td", {}, el("pre", {}, d.response_body + (d.truncated ? " …(truncated)" : "")), d.error ? el("div", { class: "error" }, d.error.message) : null),
    el("td", {}, d.simulation ? null : el("button", { type: "button", onclick: async (ev) => {
      const r = await api("POST", `/v1/webhooks/${id}/deliveries/${d.delivery_id}/redeliver`);
      ev.target.textContent = r.ok ? "Queued ✓" : "Failed";
    } }, "Redeliver"))));
  $("deliveries-table").tBodies[0].append(...rows);
  deliveriesCursor = res.body.next_before;
  $("deliveries-more").hidden = !deliveriesCursor;
  $("deliveries-empty").hidden = $("deliveries-table").tBodies[0].rows.length > 0;
  $("deliveries-failures").textContent = `Failure count: ${res.body.failure_count}`;
}
$("deliveries-webhook").addEventListener("change", () => { deliveriesCursor = null; $("deliveries-table").tBodies[0].replaceChildren(); loadDeliveries(false); });
$("deliveries-more").addEventListener("click", () => loadDeliveries(false));

/* ---------- simulations ---------- */

const SIM_ERRORS = { 404: "Webhook not found", 400: "Event type not registered", 503: "Service unavailable" };

async function loadSimulations() {
  const hooks = await fetchWebhooks();
  $("sim-none").hidden = hooks.length > 0;
  $("sim-body").hidden = hooks.length === 0;
  fillWebhookSelect($("sim-webhook"), hooks);
  fillSimEvents();
}

function fillSimEvents() {
  const w = state.webhooks.find((h) => h.id === $("sim-webhook").value);
  const events = !w ? [] : w.events.includes("*") ? state.catalog : w.events;
  const current = $("sim-event").value;
  $("sim-event").replaceChildren(...events.map((e) => el("option", { value: e }, e)));
  if (events.includes(current)) $("sim-event").value = current;
  updatePreview();
}

async function updatePreview() {
  const id = $("sim-webhook").value, event = $("sim-event").value;
  $("sim-error").textContent = "";
  if (!id || !event) { $("sim-preview").textContent = ""; return; }
  const res = await api("GET", `/v1/webhooks/${id}/simulations/preview?event=${encodeURIComponent(event)}`);
  $("sim-preview").textContent = res.ok ? JSON.stringify(res.body, null, 2) : "";
  if (!res.ok) $("sim-error").textContent = SIM_ERRORS[res.status] || "Simulation failed";
}
$("sim-webhook").addEventListener("change", fillSimEvents);
$("sim-event").addEventListener("change", updatePreview);
$("sim-create").addEventListener("click", () => { show("webhooks"); openWebhookForm(); });

$("sim-send").addEventListener("click", async () => {
  $("sim-error").textContent = "";
  $("sim-send").disabled = true;
  try {
    const res = await api("POST", `/v1/webhooks/${$("sim-webhook").value}/simulations`, { event: $("sim-event").value });
    if (!res.ok) { $("sim-error").textContent = SIM_ERRORS[res.status] || "Simulation failed"; return; }
    const r = res.body;
    $("sim-result").hidden = false;
    $("sim-outcome").textContent = r.result === "delivered" ? "✅ Delivered" : "❌ Failed";
    $("sim-status").textContent = r.http_status ?? "Network error";
    $("sim-latency").textContent = `${r.latency_ms} ms`;
    $("sim-headers").textContent = JSON.stringify(r.request_headers, null, 2);
    $("sim-payload").textContent = JSON.stringify(r.payload, null, 2);
    $("sim-response").textContent = r.error && r.http_status === null ? `Network error: ${r.error.message}` : r.response_body;
  } catch {
    $("sim-error").textContent = "Network error";
  } finally {
    $("sim-send").disabled = false;
  }
});
for (const b of document.querySelectorAll("button[data-copy]")) b.addEventListener("click", () => copyText($(b.dataset.copy).textContent, b));

/* ---------- live feed ---------- */

const feed = { ws: null, backoff: 1000, types: [], tab: null, counts: {}, cards: {}, pool: [], paused: false, dirty: false, newest: null };
const CARDS_PER_TAB = 10, POOL_SIZE = 30, MAX_TOASTS = 3;

function setBadge(connected) {
  $("feed-badge").textContent = connected ? "🟢 Connected" : "⚫ Disconnected";
  $("feed-badge").className = `badge ${connected ? "on" : "off"}`;
  $("feed-live").hidden = !connected;
}

async function connectFeed() {
  if (!state.key) return;
  const t = await api("POST", "/v1/feed/tickets").catch(() => null);
  // Shown on hover: why it stays disconnected (a 429 names the session limit).
  $("feed-badge").title = t && !t.ok ? (t.body?.error?.message ?? `HTTP ${t.status}`) : "";
  if (!t || !t.ok) return scheduleReconnect();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/v1/feed?ticket=${encodeURIComponent(t.body.ticket)}`);
  feed.ws = ws;
  ws.onopen = () => { feed.backoff = 1000; setBadge(true); };
  ws.onmessage = (m) => onFeedMessage(JSON.parse(m.data));
  ws.onclose = () => { setBadge(false); scheduleReconnect(); };
}
// Subscriptions changed: reconnect at once for a fresh hello (its tabs).
function restartFeed() {
  feed.backoff = 0;
  if (feed.ws && feed.ws.readyState <= 1) feed.ws.close(); else connectFeed();
}
function scheduleReconnect() {
  setTimeout(connectFeed, feed.backoff);
  feed.backoff = Math.min(Math.max(feed.backoff * 2, 1000), 30000);
}

function onFeedMessage(m) {
  if (m.type === "hello") {
    feed.types = m.event_types;
    for (const t of feed.types) { feed.counts[t] = feed.counts[t] || 0; feed.cards[t] = []; }
    if (!feed.types.includes(feed.tab)) feed.tab = feed.types[0] || null;
    feed.pool = [];
    for (const e of [...m.recent].reverse()) remember(e);
    $("feed-none").hidden = feed.types.length > 0;
    $("feed-body").hidden = feed.types.length === 0;
    feed.newest = null;
    renderTabs(); render();
  } else if (m.type === "event") {
    if (feed.counts[m.event] !== undefined) feed.counts[m.event] += 1;
    remember(m);
    feed.newest = m.id;
    setTimeout(() => { if (feed.newest === m.id) { feed.newest = null; feed.dirty = true; schedule(); } }, 3000);
    toast(m);
    feed.dirty = true; schedule();
  } else if (m.type === "lagged") {
    toast({ event: "lagged", organisation: { name: `${m.dropped} events skipped` }, received_at: new Date().toISOString() });
  }
}

function remember(e) {
  e.ts = Date.parse(e.received_at);
  if (feed.cards[e.event]) { feed.cards[e.event].unshift(e); feed.cards[e.event].length = Math.min(feed.cards[e.event].length, CARDS_PER_TAB); }
  if (!feed.paused) { feed.pool.unshift(e); feed.pool.length = Math.min(feed.pool.length, POOL_SIZE); }
  else { feed.held = [e, ...(feed.held || [])].slice(0, POOL_SIZE); }
}

// Render at most once a frame, however fast events arrive.
let frameRequested = false;
function schedule() {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(() => { frameRequested = false; if (feed.dirty) { feed.dirty = false; render(); } });
}

function renderTabs() {
  $("feed-tabs").replaceChildren(...feed.types.map((t) => {
    const s = styleOf(t);
    return el("button", { type: "button", role: "tab", class: `feed-tab ${s.cls}`, "data-type": t, "aria-selected": String(t === feed.tab),
      onclick: () => { feed.tab = t; renderTabs(); render(); } },
      s.label, el("span", { class: "count", "data-count-for": t }, feed.counts[t] || 0));
  }));
}

function idRow(label, value) {
  return [el("dt", {}, label), el("dd", {}, value ?? "—", value ? copyButton(() => value) : null)];
}

function eventCard(e) {
  const s = styleOf(e.event);
  const isNew = e.id === feed.newest;
  return el("article", { class: `event-card ${s.cls}${isNew ? " new" : ""}`, "data-event-id": e.id },
    el("div", { class: "row" },
      isNew ? el("span", { class: "badge new-badge" }, "New Event") : el("span", { class: "badge" }, s.label),
      el("span", { class: "grow" }), el("span", { class: "muted", "data-ts": e.ts }, relative(e.ts))),
    el("dl", { class: "fields" },
      el("dt", {}, "Parent Organisation"), el("dd", {}, e.reseller ? e.reseller.name : "—"),
      el("dt", {}, "Organisation"), el("dd", {}, e.organisation.name),
      idRow("UserId", e.user_id), idRow("TeamId", e.team_id), idRow("Event Id", e.id),
      el("dt", {}, "Timestamp"), el("dd", {}, new Date(e.ts).toLocaleString())),
    el("pre", {}, JSON.stringify(e.payload, null, 2)));
}

function render() {
  for (const t of feed.types) {
    const c = document.querySelector(`[data-count-for="${CSS.escape(t)}"]`);
    if (c) c.textContent = feed.counts[t];
  }
  $("feed-cards").replaceChildren(...(feed.cards[feed.tab] || []).map(eventCard));
  $("pool-list").replaceChildren(...feed.pool.map((e) => {
    const s = styleOf(e.event);
    return el("li", { "data-event-id": e.id }, el("span", { class: `dot ${s.cls}` }),
      el("span", { class: "grow" }, `${s.label} · ${e.organisation.name}`),
      el("span", { class: "muted", "data-ts": e.ts }, relative(e.ts)),
      e.id === feed.newest ? el("span", { class: "badge new-badge" }, "New Event") : null);
  }));
}

$("pool-toggle").addEventListener("click", () => {
  feed.paused = !feed.paused;
  $("pool-toggle").textContent = feed.paused ? "▶️ Resume" : "⏸️ Pause";
  if (!feed.paused) { feed.pool = [...(feed.held || []), ...feed.pool].slice(0, POOL_SIZE); feed.held = []; render(); }
});

function toast(e) {
  const box = $("toasts");
  while (box.children.length >= MAX_TOASTS) box.firstChild.remove();
  const s = styleOf(e.event);
  const t = el("div", { class: "toast" }, `${s.icon} ${s.label} · ${e.organisation.name} · ${new Date(e.received_at).toLocaleTimeString()} (${relative(Date.parse(e.received_at))})`);
  box.append(t);
  setTimeout(() => t.remove(), 3000);
}

setInterval(() => { for (const n of document.querySelectorAll("[data-ts]")) n.textContent = relative(Number(n.dataset.ts)); }, 1000);

if (state.key) signIn(state.key).then((ok) => { if (!ok) sessionStorage.removeItem("hookrelay.key"); });
