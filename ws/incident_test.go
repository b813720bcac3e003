package ws

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/demon-audio/demon/internal/procstat"
	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/trt/trttest"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// The production incident, replayed (lifecycle.md §3, T-INC-1) on a host
// device sized from the ledger to hold the shared model plus exactly one
// session: a client fails at the initial stem payload, and its immediate
// retry must stream. With the handshake guard disabled (DEMON before PR
// #222) the failed session stays allocated and the retry is refused.

const incidentRounds = 10

// oneSessionCapacity measures, with realistic engine footprints, the model's
// resident bytes and one stem session's peak, and returns a capacity that
// fits the model plus exactly one session.
func oneSessionCapacity(t *testing.T) (capacity, model, peak, resident uint64) {
	t.Helper()
	e := newEnv(t, envOptions{realistic: true})
	e.dev.ResetPeak()
	cl := e.startClient(t, baseConfig(map[string]any{"fixture_name": "incident.wav"}), testPCM(6))
	require.Equal(t, "stem_assets", cl.readStems()["type"])
	cl.readSlices(2)
	l := trttest.Snapshot(t, e.dev)
	model = e.base.Totals.UsedBytes
	peak = l.Totals.PeakBytes - model
	resident = l.Totals.UsedBytes - model
	cl.close()
	e.waitReleased(t)
	return model + peak, model, peak, resident
}

func TestIncidentStemPayloadRetry(t *testing.T) {
	capacity, model, peak, resident := oneSessionCapacity(t)
	t.Logf("incident device: model %.2f GB + one session's peak %.2f GB (resident while streaming %.2f GB) = capacity %.2f GB",
		gb(model), gb(peak), gb(resident), gb(capacity))
	// With the guard, ten rounds per way must all retry successfully, with admission off as
	// well (the guard alone frees the failed session; admission is not what saves the retry).
	// Without the guard the retry must fail: with admission off as a real device
	// out-of-memory (DEMON's incident), with admission on as a 1013 refusal.
	type variant struct {
		guard, admission bool
		ways             []string
	}
	for _, v := range []variant{
		{guard: true, admission: true, ways: []string{"a", "b", "c"}},
		{guard: true, admission: false, ways: []string{"a", "b", "c"}},
		{guard: false, admission: false, ways: []string{"a", "b", "c"}},
		{guard: false, admission: true, ways: []string{"a"}},
	} {
		for _, way := range v.ways {
			guard := v.guard
			name := fmt.Sprintf("guard=%v/admission=%v/%s", guard, v.admission, way)
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, envOptions{realistic: true, capacity: capacity,
					cfg: func(c *session.Config) { c.NoAdmission = !v.admission }})
				e.srv.disableHandshakeGuard = !guard
				clientClosed := make(chan struct{}, 1)
				if way == "c" {
					// Deterministic (c): client A's handshake continues only once
					// the server has noticed that A closed its TCP connection
					// (the retry B is not held).
					e.srv.testHookStemHeaderSent = func(ctx context.Context) {
						if !e.holdA.CompareAndSwap(true, false) {
							return
						}
						select {
						case <-clientClosed:
						case <-time.After(5 * time.Second):
						}
						select {
						case <-ctx.Done():
						case <-time.After(5 * time.Second):
						}
					}
				}
				ign := goleak.IgnoreCurrent()
				rounds := incidentRounds
				if !guard {
					rounds = 1
				}
				start := time.Now()
				for i := range rounds {
					incidentRound(t, e, way, guard, v.admission, clientClosed)
					if t.Failed() {
						t.Fatalf("round %d failed", i)
					}
				}
				if guard {
					goleak.VerifyNone(t, ign)
					t.Logf("%d rounds (fail at the stem payload, immediate retry streams) in %v", rounds, time.Since(start))
				}
			})
		}
	}
}

func gb(b uint64) float64 { return float64(b) / 1e9 }

func incidentRound(t *testing.T, e *env, way string, guard, admission bool, clientClosed chan struct{}) {
	t.Helper()
	cfg := baseConfig(map[string]any{"fixture_name": "incident.wav", "slice_encoding": "raw"})
	pcm := testPCM(5.4) // the shortest playable source keeps ten rounds fast
	e.faults.Reset()
	switch way {
	case "a":
		require.NoError(t, e.faults.Arm("handshake.stem_payload=error@1"))
	case "b":
		require.NoError(t, e.faults.Arm("handshake.stem_payload=error@2"))
	}
	// Client A fails at the stem payload.
	e.holdA.Store(way == "c")
	a := e.dial(t)
	defer a.Close()
	require.NoError(t, a.WriteJSON(cfg))
	require.NoError(t, a.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, pcm)))
	cl := &client{t: t, c: a}
	require.Equal(t, "ready", cl.readJSON()["type"])
	typ, _, err := cl.read()
	require.NoError(t, err)
	require.Equal(t, websocket.BinaryMessage, typ)
	switch way {
	case "a", "b":
		evs, ce := readClose(t, a)
		require.Equal(t, websocket.CloseInternalServerErr, ce.Code)
		last := evs[len(evs)-1]
		require.Equal(t, CodeSessionStartFailed, last["code"])
		require.Equal(t, "handshake.stem_payload", last["window"])
		if way == "b" {
			require.Equal(t, "stem_assets", evs[0]["type"], "(b) fails after the header and the first stem")
		}
		require.EqualValues(t, map[string]int64{"a": 1, "b": 2}[way], e.faults.Hits("handshake.stem_payload"))
		if guard {
			// The close arrived: the rollback is complete already.
			e.requireReleased(t)
		}
	case "c":
		require.Equal(t, "stem_assets", cl.readJSON()["type"])
		require.Positive(t, e.faults.Hits("handshake.stem_payload"))
		require.NoError(t, a.UnderlyingConn().Close())
		clientClosed <- struct{}{}
		if guard {
			// No close frame to wait for: the server learns of the disconnect from the
			// socket, so its rollback completes within the settle time (T-INC-1 step 4).
			e.waitReleased(t)
		}
	}
	if !guard {
		// The failed session stays allocated. Registration comes after the stem payload,
		// so no way got that far: the leak is an open session nobody can reach.
		eventually(t, "the failed handler to return", func() bool { return e.srv.Connections() == 0 })
		require.Equal(t, 1, e.mgr.Open(), "the failed session leaked")
		require.Empty(t, e.mgr.List(), "and it was never registered")
	}

	// Client B retries immediately with the same upload.
	b := e.dial(t)
	defer b.Close()
	require.NoError(t, b.WriteJSON(cfg))
	require.NoError(t, b.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, pcm)))
	if !guard {
		evs, ce := readClose(t, b)
		require.NotEmpty(t, evs)
		msg := fmt.Sprint(evs[len(evs)-1]["message"])
		t.Logf("retry without the guard: close %d %q, error %v", ce.Code, ce.Text, evs[len(evs)-1])
		if admission {
			require.Equal(t, websocket.CloseTryAgainLater, ce.Code)
			require.Contains(t, msg, "GPU full")
		} else {
			require.Equal(t, websocket.CloseInternalServerErr, ce.Code)
			require.Contains(t, msg, "out of memory")
		}
		return
	}
	rb := &client{t: t, c: b}
	rb.ready = rb.readJSON()
	require.Equal(t, "ready", rb.ready["type"], "retry admitted: %v", rb.ready)
	rb.ch = 2
	typ, buf, err := rb.read()
	require.NoError(t, err)
	require.Equal(t, websocket.BinaryMessage, typ)
	rb.mirror, err = NewMirror(2, make([]float32, 2))
	require.NoError(t, err)
	defer rb.mirror.Close()
	require.NoError(t, rb.mirror.ApplyF16(2, buf))
	st := rb.readStems()
	require.Equal(t, "stem_assets", st["type"])
	require.Len(t, rb.stems, 2)
	rb.readSlices(2)
	require.NoError(t, b.Close())
	e.waitReleased(t)
}

// TestAdmissionOneSessionDevice: on a device that fits one session, a second
// concurrent client gets the error frame and close 1013; once the first
// closes, a new one is admitted.
func TestAdmissionOneSessionDevice(t *testing.T) {
	capacity, _, _, _ := oneSessionCapacity(t)
	e := newEnv(t, envOptions{realistic: true, capacity: capacity})
	cfg := baseConfig(map[string]any{"fixture_name": "incident.wav"})
	pcm := testPCM(6)
	first := e.startClient(t, cfg, pcm)
	first.readStems()
	first.readSlices(1)
	c := e.dial(t)
	defer c.Close()
	require.NoError(t, c.WriteJSON(cfg))
	require.NoError(t, c.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, pcm)))
	evs, ce := readClose(t, c)
	require.Equal(t, websocket.CloseTryAgainLater, ce.Code)
	assert.Equal(t, "GPU full, try again", ce.Text)
	require.Len(t, evs, 1)
	assert.Equal(t, CodeServerBusy, evs[0]["code"])
	assert.Contains(t, evs[0]["message"], "GPU full, try again")
	first.readSlices(1) // the first session is unaffected
	first.close()
	second := e.startClient(t, cfg, pcm)
	second.readStems()
	second.readSlices(2)
	second.close()
	e.waitReleased(t)
}

// TestLoadConcurrentClients: N clients connect concurrently, stream for a
// while and leave. It requires that several sessions were live at once and
// reports, per session, underruns (bench/stream.go's definition: a stretch
// of the track left unpatched between consecutive slices), ledger bytes
// and host RSS (server and clients share this process).
func TestLoadConcurrentClients(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	const clients = 8
	const streamFor = 2 * time.Second
	e := newEnv(t, envOptions{realistic: true, capacity: 200 << 30, opts: func(o *Options) { o.MaxSessionsPerClient = -1 }})
	var wg sync.WaitGroup
	var mu sync.Mutex
	slices, bytesIn, underruns, sessionsWithUnderruns := 0, 0, 0, 0
	var staleS float64
	var maxLive int
	var perSession, rssPerSession uint64
	rssBase := procstat.RSSBytes()
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := websocket.DefaultDialer.Dial(e.wsURL(), nil)
			if !assert.NoError(t, err) {
				return
			}
			defer c.Close()
			fixture := []string{"demo_ambient_Am_20s.wav", "demo_groove_C_30s.wav"}[i%2]
			if !assert.NoError(t, c.WriteJSON(fixtureConfig(map[string]any{"fixture_name": fixture}))) {
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			var ready map[string]any
			if !assert.NoError(t, c.ReadJSON(&ready)) || !assert.Equal(t, "ready", ready["type"]) {
				return
			}
			typ, buf, err := c.ReadMessage() // the initial buffer
			if !assert.NoError(t, err) || !assert.Equal(t, websocket.BinaryMessage, typ) {
				return
			}
			cov := coverage{trackFrames: len(buf) / 4} // stereo float16
			n, b := 0, len(buf)
			deadline := time.Now().Add(streamFor + 10*time.Second)
			var streamingSince time.Time
			for time.Now().Before(deadline) {
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				typ, data, err := c.ReadMessage()
				if !assert.NoError(t, err) {
					return
				}
				b += len(data)
				if typ != websocket.BinaryMessage {
					continue
				}
				h, _, err := DecodeSliceHeader(data)
				if !assert.NoError(t, err) {
					return
				}
				cov.add(sliceSpan{int(h.StartSample), int(h.StartSample + h.NumSamples)})
				n++
				if streamingSince.IsZero() {
					streamingSince = time.Now()
					mu.Lock()
					live := e.mgr.Open()
					if live > maxLive {
						maxLive = live
						l := trttest.Snapshot(t, e.dev)
						perSession = (l.Totals.UsedBytes - e.base.Totals.UsedBytes) / uint64(live)
						if rss := procstat.RSSBytes(); rss > rssBase {
							rssPerSession = (rss - rssBase) / uint64(live)
						}
					}
					mu.Unlock()
				}
				if time.Since(streamingSince) > streamFor {
					break
				}
			}
			mu.Lock()
			slices += n
			bytesIn += b
			underruns += cov.underruns
			staleS += cov.staleS
			if cov.underruns > 0 {
				sessionsWithUnderruns++
			}
			mu.Unlock()
			assert.GreaterOrEqual(t, n, 2, "slices per client")
		}()
	}
	wg.Wait()
	e.waitReleased(t)
	el := time.Since(start)
	assert.GreaterOrEqual(t, maxLive, 2, "sessions live at once")
	t.Logf("load: %d clients, %d sessions live at peak, %d slices (%.1f/s per session), %.1f MB received, %v wall",
		clients, maxLive, slices, float64(slices)/float64(clients)/streamFor.Seconds(), float64(bytesIn)/1e6, el.Round(time.Millisecond))
	t.Logf("load: %d of %d sessions sustained without underruns (%d underruns, %.2f s stale in all)",
		clients-sessionsWithUnderruns, clients, underruns, staleS)
	t.Logf("load: per live session %.2f GB ledger bytes (realistic footprints), %.1f MB host RSS (server and clients in one process)",
		gb(perSession), float64(rssPerSession)/1e6)
}
