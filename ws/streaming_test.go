package ws

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Steady-state robustness: binary follow-ups, oversized frames, loop band,
// not-supported answers, messages before ready.

// TestBinaryFollowUpsNeverKillTheSession: an oversized swap PCM, a
// PCM-taking message that fails to decode followed by its PCM, a stray
// binary frame and an oversized text message are each answered or ignored,
// and the session keeps streaming with the client's mirror in step.
func TestBinaryFollowUpsNeverKillTheSession(t *testing.T) {
	const limit = 1 << 20
	e := newEnv(t, envOptions{opts: func(o *Options) { o.MaxUploadBytes = limit }})
	cl := e.startClient(t, fixtureConfig(nil), nil)
	cl.readSlices(1)

	// (a) A swap PCM over MaxUploadBytes (6 s stereo float32 ≈ 2.3 MB):
	// swap_failed, not a bare 1009.
	cl.sendJSON(map[string]any{"type": "swap_source", "fixture_name": "big.wav"})
	require.NoError(t, cl.c.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, testPCM(6))))
	assert.Contains(t, cl.applyUntil("swap_failed")["error"], "exceeds this server's limit of 1048576 bytes")
	cl.readSlices(2)

	// (b) A swap_source that fails to decode, followed by its PCM: the
	// bad_message error and the swap_failed the client waits for; the PCM
	// is consumed as the message's follow-up.
	cl.sendJSON(map[string]any{"type": "swap_source", "fixture_name": "x.wav", "stem_source_mode": "bogus"})
	require.NoError(t, cl.c.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, testPCM(0.5))))
	ev := cl.applyUntil("error")
	assert.Equal(t, CodeBadMessage, ev["code"])
	assert.Contains(t, ev["message"], "stem_source_mode")
	assert.Contains(t, cl.applyUntil("swap_failed")["error"], "stem_source_mode")
	// The same for a timbre source without a name; its follow-up here is
	// text (the rule takes the next message whatever its type) and is not
	// dispatched.
	cl.sendJSON(map[string]any{"type": "set_timbre_source"})
	cl.sendJSON(map[string]any{"type": "teleport"})
	evs := cl.eventsUntil("timbre_failed")
	assert.Contains(t, evs[len(evs)-1]["error"], "name")
	cl.sendJSON(map[string]any{"type": "prompt", "tags": "after the follow-up"})
	for _, ev := range cl.eventsUntil("prompt_applied") {
		assert.NotEqual(t, "not_supported", ev["type"], "the text follow-up was dispatched: %v", ev)
	}
	// An oversized follow-up of a message that failed to decode is consumed
	// too.
	cl.sendJSON(map[string]any{"type": "set_structure_source", "name": 5})
	require.NoError(t, cl.c.WriteMessage(websocket.BinaryMessage, bytes.Repeat([]byte{7}, 2*limit)))
	assert.Contains(t, cl.applyUntil("structure_failed")["error"], "wrong field type")

	// (c) A stray binary frame well over the text limit is ignored.
	require.NoError(t, cl.c.WriteMessage(websocket.BinaryMessage, bytes.Repeat([]byte{1}, 200<<10)))
	// An oversized text message gets a bad_message error.
	big := `{"type":"prompt","tags":"` + string(bytes.Repeat([]byte{'a'}, textReadLimit)) + `"}`
	require.NoError(t, cl.c.WriteMessage(websocket.TextMessage, []byte(big)))
	assert.Contains(t, cl.applyUntil("error")["message"], "message exceeds 65536 bytes")

	// A by-name swap that fails to decode is answered too.
	cl.sendJSON(map[string]any{"type": "swap_source", "use_server_source": true})
	assert.Contains(t, cl.applyUntil("swap_failed")["error"], "fixture_name")

	// Still in step: messages are answered in order, and slices flow.
	cl.sendJSON(map[string]any{"type": "prompt", "tags": "still alive"})
	evs = cl.eventsUntil("prompt_applied")
	assert.Equal(t, "still alive", evs[len(evs)-1]["tags"])
	cl.readSlices(3)
	logs := e.logs.String()
	assert.Contains(t, logs, "PCM follow-up too large")
	assert.Contains(t, logs, "ignoring a binary message where a JSON message was expected")
	e.stopAndCompare(t, cl)
}

// eventsUntil reads (applying slices and swap buffers) until an event of
// type typ and returns every JSON event seen, that one last. typ
// "swap_buffer" stops right after the buffer that follows swap_ready.
func (cl *client) eventsUntil(typ string) []map[string]any {
	cl.t.Helper()
	var evs []map[string]any
	for {
		mt, b, err := cl.read()
		require.NoError(cl.t, err, "waiting for %s", typ)
		if mt == websocket.BinaryMessage {
			if cl.swapPending {
				require.NoError(cl.t, cl.mirror.ApplyF16(cl.ch, b))
				cl.swapPending = false
				if typ == "swap_buffer" {
					return evs
				}
				continue
			}
			require.NoError(cl.t, cl.mirror.Apply(b))
			cl.slices++
			continue
		}
		var m map[string]any
		require.NoError(cl.t, json.Unmarshal(b, &m))
		cl.swapPending = cl.swapPending || m["type"] == "swap_ready"
		evs = append(evs, m)
		if m["type"] == typ {
			return evs
		}
	}
}

// sliceSpan is one slice's region in frames.
type sliceSpan struct{ start, end int }

// slicesFor reads for d, applying slices and collecting their regions; JSON
// events are kept in cl.events.
func (cl *client) slicesFor(d time.Duration) []sliceSpan {
	cl.t.Helper()
	var out []sliceSpan
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		if h, ok := cl.readSlice(); ok {
			out = append(out, sliceSpan{int(h.StartSample), int(h.StartSample + h.NumSamples)})
		}
	}
	return out
}

// applied sends set_depth and waits for its ack: every slice after it was
// generated with the controls sent before it.
func (cl *client) applied() {
	cl.t.Helper()
	cl.sendJSON(map[string]any{"type": "set_depth", "value": 4})
	cl.applyUntil("depth_applied")
}

// TestLoopBandSlicesLandInsideTheBand: with the playhead inside an armed
// loop_band, every slice falls inside the band: a sawtooth through it for a
// band longer than a slice, pinned at its start and clamped at its end for
// a shorter one; clearing the band (or a swap) lets slices follow the
// playhead again.
func TestLoopBandSlicesLandInsideTheBand(t *testing.T) {
	e := newEnv(t, envOptions{})
	cl := e.startClient(t, fixtureConfig(nil), nil) // 6 s
	cl.readSlices(1)
	sess := e.mgr.List()[0]
	const sr = 48000

	// [2, 3) s: the playhead is reported once at 2.1 s and then runs on;
	// without the band the target (0.5 s ahead) would leave it within 0.4 s.
	cl.sendJSON(map[string]any{"type": "params", "raw": map[string]any{}, "playback_pos": 2.1})
	cl.sendJSON(map[string]any{"type": "loop_band", "start_sec": 2.0, "end_sec": 3.0})
	cl.applied()
	got := cl.slicesFor(1500 * time.Millisecond)
	require.GreaterOrEqual(t, len(got), 5)
	lo, hi := got[0].start, 0
	for _, s := range got {
		assert.GreaterOrEqual(t, s.start, 2*sr, "slice %v starts before the band", s)
		assert.LessOrEqual(t, s.end, 3*sr, "slice %v ends after the band", s)
		lo, hi = min(lo, s.start), max(hi, s.end)
	}
	assert.LessOrEqual(t, lo, 2*sr+9600, "the target wrapped back to the band start")
	assert.Equal(t, 3*sr, hi, "near the end the window is shifted back to end at the band end")
	t.Logf("band [2, 3) s: %d slices, frames %d..%d", len(got), lo, hi)

	// [1, 1.2) s, shorter than a 0.36 s slice: pinned at 1 s, clamped at 1.2 s.
	cl.sendJSON(map[string]any{"type": "params", "raw": map[string]any{}, "playback_pos": 1.05})
	cl.sendJSON(map[string]any{"type": "loop_band", "start_sec": 1.0, "end_sec": 1.2})
	cl.applied()
	got = cl.slicesFor(300 * time.Millisecond)
	require.NotEmpty(t, got)
	for _, s := range got {
		assert.Equal(t, sliceSpan{1 * sr, 1.2 * sr}, s)
	}

	// Cleared (nulls, as the client sends at start): slices follow the
	// playhead past the old band.
	cl.sendJSON(map[string]any{"type": "loop_band", "start_sec": nil, "end_sec": nil})
	cl.applied()
	got = cl.slicesFor(300 * time.Millisecond)
	require.NotEmpty(t, got)
	assert.Greater(t, got[len(got)-1].end, int(1.2*sr))

	// A swap clears an armed band: it belonged to the old source.
	cl.sendJSON(map[string]any{"type": "loop_band", "start_sec": 0.5, "end_sec": 1.5})
	cl.applied()
	assert.InDelta(t, 1.5, sess.Controls().LoopEnd, 1e-9)
	cl.sendJSON(map[string]any{"type": "swap_source", "use_server_source": true, "fixture_name": "demo_groove_C_30s.wav"})
	cl.applyUntil("swap_ready")
	cl.applyUntil("swap_buffer")
	assert.Zero(t, sess.Controls().LoopEnd)
	e.stopAndCompare(t, cl)
}

// TestMessagesBeforeReadyAreCarriedOutAfterIt: messages a client sends
// before the session exists are held, then carried out in order once it
// runs (DEMON's server reads them late, it does not lose them).
func TestMessagesBeforeReadyAreCarriedOutAfterIt(t *testing.T) {
	e := newEnv(t, envOptions{})
	// Create waits until the reader has held the three messages (on the
	// server's goroutine: Errorf, not Fatal).
	e.srv.testHookBeforeCreate = func(c *conn) {
		held := func() bool {
			c.applyMu.Lock()
			defer c.applyMu.Unlock()
			return len(c.held) == 2 && c.heldParams
		}
		for deadline := time.Now().Add(5 * time.Second); !held(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("the messages sent before ready were not held")
				return
			}
		}
	}
	cl := &client{t: t, c: e.dial(t)}
	t.Cleanup(cl.close)
	cl.sendJSON(fixtureConfig(nil))
	cl.sendJSON(map[string]any{"type": "params", "raw": map[string]any{"denoise": 0.9, "feedback": 0.5}, "playback_pos": 1.0})
	cl.sendJSON(map[string]any{"type": "prompt", "tags": "early bird"})
	cl.sendJSON(map[string]any{"type": "set_depth", "value": 2})
	cl.readStart()
	evs := cl.eventsUntil("depth_applied")
	assert.EqualValues(t, 2, evs[len(evs)-1]["value"])
	var types []any
	for _, ev := range evs {
		if ev["type"] != "params_update" {
			types = append(types, ev["type"])
		}
	}
	assert.Equal(t, []any{"not_supported", "prompt_applied", "depth_applied"}, types, "answered in order")
	sess := e.mgr.List()[0]
	assert.InDelta(t, 0.9, sess.Controls().Denoise, 1e-6)
	assert.Equal(t, 2, sess.Controls().Depth)
	assert.Contains(t, e.logs.String(), "held until it does")
	cl.readSlices(2)
	e.stopAndCompare(t, cl)
}

// TestIgnoredKnobsAreReportedOncePerKnob: params knobs DEMON applies and
// demon does not get one not_supported event naming them, once per knob per
// session, however often the heartbeat repeats them.
func TestIgnoredKnobsAreReportedOncePerKnob(t *testing.T) {
	e := newEnv(t, envOptions{})
	cl := e.startClient(t, fixtureConfig(nil), nil)
	cl.readSlices(1)
	raw := map[string]any{"seed": 3, "denoise": 0.6, "feedback": 0.2, "feedback_depth": 2, "dcw_enabled": true,
		"dcw_mode": "low", "steps_override": 8, "lora_default_strength": 1, "lora_str_funk": 0.7, "my_own_key": 1, "ch_g0": 1.5}
	for range 20 {
		cl.sendJSON(map[string]any{"type": "params", "raw": raw, "playback_pos": 0.5})
	}
	raw["dcw_scaler"] = 0.1
	cl.sendJSON(map[string]any{"type": "params", "raw": raw})
	cl.sendJSON(map[string]any{"type": "set_depth", "value": 3})
	var reports []map[string]any
	for _, ev := range cl.eventsUntil("depth_applied") {
		if ev["type"] == "not_supported" {
			reports = append(reports, ev)
		}
	}
	require.Len(t, reports, 2)
	assert.Equal(t, "params", reports[0]["request"])
	assert.Equal(t, []any{"dcw_enabled", "dcw_mode", "feedback", "feedback_depth", "lora_str_funk", "steps_override"}, reports[0]["knobs"])
	assert.Contains(t, reports[0]["message"], "feedback, feedback_depth")
	assert.Equal(t, []any{"dcw_scaler"}, reports[1]["knobs"])
	assert.EqualValues(t, 3, e.mgr.List()[0].Controls().Seed, "applied knobs still apply")
	e.stopAndCompare(t, cl)
}
