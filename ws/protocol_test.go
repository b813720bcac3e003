package ws

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/demon-audio/demon/audio"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Protocol tests: a gorilla/websocket client against the real server
// (reference engines, oracle decoder, 10 s profile) on loopback.

// serverConn returns the server side of the only live socket.
func (e *env) serverConn(t testing.TB) *conn {
	t.Helper()
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	require.Len(t, e.srv.conns, 1)
	for c := range e.srv.conns {
		return c
	}
	return nil
}

// stopAndCompare stops the session server-side, reads everything the server
// flushes until its close frame, and checks that the client's mirror equals
// the server's mirror exactly.
func (e *env) stopAndCompare(t *testing.T, cl *client) {
	t.Helper()
	sc := e.serverConn(t)
	sc.sess.Load().Stop()
	for {
		_ = cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		typ, b, err := cl.c.ReadMessage()
		if err != nil {
			ce, ok := err.(*websocket.CloseError)
			require.True(t, ok, "%v", err)
			require.Equal(t, websocket.CloseNormalClosure, ce.Code)
			break
		}
		if typ == websocket.BinaryMessage {
			require.NoError(t, cl.mirror.Apply(b))
			cl.slices++
		}
	}
	// Connections() == 0 orders the server writer's last mirror update
	// before the comparison.
	eventually(t, "handler exit", func() bool { return e.srv.Connections() == 0 })
	require.Equal(t, 0.0, MaxAbsDiff(cl.mirror.Samples(), sc.mirror.Samples()), "client mirror == server mirror, bit for bit")
	t.Logf("%d slices applied; mirrors identical (%d samples)", cl.slices, len(cl.mirror.Samples()))
	e.waitReleased(t)
}

func TestSessionFixtureHandshakeDeltaSlicesReproduceServerAudio(t *testing.T) {
	var sent, recv, lateness, ttfaN, ended atomic.Int64
	e := newEnv(t, envOptions{opts: func(o *Options) {
		o.Hooks = Hooks{
			BytesSent:        func(n int) { sent.Add(int64(n)) },
			BytesReceived:    func(n int) { recv.Add(int64(n)) },
			TimeToFirstAudio: func(time.Duration) { ttfaN.Add(1) },
			SliceLateness:    func(time.Duration) { lateness.Add(1) },
			SessionEnded:     func(code int) { ended.Store(int64(code)) },
		}
	}})
	t0 := time.Now()
	cl := e.startClient(t, fixtureConfig(nil), nil)
	r := cl.ready
	assert.EqualValues(t, 2, r["channels"])
	assert.EqualValues(t, 6, r["duration"])
	assert.EqualValues(t, 48000, r["sample_rate"])
	assert.EqualValues(t, 4, r["pipeline_depth"])
	assert.EqualValues(t, 8, r["max_pipeline_depth"])
	assert.Len(t, r["session_id"], 8)
	assert.Equal(t, "ref-10s", r["checkpoint"])
	assert.Equal(t, []any{}, r["lora_catalog"])
	ttfa := time.Since(t0)
	cl.readSlices(3)
	t.Logf("ready+buffer in %v, 3 slices in %v", ttfa, time.Since(t0))
	// Slices are DELTA (the default) and params_update follows them.
	sawParams := false
	for _, ev := range cl.events {
		if ev["type"] == "params_update" {
			sawParams = true
			p := ev["params"].(map[string]any)
			assert.Contains(t, p, "num_gens")
			assert.Equal(t, "lofi piano", p["_prompt"])
		}
	}
	assert.True(t, sawParams, "params_update after slices")
	e.stopAndCompare(t, cl)
	assert.Greater(t, sent.Load(), int64(6*48000*2*2), "bytes sent include the initial buffer")
	assert.Positive(t, recv.Load())
	assert.EqualValues(t, 1, ttfaN.Load())
	assert.GreaterOrEqual(t, lateness.Load(), int64(3))
	assert.EqualValues(t, websocket.CloseNormalClosure, ended.Load())
}

func TestSessionUploadedPCMWithStemsAndRawSlices(t *testing.T) {
	e := newEnv(t, envOptions{})
	pcm := testPCM(6)
	cl := e.startClient(t, baseConfig(map[string]any{"fixture_name": "my_song.wav", "slice_encoding": "raw"}), pcm)
	// The echoed buffer is the seam-faded source, float16.
	want, _, err := audio.NormalizeSource(pcm, 2, audio.NormalizeOptions{CropSeconds: 6})
	require.NoError(t, err)
	audio.Round16(want)
	require.Equal(t, 0.0, MaxAbsDiff(want, cl.mirror.Samples()), "initial buffer = f16(normalised upload)")
	// A non-builtin name gets stems (DEMON's auto rule): stem_assets + 2 buffers.
	st := cl.readStems()
	require.Equal(t, "stem_assets", st["type"], "%v", st)
	assert.Equal(t, []any{"vocals", "instruments"}, st["stems"])
	assert.Equal(t, "full", st["source_mode"])
	assert.Equal(t, "my_song.wav", st["fixture_name"])
	require.Len(t, cl.stems, 2)
	for _, s := range cl.stems {
		assert.Len(t, s, len(cl.mirror.Samples())*2)
	}
	for range 2 {
		typ, b, err := cl.read()
		require.NoError(t, err)
		if typ != websocket.BinaryMessage {
			continue
		}
		h, _, err := DecodeSliceHeader(b)
		require.NoError(t, err)
		assert.Equal(t, SliceRaw, h.Flags, "slice_encoding raw")
		require.NoError(t, cl.mirror.Apply(b))
	}
	cl.readSlices(2)
	e.stopAndCompare(t, cl)
}

func TestUploadSocketThenSessionByName(t *testing.T) {
	e := newEnv(t, envOptions{})
	up := e.dial(t)
	defer up.Close()
	require.NoError(t, up.WriteJSON(map[string]any{"type": "upload_track", "name": "../My Track (final).mp3", "key": "G# minor"}))
	require.NoError(t, up.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, testPCM(7.1))))
	var ok map[string]any
	require.NoError(t, up.ReadJSON(&ok))
	require.Equal(t, "upload_ok", ok["type"], "%v", ok)
	name := ok["name"].(string)
	assert.Equal(t, "My_Track_final.wav", name)
	assert.EqualValues(t, 7.0, ok["duration_s"]) // floored to the 9600-frame pool
	assert.EqualValues(t, 7*48000, ok["samples"])
	assert.Equal(t, "G# minor", ok["key"])
	assert.Equal(t, "4", ok["time_signature"])
	_, ce := readClose(t, up)
	assert.Equal(t, websocket.CloseNormalClosure, ce.Code)

	// A second upload with the same name gets a unique one.
	up2 := e.dial(t)
	defer up2.Close()
	require.NoError(t, up2.WriteJSON(map[string]any{"type": "upload_track", "name": "My Track (final).wav"}))
	require.NoError(t, up2.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 1, testPCM(6)[:6*48000])))
	ok = nil
	require.NoError(t, up2.ReadJSON(&ok))
	require.Equal(t, "upload_ok", ok["type"], "%v", ok)
	assert.Equal(t, "My_Track_final-2.wav", ok["name"])

	code, body, _ := e.get(t, "/api/user_uploads")
	require.Equal(t, 200, code)
	assert.JSONEq(t, `["My_Track_final-2.wav","My_Track_final.wav"]`, body)
	code, body, hdr := e.get(t, "/user_uploads/"+name)
	require.Equal(t, 200, code)
	assert.Equal(t, "audio/x-wav", hdr.Get("Content-Type"))
	clip, err := audio.DecodeWAV(strings.NewReader(body))
	require.NoError(t, err)
	assert.Equal(t, 7*48000, clip.Frames())
	_, body, _ = e.get(t, "/api/server-info")
	assert.Contains(t, body, name, "uploads are usable server-side")

	// Short upload and wrong follow-up.
	ok = e.upload(t, "short", 2, testPCM(1))
	assert.Equal(t, "upload_failed", ok["type"])
	assert.Contains(t, ok["error"], "too short")
	up4 := e.dial(t)
	defer up4.Close()
	require.NoError(t, up4.WriteJSON(map[string]any{"type": "upload_track", "name": "x"}))
	require.NoError(t, up4.WriteMessage(websocket.TextMessage, []byte(`{"oops":1}`)))
	ok = nil
	require.NoError(t, up4.ReadJSON(&ok))
	assert.Equal(t, map[string]any{"type": "upload_failed", "error": "expected binary PCM frame after upload header"}, ok)

	// A session by name from the upload: server-side source, stems (auto).
	cl := e.startClient(t, baseConfig(map[string]any{"fixture_name": name, "use_server_fixture": true}), nil)
	st := cl.readStems()
	require.Equal(t, "stem_assets", st["type"])
	cl.readSlices(2)
	cl.close()
	e.waitReleased(t)
}

// applyUntil reads messages, applying slices (and a swap buffer right after
// swap_ready), until an event of type typ, and returns it ("swap_buffer":
// until the swap buffer, nil).
func (cl *client) applyUntil(typ string) map[string]any {
	cl.t.Helper()
	if evs := cl.eventsUntil(typ); typ != "swap_buffer" {
		return evs[len(evs)-1]
	}
	return nil
}

func TestStreamingMessagesAreAnswered(t *testing.T) {
	e := newEnv(t, envOptions{})
	cl := e.startClient(t, fixtureConfig(nil), nil)
	cl.readSlices(1)
	sess := e.mgr.List()[0]

	// params → controls (no ack).
	cl.sendJSON(map[string]any{"type": "params", "playback_pos": 1.5, "raw": map[string]any{
		"seed": 7, "denoise": 0.8, "hint_strength": 0.25, "shift": 2, "guidance_scale": 4, "cfg_rescale": 0.5,
		"rcfg_mode": "self", "ch_g1": 2, "ch13": 0.5, "unknown_knob": "x"}})
	cl.sendJSON(map[string]any{"type": "set_prompt_blend", "value": 0.75})
	// prompt → prompt_applied; set_depth → depth_applied (clamped).
	cl.sendJSON(map[string]any{"type": "prompt", "tags": "ambient drone", "key": "C major"})
	cl.sendJSON(map[string]any{"type": "set_depth", "value": 99})
	assert.Equal(t, "ambient drone", cl.applyUntil("prompt_applied")["tags"])
	assert.EqualValues(t, 8, cl.applyUntil("depth_applied")["value"])
	ct := sess.Controls()
	assert.EqualValues(t, 7, ct.Seed)
	assert.InDelta(t, 0.8, ct.Denoise, 1e-6)
	assert.InDelta(t, 0.25, ct.HintStrength, 1e-6)
	assert.InDelta(t, 2, ct.Shift, 1e-6)
	assert.InDelta(t, 4, ct.Guidance, 1e-6)
	assert.InDelta(t, 0.5, ct.CFGRescale, 1e-6)
	assert.Equal(t, 3, ct.RCFGMode)
	assert.InDelta(t, 0.75, ct.PromptBlend, 1e-6)
	assert.Equal(t, 8, ct.Depth)
	assert.InDelta(t, 1, ct.ChannelGain[7], 1e-6)
	assert.InDelta(t, 2, ct.ChannelGain[8], 1e-6)
	assert.InDelta(t, 2, ct.ChannelGain[12], 1e-6)
	assert.InDelta(t, 1, ct.ChannelGain[13], 1e-6) // 2 (group) × 0.5 (keystone)
	// A partial params message merges: seed stays.
	cl.sendJSON(map[string]any{"type": "params", "raw": map[string]any{"denoise": 0.1}})
	cl.sendJSON(map[string]any{"type": "set_depth", "value": 2})
	assert.EqualValues(t, 2, cl.applyUntil("depth_applied")["value"])
	assert.EqualValues(t, 7, sess.Controls().Seed)
	assert.InDelta(t, 0.1, sess.Controls().Denoise, 1e-6)

	// LoRA, timbre, structure, unknown types: never left unanswered.
	cl.sendJSON(map[string]any{"type": "enable_lora", "id": "x"})
	assert.Equal(t, []any{}, cl.applyUntil("lora_catalog")["catalog"])
	ns := cl.applyUntil("not_supported")
	assert.Equal(t, "enable_lora", ns["request"])
	assert.Contains(t, ns["message"], "LoRA adapters are not supported")
	cl.sendJSON(map[string]any{"type": "disable_lora", "id": "x"})
	assert.Equal(t, []any{}, cl.applyUntil("lora_catalog")["catalog"])
	assert.Equal(t, "disable_lora", cl.applyUntil("not_supported")["request"])
	cl.sendJSON(map[string]any{"type": "set_timbre_fixture", "name": "demo_groove_C_30s.wav"})
	assert.Contains(t, cl.applyUntil("timbre_failed")["error"], "not supported")
	cl.sendJSON(map[string]any{"type": "set_structure_source", "name": "x"})
	require.NoError(t, cl.c.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, testPCM(0.1))))
	assert.Contains(t, cl.applyUntil("structure_failed")["error"], "not supported")
	cl.sendJSON(map[string]any{"type": "loop_band", "start_sec": nil, "end_sec": nil})
	cl.sendJSON(map[string]any{"type": "teleport", "where": "mars"})
	ns = cl.applyUntil("not_supported")
	assert.Equal(t, "teleport", ns["request"])

	// swap_source by name → swap_ready + buffer; slices keep matching.
	cl.sendJSON(map[string]any{"type": "swap_source", "use_server_source": true, "fixture_name": "demo_groove_C_30s.wav", "tags": "funk"})
	sr := cl.applyUntil("swap_ready")
	assert.EqualValues(t, 10, sr["duration"], "cropped to the 10 s profile")
	assert.Equal(t, "demo_groove_C_30s.wav", sr["fixture_name"])
	cl.applyUntil("swap_buffer")
	assert.Equal(t, 10*48000, cl.mirror.Frames())
	// swap_source by PCM, and a failing one (unknown fixture).
	cl.sendJSON(map[string]any{"type": "swap_source", "fixture_name": "pcm.wav"})
	require.NoError(t, cl.c.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, testPCM(6))))
	sr = cl.applyUntil("swap_ready")
	assert.EqualValues(t, 6, sr["duration"])
	cl.applyUntil("swap_buffer")
	cl.sendJSON(map[string]any{"type": "swap_source", "use_server_source": true, "fixture_name": "nope.wav"})
	assert.Contains(t, cl.applyUntil("swap_failed")["error"], "server source load failed")
	cl.readSlices(2)
	e.stopAndCompare(t, cl)
}

func TestStreamingBadInputIsNonFatal(t *testing.T) {
	e := newEnv(t, envOptions{})
	cl := e.startClient(t, fixtureConfig(nil), nil)
	cl.readSlices(1)
	for _, tc := range []struct {
		msg, want string
	}{
		{`{"type":"params","raw":`, "malformed"},
		{`[1,2,3]`, "want a JSON object"},
		{`{"type":"params","raw":5}`, `field "raw"`},
		{`{"type":"set_depth","value":"deep"}`, "wrong field type"},
		{`{"type":"prompt"}`, `missing required field`},
		{`{"type":"swap_source","use_server_source":true}`, "fixture_name"},
		{`{"type":42}`, "wrong field type"},
	} {
		require.NoError(t, cl.c.WriteMessage(websocket.TextMessage, []byte(tc.msg)))
		ev := cl.applyUntil("error")
		assert.Equal(t, CodeBadMessage, ev["code"], tc.msg)
		assert.Contains(t, ev["message"], tc.want, tc.msg)
	}
	// Binary where text is expected: ignored with a log line.
	require.NoError(t, cl.c.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}))
	cl.sendJSON(map[string]any{"type": "prompt", "tags": "still alive"})
	assert.Equal(t, "still alive", cl.applyUntil("prompt_applied")["tags"])
	cl.readSlices(2)
	assert.Contains(t, e.logs.String(), "ignoring a binary message")
	e.stopAndCompare(t, cl)
}

func TestHTTPRoutes(t *testing.T) {
	warm := &WarmupStatus{Done: true}
	e := newEnv(t, envOptions{opts: func(o *Options) { o.Warmup = func() *WarmupStatus { return warm } }})
	code, body, hdr := e.get(t, "/api/fixtures")
	require.Equal(t, 200, code)
	assert.Equal(t, "application/json; charset=utf-8", hdr.Get("Content-Type"))
	assert.Equal(t, "no-store, must-revalidate", hdr.Get("Cache-Control"))
	assert.JSONEq(t, `["demo_ambient_Am_20s.wav","demo_groove_C_30s.wav","demo_pulse_Gm_60s.wav"]`, body)
	code, body, hdr = e.get(t, "/api/server-info")
	require.Equal(t, 200, code)
	assert.Equal(t, "*", hdr.Get("Access-Control-Allow-Origin"))
	assert.JSONEq(t, `{"no_backend":false,"kiosk":false,"default_mode":"graph","warmup":{"done":true,"error":null,"seconds":null},
		"server_side_fixtures":["demo_ambient_Am_20s.wav","demo_groove_C_30s.wav","demo_pulse_Gm_60s.wav"]}`, body)
	code, body, _ = e.get(t, "/api/loras")
	require.Equal(t, 200, code)
	assert.JSONEq(t, `{"dir":"","extra_dirs":[],"checkpoint":"ref-10s","checkpoint_scale":null,"loras":[]}`, body)
	code, body, hdr = e.get(t, "/fixtures/demo_ambient_Am_20s.wav")
	require.Equal(t, 200, code)
	assert.Equal(t, "audio/x-wav", hdr.Get("Content-Type"))
	clip, err := audio.DecodeWAV(bytes.NewReader([]byte(body)))
	require.NoError(t, err)
	assert.Equal(t, 20*48000, clip.Frames())
	code, body, _ = e.get(t, "/")
	require.Equal(t, 200, code)
	assert.Contains(t, body, "<html")
	code, body, _ = e.get(t, "/api/nope")
	assert.Equal(t, 404, code)
	assert.Equal(t, "404 not found", body)

	// Track names that try to escape the fixtures/uploads folders.
	for _, p := range []string{
		"/fixtures/../main.go", "/fixtures/..%2Fmain.go", "/fixtures/%2E%2E%2Fmain.go", "/fixtures/a%2fb",
		"/fixtures/..%5Cmain.go", `/fixtures/..\main.go`, "/fixtures/%2Fetc%2Fpasswd", "/fixtures//etc/passwd",
		"/fixtures/unknown.wav", "/fixtures/", "/fixtures/.hidden",
		"/user_uploads/../../etc/passwd", "/user_uploads/..%2F..%2Fetc%2Fpasswd", "/user_uploads/%2Fetc%2Fpasswd",
		"/user_uploads/x%00.wav", "/user_uploads/nothere.wav",
	} {
		assert.Equal(t, 404, e.rawGet(t, p), p)
	}
	assert.Contains(t, e.logs.String(), "refused track path")
}
