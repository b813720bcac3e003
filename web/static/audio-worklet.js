// demon's playback worklet: loops the session buffer and applies RAW slices.
//
// Loop seam: the server pre-fades the last L = min(2400, N/4) frames into the
// first L (protocol.md §3.2), so the frame after the last one is frame L.
// The first pass starts at 0; every later pass starts at L.

const REPORT_FRAMES = 256;   // position report cadence (~5.3 ms)
const SWAP_XFADE = 1200;     // 25 ms crossfade on swap

class DemonBuffer extends AudioWorkletProcessor {
  constructor() {
    super();
    this.chs = null;       // Float32Array per channel
    this.len = 0;
    this.seam = 0;
    this.pos = 0;
    this.old = null;       // { chs, len, pos } while crossfading a swap
    this.xf = 0;
    this.sinceReport = 0;
    this.peak = 0;
    this.sumSq = 0;
    this.count = 0;
    this.started = false;
    this.port.onmessage = (ev) => this.onMessage(ev.data);
  }

  onMessage(m) {
    if (m.type === "init") {
      this.setBuffer(m.channels);
      this.pos = 0;
      this.old = null;
    } else if (m.type === "swap") {
      if (this.chs) {
        this.old = { chs: this.chs, len: this.len, seam: this.seam, pos: this.pos };
        this.xf = SWAP_XFADE;
      }
      this.setBuffer(m.channels);
      this.pos = 0;
    } else if (m.type === "slice" && this.chs) {
      const start = m.start;
      if (start >= this.len) return;
      for (let c = 0; c < this.chs.length && c < m.channels.length; c++) {
        const src = m.channels[c];
        this.chs[c].set(src.length > this.len - start ? src.subarray(0, this.len - start) : src, start);
      }
    } else if (m.type === "stop") {
      this.chs = null;
      this.old = null;
      this.started = false;
    }
  }

  setBuffer(chs) {
    this.chs = chs;
    this.len = chs[0].length;
    this.seam = Math.min(2400, Math.floor(this.len / 4));
  }

  process(_inputs, outputs) {
    const out = outputs[0];
    const n = out[0].length;
    if (!this.chs || this.len === 0) {
      for (const o of out) o.fill(0);
      return true;
    }
    if (!this.started) {
      this.started = true;
      this.port.postMessage({ type: "started" });
    }
    const nch = this.chs.length;
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < out.length; c++) {
        let v = this.chs[Math.min(c, nch - 1)][this.pos];
        if (this.old) {
          const w = this.xf / SWAP_XFADE;
          const o = this.old.chs[Math.min(c, this.old.chs.length - 1)][this.old.pos];
          v = v * (1 - w) + o * w;
        }
        out[c][i] = v;
        const a = Math.abs(v);
        if (a > this.peak) this.peak = a;
        this.sumSq += v * v;
      }
      this.count++;
      if (++this.pos >= this.len) this.pos = this.seam;
      if (this.old) {
        if (++this.old.pos >= this.old.len) this.old.pos = this.old.seam;
        if (--this.xf <= 0) this.old = null;
      }
      if (++this.sinceReport >= REPORT_FRAMES) {
        this.port.postMessage({ type: "pos", pos: this.pos, peak: this.peak, rms: Math.sqrt(this.sumSq / (this.count * out.length)) });
        this.sinceReport = 0;
        this.peak = 0;
        this.sumSq = 0;
        this.count = 0;
      }
    }
    return true;
  }
}

registerProcessor("demon-buffer", DemonBuffer);
