// demon's browser page: plain ES module, no build step.
//
// Protocol: DEMON's session WebSocket (shared/spec/protocol.md). The page
// sends "slice_encoding":"raw" in its session config so the server sends RAW
// float16 slices (flags=0) and the page needs no zstd decoder. A DELTA slice
// (flags=1) is counted and reported, never applied.

const SAMPLE_RATE = 48000;
const POOL = 9600;                 // source alignment, 0.2 s
const MAX_SOURCE_SECONDS = 240;
const PARAMS_INTERVAL_MS = 8;      // like DEMON's useParamSync
const BLEND_THROTTLE_MS = 100;
const SLICE_HEADER = 23;
const START_FAILED = "Session failed while starting — refresh the page to retry.";
const RUNTIME_FAILED = "Generation stopped — press Start to begin a new session.";
// Error frames after which the server keeps the session streaming (protocol.md §4.5);
// every other error frame is followed by the close.
const NONFATAL_ERRORS = new Set(["bad_message"]);

const $ = (id) => document.getElementById(id);

// Test hook: a live object a browser test can poll.
const state = {
  status: "idle",            // idle | loading | connecting | playing | stopped | error
  slicesReceived: 0,
  audioContextState: "none",
  lastError: null,
  closeCode: null,           // the session socket's close code, once it closed
  ttfaMs: null,
  lateSlices: 0,
  deltaSlicesIgnored: 0,
  numGens: null,
  sessionReady: null,        // the ready message
  notSupported: [],
  playheadSec: 0,
};
window.__demon = state;

let ctx = null;          // AudioContext
let node = null;         // AudioWorkletNode
let ws = null;
let phase = "idle";      // ready | initial-buffer | streaming
let channels = 2;
let bufferFrames = 0;
let startClickedAt = 0;
let paramsTimer = 0;
let swapPending = null;  // swap_ready message awaiting its buffer
let stemPending = 0;     // stem binaries still to skip
// The session has started once its first slice arrived: until then any failure (an
// error frame, then close 1011) is a start failure, even after the initial buffer (the
// stem payload, registration and the runner all come after it).
let firstSliceSeen = false;
let playheadFrames = 0;
let level = { peak: 0, rms: 0 };
let overview = null;     // Float32Array of per-pixel peaks
let lists = { fixtures: [], uploads: [], serverSide: [] };
let localPCM = null;     // { name, samples: Float32Array interleaved stereo, frames }
let lastBlendSent = 0;
let blendTimer = 0;

// ---------------------------------------------------------------- UI helpers

function setStatus(s, text) {
  state.status = s;
  const el = $("status");
  el.dataset.status = s;
  el.textContent = text ?? s[0].toUpperCase() + s.slice(1);
  $("start").disabled = s === "connecting" || s === "loading" || s === "playing";
  $("stop").disabled = !(s === "connecting" || s === "playing");
  $("send-prompt").disabled = s !== "playing";
}

function showError(title, message) {
  $("error-title").textContent = title;
  $("error-message").textContent = message ?? "";
  $("error").hidden = false;
  state.lastError = message ? `${title} ${message}` : title;
  log(`error: ${state.lastError}`);
}

// serverFailed shows a fatal error frame: a runtime failure (pipeline_error) stops a
// session that was generating; any other failure before the first slice is a start failure.
// Status "error" keeps the message when the close follows.
function serverFailed(m) {
  const detail = m.message || `Server error: ${m.code || "unknown"}`;
  setStatus("error", "Error");
  if (m.code === "pipeline_error") showError(RUNTIME_FAILED, detail);
  else if (!firstSliceSeen) showError(START_FAILED, detail);
  else showError("Server error:", detail);
}

function clearError() {
  $("error").hidden = true;
  state.lastError = null;
}

function log(line) {
  const el = $("log");
  const t = new Date().toISOString().slice(11, 23);
  el.textContent = `${t} ${line}\n` + el.textContent.slice(0, 6000);
}

function updateCtxState() {
  state.audioContextState = ctx ? ctx.state : "none";
  $("ctx-state").textContent = state.audioContextState;
}

// ---------------------------------------------------------------- float16

const F16 = new Float32Array(65536);
for (let h = 0; h < 65536; h++) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  F16[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
}

// Decode interleaved little-endian float16 bytes into per-channel arrays.
function deinterleaveF16(buf, byteOffset, nch) {
  const count = (buf.byteLength - byteOffset) >> 1;
  const u16 = new Uint16Array(buf, byteOffset, count); // LE platforms
  const frames = Math.floor(count / nch);
  const out = [];
  for (let c = 0; c < nch; c++) out.push(new Float32Array(frames));
  for (let i = 0, k = 0; i < frames; i++) for (let c = 0; c < nch; c++, k++) out[c][i] = F16[u16[k]];
  return out;
}

// ---------------------------------------------------------------- HTTP

async function getJSON(path, fallback) {
  try {
    const r = await fetch(path, { cache: "no-store" });
    if (!r.ok) throw new Error(`${r.status}`);
    return await r.json();
  } catch (e) {
    log(`${path}: ${e.message}`);
    return fallback;
  }
}

async function loadLists() {
  const [fixtures, uploads, info] = await Promise.all([
    getJSON("/api/fixtures", []), getJSON("/api/user_uploads", []), getJSON("/api/server-info", {}),
  ]);
  lists = { fixtures: fixtures || [], uploads: uploads || [], serverSide: (info && info.server_side_fixtures) || [] };
  const sel = $("track");
  const prev = sel.value;
  sel.replaceChildren();
  const group = (label, names) => {
    if (!names.length) return;
    const g = document.createElement("optgroup");
    g.label = label;
    for (const n of names) {
      const o = document.createElement("option");
      o.value = n;
      o.textContent = n;
      g.append(o);
    }
    sel.append(g);
  };
  group("Fixtures", lists.fixtures);
  group("Uploads", lists.uploads);
  if (!lists.fixtures.length && !lists.uploads.length) {
    sel.append(new Option("no tracks on the server", ""));
  }
  if (prev && [...sel.options].some((o) => o.value === prev)) sel.value = prev;
}

// Fetch a track the server does not load itself and decode it to PCM.
async function fetchTrackPCM(name) {
  const urls = lists.uploads.includes(name)
    ? [`/user_uploads/${encodeURIComponent(name)}`, `/fixtures/${encodeURIComponent(name)}`]
    : [`/fixtures/${encodeURIComponent(name)}`];
  let lastErr = null;
  for (const u of urls) {
    const r = await fetch(u);
    if (r.ok) return decodeToPCM(await r.arrayBuffer());
    lastErr = new Error(`Audio fetch failed: ${r.status} ${u}`);
  }
  throw lastErr;
}

// decodeAudioData through a 48 kHz OfflineAudioContext resamples to 48 kHz.
async function decodeToPCM(bytes) {
  const off = new OfflineAudioContext(2, 1, SAMPLE_RATE);
  const ab = await off.decodeAudioData(bytes);
  let frames = Math.min(ab.length, MAX_SOURCE_SECONDS * SAMPLE_RATE);
  frames -= frames % POOL;
  if (frames <= 0) throw new Error("audio is shorter than 0.2 s");
  const l = ab.getChannelData(0);
  const r = ab.numberOfChannels > 1 ? ab.getChannelData(1) : l;
  const samples = new Float32Array(frames * 2);
  for (let i = 0; i < frames; i++) {
    samples[2 * i] = l[i];
    samples[2 * i + 1] = r[i];
  }
  return { samples, frames };
}

// PCM frame: u32 channels, u32 frames, f32 interleaved (all little-endian).
function pcmFrame(pcm) {
  const buf = new ArrayBuffer(8 + pcm.samples.byteLength);
  const dv = new DataView(buf);
  dv.setUint32(0, 2, true);
  dv.setUint32(4, pcm.frames, true);
  new Float32Array(buf, 8).set(pcm.samples);
  return buf;
}

function wsURL() {
  const q = new URLSearchParams(location.search).get("ws");
  if (q) return q;
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
}

// ---------------------------------------------------------------- audio

async function ensureAudio() {
  if (!ctx) {
    ctx = new AudioContext({ sampleRate: SAMPLE_RATE, latencyHint: "interactive" });
    ctx.onstatechange = updateCtxState;
    await ctx.audioWorklet.addModule(new URL("audio-worklet.js", import.meta.url));
    node = new AudioWorkletNode(ctx, "demon-buffer", { numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [2] });
    node.port.onmessage = onWorkletMessage;
    node.connect(ctx.destination);
  }
  if (ctx.state !== "running") await ctx.resume();
  updateCtxState();
}

function onWorkletMessage(ev) {
  const m = ev.data;
  if (m.type === "pos") {
    playheadFrames = m.pos;
    state.playheadSec = m.pos / SAMPLE_RATE;
    level.peak = Math.max(m.peak, level.peak * 0.9);
    level.rms = m.rms;
  } else if (m.type === "started") {
    if (state.ttfaMs === null && startClickedAt) {
      state.ttfaMs = Math.round(performance.now() - startClickedAt);
      $("ttfa").textContent = `${state.ttfaMs} ms`;
      log(`first audio after ${state.ttfaMs} ms`);
    }
  }
}

function computeOverview(chs) {
  const w = $("wave").width;
  const out = new Float32Array(w);
  const n = chs[0].length;
  const step = Math.max(1, Math.floor(n / w));
  for (let x = 0; x < w; x++) {
    let p = 0;
    const from = Math.floor((x * n) / w);
    for (let i = from; i < Math.min(n, from + step); i += 8) {
      for (const c of chs) p = Math.max(p, Math.abs(c[i]));
    }
    out[x] = p;
  }
  overview = out;
}

function draw() {
  const cv = $("wave");
  const g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  if (overview) {
    g.fillStyle = "#3a4252";
    const mid = cv.height / 2;
    for (let x = 0; x < overview.length; x++) {
      const h = overview[x] * mid;
      g.fillRect(x, mid - h, 1, 2 * h || 1);
    }
    if (bufferFrames) {
      g.fillStyle = "#7c5cff";
      g.fillRect((playheadFrames / bufferFrames) * cv.width, 0, 2, cv.height);
    }
  }
  const db = level.peak > 0 ? 20 * Math.log10(level.peak) : -Infinity;
  $("level").textContent = Number.isFinite(db) ? `${db.toFixed(1)} dB` : "–∞ dB";
  $("level-bar").style.width = `${Math.min(100, Math.max(0, (db + 60) / 60 * 100))}%`;
  requestAnimationFrame(draw);
}

// ---------------------------------------------------------------- session

function sessionConfig(source) {
  return {
    sde: false,
    lora: false,
    depth: Number($("depth").value),
    vae_window: 0.36,
    crop: 0,
    steps: 8,
    fast_vae: false,
    walk_window: true,
    walk_window_s: 60,
    enabled_loras: [],
    prompt: $("prompt-a").value,
    prompt_b: $("prompt-b").value,
    lora_strengths: {},
    fixture_name: source.name,
    use_server_fixture: source.serverSide,
    slice_encoding: "raw", // demon extension: RAW float16 slices, no zstd needed
  };
}

function rawKnobs() {
  return { seed: Math.max(0, Math.floor(Number($("seed").value) || 0)), denoise: Number($("denoise").value) };
}

function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
}

async function resolveSource() {
  if ($("use-file").checked) {
    if (!localPCM) throw new Error("choose a local file first");
    return { name: localPCM.name, serverSide: false, pcm: localPCM };
  }
  const name = $("track").value;
  if (!name) throw new Error("No tracks available. Please refresh.");
  if (lists.serverSide.includes(name)) return { name, serverSide: true, pcm: null };
  return { name, serverSide: false, pcm: await fetchTrackPCM(name) };
}

async function start() {
  clearError();
  stopSession(false);
  state.slicesReceived = 0;
  state.lateSlices = 0;
  state.deltaSlicesIgnored = 0;
  state.ttfaMs = null;
  state.closeCode = null;
  state.notSupported = [];
  $("slices").textContent = "0";
  $("late").textContent = "0";
  $("ttfa").textContent = "–";
  startClickedAt = performance.now();
  setStatus("loading", "Loading…");
  let source;
  try {
    await ensureAudio();
  } catch (e) {
    setStatus("error", "Error");
    showError("Audio failed to start:", e.message);
    return;
  }
  try {
    source = await resolveSource();
  } catch (e) {
    setStatus("error", "Error");
    showError("Track failed to load:", e.message);
    return;
  }
  setStatus("connecting", "Connecting…");
  connect(source);
}

function connect(source) {
  const sock = new WebSocket(wsURL());
  ws = sock;
  sock.binaryType = "arraybuffer";
  phase = "ready";
  firstSliceSeen = false;
  let startError = null;
  sock.onopen = () => {
    sock.send(JSON.stringify(sessionConfig(source)));
    if (!source.serverSide) sock.send(pcmFrame(source.pcm));
    log(`connected; config sent (${source.serverSide ? "server fixture" : "PCM " + source.pcm.frames + " frames"})`);
  };
  sock.onerror = () => log("WebSocket error");
  sock.onmessage = (ev) => {
    if (sock !== ws) return;
    if (phase === "ready") {
      if (typeof ev.data !== "string") {
        startError = "Unexpected binary message before ready";
        return;
      }
      const m = JSON.parse(ev.data);
      if (m.type === "error") {
        serverFailed(m);
        return;
      }
      if (m.type !== "ready") {
        startError = `Unexpected init message: ${ev.data}`;
        return;
      }
      state.sessionReady = m;
      channels = m.channels || 2;
      if (m.pipeline_depth) $("depth").value = String(m.pipeline_depth);
      phase = "initial-buffer";
      return;
    }
    if (phase === "initial-buffer") {
      if (typeof ev.data === "string") {
        startError = "Expected the initial buffer, got text";
        return;
      }
      loadBuffer(ev.data, "init");
      phase = "streaming";
      setStatus("playing", "Playing");
      send({ type: "loop_band", start_sec: null, end_sec: null });
      send({ type: "set_timbre_strength", value: 1 });
      send({ type: "set_prompt_blend", value: Number($("blend").value) });
      paramsTimer = setInterval(() => {
        if (ctx && ctx.state === "running") send({ type: "params", raw: rawKnobs(), playback_pos: playheadFrames / SAMPLE_RATE });
      }, PARAMS_INTERVAL_MS);
      return;
    }
    onStreaming(ev.data);
  };
  sock.onclose = (ev) => {
    if (sock !== ws) return;
    clearInterval(paramsTimer);
    state.closeCode = ev.code;
    const wasPhase = phase;
    phase = "idle";
    ws = null;
    if (state.status === "error") return; // error JSON already shown
    // Before the first slice a close is a failed start, also after the initial buffer; a
    // 1011 then is any server-side start failure, even without an error frame.
    if (wasPhase === "ready" || wasPhase === "initial-buffer" || !firstSliceSeen) {
      setStatus("error", "Error");
      if (startError || ev.code === 1011) showError(START_FAILED, startError || ev.reason);
      else showError(`Connection failed (${ev.reason || "code " + ev.code}) — refresh to retry.`);
      return;
    }
    if (state.status === "playing") {
      setStatus("stopped", "Disconnected");
      showError(`Connection lost (${ev.reason || "code " + ev.code}).`, "Press Start to begin a new session.");
    }
  };
}

function loadBuffer(data, kind) {
  const chs = deinterleaveF16(data, 0, channels);
  bufferFrames = chs[0].length;
  computeOverview(chs);
  node.port.postMessage({ type: kind, channels: chs }, chs.map((c) => c.buffer));
  log(`${kind === "init" ? "initial" : "swap"} buffer: ${bufferFrames} frames × ${channels} ch`);
}

function onStreaming(data) {
  if (typeof data !== "string") {
    if (swapPending) {
      channels = swapPending.channels || channels;
      swapPending = null;
      loadBuffer(data, "swap");
      setStatus("playing", "Playing");
      return;
    }
    if (stemPending > 0) {
      stemPending--;
      return;
    }
    onSlice(data);
    return;
  }
  let m;
  try {
    m = JSON.parse(data);
  } catch {
    return;
  }
  switch (m.type) {
    case "params_update":
      if (m.params && m.params.num_gens !== undefined) {
        state.numGens = m.params.num_gens;
        $("gens").textContent = String(m.params.num_gens);
      }
      break;
    case "swap_ready":
      swapPending = m;
      break;
    case "swap_failed":
      setStatus("playing", "Playing");
      showError("Swap failed — please try again.", m.error || "");
      break;
    case "stem_assets":
      stemPending = (m.stems || []).length;
      break;
    case "depth_applied":
      $("depth").value = String(m.value);
      log(`depth applied: ${m.value}`);
      break;
    case "prompt_applied":
      log(`prompt applied: ${m.tags}`);
      break;
    case "not_supported":
      state.notSupported.push(m.request);
      log(`not supported: ${m.request}${m.message ? " — " + m.message : ""}`);
      break;
    case "error":
      if (NONFATAL_ERRORS.has(m.code)) showError("Server error:", m.message || m.code);
      else serverFailed(m);
      break;
    default:
      log(`event: ${m.type}`);
  }
}

function onSlice(buf) {
  if (buf.byteLength < SLICE_HEADER) {
    log("slice too short");
    return;
  }
  firstSliceSeen = true;
  const dv = new DataView(buf);
  const flags = dv.getUint8(0);
  const start = dv.getUint32(1, true);
  if (flags !== 0) {
    state.deltaSlicesIgnored++;
    if (state.deltaSlicesIgnored === 1) {
      showError("Server sent DELTA slices;", "this page asked for RAW (slice_encoding) and cannot decode zstd.");
    }
    return;
  }
  // RAW: overwrite. A fresh copy so the byte offset is 2-aligned.
  const chs = deinterleaveF16(buf.slice(SLICE_HEADER), 0, channels);
  const n = chs[0].length;
  node.port.postMessage({ type: "slice", start, channels: chs }, chs.map((c) => c.buffer));
  state.slicesReceived++;
  $("slices").textContent = String(state.slicesReceived);
  // Lead = how far ahead of the playhead the slice starts (wrapping).
  if (bufferFrames) {
    let lead = (start - playheadFrames) % bufferFrames;
    if (lead < 0) lead += bufferFrames;
    if (lead > bufferFrames / 2) lead -= bufferFrames;
    const late = lead < 0 && -lead < n; // the playhead already entered it
    if (lead < 0) {
      state.lateSlices++;
      $("late").textContent = String(state.lateSlices);
    }
    $("lateness").textContent = `${Math.round((lead / SAMPLE_RATE) * 1000)} ms${late ? " (late)" : ""}`;
  }
}

function stopSession(userInitiated = true) {
  clearInterval(paramsTimer);
  if (ws) {
    const s = ws;
    ws = null;
    s.close(1000, "client stop");
  }
  phase = "idle";
  swapPending = null;
  stemPending = 0;
  if (node) node.port.postMessage({ type: "stop" });
  if (userInitiated) setStatus("stopped", "Stopped");
}

// ---------------------------------------------------------------- swap / upload

async function swapTo(name) {
  if (state.status !== "playing") return;
  setStatus("playing", `Swapping to ${name}…`);
  if (lists.fixtures.includes(name) || lists.uploads.includes(name)) {
    send({ type: "swap_source", use_server_source: true, fixture_name: name, tags: $("prompt-a").value });
    return;
  }
}

async function swapToLocal() {
  if (state.status !== "playing" || !localPCM) return;
  setStatus("playing", `Swapping to ${localPCM.name}…`);
  send({ type: "swap_source", fixture_name: localPCM.name, tags: $("prompt-a").value });
  if (ws) ws.send(pcmFrame(localPCM));
}

function upload() {
  if (!localPCM) return;
  const name = localPCM.name;
  const sock = new WebSocket(wsURL());
  sock.binaryType = "arraybuffer";
  $("upload").disabled = true;
  $("source-info").textContent = `uploading ${name}…`;
  let settled = false;
  sock.onopen = () => {
    sock.send(JSON.stringify({ type: "upload_track", name }));
    sock.send(pcmFrame(localPCM));
  };
  sock.onmessage = async (ev) => {
    if (typeof ev.data !== "string") return;
    const m = JSON.parse(ev.data);
    if (m.type === "upload_ok") {
      settled = true;
      $("source-info").textContent = `uploaded as ${m.name} (${m.duration_s.toFixed(1)} s, ${m.bpm} BPM, ${m.key})`;
      await loadLists();
      $("track").value = m.name;
      $("use-file").checked = false;
      swapTo(m.name);
    } else if (m.type === "upload_failed") {
      settled = true;
      showError("Upload failed:", m.error);
    }
  };
  sock.onerror = () => { if (!settled) showError("Upload failed:", "upload connection failed"); settled = true; };
  sock.onclose = (ev) => {
    $("upload").disabled = !localPCM;
    if (!settled) showError("Upload failed:", ev.reason || `upload connection closed (${ev.code})`);
  };
}

// ---------------------------------------------------------------- wiring

$("start").addEventListener("click", start);
$("stop").addEventListener("click", () => stopSession(true));
$("refresh").addEventListener("click", loadLists);
$("track").addEventListener("change", () => { $("use-file").checked = false; swapTo($("track").value); });
$("use-file").addEventListener("change", () => { if ($("use-file").checked) swapToLocal(); });
$("upload").addEventListener("click", upload);
$("file").addEventListener("change", async () => {
  const f = $("file").files[0];
  localPCM = null;
  $("upload").disabled = true;
  if (!f) return;
  $("source-info").textContent = `decoding ${f.name}…`;
  try {
    const pcm = await decodeToPCM(await f.arrayBuffer());
    localPCM = { name: f.name, ...pcm };
    $("source-info").textContent = `${f.name}: ${(pcm.frames / SAMPLE_RATE).toFixed(1)} s at 48 kHz stereo`;
    $("upload").disabled = false;
    $("use-file").checked = true;
    swapToLocal();
  } catch (e) {
    $("source-info").textContent = "";
    showError("Track failed to load:", e.message || String(e));
  }
});
$("send-prompt").addEventListener("click", () => {
  send({ type: "prompt", tags: $("prompt-a").value, tags_b: $("prompt-b").value });
});
$("blend").addEventListener("input", () => {
  const go = () => {
    lastBlendSent = performance.now();
    send({ type: "set_prompt_blend", value: Number($("blend").value) });
  };
  clearTimeout(blendTimer);
  const wait = BLEND_THROTTLE_MS - (performance.now() - lastBlendSent);
  if (wait <= 0) go();
  else blendTimer = setTimeout(go, wait);
});
$("denoise").addEventListener("input", () => { $("denoise-value").textContent = Number($("denoise").value).toFixed(2); });
$("depth").addEventListener("change", () => {
  if (state.status === "playing") send({ type: "set_depth", value: Number($("depth").value) });
});

setStatus("idle", "Idle");
loadLists();
requestAnimationFrame(draw);
