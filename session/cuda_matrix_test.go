//go:build !asan

// Not in the -asan pass, like cuda_test.go: it runs on the fake driver's inaccessible
// "device" mappings.

package session_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/bench"
	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
	"github.com/demon-audio/demon/ws"
)

// The session fault matrix on a cuda device: the fake driver in the CPU tier
// (TestCUDAFaultMatrix), a real GPU in the gpu tier (TestGPUFaultMatrix). Each fault point
// is reached through the path that hits it: the session API for device.alloc,
// session.init.*, create.*, run.* and close.*, and the WebSocket (an in-process ws.Server,
// driven by bench's client as a browser would) for handshake.*. After a warm-up start on the
// same path, the armed start is repeated n times; between consecutive failures a bounded
// poll waits for the driver's memory to come back (a GPU frees asynchronously); then the
// ledger, the handles and the staging ledger must be exactly at their baseline, the
// driver's free memory back within tolerance, and the next start must succeed.

// matrixPath is how a case reaches its fault point.
type matrixPath int

const (
	viaCreate    matrixPath = iota // Manager.Create fails
	viaRun                         // Create succeeds, Run fails (runner init or a tick)
	viaClose                       // the session streams; Close reports the cleanup step's failure
	viaWebSocket                   // the WebSocket start fails before the first slice
)

// matrixCase is one armed fault and its path.
type matrixCase struct {
	spec string
	path matrixPath
}

func (c matrixCase) point() string { p, _, _ := strings.Cut(c.spec, "="); return p }

// cudaFaultMatrix lists every session fault point (docs/faultpoints.md) with its path;
// device.alloc fails at several allocations of a start.
func cudaFaultMatrix() []matrixCase {
	return []matrixCase{
		{"device.alloc=oom@1", viaCreate}, {"device.alloc=oom@3", viaCreate},
		{"device.alloc=oom@5", viaCreate}, {"device.alloc=oom@8", viaCreate},
		{"session.init.context=error", viaCreate},
		{"create.source_prepare=error", viaCreate}, {"create.stems=error", viaCreate},
		{"create.conditioning=error", viaCreate}, {"create.stream=error", viaCreate},
		{"create.playback=error", viaCreate}, {"create.finalize=error", viaCreate},
		{"run.runner_init=error", viaRun}, {"run.tick=error", viaRun},
		{"close.stream=error", viaClose}, {"close.engine_session=error", viaClose},
		{"handshake.ready=error", viaWebSocket}, {"handshake.initial_buffer=error", viaWebSocket},
		{"handshake.stem_payload=error@1", viaWebSocket}, {"handshake.stem_payload=error@2", viaWebSocket},
		{"handshake.after_register=error", viaWebSocket},
	}
}

// matrixRig is a rig with the WebSocket server in front of its manager.
type matrixRig struct {
	*rig
	client *bench.WSClient
}

func newMatrixRig(t *testing.T, r *rig) *matrixRig {
	t.Helper()
	srv, err := ws.NewServer(ws.Options{Manager: r.mgr, MaxSessionsPerClient: -1})
	require.NoError(t, err)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx, 1001)
		ts.Close()
		_ = r.mgr.WaitIdle(ctx)
	})
	// The source is uploaded as the PCM frame; a track that is not built in gets stems
	// ("full"), so every WebSocket start also sends the stem payload.
	return &matrixRig{rig: r, client: &bench.WSClient{
		URL: "ws://" + ts.Listener.Addr().String() + "/", Fixture: "matrix-source", PCM: source(), Depth: 4, Steps: 8,
		HandshakeTimeout: time.Minute,
	}}
}

// attempt runs one start on c's path to its first slice and returns what the client sees:
// nil when the start streamed (and, on the close path, closed cleanly).
func (m *matrixRig) attempt(ctx context.Context, c matrixCase) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if c.path == viaWebSocket {
		l, err := m.client.Start(ctx)
		if err == nil {
			got := false
			err = l.Stream(ctx, func(bench.SliceRecord) bool { got = true; return false })
			err = errors.Join(err, l.Close())
			if err == nil && !got {
				err = errors.New("the session ended before its first slice")
			}
		}
		// The server closes the session before its close frame, but the client may have
		// returned on the error frame: wait until the manager is idle.
		return errors.Join(err, m.mgr.WaitIdle(ctx))
	}
	s, err := m.mgr.Create(ctx, request("vocals"))
	if err != nil {
		return err
	}
	out := &collect{s: s, want: 1}
	if err := s.Run(ctx, out); err != nil {
		return err // Run has closed the session
	}
	if len(out.slices) < 1 {
		return errors.New("no slice before the session ended")
	}
	return s.Close() // after Run: the cleanup steps' error, if any
}

// matrixFigures is what one case measured.
type matrixFigures struct {
	Spec, Path string
	N          int
	// LedgerLeaked is the ledger's used bytes after the n failures minus before (0 or the
	// test fails); DriverLeaked the driver's settled free memory before minus after.
	LedgerLeaked, DriverLeaked int64
	// MaxWaitMs is the longest bounded poll for the driver's memory between failures.
	MaxWaitMs float64
	// MsPerStart is the mean time of a failed start.
	MsPerStart float64
	// ProcBefore and ProcAfter are this process's memory on the GPU by NVML (-1: unknown).
	ProcBefore, ProcAfter int64
}

func (c matrixCase) pathName() string {
	return [...]string{"session", "session-run", "session-close", "websocket"}[c.path]
}

// runMatrixCase runs one case (see the file comment): a warm-up start on the path, n
// armed failures with a bounded poll for the driver's memory after each, the baseline
// checks, and the next start. tolerance is how far the driver's free memory may stay
// below the baseline; procMem (nil: unknown) reads NVML's figure for this process.
func runMatrixCase(t *testing.T, m *matrixRig, c matrixCase, n int, tolerance uint64, procMem func() int64) matrixFigures {
	t.Helper()
	if procMem == nil {
		procMem = func() int64 { return -1 }
	}
	f := matrixFigures{Spec: c.spec, Path: c.pathName(), N: n}
	m.faults.Reset()
	require.NoError(t, m.attempt(t.Context(), c), "warm-up start on the %s path", f.Path)
	base := trttest.SettledDriverFree(t, m.dev)
	ledger0 := trttest.Snapshot(t, m.dev)
	handles0 := trt.LiveHandles()
	f.ProcBefore = procMem()
	var failing time.Duration
	for i := range n {
		m.faults.Reset()
		require.NoError(t, m.faults.Arm(c.spec))
		t0 := time.Now()
		err := m.attempt(t.Context(), c)
		failing += time.Since(t0)
		require.Error(t, err, "attempt %d: the armed %s must fail the start", i+1, c.spec)
		assert.Positive(t, m.faults.Hits(c.point()), "the point was reached")
		m.faults.Reset()
		// Memory back before the next start (bounded).
		w0 := time.Now()
		_, werr := trt.WaitDriverMemory(t.Context(), m.dev, base, tolerance, 10*time.Second)
		require.NoError(t, werr, "attempt %d: the driver's memory did not come back", i+1)
		f.MaxWaitMs = max(f.MaxWaitMs, float64(time.Since(w0).Microseconds())/1000)
	}
	f.MsPerStart = float64(failing.Microseconds()) / 1000 / float64(n)
	ledger1 := trttest.Snapshot(t, m.dev)
	f.LedgerLeaked = int64(ledger1.Totals.UsedBytes) - int64(ledger0.Totals.UsedBytes)
	f.DriverLeaked = int64(base) - int64(trttest.SettledDriverFree(t, m.dev))
	f.ProcAfter = procMem()
	trttest.RequireBaseline(t, m.dev, ledger0)
	assert.Equal(t, handles0, trt.LiveHandles(), "no native handle left")
	st, err := m.dev.StagingTotals()
	require.NoError(t, err)
	assert.Zero(t, st.UsedBytes, "no host staging left")
	assert.Empty(t, m.mgr.List(), "no session left in the registry")

	require.NoError(t, m.attempt(t.Context(), c), "the next start on the %s path", f.Path)
	return f
}

// failedStartGrowth runs cycles failed starts, cycling through the create-window cases
// (each followed by a bounded poll for the driver's memory), and samples the driver's
// memory in use every `every` of them after a warm-up: the fit says whether failures
// leave anything behind that the ledger does not see.
func failedStartGrowth(t *testing.T, m *matrixRig, cycles, every int, tolerance uint64) *trttest.DriverGrowth {
	t.Helper()
	var cases []matrixCase
	for _, c := range cudaFaultMatrix() {
		if c.path == viaCreate {
			cases = append(cases, c)
		}
	}
	m.faults.Reset()
	require.NoError(t, m.attempt(t.Context(), cases[0]), "warm-up start")
	base := trttest.SettledDriverFree(t, m.dev)
	g := trttest.NewDriverGrowth(m.dev)
	for i := 1; i <= cycles; i++ {
		c := cases[i%len(cases)]
		m.faults.Reset()
		require.NoError(t, m.faults.Arm(c.spec))
		require.Error(t, m.attempt(t.Context(), c), c.spec)
		m.faults.Reset()
		_, err := trt.WaitDriverMemory(t.Context(), m.dev, base, tolerance, 10*time.Second)
		require.NoError(t, err, "after failed start %d (%s)", i, c.spec)
		if i%every == 0 {
			g.Sample(t, i)
		}
	}
	return g
}

// TestFaultMatrixCoversEverySessionPoint: the matrix cannot silently miss a point added
// to the registry.
func TestFaultMatrixCoversEverySessionPoint(t *testing.T) {
	covered := map[string]bool{}
	for _, c := range cudaFaultMatrix() {
		covered[c.point()] = true
	}
	for _, p := range trt.FaultPoints() {
		if strings.HasPrefix(p, "device.create") || strings.HasPrefix(p, "model.") {
			continue // before any session: the model-load matrix covers them
		}
		assert.True(t, covered[p], "fault point %s is not in the cuda fault matrix", p)
	}
}
