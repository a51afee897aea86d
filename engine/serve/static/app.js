// The seqpan page: pick a video (or features), type a query, see the top moments on the timeline.
// It talks only to the public API: GET /v1/videos, POST /v1/videos/extract, POST /v1/ground.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_ITEM = "seqpan-api-key";  // sessionStorage: this tab only
const player = $("player");
let items = new Map();  // option value -> {kind: "video"|"features", name, duration, url}
let current = null;
let stopAt = null;  // the end of the moment being played
let keyWaiters = null;  // resolvers waiting for the API key form

// -- API --------------------------------------------------------------------------------------------
function authHeaders() {
  const key = sessionStorage.getItem(KEY_ITEM);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function askKey(wrong) {
  $("key-note").textContent = wrong
    ? "That key was refused; give the server's API key (kept for this browser tab only)."
    : "This server needs its API key; the page keeps it for this browser tab only.";
  $("key-form").hidden = false;
  $("key").focus();
  if (keyWaiters === null) keyWaiters = [];
  return new Promise((resolve) => keyWaiters.push(resolve));
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_ITEM, $("key").value);
  $("key").value = "";
  $("key-form").hidden = true;
  const waiters = keyWaiters || [];
  keyWaiters = null;
  waiters.forEach((resolve) => resolve());
});

// JSON from the API; asks for the key on 401 and retries; an answer that is not OK throws its error line.
async function api(path, options = {}) {
  for (;;) {
    const hadKey = sessionStorage.getItem(KEY_ITEM) !== null;
    const response = await fetch(path, { ...options, headers: { ...(options.headers || {}), ...authHeaders() } });
    if (response.status === 401) {
      sessionStorage.removeItem(KEY_ITEM);
      await askKey(hadKey);
      continue;
    }
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON: said below */ }
    if (!response.ok || body === null) {
      throw new Error((body && body.error) || `${path}: HTTP ${response.status}`);
    }
    return body;
  }
}

const postJSON = (path, payload) =>
  api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });

// -- messages -------------------------------------------------------------------------------------------
function showError(message) { $("error").textContent = String(message).split("\n")[0]; }
function say(message) { $("status").textContent = message; }

// -- what can be grounded ---------------------------------------------------------------------------------
async function loadListing() {
  const listing = await api("/v1/videos");
  const select = $("source");
  select.replaceChildren();
  items = new Map();
  for (const [kind, label, entries] of [["video", "Videos", listing.videos], ["features", "Features", listing.features]]) {
    if (entries.length === 0) continue;
    const group = document.createElement("optgroup");
    group.label = label;
    for (const entry of entries) {
      const value = `${kind}:${entry.name}`;
      items.set(value, { kind, ...entry });
      group.append(new Option(entry.name, value));
    }
    select.append(group);
  }
  if (items.size === 0) say("Nothing to ground: start the server with --features-root DIR or --videos DIR --i3d W.pt.");
  if (listing.truncated) say("The list is cut short: the folders hold more files than the server lists.");
}

function select(value) {
  current = items.get(value) || null;
  $("moments").replaceChildren();
  $("playhead").hidden = true;
  $("extraction").hidden = true;
  showError("");
  if (current === null) return;
  $("source").value = value;
  const isVideo = current.kind === "video";
  player.hidden = !isVideo;
  $("duration-box").hidden = isVideo;
  if (isVideo) {
    player.src = current.url;
    const video = current;  // start extracting now, so that grounding does not wait as long
    extraction(video).catch((err) => { if (current === video) showError(err.message); });
  } else {
    player.removeAttribute("src");
    player.load();
    $("duration").value = current.duration ?? "";
  }
  axis(duration());
}

function duration() {
  if (current === null) return NaN;
  return current.kind === "video" ? current.duration : Number($("duration").value);
}

function axis(seconds) {
  $("axis-end").textContent = Number.isFinite(seconds) ? `${fmt(seconds)} s` : "";
}

// -- a video's features: extracted on first use, with progress ------------------------------------------
const extractions = new Map();  // video name -> promise of its ready status

function extraction(video) {
  if (!extractions.has(video.name)) {
    const done = pollExtraction(video).catch((err) => { extractions.delete(video.name); throw err; });
    extractions.set(video.name, done);
    done.catch(() => {});  // reported where it is awaited
  }
  return extractions.get(video.name);
}

async function pollExtraction(video) {
  for (;;) {
    const status = await postJSON("/v1/videos/extract", { video: video.name });
    if (current === video) showProgress(status);
    if (status.status === "ready") return status;
    if (status.status === "failed") throw new Error(status.error);
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
}

function showProgress(status) {
  $("extraction").hidden = false;
  $("extract-progress").value = status.progress;
  $("extract-text").textContent = status.status === "ready" ? "Features ready."
    : status.status === "failed" ? "Feature extraction failed."
    : `Extracting I3D features… ${Math.round(status.progress * 100)}%`;
}

// -- grounding --------------------------------------------------------------------------------------------
async function ground() {
  if (current === null) return;
  showError("");
  const entry = { query: $("query").value, top_k: Number($("top-k").value) || 5 };
  if ($("nms").value !== "") entry.nms = Number($("nms").value);
  if (current.kind === "video") {
    entry.video = current.name;
  } else {
    entry.features = current.name;
    entry.duration = duration();
    axis(entry.duration);
  }
  remember();
  const grounded = current;
  try {
    if (grounded.kind === "video") {
      say("Waiting for the video's features…");
      await extraction(grounded);
    }
    say("Grounding…");
    const { results: [result] } = await postJSON("/v1/ground", { requests: [entry] });
    if (current !== grounded) return;
    if (result.error) throw new Error(result.error);
    draw(result.moments || [result], grounded.kind === "video" ? grounded.duration : entry.duration);
    say(`${(result.moments || [result]).length} moments for “${entry.query}”, best first.`);
  } catch (err) {
    say("");
    showError(err.message);
  }
}

function draw(moments, seconds) {
  const list = $("moments");
  list.replaceChildren();
  moments.forEach((m, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "moment";
    button.dataset.start = m.start;
    button.dataset.end = m.end;
    button.dataset.score = m.score;
    button.setAttribute("aria-pressed", "false");
    button.setAttribute("aria-label",
      `Moment ${i + 1}: ${fmt(m.start)} to ${fmt(m.end)} seconds, score ${m.score.toFixed(3)}`);
    const label = span("label");
    label.append(span("times", `${i + 1}. ${fmt(m.start)}–${fmt(m.end)} s`), span("score", `score ${m.score.toFixed(3)}`));
    const lane = span("lane");
    const bar = span("bar");
    bar.style.left = percent(m.start / seconds);
    bar.style.width = percent((m.end - m.start) / seconds);
    lane.append(bar);
    button.append(label, lane);
    button.addEventListener("click", () => play(m, button));
    const item = document.createElement("li");
    item.append(button);
    list.append(item);
  });
}

function play(moment, button) {
  for (const other of document.querySelectorAll(".moment")) other.setAttribute("aria-pressed", "false");
  button.setAttribute("aria-pressed", "true");
  if (current.kind !== "video") {
    playhead(moment.start, duration());
    return;
  }
  stopAt = moment.end;
  player.currentTime = moment.start;
  player.play().catch(() => {});  // a browser may refuse to play without a gesture: the seek stands
}

player.addEventListener("timeupdate", () => {
  if (current !== null && current.kind === "video") playhead(player.currentTime, current.duration);
  if (stopAt !== null && player.currentTime >= stopAt) {
    player.pause();
    stopAt = null;
  }
});
player.addEventListener("seeking", () => { if (player.currentTime > (stopAt ?? Infinity)) stopAt = null; });

function playhead(seconds, total) {
  $("playhead").hidden = false;
  $("playhead").style.left = percent(seconds / total);
}

// -- the address keeps the video and the query ----------------------------------------------------------
function remember() {
  const params = new URLSearchParams();
  params.set(current.kind, current.name);
  if (current.kind === "features") params.set("duration", $("duration").value);
  params.set("q", $("query").value);
  params.set("k", $("top-k").value);
  if ($("nms").value !== "") params.set("nms", $("nms").value);
  history.replaceState(null, "", `?${params}`);
}

function restore() {
  const params = new URLSearchParams(location.search);
  const kind = params.has("video") ? "video" : params.has("features") ? "features" : null;
  const wanted = kind && `${kind}:${params.get(kind)}`;
  select(items.has(wanted) ? wanted : $("source").value);
  if (wanted && !items.has(wanted)) showError(`${kind} ${params.get(kind)} is not in the server's list`);
  if (params.has("duration") && current && current.kind === "features") $("duration").value = params.get("duration");
  if (params.has("k")) $("top-k").value = params.get("k");
  if (params.has("nms")) $("nms").value = params.get("nms");
  if (params.has("q")) {
    $("query").value = params.get("q");
    if (current !== null && $("query").value !== "") ground();
  }
}

// -- small helpers ------------------------------------------------------------------------------------------
function fmt(seconds) { return seconds.toFixed(2); }
function percent(fraction) { return `${Math.min(100, Math.max(0, fraction * 100))}%`; }
function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

$("source").addEventListener("change", (event) => select(event.target.value));
$("duration").addEventListener("change", () => axis(duration()));
$("query-form").addEventListener("submit", (event) => { event.preventDefault(); ground(); });

loadListing().then(restore).catch((err) => showError(err.message));
