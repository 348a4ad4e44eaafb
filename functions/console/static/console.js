// The voicebridge console: sign in, the calls list, a call's live view, step-in.
// Plain ES module, no dependencies. Everything a vendor or a caller said is put in the page
// with textContent, never as HTML. The session cookie is HttpOnly: this script never sees it;
// it holds only the CSRF token, in memory. Wire format: PUBLISH_API.md.

const $ = (selector) => document.querySelector(selector);
const state = {
  csrf: null,
  expiresAt: 0,
  socket: null,
  socketWanted: false,
  retryMs: 500,
  topics: new Map(), // topic -> {have, pending: Map(seq -> event), gapTimer}
  live: new Map(), // callSid -> row state for the live table
  call: null, // the call view: {callSid, captions: Map(role -> open li), ...}
  cursor: null,
  picture: null, // picture.js, once loaded (record12)
};
window.__console = { captions: [] }; // what tests and the latency benchmark read

// -- HTTP --------------------------------------------------------------------------------------

async function api(path, { method = "GET", body } = {}) {
  const headers = {};
  if (method !== "GET") {
    headers["X-CSRF-Token"] = state.csrf || "";
    headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (response.status === 401 && path !== "/console/login" && path !== "/console/session") {
    signedOut("Your session has ended: sign in again.");
  }
  return { status: response.status, ok: response.ok, data: data || {} };
}

// -- sign in / out -------------------------------------------------------------------------------

function show(view) {
  for (const id of ["login-view", "calls-view", "call-view"]) {
    $("#" + id).hidden = id !== view;
  }
  const inside = view !== "login-view";
  $("#logout").hidden = !inside;
  $("#session-info").hidden = !inside;
  $("#feed-state").hidden = !inside;
}

function signedOut(message) {
  state.csrf = null;
  state.socketWanted = false;
  if (state.socket) state.socket.close();
  show("login-view");
  $("#login-error").textContent = message || "";
  $("#key").value = "";
  $("#key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = $("#key").value;
  $("#login-error").textContent = "";
  const answer = await api("/console/login", { method: "POST", body: { key } });
  $("#key").value = "";
  if (!answer.ok) {
    $("#login-error").textContent =
      answer.status === 401 ? "That is not the admin key." : answer.data.error || "Sign-in failed.";
    return;
  }
  started(answer.data);
}

function started(session) {
  state.csrf = session.csrf;
  state.expiresAt = session.expiresAt;
  const until = new Date(session.expiresAt * 1000).toLocaleTimeString();
  $("#session-info").textContent = `signed in until ${until}`;
  state.socketWanted = true;
  openSocket();
  route();
}

async function signOut() {
  await api("/console/logout", { method: "POST" });
  signedOut("Signed out.");
}

// -- the live socket -------------------------------------------------------------------------------

async function openSocket() {
  if (!state.socketWanted || state.socket) return;
  const feed = $("#feed-state");
  feed.textContent = "live feed: connecting";
  feed.classList.remove("up");
  const answer = await api("/console/ticket", { method: "POST" });
  if (!answer.ok) {
    feed.textContent = "live feed: off";
    return;
  }
  // The ticket is single-use and lives seconds: the only credential that goes in a URL.
  const socket = new WebSocket(`${answer.data.url}?ticket=${encodeURIComponent(answer.data.ticket)}`);
  state.socket = socket;
  socket.onopen = () => {
    state.retryMs = 500;
    feed.textContent = "live feed: on";
    feed.classList.add("up");
    for (const [topic, known] of state.topics) send({ action: "subscribe", topic, since: known.have });
  };
  socket.onmessage = (message) => received(message.data);
  socket.onclose = () => {
    state.socket = null;
    feed.textContent = "live feed: reconnecting";
    feed.classList.remove("up");
    if (state.socketWanted) {
      setTimeout(openSocket, state.retryMs);
      state.retryMs = Math.min(state.retryMs * 2, 15000);
    }
  };
}

function send(message) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify(message));
  }
}

function subscribe(topic) {
  if (!state.topics.has(topic)) state.topics.set(topic, { have: 0, pending: new Map(), gapTimer: null });
  send({ action: "subscribe", topic, since: state.topics.get(topic).have });
}

function unsubscribe(topic) {
  const known = state.topics.get(topic);
  if (known && known.gapTimer) clearTimeout(known.gapTimer);
  state.topics.delete(topic);
  send({ action: "unsubscribe", topic });
}

setInterval(() => send({ action: "ping" }), 5 * 60 * 1000); // API Gateway closes idle sockets at 10 min

function received(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch (_) {
    return;
  }
  if (message.type === "batch") {
    for (const event of message.events) live(event);
  } else if (message.type === "event") {
    live(message);
  } else if (message.type === "history") {
    const known = state.topics.get(message.topic);
    if (!known) return;
    for (const event of message.events) ordered(message.topic, event, true);
    if (message.through !== null && message.through > known.have) known.have = message.through;
    drain(message.topic);
    watchGap(message.topic);
  }
}

function live(event) {
  if (state.topics.has("calls") && (event.kind === "call" || event.kind === "speech")) {
    listEvent(event);
  }
  ordered(`call:${event.callSid}`, event);
}

// Events of a call apply in seq order, once each; a gap waits a moment, then is fetched again.
function ordered(topic, event, replayed = false) {
  const known = state.topics.get(topic);
  if (!known) return;
  if (event.seq <= known.have) return;
  if (replayed || event.seq === known.have + 1) {
    known.have = event.seq;
    callEvent(event, replayed);
    drain(topic);
    return;
  }
  known.pending.set(event.seq, event);
  watchGap(topic);
}

// A gap that is still open after a moment is asked for again (from the store), until closed.
function watchGap(topic) {
  const known = state.topics.get(topic);
  if (!known || known.gapTimer || !known.pending.size) return;
  known.gapTimer = setTimeout(() => {
    known.gapTimer = null;
    if (known.pending.size) send({ action: "subscribe", topic, since: known.have });
  }, 700);
}

function drain(topic) {
  const known = state.topics.get(topic);
  while (known.pending.has(known.have + 1)) {
    const event = known.pending.get(known.have + 1);
    known.pending.delete(known.have + 1);
    known.have = event.seq;
    callEvent(event);
  }
  for (const seq of known.pending.keys()) if (seq <= known.have) known.pending.delete(seq);
}

// -- the calls list -------------------------------------------------------------------------------

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  row.appendChild(td);
  return td;
}

function clock(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

function liveRow(callSid, fields) {
  let entry = state.live.get(callSid);
  if (!entry) {
    const row = document.createElement("tr");
    row.dataset.callSid = callSid;
    entry = { row, cells: [], startedAt: fields.startedAt || Date.now(), speaking: new Set() };
    for (let i = 0; i < 6; i++) entry.cells.push(cell(row, ""));
    row.addEventListener("click", () => (location.hash = `#/calls/${callSid}`));
    $("#live-calls tbody").prepend(row);
    state.live.set(callSid, entry);
  }
  Object.assign(entry, fields);
  entry.cells[0].textContent = entry.from || "";
  entry.cells[1].textContent = entry.to || "";
  entry.cells[2].textContent = entry.assistant || "";
  entry.cells[3].textContent = entry.state || "";
  entry.cells[4].textContent = clock(Date.now() - entry.startedAt);
  entry.cells[5].textContent = [...entry.speaking].join(" + ") || "—";
  $("#no-live").hidden = state.live.size > 0;
}

function listEvent(event) {
  const data = event.data || {};
  if (event.kind === "call") {
    if (data.state === "ended") {
      const entry = state.live.get(event.callSid);
      if (entry) entry.row.remove();
      state.live.delete(event.callSid);
      $("#no-live").hidden = state.live.size > 0;
      if (!$("#calls-view").hidden) loadRecent(true);
      return;
    }
    const fields = { state: data.state, startedAt: event.ts - (data.at || 0) };
    if (data.from) fields.from = data.from;
    if (data.to) fields.to = data.to;
    if (data.assistantId) fields.assistant = data.assistantId;
    liveRow(event.callSid, fields);
  } else if (event.kind === "speech" && !state.live.has(event.callSid)) {
    refreshLiveSoon(); // a call that started before this page subscribed
  } else if (event.kind === "speech") {
    const entry = state.live.get(event.callSid);
    if (data.status === "started") entry.speaking.add(data.role === "user" ? "caller" : "assistant");
    else entry.speaking.delete(data.role === "user" ? "caller" : "assistant");
    liveRow(event.callSid, {});
  }
}

setInterval(() => {
  for (const [callSid] of state.live) liveRow(callSid, {});
}, 1000);

let liveRefresh = null;
function refreshLiveSoon() {
  if (!liveRefresh) liveRefresh = setTimeout(() => ((liveRefresh = null), loadLive()), 1000);
}

async function loadLive() {
  const answer = await api("/calls?status=live&limit=100");
  if (!answer.ok) return;
  for (const call of answer.data.calls) {
    if (!state.live.has(call.callSid)) {
      liveRow(call.callSid, {
        from: call.from,
        to: call.to,
        assistant: call.assistant_id,
        state: call.call_status,
        startedAt: (call.created_at || 0) * 1000,
      });
    }
  }
}

async function loadRecent(reset) {
  const params = new URLSearchParams({ limit: "25" });
  const number = $("#filter-number").value.trim();
  const status = $("#filter-status").value;
  if (number) params.set("number", number);
  if (status) params.set("status", status);
  if (!reset && state.cursor) params.set("cursor", state.cursor);
  const answer = await api(`/calls?${params}`);
  $("#list-error").textContent = answer.ok ? "" : answer.data.error || "The calls could not be read.";
  if (!answer.ok) return;
  const body = $("#recent-calls tbody");
  if (reset) body.replaceChildren();
  for (const call of answer.data.calls) {
    const row = document.createElement("tr");
    row.dataset.callSid = call.callSid;
    cell(row, call.created_at ? new Date(call.created_at * 1000).toLocaleString() : "");
    cell(row, call.from);
    cell(row, call.to);
    cell(row, call.direction);
    cell(row, call.call_status);
    cell(row, call.duration_seconds != null ? `${Math.round(call.duration_seconds)} s` : "");
    cell(row, call.ended_reason);
    row.addEventListener("click", () => (location.hash = `#/calls/${call.callSid}`));
    body.appendChild(row);
  }
  state.cursor = answer.data.cursor;
  $("#more").hidden = !state.cursor;
}

// -- one call ---------------------------------------------------------------------------------------

function stamp(at) {
  return clock(at || 0);
}

function caption(data, event, replayed) {
  const list = $("#captions");
  const call = state.call;
  let item = call.open.get(data.role);
  if (!item) {
    item = document.createElement("li");
    item.className = data.role;
    const at = document.createElement("span");
    at.className = "at";
    at.textContent = stamp(data.at);
    const who = document.createElement("span");
    who.className = "speaker";
    who.textContent = data.role === "user" ? "Caller" : "Assistant";
    const text = document.createElement("span");
    text.className = "text";
    item.append(at, who, text);
    list.appendChild(item);
  }
  item.querySelector(".text").textContent = data.text; // verbatim, as text
  item.classList.toggle("partial", !data.final);
  if (data.final) call.open.delete(data.role);
  else call.open.set(data.role, item);
  $("#captions-empty").hidden = true;
  list.scrollTop = list.scrollHeight;
  const log = {
    callSid: event.callSid,
    seq: event.seq,
    role: data.role,
    final: !!data.final,
    text: data.text,
    publishedAt: event.ts,
    replayed,
  };
  // In the DOM now; shown in the next frame painted (the latency benchmark's end point).
  log.shownAt = Date.now();
  window.__console.captions.push(log);
  requestAnimationFrame(() => (log.shownAt = Date.now()));
}

function note(text, className) {
  const item = document.createElement("li");
  item.textContent = text;
  if (className) item.className = className;
  $("#events").appendChild(item);
}

function callEvent(event, replayed = false) {
  const call = state.call;
  if (!call || event.callSid !== call.callSid) return;
  const data = event.data || {};
  if (event.kind === "caption") caption(data, event, replayed);
  else if (event.kind === "speech") {
    $(`#speaking-${data.role}`).classList.toggle("talking", data.status === "started");
  } else if (event.kind === "latency") {
    note(`${stamp(data.at)} reply after ${data.ms} ms`);
  } else if (event.kind === "interrupted") {
    note(`${stamp(data.at)} caller barged in${data.cleared ? " (assistant cut off)" : ""}`, "barge");
  } else if (event.kind === "call") {
    $("#call-state").textContent = data.state === "ended" ? `ended (${data.reason || ""})` : data.state;
    if (data.state === "ended") {
      for (const role of ["user", "assistant"]) $(`#speaking-${role}`).classList.remove("talking");
      setTimeout(() => refreshRecord(call.callSid), 1500);
    }
  } else if (event.kind === "picture") {
    call.pictureData = state.picture && state.picture.mergePicture
      ? state.picture.mergePicture(call.pictureData, data)
      : data;
    drawPicture(call.pictureData);
  }
}

async function loadPictureModule() {
  if (state.picture !== null) return state.picture;
  try {
    state.picture = await import("/console/static/picture.js");
  } catch (_) {
    state.picture = false; // not shipped with this build
  }
  return state.picture;
}

async function drawPicture(picture) {
  const module = await loadPictureModule();
  const holder = $("#picture");
  if (!module || !picture) return;
  holder.replaceChildren();
  module.drawCallPicture(holder, picture);
}

async function refreshRecord(callSid) {
  if (!state.call || state.call.callSid !== callSid) return;
  const answer = await api(`/calls/${callSid}`);
  if (!answer.ok) return;
  const record = answer.data;
  const session = record.session || {};
  $("#call-title").textContent = `${record.from || session.from || "?"} → ${record.to || session.to || "?"}`;
  $("#call-meta").textContent = [
    callSid,
    record.direction || "",
    record.assistant_id || session.assistant_id || "",
    record.call_status || "",
  ].filter(Boolean).join(" · ");
  const timeline = $("#timeline");
  timeline.replaceChildren();
  for (const entry of record.timeline || []) {
    const item = document.createElement("li");
    const when = new Date(entry.at * 1000).toLocaleTimeString();
    const what = entry.kind === "console.control"
      ? `step-in ${entry.action} by ${entry.by}: ${entry.ok ? "done" : "failed"} (${entry.outcome})`
      : `${entry.kind} ${entry.status || entry.event || entry.endedReason || ""}`;
    item.textContent = `${when} ${what}`;
    timeline.appendChild(item);
  }
  if (record.picture) drawPicture(record.picture);
  if (record.recording) {
    const link = await api(`/calls/${callSid}/recording`);
    if (link.ok && link.data.url) {
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.preload = "metadata";
      audio.src = link.data.url;
      $("#recording").replaceChildren(audio);
    }
  }
}

function openCall(callSid) {
  if (state.call) unsubscribe(`call:${state.call.callSid}`);
  state.call = { callSid, open: new Map(), pictureData: null };
  $("#captions").replaceChildren();
  $("#events").replaceChildren();
  $("#timeline").replaceChildren();
  $("#captions-empty").hidden = false;
  $("#control-result").textContent = "";
  $("#call-state").textContent = "";
  $("#call-title").textContent = callSid;
  $("#picture").replaceChildren(Object.assign(document.createElement("p"), { className: "quiet", textContent: "No picture of this call yet." }));
  $("#recording").replaceChildren(Object.assign(document.createElement("p"), { className: "quiet", textContent: "No recording of this call." }));
  for (const role of ["user", "assistant"]) $(`#speaking-${role}`).classList.remove("talking");
  subscribe(`call:${callSid}`);
  refreshRecord(callSid);
}

async function stepIn(body, label) {
  const call = state.call;
  if (!call) return;
  const result = $("#control-result");
  result.className = "";
  result.textContent = `${label}…`;
  const answer = await api(`/calls/${call.callSid}/control`, { method: "POST", body });
  result.className = answer.data.ok ? "ok" : "failed";
  result.textContent = answer.data.ok
    ? `${label}: done (${answer.data.detail})`
    : `${label} failed: ${answer.data.detail || answer.data.error || answer.status}`;
  refreshRecord(call.callSid);
}

// -- routing ---------------------------------------------------------------------------------------

function route() {
  if (!state.csrf) return;
  const match = location.hash.match(/^#\/calls\/(CA[0-9a-f]{32})$/);
  if (match) {
    show("call-view");
    if (!state.call || state.call.callSid !== match[1]) openCall(match[1]);
    return;
  }
  if (state.call) {
    unsubscribe(`call:${state.call.callSid}`);
    state.call = null;
  }
  show("calls-view");
  subscribe("calls");
  loadLive();
  loadRecent(true);
}

document.addEventListener("DOMContentLoaded", async () => {
  $("#login-form").addEventListener("submit", signIn);
  $("#logout").addEventListener("click", signOut);
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    loadRecent(true);
  });
  $("#more").addEventListener("click", () => loadRecent(false));
  $("#say-form").addEventListener("submit", (event) => {
    event.preventDefault();
    stepIn({ action: "say", text: $("#say-text").value }, "Say");
  });
  $("#context-form").addEventListener("submit", (event) => {
    event.preventDefault();
    stepIn({ action: "add-context", text: $("#context-text").value }, "Add context");
  });
  $("#mute").addEventListener("click", () => stepIn({ action: "mute-assistant" }, "Mute"));
  $("#unmute").addEventListener("click", () => stepIn({ action: "unmute-assistant" }, "Unmute"));
  $("#end-call").addEventListener("click", () => stepIn({ action: "end-call" }, "End call"));
  $("#transfer-form").addEventListener("submit", (event) => {
    event.preventDefault();
    stepIn({ action: "transfer", to: $("#transfer-to").value.trim() }, "Transfer");
  });
  window.addEventListener("hashchange", route);
  const session = await api("/console/session");
  if (session.ok) started(session.data);
  else signedOut("");
});
