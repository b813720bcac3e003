package ws

import (
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Failure tests: bad handshake input, clients vanishing at every step, and
// the fault/close-code contract of the handshake fault points. After each:
// the device ledger is back at baseline, nothing is open or registered, and a
// new session starts and streams.

// requireHealthy starts a fixture session, reads ≥ 2 slices, and releases it.
func (e *env) requireHealthy(t *testing.T) {
	t.Helper()
	cl := e.startClient(t, fixtureConfig(nil), nil)
	cl.readSlices(2)
	cl.close()
	e.waitReleased(t)
}

func TestHandshakeBadInput(t *testing.T) {
	e := newEnv(t, envOptions{opts: func(o *Options) { o.MaxUploadBytes = 3 << 20 }})
	pcm := AppendPCMFrame(nil, 2, testPCM(6)) // 2.3 MB, under the 3 MiB cap
	type msg struct {
		typ  int
		data []byte
	}
	txt := func(s string) msg { return msg{websocket.TextMessage, []byte(s)} }
	bin := func(b []byte) msg { return msg{websocket.BinaryMessage, b} }
	cfg := `{"fixture_name":"x.wav","crop":6}`
	truncated := append([]byte(nil), pcm[:len(pcm)-1000]...)
	for _, tc := range []struct {
		name     string
		send     []msg
		code     string
		contains string
		close    int
	}{
		{"malformed json", []msg{txt(`{"depth":`)}, CodeBadConfig, "invalid JSON", 1011},
		{"not an object", []msg{txt(`"hello"`)}, CodeBadConfig, "want a JSON object", 1011},
		{"wrong field type", []msg{txt(`{"depth":"4"}`)}, CodeBadConfig, `field "depth"`, 1011},
		{"wrong field type bool", []msg{txt(`{"use_server_fixture":"yes"}`)}, CodeBadConfig, "use_server_fixture", 1011},
		{"bad stem mode", []msg{txt(`{"stem_source_mode":"drums"}`)}, CodeBadConfig, "stem_source_mode", 1011},
		{"binary first", []msg{bin(pcm)}, CodeBadConfig, "binary", 1011},
		{"text instead of pcm", []msg{txt(cfg), txt(`{"type":"params"}`)}, CodeBadSource, "expected the binary PCM frame", 1011},
		{"truncated pcm", []msg{txt(cfg), bin(truncated)}, CodeBadSource, "payload bytes", 1011},
		{"short header", []msg{txt(cfg), bin([]byte{2, 0, 0})}, CodeBadSource, "header", 1011},
		{"oversized pcm", []msg{txt(cfg), bin(AppendPCMFrame(nil, 2, testPCM(9)))}, CodeBadSource, "exceeds", 1009},
		{"too short source", []msg{txt(cfg), bin(AppendPCMFrame(nil, 2, testPCM(1)))}, CodeBadSource, "too short", 1011},
		{"unknown server fixture", []msg{txt(`{"fixture_name":"nope.wav","use_server_fixture":true}`)}, CodeBadSource, "unknown fixture", 1011},
		{"escaping server fixture", []msg{txt(`{"fixture_name":"../../etc/passwd","use_server_fixture":true}`)}, CodeBadSource, "unknown fixture", 1011},
		{"upload header not first", []msg{txt(`{"type":"upload_track"}`)}, "", "", 1000}, // upload socket: upload_failed
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t)
			defer c.Close()
			for _, m := range tc.send {
				require.NoError(t, c.WriteMessage(m.typ, m.data))
			}
			evs, ce := readClose(t, c)
			assert.Equal(t, tc.close, ce.Code)
			require.Len(t, evs, 1)
			if tc.code == "" {
				assert.Equal(t, "upload_failed", evs[0]["type"])
			} else {
				assert.Equal(t, "error", evs[0]["type"])
				assert.Equal(t, tc.code, evs[0]["code"])
				assert.Contains(t, evs[0]["message"], tc.contains)
			}
			e.requireReleased(t)
		})
	}
	// Out-of-range values are clamped, not refused.
	cl := e.startClient(t, fixtureConfig(map[string]any{"depth": 99, "crop": -3, "vae_window": 5, "steps": 1000, "extra": "ignored"}), nil)
	assert.EqualValues(t, 8, cl.ready["pipeline_depth"])
	assert.EqualValues(t, 10, cl.ready["duration"], "crop ≤ 0 = the whole source, up to the 10 s profile")
	cl.readSlices(2)
	cl.close()
	e.waitReleased(t)
	e.requireHealthy(t)
}

func TestClientVanishingAtEveryHandshakeStep(t *testing.T) {
	e := newEnv(t, envOptions{})
	pcm := AppendPCMFrame(nil, 2, testPCM(6))
	stemCfg := baseConfig(map[string]any{"fixture_name": "vanish.wav"})
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, c *websocket.Conn)
	}{
		{"before config", func(t *testing.T, c *websocket.Conn) {}},
		{"after config", func(t *testing.T, c *websocket.Conn) {
			require.NoError(t, c.WriteJSON(stemCfg))
		}},
		{"during pcm", func(t *testing.T, c *websocket.Conn) {
			require.NoError(t, c.WriteJSON(stemCfg))
			w, err := c.NextWriter(websocket.BinaryMessage)
			require.NoError(t, err)
			_, err = w.Write(pcm[:len(pcm)/2])
			require.NoError(t, err)
		}},
		{"during create", func(t *testing.T, c *websocket.Conn) {
			require.NoError(t, c.WriteJSON(stemCfg))
			require.NoError(t, c.WriteMessage(websocket.BinaryMessage, pcm))
		}},
		{"right after ready", func(t *testing.T, c *websocket.Conn) {
			require.NoError(t, c.WriteJSON(stemCfg))
			require.NoError(t, c.WriteMessage(websocket.BinaryMessage, pcm))
			var m map[string]any
			require.NoError(t, c.ReadJSON(&m))
			require.Equal(t, "ready", m["type"])
		}},
		{"during initial buffer", func(t *testing.T, c *websocket.Conn) {
			require.NoError(t, c.WriteJSON(stemCfg))
			require.NoError(t, c.WriteMessage(websocket.BinaryMessage, pcm))
			var m map[string]any
			require.NoError(t, c.ReadJSON(&m))
			_, r, err := c.NextReader()
			require.NoError(t, err)
			_, err = r.Read(make([]byte, 1000))
			require.NoError(t, err)
		}},
		{"during stems", func(t *testing.T, c *websocket.Conn) {
			require.NoError(t, c.WriteJSON(stemCfg))
			require.NoError(t, c.WriteMessage(websocket.BinaryMessage, pcm))
			var m map[string]any
			require.NoError(t, c.ReadJSON(&m))
			_, _, err := c.ReadMessage()
			require.NoError(t, err)
			require.NoError(t, c.ReadJSON(&m))
			require.Equal(t, "stem_assets", m["type"])
		}},
		{"while streaming", func(t *testing.T, c *websocket.Conn) {
			require.NoError(t, c.WriteJSON(fixtureConfig(nil)))
			for i := 0; i < 4; i++ {
				_, _, err := c.ReadMessage()
				require.NoError(t, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t)
			tc.run(t, c)
			require.NoError(t, c.UnderlyingConn().Close()) // a real disconnect, no close frame
			e.waitReleased(t)
			e.requireHealthy(t)
		})
	}
}

// TestHandshakeFaultContract: for every handshake fault point (and the
// create/runner/runtime points around it) the client gets the error frame
// with the original window and the close code, and by the time it sees the
// close the device is at baseline with nothing open or registered (rollback
// before close, lifecycle §3); goroutines are back; the next session streams.
// The fault matrix as the client sees it: every session fault point, armed in turn and
// each run faultRounds times, must end in the right error frame and close code with the
// device back at its baseline, no registry entry, no goroutine left, the point hit as
// armed; and the next session must start and stream.
const faultRounds = 3

func TestHandshakeFaultContract(t *testing.T) {
	e := newEnv(t, envOptions{})
	stemCfg := baseConfig(map[string]any{"fixture_name": "faulty.wav"})
	pcm := testPCM(6)
	for _, tc := range []faultContract{
		{"create.source_prepare=error", "create.source_prepare", CodeSessionStartFailed, "create.source_prepare", 1},
		{"session.init.context=error@2", "session.init.context", CodeSessionStartFailed, "", 2},
		{"create.stems=error", "create.stems", "stem_failed", "", 1}, // mode "full": non-fatal
		{"create.conditioning=error", "create.conditioning", CodeSessionStartFailed, "create.conditioning", 1},
		{"create.stream=error", "create.stream", CodeSessionStartFailed, "create.stream", 1},
		{"create.playback=error", "create.playback", CodeSessionStartFailed, "create.playback", 1},
		{"create.finalize=error", "create.finalize", CodeSessionStartFailed, "create.finalize", 1},
		{"device.alloc=oom@1", "device.alloc", "stem_failed", "", 1}, // the stem separator: non-fatal
		{"device.alloc=oom@6", "device.alloc", CodeSessionStartFailed, "", 6},
		{"device.alloc=oom@10", "device.alloc", CodeSessionStartFailed, "", 10},
		{"device.alloc=oom@16", "device.alloc", CodeSessionStartFailed, "", 16},
		{"handshake.ready=error", "handshake.ready", CodeSessionStartFailed, "handshake.ready", 1},
		{"handshake.ready=oom", "handshake.ready", CodeSessionStartFailed, "handshake.ready", 1},
		{"handshake.initial_buffer=error", "handshake.initial_buffer", CodeSessionStartFailed, "handshake.initial_buffer", 1},
		{"handshake.stem_payload=error@1", "handshake.stem_payload", CodeSessionStartFailed, "handshake.stem_payload", 1},
		{"handshake.stem_payload=error@2", "handshake.stem_payload", CodeSessionStartFailed, "handshake.stem_payload", 2},
		{"handshake.after_register=error", "handshake.after_register", CodeSessionStartFailed, "handshake.after_register", 1},
		{"run.runner_init=error", "run.runner_init", CodeSessionStartFailed, "run.runner_init", 1},
		{"run.tick=error", "run.tick", CodePipelineError, "", 1},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			for range faultRounds {
				faultContractRound(t, e, stemCfg, pcm, tc)
				if t.Failed() {
					return
				}
			}
		})
	}
}

// faultContract is one row of the client-side fault matrix.
type faultContract struct {
	spec, point, code, window string // window "" is not checked
	hits                      int64  // times the point is reached in the failing start
}

func faultContractRound(t *testing.T, e *env, stemCfg map[string]any, pcm []float32, tc faultContract) {
	t.Helper()
	e.faults.Reset()
	require.NoError(t, e.faults.Arm(tc.spec))
	ign := goleak.IgnoreCurrent()
	c := e.dial(t)
	defer c.Close()
	require.NoError(t, c.WriteJSON(stemCfg))
	require.NoError(t, c.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, pcm)))
	if tc.code == "stem_failed" {
		cl := &client{t: t, c: c}
		cl.ready = cl.readJSON()
		_, _, err := cl.read()
		require.NoError(t, err)
		assert.Equal(t, "stem_failed", cl.readJSON()["type"])
		require.NoError(t, c.UnderlyingConn().Close())
		e.waitReleased(t)
		e.faults.Reset()
		e.requireHealthy(t)
		return
	}
	evs, ce := readClose(t, c)
	// The close arrived: the rollback is already complete.
	e.requireReleased(t)
	assert.Zero(t, e.mgr.Open(), "no session left open")
	assert.Empty(t, e.mgr.List(), "no registry entry")
	require.Equal(t, tc.hits, e.faults.Hits(tc.point), "fault point reached as armed")
	assert.Equal(t, websocket.CloseInternalServerErr, ce.Code)
	require.NotEmpty(t, evs)
	last := evs[len(evs)-1]
	assert.Equal(t, "error", last["type"])
	assert.Equal(t, tc.code, last["code"])
	if tc.window != "" {
		assert.Equal(t, tc.window, last["window"])
	}
	if tc.code == CodePipelineError {
		assert.Contains(t, last["message"], "Generation stopped: ")
	}
	if strings.Contains(tc.spec, "=oom") {
		assert.Contains(t, last["message"], "out of memory")
	}
	_ = c.Close()
	goleak.VerifyNone(t, ign)
	e.faults.Reset()
	// The next session starts and streams: ready, buffer, stems, slices.
	cl := e.startClient(t, stemCfg, pcm)
	require.Equal(t, "stem_assets", cl.readStems()["type"])
	cl.readSlices(2)
	cl.close()
	e.waitReleased(t)
}

// TestRollbackBeforeClose replays the retry-on-close race many times: a
// client that fails in the handshake reconnects the instant it sees the
// close, and must be admitted (the rollback finished before the close).
func TestRetryOnCloseNeverRacesTeardown(t *testing.T) {
	e := newEnv(t, envOptions{})
	require.NoError(t, e.faults.Arm("handshake.after_register=error@1"))
	c := e.dial(t)
	defer c.Close()
	require.NoError(t, c.WriteJSON(fixtureConfig(nil)))
	_, ce := readClose(t, c)
	require.Equal(t, websocket.CloseInternalServerErr, ce.Code)
	start := time.Now()
	cl := e.startClient(t, fixtureConfig(nil), nil)
	cl.readSlices(2)
	t.Logf("retry streaming %v after the close", time.Since(start))
	cl.close()
	e.waitReleased(t)
}
