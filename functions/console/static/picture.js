// The picture of a call: both legs on one time axis, so a person sees where the time went.
// Plain ES module, no dependencies, SVG. The data is media_edge/core/picture.py's: the whole
// picture from GET /calls/{callSid} (`picture`), or the live feed's `picture` deltas merged
// with mergePicture(). Every string from the data goes in as text (textContent), never markup.
//
//   import { drawCallPicture, mergePicture } from "/console/static/picture.js";
//   let picture = null;
//   picture = mergePicture(picture, delta);   // each live `picture` event's data
//   drawCallPicture(element, picture);        // replaces element's content with the drawing
//
// What is drawn (class names are the renderer's contract with its tests):
//   caller lane     level envelope (path.level.caller), turns from the edge's VAD
//                   (rect.turn.caller), what Vapi heard as caller speech (rect.vapi-speech)
//   latency row     every reply: caller stopped -> assistant audio, a bracket with its ms
//                   (g.latency, data-ms), and the first audio of the call (g.first-audio)
//   assistant lane  level envelope (path.level.assistant), turns as played
//                   (rect.turn.assistant), playout pauses (rect.pause), interruptions
//                   (path.interruption) and clears, which drop the rest of a reply (g.clear)

const SVG = "http://www.w3.org/2000/svg";
const SILENT_DB = -99;
const FLOOR_DB = -60; // the quietest level drawn above the lane's centre line
const COLORS = {
  caller: "#2f6fd6",
  assistant: "#d9731f",
  vapi: "#7a5bc7",
  pause: "#8a8f98",
  clear: "#c62828",
  fast: "#2e7d32",
  slow: "#b7791f",
  late: "#c62828",
  axis: "#6b7280",
};
const LAYOUT = { left: 74, right: 12, axis: 16, lane: 56, latency: 30, gap: 6 };

// -- data -----------------------------------------------------------------------------------

function list(value) {
  return Array.isArray(value) ? value : [];
}

function num(value, fallback = 0) {
  const n = Number(value);
  return Number.isFinite(n) ? n : fallback;
}

function emptyPicture(bucketMs) {
  return {
    version: 1,
    startedAt: null,
    durationMs: 0,
    bucketMs,
    levels: { caller: [], assistant: [] },
    turns: { caller: [], assistant: [] },
    vapiSpeech: [],
    pauses: [],
    interruptions: [],
    clears: [],
    replies: [],
    firstAudio: null,
    dropped: 0,
  };
}

function upsertSpans(into, spans) {
  for (const span of list(spans)) {
    if (!Array.isArray(span) || span.length < 2) continue;
    const at = into.findIndex((old) => old[0] === span[0]);
    if (at >= 0) into[at] = [span[0], span[1]];
    else into.push([span[0], span[1]]);
  }
}

function appendNew(into, items, key) {
  const seen = new Set(into.map(key));
  for (const item of list(items)) {
    if (item && typeof item === "object" && !seen.has(key(item))) {
      into.push(item);
      seen.add(key(item));
    }
  }
}

/** Merge one live `picture` delta (or a whole picture) into `picture` (null: start one).
 * Spans and pauses still open come again in later deltas: they replace the one with the same
 * start. Returns the picture (the same object when one was given). */
export function mergePicture(picture, delta) {
  if (!delta || typeof delta !== "object") return picture;
  const deltaBucket = num(delta.bucketMs, 100) || 100;
  const merged = picture || emptyPicture(deltaBucket);
  if (delta.startedAt && !merged.startedAt) merged.startedAt = delta.startedAt;
  const bucket = num(merged.bucketMs, 100) || 100;
  const from = num(delta.fromMs, 0);
  let end = from;
  for (const leg of ["caller", "assistant"]) {
    const levels = merged.levels[leg];
    list(delta.levels && delta.levels[leg]).forEach((db, i) => {
      const index = Math.floor((from + i * deltaBucket) / bucket);
      while (levels.length <= index) levels.push(SILENT_DB);
      levels[index] = Math.max(levels[index], num(db, SILENT_DB));
      end = Math.max(end, from + (i + 1) * deltaBucket);
    });
  }
  merged.durationMs = Math.max(num(merged.durationMs), num(delta.durationMs), end);
  upsertSpans(merged.turns.caller, delta.turns && delta.turns.caller);
  upsertSpans(merged.turns.assistant, delta.turns && delta.turns.assistant);
  upsertSpans(merged.vapiSpeech, delta.vapiSpeech);
  for (const pause of list(delta.pauses)) {
    const at = merged.pauses.findIndex((old) => old.fromMs === pause.fromMs);
    if (at >= 0) merged.pauses[at] = pause;
    else merged.pauses.push(pause);
  }
  appendNew(merged.interruptions, delta.interruptions, (e) => e.at);
  appendNew(merged.clears, delta.clears, (e) => e.at);
  appendNew(merged.replies, delta.replies, (e) => `${e.at}/${e.latencyMs}`);
  if (delta.firstAudio) merged.firstAudio = delta.firstAudio;
  merged.dropped = Math.max(num(merged.dropped), num(delta.dropped));
  return merged;
}

// -- drawing ----------------------------------------------------------------------------------

function el(name, attributes = {}, title = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (title !== null) {
    const tip = document.createElementNS(SVG, "title");
    tip.textContent = title;
    node.appendChild(tip);
  }
  return node;
}

function text(x, y, content, attributes = {}) {
  const node = el("text", { x, y, "font-size": 11, "font-family": "system-ui, sans-serif", ...attributes });
  node.textContent = content;
  return node;
}

function seconds(ms) {
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 && s % 1 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
}

function tickStep(durationMs, width) {
  const wanted = durationMs / Math.max(2, width / 90);
  for (const step of [200, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000, 600000]) {
    if (step >= wanted) return step;
  }
  return 1800000;
}

/** One envelope per leg: the level per pixel column (the loudest bucket in it), drawn
 * symmetric about the lane's centre line. */
function envelope(levels, bucketMs, x, mid, half) {
  if (!levels.length) return "";
  const columns = new Map(); // pixel column -> the loudest bucket over it
  levels.forEach((db, i) => {
    const height = Math.max(0, Math.min(1, (num(db, SILENT_DB) - FLOOR_DB) / -FLOOR_DB)) * half;
    const from = Math.round(x(i * bucketMs));
    const to = Math.max(from + 1, Math.round(x((i + 1) * bucketMs)));
    for (let column = from; column < to; column += 1) {
      columns.set(column, Math.max(columns.get(column) || 0, height));
    }
  });
  const xs = [...columns.keys()].sort((a, b) => a - b);
  const first = xs[0];
  const last = Math.round(x(levels.length * bucketMs));
  const top = xs.map((c) => `L${c},${(mid - columns.get(c)).toFixed(1)}`).join("");
  const bottom = [...xs].reverse().map((c) => `L${c},${(mid + columns.get(c)).toFixed(1)}`);
  return `M${first},${mid}${top}L${last},${mid}${bottom.join("")}Z`;
}

function latencyColor(ms) {
  return ms < 800 ? COLORS.fast : ms < 1500 ? COLORS.slow : COLORS.late;
}

/** Draw `picture` into `element` (its content is replaced); returns the SVG element.
 * options.width: pixels (default: the element's width, else 960). */
export function drawCallPicture(element, picture, options = {}) {
  const data = picture && typeof picture === "object" ? picture : emptyPicture(100);
  const width = Math.max(240, num(options.width, 0) || element.clientWidth || 960);
  const { left, right, axis, lane, latency, gap } = LAYOUT;
  const bucketMs = num(data.bucketMs, 100) || 100;
  const levels = data.levels || {};
  const longest = Math.max(list(levels.caller).length, list(levels.assistant).length);
  const duration = Math.max(num(data.durationMs), longest * bucketMs, 1000);
  const plot = width - left - right;
  const x = (ms) => left + (Math.max(0, Math.min(duration, num(ms))) / duration) * plot;
  const callerTop = axis + gap;
  const latencyTop = callerTop + lane + gap;
  const assistantTop = latencyTop + latency + gap;
  const height = assistantTop + lane + gap;
  const replies = list(data.replies);
  const svg = el("svg", {
    class: "call-picture",
    xmlns: SVG,
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
  });
  const latencies = replies.map((r) => num(r.latencyMs)).sort((a, b) => a - b);
  const median = latencies.length ? latencies[Math.floor(latencies.length / 2)] : null;
  svg.setAttribute(
    "aria-label",
    `Call picture, ${seconds(duration)}: ${replies.length} replies` +
      (median === null ? "" : `, median latency ${median} ms`),
  );

  // time axis
  const step = tickStep(duration, plot);
  const ticks = el("g", { class: "axis" });
  for (let t = 0; t <= duration; t += step) {
    ticks.appendChild(el("line", { class: "tick", x1: x(t), x2: x(t), y1: axis - 4, y2: height - gap, stroke: "#e5e7eb" }));
    const edge = x(t) > width - right - 30; // the last label ends at the edge, not past it
    const label = { fill: COLORS.axis, "text-anchor": edge ? "end" : "start" };
    ticks.appendChild(text(edge ? x(t) - 2 : x(t) + 2, axis - 5, seconds(t), label));
  }
  svg.appendChild(ticks);

  // lanes
  const lanes = [
    ["caller", callerTop, "caller"],
    ["assistant", assistantTop, "assistant"],
  ];
  for (const [leg, top, label] of lanes) {
    const group = el("g", { class: `lane ${leg}` });
    group.appendChild(el("rect", { x: left, y: top, width: plot, height: lane, fill: "#f8fafc" }));
    group.appendChild(text(6, top + lane / 2 + 4, label, { fill: COLORS[leg], "font-weight": 600 }));
    for (const [from, to] of list(data.turns && data.turns[leg])) {
      const end = to === null || to === undefined ? duration : to;
      group.appendChild(
        el(
          "rect",
          {
            class: `turn ${leg}`,
            "data-from": from,
            "data-to": end,
            x: x(from),
            y: top,
            width: Math.max(1, x(end) - x(from)),
            height: lane,
            fill: COLORS[leg],
            "fill-opacity": 0.14,
          },
          `${leg} ${leg === "caller" ? "speaking" : "playing"} ${seconds(from)} – ${seconds(end)}`,
        ),
      );
    }
    group.appendChild(
      el("path", {
        class: `level ${leg}`,
        d: envelope(list(levels[leg]), bucketMs, x, top + lane / 2, lane / 2 - 2),
        fill: COLORS[leg],
        "fill-opacity": 0.75,
      }),
    );
    svg.appendChild(group);
  }

  // what Vapi heard as the caller speaking (its speech-update), under the caller lane
  for (const [from, to] of list(data.vapiSpeech)) {
    const end = to === null || to === undefined ? duration : to;
    svg.appendChild(
      el(
        "rect",
        { class: "vapi-speech", x: x(from), y: callerTop + lane - 4, width: Math.max(1, x(end) - x(from)), height: 4, fill: COLORS.vapi },
        `Vapi: caller speaking ${seconds(from)} – ${seconds(end)}`,
      ),
    );
  }

  // playout paused while Vapi decided whether the caller interrupts
  for (const pause of list(data.pauses)) {
    const from = num(pause.fromMs);
    const to = pause.toMs === null || pause.toMs === undefined ? duration : num(pause.toMs);
    const outcome = pause.outcome ? String(pause.outcome) : "still paused";
    svg.appendChild(
      el(
        "rect",
        {
          class: "pause",
          "data-from": from,
          x: x(from),
          y: assistantTop,
          width: Math.max(1, x(to) - x(from)),
          height: lane,
          fill: COLORS.pause,
          "fill-opacity": 0.25,
          stroke: COLORS.pause,
          "stroke-dasharray": "3 2",
        },
        `playout paused ${to - from} ms (${String(pause.source || "")}): ${outcome}`,
      ),
    );
  }

  // interruptions (Vapi's user-interrupted) and the clears that dropped assistant audio
  for (const event of list(data.interruptions)) {
    const at = x(event.at);
    svg.appendChild(
      el(
        "path",
        { class: "interruption", d: `M${at - 5},${assistantTop - 7}L${at + 5},${assistantTop - 7}L${at},${assistantTop}Z`, fill: COLORS.clear },
        `caller interrupted at ${seconds(num(event.at))}${event.cleared ? "" : " (nothing was playing)"}`,
      ),
    );
  }
  for (const clear of list(data.clears)) {
    const at = x(clear.at);
    const group = el("g", { class: "clear", "data-at": num(clear.at) }, `clear at ${seconds(num(clear.at))}: ${num(clear.droppedMs)} ms of the reply dropped`);
    group.appendChild(el("line", { x1: at, x2: at, y1: assistantTop, y2: assistantTop + lane, stroke: COLORS.clear, "stroke-width": 2 }));
    group.appendChild(text(at + 3, assistantTop + lane - 4, `✕ ${num(clear.droppedMs)} ms`, { fill: COLORS.clear, "font-size": 10 }));
    svg.appendChild(group);
  }

  // latency of every reply: from the caller's last word to the assistant's first audio
  const mid = latencyTop + latency / 2;
  for (const reply of replies) {
    const ms = num(reply.latencyMs);
    const end = num(reply.at);
    const from = x(end - ms);
    const to = x(end);
    const color = latencyColor(ms);
    const group = el("g", { class: "latency", "data-ms": ms }, `reply ${ms} ms after the caller stopped (at ${seconds(end)})`);
    group.appendChild(el("line", { x1: from, x2: to, y1: mid, y2: mid, stroke: color, "stroke-width": 2 }));
    group.appendChild(el("line", { x1: from, x2: from, y1: mid - 5, y2: mid + 5, stroke: color }));
    group.appendChild(el("line", { x1: to, x2: to, y1: mid - 5, y2: mid + 5, stroke: color }));
    group.appendChild(text((from + to) / 2, mid - 4, `${ms} ms`, { fill: color, "text-anchor": "middle", "font-size": 10 }));
    svg.appendChild(group);
  }
  if (data.firstAudio && typeof data.firstAudio === "object") {
    const at = num(data.firstAudio.at);
    const group = el("g", { class: "first-audio", "data-ms": num(data.firstAudio.latencyMs) }, `first assistant audio ${num(data.firstAudio.latencyMs)} ms after the call started`);
    group.appendChild(el("line", { x1: x(at), x2: x(at), y1: latencyTop, y2: latencyTop + latency, stroke: COLORS.assistant, "stroke-dasharray": "2 2" }));
    group.appendChild(text(x(at) + 3, latencyTop + latency - 3, "first audio", { fill: COLORS.assistant, "font-size": 10 }));
    svg.appendChild(group);
  }
  svg.appendChild(text(6, mid + 4, "latency", { fill: COLORS.axis }));
  if (num(data.dropped) > 0) {
    svg.appendChild(text(width - right, height - 1, `${num(data.dropped)} events not drawn`, { fill: COLORS.axis, "text-anchor": "end", "font-size": 9 }));
  }

  element.replaceChildren(svg);
  return svg;
}
