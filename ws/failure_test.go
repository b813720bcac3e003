package ws

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Failure tests: bad handshake input, clients vanishing at every step, and
// the fault matrix over every fault point (boot, create, handshake, run and
// close). After each: the device ledger is back at baseline, nothing is open or
// registered, and a new session starts and streams.

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

// The fault matrix as the client sees it (lifecycle.md §8): every fault point, armed in
// turn and each row run faultRounds times. After every round the device ledger and
// trt.LiveHandles are back at their pre-session baseline, no session is open or
// registered, no goroutine is left, the point was hit as armed, the original error
// reached the client (error frame, close code) and a second Close of the session is a
// no-op; and the next session starts and streams (ready, buffer, stems, ≥ 2 slices).
// Each row logs the bytes and handles it leaked over its rounds (must be 0).
const faultRounds = 3

// faultKind says how a row's failure shows.
type faultKind int

const (
	// startFails: the start fails; the client gets the error frame and the close.
	startFails faultKind = iota
	// stemFailed: stem extraction fails in mode "full": non-fatal, stem_failed is sent
	// and the session streams on.
	stemFailed
	// bootFails: device creation or the model load fails (no client is involved); a
	// fresh device and model load then serve a session.
	bootFails
	// closeStepFails: the session streams, then a teardown step fails: logged, and the
	// remaining steps still free everything.
	closeStepFails
)

// faultContract is one row of the fault matrix.
type faultContract struct {
	spec, point, code, window string // window "" is not checked
	hits                      int64  // times the point is reached in the failing round (it fires on the last)
	kind                      faultKind
	// keepsCounting: the session streams on after the failure and reaches the point again
	// (every later device allocation), so only the failure's own hit number is checked.
	keepsCounting bool
	stemMode      string // stem_source_mode sent ("" = the auto rule: "full")
}

func (tc faultContract) name() string {
	if tc.stemMode != "" {
		return tc.spec + "/" + tc.stemMode
	}
	return tc.spec
}

// sessionCreated says whether the failing round got as far as a session object.
func (tc faultContract) sessionCreated() bool {
	if tc.kind == stemFailed || tc.kind == closeStepFails {
		return true
	}
	for _, p := range []string{"handshake.", "run."} {
		if strings.HasPrefix(tc.point, p) {
			return true
		}
	}
	return false
}

func TestFaultMatrix(t *testing.T) {
	rows := []faultContract{
		{spec: "device.create=error", point: "device.create", hits: 1, kind: bootFails},
		{spec: "model.load.text_encoder=error", point: "model.load.text_encoder", hits: 1, kind: bootFails},
		{spec: "model.load.stem_separator=error", point: "model.load.stem_separator", hits: 1, kind: bootFails},
		{spec: "model.load.vae_encode=error", point: "model.load.vae_encode", hits: 1, kind: bootFails},
		{spec: "model.load.vae_decode=error", point: "model.load.vae_decode", hits: 1, kind: bootFails},
		{spec: "model.load.vae_decode_windowed=error", point: "model.load.vae_decode_windowed", hits: 1, kind: bootFails},
		{spec: "model.load.decoder=error", point: "model.load.decoder", hits: 1, kind: bootFails},
		{spec: "model.place_decoder=error", point: "model.place_decoder", hits: 1, kind: bootFails},
		{spec: "create.source_prepare=error", point: "create.source_prepare", code: CodeSessionStartFailed, window: "create.source_prepare", hits: 1},
		{spec: "session.init.context=error@2", point: "session.init.context", code: CodeSessionStartFailed, hits: 2},
		{spec: "create.stems=error", point: "create.stems", hits: 1, kind: stemFailed}, // mode "full": non-fatal
		{spec: "create.stems=error", point: "create.stems", code: CodeStemExtractFailed, window: "create.stems", hits: 1, stemMode: StemVocals},
		{spec: "create.stems=error", point: "create.stems", code: CodeStemExtractFailed, window: "create.stems", hits: 1, stemMode: StemInstruments},
		{spec: "create.conditioning=error", point: "create.conditioning", code: CodeSessionStartFailed, window: "create.conditioning", hits: 1},
		{spec: "create.stream=error", point: "create.stream", code: CodeSessionStartFailed, window: "create.stream", hits: 1},
		{spec: "create.playback=error", point: "create.playback", code: CodeSessionStartFailed, window: "create.playback", hits: 1},
		{spec: "create.finalize=error", point: "create.finalize", code: CodeSessionStartFailed, window: "create.finalize", hits: 1},
		{spec: "device.alloc=oom@1", point: "device.alloc", hits: 1, kind: stemFailed, keepsCounting: true}, // the stem separator: non-fatal
		{spec: "device.alloc=oom@6", point: "device.alloc", code: CodeSessionStartFailed, hits: 6},
		{spec: "device.alloc=oom@10", point: "device.alloc", code: CodeSessionStartFailed, hits: 10},
		{spec: "device.alloc=oom@16", point: "device.alloc", code: CodeSessionStartFailed, hits: 16},
		{spec: "handshake.ready=error", point: "handshake.ready", code: CodeSessionStartFailed, window: "handshake.ready", hits: 1},
		{spec: "handshake.ready=oom", point: "handshake.ready", code: CodeSessionStartFailed, window: "handshake.ready", hits: 1},
		{spec: "handshake.initial_buffer=error", point: "handshake.initial_buffer", code: CodeSessionStartFailed, window: "handshake.initial_buffer", hits: 1},
		{spec: "handshake.stem_payload=error@1", point: "handshake.stem_payload", code: CodeSessionStartFailed, window: "handshake.stem_payload", hits: 1},
		{spec: "handshake.stem_payload=error@2", point: "handshake.stem_payload", code: CodeSessionStartFailed, window: "handshake.stem_payload", hits: 2},
		{spec: "handshake.after_register=error", point: "handshake.after_register", code: CodeSessionStartFailed, window: "handshake.after_register", hits: 1},
		{spec: "run.runner_init=error", point: "run.runner_init", code: CodeSessionStartFailed, window: "run.runner_init", hits: 1},
		{spec: "run.tick=error", point: "run.tick", code: CodePipelineError, hits: 1},
		{spec: "close.stream=error", point: "close.stream", hits: 1, kind: closeStepFails},
		{spec: "close.engine_session=error", point: "close.engine_session", hits: 1, kind: closeStepFails},
	}
	// One matrix over every point: a point declared without a row fails here.
	covered := map[string]bool{}
	for _, tc := range rows {
		covered[tc.point] = true
	}
	for _, p := range trt.FaultPoints() {
		require.True(t, covered[p], "fault point %s has no row in the matrix", p)
	}

	rec := &sessionRecorder{}
	e := newEnv(t, envOptions{hooks: session.Hooks{Started: rec.started}})
	rec.mgr = e.mgr
	pcm := testPCM(6)
	start := time.Now()
	for _, tc := range rows {
		t.Run(tc.name(), func(t *testing.T) {
			extra := map[string]any{"fixture_name": "faulty.wav"}
			if tc.stemMode != "" {
				extra["stem_source_mode"] = tc.stemMode
			}
			stemCfg := baseConfig(extra)
			var leakedBytes, leakedHandles int64
			for range faultRounds {
				bytes, handles := faultRound(t, e, rec, stemCfg, pcm, tc)
				leakedBytes += bytes
				leakedHandles += handles
				if t.Failed() {
					return
				}
			}
			t.Logf("%s: %d rounds, point hit %d per round, %d bytes and %d native handles leaked",
				tc.name(), faultRounds, tc.hits, leakedBytes, leakedHandles)
		})
	}
	t.Logf("fault matrix: %d rows over %d fault points, %d rounds each, in %v",
		len(rows), len(covered), faultRounds, time.Since(start).Round(time.Millisecond))
}

// sessionRecorder keeps the last session the manager created (its Started hook), so a
// round can Close it once more after the server is done with it.
type sessionRecorder struct {
	mu   sync.Mutex
	mgr  *session.Manager
	last *session.Session
}

func (r *sessionRecorder) started(id string, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.mgr.OpenSessions() {
		if s.ID == id {
			r.last = s
		}
	}
}

// take returns the last session created since the previous take (nil if none).
func (r *sessionRecorder) take() *session.Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.last
	r.last = nil
	return s
}

// faultRound runs one round of a row and returns the bytes and native handles left
// behind (the assertions already require 0).
func faultRound(t *testing.T, e *env, rec *sessionRecorder, stemCfg map[string]any, pcm []float32, tc faultContract) (leakedBytes, leakedHandles int64) {
	t.Helper()
	e.faults.Reset()
	rec.take()
	handles := trt.LiveHandles()
	ign := goleak.IgnoreCurrent()
	defer func() {
		used := trttest.Snapshot(t, e.dev).Totals.UsedBytes
		leakedBytes = int64(used) - int64(e.base.Totals.UsedBytes)
		leakedHandles = trt.LiveHandles() - handles
	}()
	require.NoError(t, e.faults.Arm(tc.spec))
	var sess *session.Session
	switch tc.kind {
	case bootFails:
		bootFaultRound(t, e, tc)
	case closeStepFails:
		sess = closeFaultRound(t, e, rec, stemCfg, pcm, tc)
	default:
		sess = startFaultRound(t, e, rec, stemCfg, pcm, tc)
	}
	if t.Failed() {
		return
	}
	e.requireReleased(t)
	require.Equal(t, handles, trt.LiveHandles(), "native handles back at the pre-session baseline")
	if tc.kind == bootFails {
		goleak.VerifyNone(t, ign)
		return // bootFaultRound checked its hits and streamed a session on the reloaded model
	}
	if !tc.keepsCounting {
		require.Equal(t, tc.hits, e.faults.Hits(tc.point), "fault point reached as armed")
	}
	if tc.sessionCreated() {
		require.NotNil(t, sess, "the round created a session")
		requireSecondCloseNoop(t, e, sess, tc)
	} else {
		require.Nil(t, sess, "the start failed before a session object existed")
	}
	goleak.VerifyNone(t, ign)
	e.faults.Reset()
	// The next session starts and streams: ready, buffer, stems, slices.
	cl := e.startClient(t, stemCfg, pcm)
	require.Equal(t, "stem_assets", cl.readStems()["type"])
	cl.readSlices(2)
	cl.close()
	e.waitReleased(t)
	require.Equal(t, handles, trt.LiveHandles())
	return
}

// requireSecondCloseNoop closes a released session again: nothing is freed twice, no
// point is hit again, and Close reports what the first Close did.
func requireSecondCloseNoop(t *testing.T, e *env, s *session.Session, tc faultContract) {
	t.Helper()
	require.True(t, s.Closed(), "the session was closed")
	hits := e.faults.Hits(tc.point)
	handles := trt.LiveHandles()
	err := s.Close()
	if tc.kind == closeStepFails {
		require.ErrorIs(t, err, trt.ErrFaultInjected, "the second Close reports the first one's failure")
	} else {
		require.NoError(t, err)
	}
	e.requireReleased(t)
	require.Equal(t, handles, trt.LiveHandles())
	require.Equal(t, hits, e.faults.Hits(tc.point), "the second Close ran no teardown step")
}

// startFaultRound: the start fails at the point (or, for stemFailed rows, the stems do).
func startFaultRound(t *testing.T, e *env, rec *sessionRecorder, stemCfg map[string]any, pcm []float32, tc faultContract) *session.Session {
	t.Helper()
	c := e.dial(t)
	defer c.Close()
	require.NoError(t, c.WriteJSON(stemCfg))
	require.NoError(t, c.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, pcm)))
	if tc.kind == stemFailed {
		cl := &client{t: t, c: c}
		cl.ready = cl.readJSON()
		require.Equal(t, "ready", cl.ready["type"])
		_, _, err := cl.read()
		require.NoError(t, err)
		m := cl.readJSON()
		require.Equal(t, "stem_failed", m["type"])
		assert.Contains(t, m["error"], tc.point, "stem_failed carries the original error")
		assert.Contains(t, m["error"], fmt.Sprintf("hit %d)", tc.hits), "from the armed hit")
		require.NoError(t, c.UnderlyingConn().Close())
		e.waitReleased(t)
		return rec.take()
	}
	evs, ce := readClose(t, c)
	// The close arrived: the rollback is already complete.
	e.requireReleased(t)
	assert.Equal(t, websocket.CloseInternalServerErr, ce.Code)
	require.NotEmpty(t, evs)
	last := evs[len(evs)-1]
	assert.Equal(t, "error", last["type"])
	assert.Equal(t, tc.code, last["code"])
	if tc.window != "" {
		assert.Equal(t, tc.window, last["window"])
	}
	assert.Contains(t, last["message"], fmt.Sprintf("hit %d)", tc.hits), "the armed hit failed")
	switch {
	case tc.code == CodePipelineError:
		assert.Contains(t, last["message"], "Generation stopped: ")
	case tc.code == CodeStemExtractFailed:
		assert.Contains(t, last["message"], "stem extraction failed")
		assert.Contains(t, ce.Text, "stem extraction failed")
	case strings.Contains(tc.spec, "=oom"):
		assert.Contains(t, last["message"], "out of memory")
	default:
		assert.Contains(t, last["message"], "fault injected at "+tc.point, "the original error")
	}
	return rec.take()
}

// closeFaultRound: a session streams, its client leaves, and a teardown step fails.
func closeFaultRound(t *testing.T, e *env, rec *sessionRecorder, stemCfg map[string]any, pcm []float32, tc faultContract) *session.Session {
	t.Helper()
	cl := e.startClient(t, stemCfg, pcm)
	require.Equal(t, "stem_assets", cl.readStems()["type"])
	cl.readSlices(2)
	s := rec.take()
	require.NotNil(t, s)
	logged := len(e.logs.String())
	cl.close() // Run's teardown runs the close steps
	e.waitReleased(t)
	resource := map[string]string{"close.stream": "resource=stream", "close.engine_session": `resource="engine session"`}[tc.point]
	var failures []string
	for _, line := range strings.Split(e.logs.String()[logged:], "\n") {
		if strings.Contains(line, `msg="session cleanup step failed"`) {
			failures = append(failures, line)
		}
	}
	require.Len(t, failures, 1, "the failed step is logged once")
	require.Contains(t, failures[0], resource)
	require.Contains(t, failures[0], "fault injected at "+tc.point, "with the original error")
	return s
}

// bootFaultRound: creating a device or loading the model fails and leaves nothing; then
// a fresh device and model load serve a session that streams over the protocol.
func bootFaultRound(t *testing.T, e *env, tc faultContract) {
	t.Helper()
	repo := testRepo(t, models.FootprintsActual)
	p, err := repo.Profile(testProfile.Name)
	require.NoError(t, err)
	newDevice := func() (*trt.Device, error) {
		return trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceHost, CapacityBytes: 16 << 30, Faults: e.faults})
	}
	dev, err := newDevice()
	if tc.point == "device.create" {
		require.ErrorIs(t, err, trt.ErrFaultInjected)
	} else {
		require.NoError(t, err)
		_, err = models.LoadModel(dev, repo, p, models.LoadOptions{})
		require.ErrorIs(t, err, trt.ErrFaultInjected)
		require.ErrorContains(t, err, "fault injected at "+tc.point, "the original error")
		l := trttest.Snapshot(t, dev)
		require.Zero(t, l.Totals.UsedBytes, "the failed load left nothing on the device")
		require.Zero(t, l.Totals.LiveHandles)
		require.NoError(t, dev.Close())
	}
	require.Equal(t, tc.hits, e.faults.Hits(tc.point), "fault point reached as armed")

	// Boot again, without the fault: the model loads and a session streams.
	e.faults.Reset()
	dev, err = newDevice()
	require.NoError(t, err)
	defer func() { require.NoError(t, dev.Close()) }()
	m, err := models.LoadModel(dev, repo, p, models.LoadOptions{})
	require.NoError(t, err)
	defer m.Release()
	be := e.serve(t, dev, m)
	defer be.shutdown(t)
	cl := be.startClient(t, baseConfig(map[string]any{"fixture_name": "faulty.wav"}), testPCM(6))
	require.Equal(t, "stem_assets", cl.readStems()["type"])
	cl.readSlices(2)
	cl.close()
	be.waitReleased(t)
}

// serve starts a second manager and protocol server for model on dev (a device other
// than e's), sharing e's fault registry and log.
func (e *env) serve(t *testing.T, dev *trt.Device, m *models.Model) *env {
	t.Helper()
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	be := &env{dev: dev, faults: e.faults, model: m, logs: e.logs, client: e.client,
		base: trttest.Snapshot(t, dev)}
	be.mgr = session.NewManager(e.mgr.Config(), dev, m, e.faults, log, session.Hooks{})
	srv, err := NewServer(Options{Manager: be.mgr, Log: log, UploadsDir: t.TempDir()})
	require.NoError(t, err)
	be.srv = srv
	be.hs = httptest.NewServer(srv.Handler())
	return be
}

// shutdown stops a server started by serve; every session is closed after it.
func (e *env) shutdown(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.srv.Shutdown(ctx, websocket.CloseGoingAway))
	e.hs.Close()
	require.NoError(t, e.mgr.WaitIdle(ctx))
}

// TestRetryOnCloseNeverRacesTeardown replays the retry-on-close race many times: a
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
