package ws

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
)

// A real test server: a host device, reference engines (oracle decoder,
// 10 s profile), a session.Manager and this package's Server on loopback.

var testProfile = models.ProfileSpec{Name: "ref-10s", DurationS: 10, DecoderVariant: "oracle"}

var (
	repoMu sync.Mutex
	repos  = map[models.Footprints]*models.Repository{}
)

// testRepo builds (once per footprint kind) the reference repository.
func testRepo(t testing.TB, fp models.Footprints) *models.Repository {
	t.Helper()
	repoMu.Lock()
	defer repoMu.Unlock()
	if r := repos[fp]; r != nil {
		return r
	}
	r, err := models.BuildReference(filepath.Join(refRoot, fmt.Sprint("fp", int(fp))), models.BuildOptions{
		Profiles: []models.ProfileSpec{testProfile}, Footprints: fp})
	require.NoError(t, err)
	repos[fp] = r
	return r
}

type envOptions struct {
	capacity  uint64 // device bytes (default 64 GiB)
	realistic bool   // FootprintsRealistic engines (default FootprintsActual)
	faults    string
	// smallSendBuffers gives accepted sockets a small kernel send buffer,
	// so a large message cannot vanish into it (loopback autotunes it to
	// megabytes) and its write lasts as long as the client's reading.
	smallSendBuffers bool
	opts             func(*Options)
	cfg              func(*session.Config)
	hooks            session.Hooks
}

type env struct {
	dev    *trt.Device
	faults *trt.Faults
	model  *models.Model
	mgr    *session.Manager
	srv    *Server
	hs     *httptest.Server
	base   trt.Ledger // after the model load
	logs   *logBuffer
	client *http.Client
	// holdA arms the incident test's (c) hook for client A of a round.
	holdA atomic.Bool
}

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	trttest.NoLeaks(t)
	if o.capacity == 0 {
		o.capacity = 64 << 30
	}
	fp := models.FootprintsActual
	if o.realistic {
		fp = models.FootprintsRealistic
	}
	e := &env{logs: &logBuffer{}}
	e.faults = trttest.Faults(t, o.faults)
	e.dev = trttest.HostDevice(t, o.capacity, e.faults)
	repo := testRepo(t, fp)
	p, err := repo.Profile(testProfile.Name)
	require.NoError(t, err)
	m, err := models.LoadModel(e.dev, repo, p, models.LoadOptions{})
	require.NoError(t, err)
	e.model = m
	t.Cleanup(m.Release)
	e.base = trttest.Snapshot(t, e.dev)

	cfg := session.DefaultConfig()
	cfg.TickInterval = 5 * time.Millisecond
	cfg.Headroom = 0
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e.mgr = session.NewManager(cfg, e.dev, m, e.faults, log, o.hooks)
	opts := Options{Manager: e.mgr, Log: log, UploadsDir: t.TempDir()}
	if o.opts != nil {
		o.opts(&opts)
	}
	e.srv, err = NewServer(opts)
	require.NoError(t, err)
	e.hs = httptest.NewUnstartedServer(e.srv.Handler())
	if o.smallSendBuffers {
		e.hs.Listener = smallSendBuffers{e.hs.Listener}
	}
	e.hs.Start()
	tr := &http.Transport{}
	e.client = &http.Client{Transport: tr}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx, websocket.CloseGoingAway); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		e.hs.Close()
		tr.CloseIdleConnections()
		// Sessions abandoned on purpose (guard disabled) are closed here.
		for _, s := range e.mgr.Drain() {
			_ = s.Close()
		}
		if t.Failed() {
			t.Logf("server log:\n%s", e.logs.String())
		}
	})
	return e
}

// smallSendBuffers is a listener whose connections have a 16 KiB send buffer.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(16 << 10)
	}
	return c, err
}

func (e *env) wsURL() string { return "ws" + strings.TrimPrefix(e.hs.URL, "http") + "/" }

func (e *env) dial(t testing.TB) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(e.wsURL(), nil)
	require.NoError(t, err)
	return c
}

// requireReleased asserts the device is back at baseline with no open or
// registered session.
func (e *env) requireReleased(t testing.TB) {
	t.Helper()
	trttest.RequireBaseline(t, e.dev, e.base)
	require.Zero(t, e.mgr.Open(), "open sessions")
	require.Empty(t, e.mgr.List(), "registered sessions")
}

// eventually waits for cond (teardown after a client-side disconnect is
// asynchronous by nature: the server only learns of it from the socket).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) waitReleased(t testing.TB) {
	t.Helper()
	eventually(t, "session release", func() bool {
		l, err := e.dev.Ledger()
		return err == nil && l.Totals.UsedBytes == e.base.Totals.UsedBytes && e.mgr.Open() == 0 && len(e.mgr.List()) == 0
	})
	e.requireReleased(t)
}

// ---- test client ----------------------------------------------------------------

// testPCM is a short stereo source: 6 s of two detuned tones.
func testPCM(seconds float64) []float32 {
	n := int(seconds * 48000)
	out := make([]float32, 2*n)
	for i := range n {
		x := float64(i) / 48000
		out[2*i] = float32(0.3 * math.Sin(2*math.Pi*220*x))
		out[2*i+1] = float32(0.3 * math.Sin(2*math.Pi*331*x))
	}
	return out
}

func baseConfig(extra map[string]any) map[string]any {
	cfg := map[string]any{"sde": false, "lora": false, "depth": 4, "vae_window": 0.36, "crop": 6, "steps": 8,
		"prompt": "lofi piano", "prompt_b": "lofi piano", "enabled_loras": []string{}, "lora_strengths": map[string]any{}}
	for k, v := range extra {
		cfg[k] = v
	}
	return cfg
}

// fixtureConfig starts from a server-side fixture (no stems).
func fixtureConfig(extra map[string]any) map[string]any {
	m := map[string]any{"fixture_name": "demo_ambient_Am_20s.wav", "use_server_fixture": true}
	for k, v := range extra {
		m[k] = v
	}
	return baseConfig(m)
}

type client struct {
	t      testing.TB
	c      *websocket.Conn
	ready  map[string]any
	mirror *Mirror
	ch     int
	stems  [][]byte
	slices int
	events []map[string]any
	// swapPending: the next binary is the swap buffer (after swap_ready).
	swapPending bool
}

func (cl *client) close() {
	if cl.mirror != nil {
		cl.mirror.Close()
	}
	_ = cl.c.Close()
}

func (cl *client) sendJSON(v any) {
	cl.t.Helper()
	b, err := json.Marshal(v)
	require.NoError(cl.t, err)
	require.NoError(cl.t, cl.c.WriteMessage(websocket.TextMessage, b))
}

func (cl *client) read() (int, []byte, error) {
	_ = cl.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	return cl.c.ReadMessage()
}

func (cl *client) readJSON() map[string]any {
	cl.t.Helper()
	typ, b, err := cl.read()
	require.NoError(cl.t, err)
	require.Equal(cl.t, websocket.TextMessage, typ, "want text, got %d bytes binary", len(b))
	var m map[string]any
	require.NoError(cl.t, json.Unmarshal(b, &m))
	return m
}

// startClient dials, sends the config (and the PCM frame, if any) and reads
// ready + the initial buffer.
func (e *env) startClient(t testing.TB, cfg map[string]any, pcm []float32) *client {
	t.Helper()
	cl := &client{t: t, c: e.dial(t)}
	t.Cleanup(cl.close)
	cl.sendJSON(cfg)
	if pcm != nil {
		require.NoError(t, cl.c.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, pcm)))
	}
	cl.readStart()
	return cl
}

// readStart reads ready and the initial buffer, and sets up the mirror.
func (cl *client) readStart() {
	t := cl.t
	t.Helper()
	cl.ready = cl.readJSON()
	require.Equal(t, "ready", cl.ready["type"], "ready: %v", cl.ready)
	cl.ch = int(cl.ready["channels"].(float64))
	typ, buf, err := cl.read()
	require.NoError(t, err)
	require.Equal(t, websocket.BinaryMessage, typ)
	frames := int(math.Round(cl.ready["duration"].(float64) * 48000))
	require.Equal(t, frames*cl.ch*2, len(buf), "initial buffer = frames × channels × 2 bytes")
	m, err := NewMirror(cl.ch, make([]float32, cl.ch))
	require.NoError(t, err)
	cl.mirror = m
	require.NoError(t, m.ApplyF16(cl.ch, buf))
}

// readStems reads stem_assets + 2 binaries (or stem_failed).
func (cl *client) readStems() map[string]any {
	cl.t.Helper()
	m := cl.readJSON()
	if m["type"] == "stem_assets" {
		for range m["stems"].([]any) {
			typ, b, err := cl.read()
			require.NoError(cl.t, err)
			require.Equal(cl.t, websocket.BinaryMessage, typ)
			cl.stems = append(cl.stems, b)
		}
	}
	return m
}

// readSlices reads until n slices were applied, collecting JSON events.
func (cl *client) readSlices(n int) {
	cl.t.Helper()
	for got := 0; got < n; {
		if _, ok := cl.readSlice(); ok {
			got++
		}
	}
}

// readSlice reads one message: a slice is checked and applied to the
// mirror (ok), a JSON event is kept in cl.events.
func (cl *client) readSlice() (h SliceHeader, ok bool) {
	cl.t.Helper()
	typ, b, err := cl.read()
	require.NoError(cl.t, err)
	if typ == websocket.TextMessage {
		var m map[string]any
		require.NoError(cl.t, json.Unmarshal(b, &m))
		cl.events = append(cl.events, m)
		return h, false
	}
	h, _, err = DecodeSliceHeader(b)
	require.NoError(cl.t, err)
	require.EqualValues(cl.t, cl.ch, h.Channels)
	require.Zero(cl.t, h.StartSample%1920, "latent-aligned start")
	require.Less(cl.t, int(h.StartSample), cl.mirror.Frames())
	require.NoError(cl.t, cl.mirror.Apply(b))
	cl.slices++
	return h, true
}

// upload sends one upload socket's header and PCM frame and returns the
// reply (upload_ok or upload_failed).
func (e *env) upload(t testing.TB, name string, channels int, pcm []float32) map[string]any {
	t.Helper()
	c := e.dial(t)
	defer c.Close()
	require.NoError(t, c.WriteJSON(map[string]any{"type": "upload_track", "name": name}))
	require.NoError(t, c.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, channels, pcm)))
	var reply map[string]any
	require.NoError(t, c.ReadJSON(&reply))
	return reply
}

// waitEvent reads (applying slices) until a JSON event of type typ.
func (cl *client) waitEvent(typ string) map[string]any {
	cl.t.Helper()
	for i, m := range cl.events {
		if m["type"] == typ {
			cl.events = append(cl.events[:i:i], cl.events[i+1:]...)
			return m
		}
	}
	for {
		mt, b, err := cl.read()
		require.NoError(cl.t, err, "waiting for %s", typ)
		if mt == websocket.BinaryMessage {
			require.NoError(cl.t, cl.mirror.Apply(b))
			cl.slices++
			continue
		}
		var m map[string]any
		require.NoError(cl.t, json.Unmarshal(b, &m))
		if m["type"] == typ {
			return m
		}
		cl.events = append(cl.events, m)
	}
}

// readClose reads until the close frame; it returns the JSON events seen
// before it and the close error.
func readClose(t testing.TB, c *websocket.Conn) ([]map[string]any, *websocket.CloseError) {
	t.Helper()
	var evs []map[string]any
	for {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		typ, b, err := c.ReadMessage()
		if err != nil {
			ce, ok := err.(*websocket.CloseError)
			require.True(t, ok, "want a close frame, got %v", err)
			return evs, ce
		}
		if typ == websocket.TextMessage {
			var m map[string]any
			require.NoError(t, json.Unmarshal(b, &m))
			evs = append(evs, m)
		}
	}
}

func (e *env) get(t testing.TB, path string) (int, string, http.Header) {
	t.Helper()
	resp, err := e.client.Get(e.hs.URL + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// rawGet sends a request line exactly as written (no client-side path
// cleaning).
func (e *env) rawGet(t testing.TB, path string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.hs.URL+"/", nil)
	require.NoError(t, err)
	req.URL.Opaque = path
	resp, err := e.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}
