package session_test

import (
	"context"
	"errors"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rig is a device with a loaded model and a manager, the shape demond has after boot.
type rig struct {
	dev    *trt.Device
	faults *trt.Faults
	model  *models.Model
	mgr    *session.Manager
	base   trt.Ledger
}

var (
	repoOnce sync.Once
	repoDir  string
	repoErr  error
)

func repo(t testing.TB) *models.Repository {
	t.Helper()
	repoOnce.Do(func() {
		repoDir, repoErr = tempDir()
		if repoErr == nil {
			_, repoErr = models.BuildReference(repoDir, models.BuildOptions{
				Profiles:   []models.ProfileSpec{{Name: "ref-10s", DurationS: 10, DecoderVariant: "oracle"}},
				Footprints: models.FootprintsRealistic,
			})
		}
	})
	require.NoError(t, repoErr)
	r, err := models.Open(repoDir)
	require.NoError(t, err)
	return r
}

func newRig(t testing.TB, capacity uint64, spec string) *rig {
	t.Helper()
	return newRigOn(t, func(f *trt.Faults) *trt.Device { return trttest.HostDevice(t, capacity, f) }, spec)
}

// newRigOn is newRig on the device mkDev creates (with the rig's fault registry).
func newRigOn(t testing.TB, mkDev func(*trt.Faults) *trt.Device, spec string) *rig {
	t.Helper()
	trttest.NoLeaks(t)
	r := &rig{faults: trttest.Faults(t, "")}
	r.dev = mkDev(r.faults)
	rp := repo(t)
	p, err := rp.Profile("ref-10s")
	require.NoError(t, err)
	r.model, err = models.LoadModel(r.dev, rp, p, models.LoadOptions{})
	require.NoError(t, err)
	t.Cleanup(r.model.Release)
	cfg := session.DefaultConfig()
	cfg.TickInterval = 0
	cfg.MaxCondLen = 128
	r.mgr = session.NewManager(cfg, r.dev, r.model, r.faults, nil, session.Hooks{})
	r.faults.Reset() // points count from here: the model load is not part of a session
	require.NoError(t, r.faults.Arm(spec))
	r.base = trttest.Snapshot(t, r.dev)
	return r
}

// driverFree is the device driver's free memory now (for rigs on the cuda device).
func driverFree(t testing.TB, r *rig) uint64 {
	t.Helper()
	free, _, err := r.dev.DriverMemory()
	require.NoError(t, err)
	return free
}

// source is 6 s of a two-tone stereo signal (above the 5.04 s minimum).
func source() []float32 {
	n := 6 * 48000
	pcm := make([]float32, 2*n)
	for i := range n {
		v := 0.3*math.Sin(2*math.Pi*220*float64(i)/48000) + 0.2*math.Sin(2*math.Pi*330*float64(i)/48000)
		pcm[2*i], pcm[2*i+1] = float32(v), float32(0.8*v)
	}
	return pcm
}

func request(stems string) session.CreateRequest {
	return session.CreateRequest{PCM: source(), Channels: 2, Prompt: "ambient electronic, warm pads", PromptB: "dark techno", Depth: 4, StemMode: stems}
}

// collect is an Output that keeps copies of the slices it receives and stops the session
// after `want` of them.
type collect struct {
	s      *session.Session
	want   int
	slices []session.SliceEvent
}

func (c *collect) Slice(ev *session.SliceEvent) error {
	cp := *ev
	cp.Samples = append([]float32(nil), ev.Samples...)
	c.slices = append(c.slices, cp)
	if len(c.slices) >= c.want {
		c.s.Stop()
	}
	return nil
}

func streamSlices(t testing.TB, s *session.Session, n int) []session.SliceEvent {
	t.Helper()
	out := &collect{s: s, want: n}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, s.Run(ctx, out))
	require.Len(t, out.slices, n)
	return out.slices
}

func TestCreateRunClose(t *testing.T) {
	r := newRig(t, 24<<30, "")
	s, err := r.mgr.Create(t.Context(), request(""))
	require.NoError(t, err)
	assert.Equal(t, 6.0, s.Info.Duration)
	assert.Equal(t, 150, s.Info.Latents)
	assert.Len(t, s.Initial, 2*6*48000)
	owner := "session:" + s.ID
	l := trttest.Snapshot(t, r.dev)
	assert.Positive(t, l.Owner(owner).UsedBytes)
	assert.Equal(t, int64(2), l.Owner(owner).LiveHandles, "decoder context and stream")
	r.mgr.Register(s)
	assert.Len(t, r.mgr.List(), 1)

	slices := streamSlices(t, s, 3)
	for _, ev := range slices {
		assert.Equal(t, 2*9*1920, len(ev.Samples))
		assert.Zero(t, ev.StartSample%1920)
	}
	assert.True(t, s.Closed(), "Run closes the session on return")
	assert.Empty(t, r.mgr.List(), "and takes it out of the registry")
	trttest.RequireBaseline(t, r.dev, r.base)
	require.NoError(t, s.Close(), "Close twice is a no-op")
}

func TestStemsFullAndSelected(t *testing.T) {
	r := newRig(t, 24<<30, "")
	s, err := r.mgr.Create(t.Context(), request("full"))
	require.NoError(t, err)
	require.NotNil(t, s.Stems)
	require.NoError(t, s.StemErr)
	for i := range s.Initial {
		require.InDelta(t, s.Initial[i], s.Stems.Vocals[i]+s.Stems.Instruments[i], 1e-6)
	}
	require.NoError(t, s.Close())

	s, err = r.mgr.Create(t.Context(), request("vocals"))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	trttest.RequireBaseline(t, r.dev, r.base)
}

// Each create-window fault point: the original error, the point reached once, the ledger
// and live handles exactly at the pre-session baseline, and the next session streams.
func TestCreateFaultMatrix(t *testing.T) {
	points := []string{
		"create.source_prepare", "create.stems", "create.conditioning", "create.stream",
		"create.playback", "create.finalize", "session.init.context",
		"device.alloc", // any allocation in create: the 1st, 3rd and 5th
	}
	for _, point := range points {
		for _, nth := range []int{1, 3} {
			if nth > 1 && point != "device.alloc" {
				continue
			}
			t.Run(point, func(t *testing.T) {
				spec := point + "=error"
				if point == "device.alloc" {
					spec = point + "=oom@" + string(rune('0'+nth))
				}
				r := newRig(t, 24<<30, spec)
				handles := trt.LiveHandles()
				_, err := r.mgr.Create(t.Context(), request("vocals"))
				require.Error(t, err)
				if point == "device.alloc" {
					require.ErrorIs(t, err, trt.ErrOutOfMemory)
				} else {
					require.ErrorIs(t, err, trt.ErrFaultInjected)
					assert.Equal(t, int64(1), r.faults.Hits(point), "the fault point was reached")
				}
				trttest.RequireBaseline(t, r.dev, r.base)
				assert.Equal(t, handles, trt.LiveHandles())
				assert.Zero(t, r.mgr.Open())

				require.NoError(t, r.faults.Arm(point+"=off"))
				s, err := r.mgr.Create(t.Context(), request("vocals"))
				require.NoError(t, err, "the next session starts")
				streamSlices(t, s, 2)
				trttest.RequireBaseline(t, r.dev, r.base)
			})
		}
	}
}

func TestStemFailureInFullModeIsNotFatal(t *testing.T) {
	r := newRig(t, 24<<30, "create.stems=error")
	s, err := r.mgr.Create(t.Context(), request("full"))
	require.NoError(t, err)
	require.ErrorIs(t, s.StemErr, trt.ErrFaultInjected)
	assert.Nil(t, s.Stems)
	require.NoError(t, s.Close())
	trttest.RequireBaseline(t, r.dev, r.base)
}

func TestRunFaults(t *testing.T) {
	t.Run("runner init propagates", func(t *testing.T) {
		r := newRig(t, 24<<30, "run.runner_init=error")
		s, err := r.mgr.Create(t.Context(), request(""))
		require.NoError(t, err)
		err = s.Run(t.Context(), &collect{s: s, want: 1})
		var ri *session.RunnerInitError
		require.ErrorAs(t, err, &ri)
		require.ErrorIs(t, err, trt.ErrFaultInjected)
		assert.True(t, s.Closed())
		trttest.RequireBaseline(t, r.dev, r.base)
	})
	t.Run("runtime failure stops and closes", func(t *testing.T) {
		r := newRig(t, 24<<30, "run.tick=error@12")
		s, err := r.mgr.Create(t.Context(), request(""))
		require.NoError(t, err)
		out := &collect{s: s, want: 100}
		err = s.Run(t.Context(), out)
		var re *session.RuntimeError
		require.ErrorAs(t, err, &re)
		assert.NotEmpty(t, out.slices, "it streamed before failing")
		assert.True(t, s.Closed())
		trttest.RequireBaseline(t, r.dev, r.base)
	})
	t.Run("output error stops", func(t *testing.T) {
		r := newRig(t, 24<<30, "")
		s, err := r.mgr.Create(t.Context(), request(""))
		require.NoError(t, err)
		err = s.Run(t.Context(), failingOutput{})
		require.ErrorContains(t, err, "client gone")
		trttest.RequireBaseline(t, r.dev, r.base)
	})
}

type failingOutput struct{}

func (failingOutput) Slice(*session.SliceEvent) error { return errors.New("client gone") }

// A failing teardown step is logged; the following steps still run and nothing leaks.
func TestCloseFaultsStillReleaseEverything(t *testing.T) {
	for _, point := range []string{"close.stream", "close.engine_session"} {
		t.Run(point, func(t *testing.T) {
			r := newRig(t, 24<<30, point+"=error")
			s, err := r.mgr.Create(t.Context(), request(""))
			require.NoError(t, err)
			err = s.Close()
			require.ErrorIs(t, err, trt.ErrFaultInjected)
			trttest.RequireBaseline(t, r.dev, r.base)
			require.ErrorIs(t, s.Close(), trt.ErrFaultInjected, "the second Close reports the same and frees nothing twice")
			assert.Equal(t, int64(1), r.faults.Hits(point))
		})
	}
}

func TestAdmissionRefusesWhenFullAndAdmitsAfterClose(t *testing.T) {
	// The model (~7 GB) plus room for exactly one session.
	r := newRig(t, 24<<30, "")
	tot, err := r.dev.Totals()
	require.NoError(t, err)
	one, err := r.mgr.Create(t.Context(), request(""))
	require.NoError(t, err)
	peak := trttest.Snapshot(t, r.dev).Totals.PeakBytes
	require.NoError(t, one.Close())
	sessionPeak := peak - tot.UsedBytes
	t.Logf("model resident %.2f GiB, one session peak %.2f GiB", float64(tot.UsedBytes)/(1<<30), float64(sessionPeak)/(1<<30))

	small := newRig(t, tot.UsedBytes+sessionPeak+r.mgr.Config().Headroom+(64<<20), "")
	a, err := small.mgr.Create(t.Context(), request(""))
	require.NoError(t, err)
	_, err = small.mgr.Create(t.Context(), request(""))
	require.ErrorIs(t, err, session.ErrAdmission)
	assert.Contains(t, err.Error(), "GPU full, try again")
	require.NoError(t, a.Close())
	b, err := small.mgr.Create(t.Context(), request(""))
	require.NoError(t, err, "admitted again as soon as the first closed")
	require.NoError(t, b.Close())
	trttest.RequireBaseline(t, small.dev, small.base)
}

// The admission estimate must not undercount what a session really allocates.
func TestPredictedCostCoversRealUse(t *testing.T) {
	r := newRig(t, 24<<30, "")
	r.dev.ResetPeak()
	before := trttest.Snapshot(t, r.dev).Totals.UsedBytes
	s, err := r.mgr.Create(t.Context(), request("full"))
	require.NoError(t, err)
	peak := trttest.Snapshot(t, r.dev).Totals.PeakBytes - before
	held := trttest.Snapshot(t, r.dev).Owner("session:" + s.ID).UsedBytes
	persistent := r.model.Engine(models.Decoder).ContextBytes() + session.StreamBytesForTest(r.mgr, s.Info.Latents)
	t.Logf("session holds %d bytes while live, estimate %d (%.1f%% margin)", held, persistent, 100*(float64(persistent)/float64(held)-1))
	assert.GreaterOrEqual(t, persistent, held, "the stream estimate covers the real stream")
	require.NoError(t, s.Close())
	cost := session.PredictCostForTest(r.mgr, s.Info.Latents, true)
	t.Logf("session peak %d bytes, predicted %d (%.1f%% margin)", peak, cost, 100*(float64(cost)/float64(peak)-1))
	assert.GreaterOrEqual(t, cost, peak)
	assert.Less(t, float64(cost), 1.5*float64(peak), "and is not wildly pessimistic")
}

func TestConcurrentSessionsShareTheModel(t *testing.T) {
	r := newRig(t, 24<<30, "")
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := r.mgr.Create(context.Background(), request(""))
			if err != nil {
				errs <- err
				return
			}
			out := &collect{s: s, want: 2}
			errs <- s.Run(context.Background(), out)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, 1, r.model.Refs(), "sessions gave their model references back")
	trttest.RequireBaseline(t, r.dev, r.base)
}

func TestBadRequests(t *testing.T) {
	r := newRig(t, 24<<30, "")
	cases := []struct {
		name string
		req  session.CreateRequest
		msg  string
	}{
		{"too short", session.CreateRequest{PCM: make([]float32, 2*48000), Channels: 2, Prompt: "x"}, "need at least 5.04 s"},
		{"ragged", session.CreateRequest{PCM: make([]float32, 7), Channels: 2, Prompt: "x"}, "not a whole number"},
		{"no channels", session.CreateRequest{PCM: make([]float32, 8), Channels: 0, Prompt: "x"}, "0 channels"},
		{"stem mode", session.CreateRequest{PCM: source(), Channels: 2, StemMode: "drums"}, `stem_source_mode "drums"`},
	}
	for _, tc := range cases {
		_, err := r.mgr.Create(t.Context(), tc.req)
		require.ErrorIs(t, err, session.ErrBadRequest, tc.name)
		assert.Contains(t, err.Error(), tc.msg, tc.name)
	}
	assert.Zero(t, trttest.Snapshot(t, r.dev).Totals.Allocations-r.base.Totals.Allocations, "refused before allocating")
}

func tempDir() (string, error) { return session.TempDirForTest() }

func TestWarmup(t *testing.T) {
	t.Run("passes", func(t *testing.T) {
		r := newRig(t, 24<<30, "")
		res, err := r.mgr.Warmup(t.Context(), request(""), 2, 30*time.Second)
		require.NoError(t, err)
		assert.True(t, res.Done)
		assert.Nil(t, res.Error)
		assert.GreaterOrEqual(t, res.Slices, 2)
		trttest.RequireBaseline(t, r.dev, r.base)
	})
	for _, tc := range []struct {
		spec     string
		wantDone bool
	}{{"create.conditioning=error", false}, {"run.runner_init=error", false}, {"run.tick=error@3", true}} {
		t.Run(tc.spec, func(t *testing.T) {
			r := newRig(t, 24<<30, tc.spec)
			res, err := r.mgr.Warmup(t.Context(), request(""), 2, 30*time.Second)
			assert.Equal(t, tc.wantDone, res.Done)
			if tc.wantDone {
				require.NoError(t, err, "a runtime failure after start is logged, not a warmup failure")
			} else {
				require.ErrorIs(t, err, trt.ErrFaultInjected)
				require.NotNil(t, res.Error)
			}
			trttest.RequireBaseline(t, r.dev, r.base)
		})
	}
}

func TestSwapSameAndDifferentLength(t *testing.T) {
	r := newRig(t, 24<<30, "")
	s, err := r.mgr.Create(t.Context(), request(""))
	require.NoError(t, err)
	done := make(chan error, 1)
	out := &collect{s: s, want: 1000}
	go func() { done <- s.Run(context.Background(), out) }()

	for _, seconds := range []int{6, 8} {
		pcm := make([]float32, 2*seconds*48000)
		for i := range pcm {
			pcm[i] = float32(math.Sin(float64(i) / 50))
		}
		var got []float32
		err := s.Do(t.Context(), func(rt *session.Runtime) error {
			var err error
			got, err = rt.Swap(pcm, 2, "other.wav")
			return err
		})
		require.NoError(t, err)
		assert.Len(t, got, 2*seconds*48000)
		assert.Equal(t, seconds*25, s.Info.Latents)
	}
	require.Error(t, s.Do(t.Context(), func(rt *session.Runtime) error {
		_, err := rt.Swap(make([]float32, 100), 2, "short")
		return err
	}), "a bad swap fails and leaves the session running")
	s.Stop()
	require.NoError(t, <-done)
	trttest.RequireBaseline(t, r.dev, r.base)
}

type countingOutput struct {
	s    *session.Session
	want int
	n    int
}

func (c *countingOutput) Slice(*session.SliceEvent) error {
	c.n++
	if c.n >= c.want {
		c.s.Stop()
	}
	return nil
}

// loopMeter reads the Go allocation and cgo call counters of a run loop at its from-th and
// to-th event (ticks, slices: whatever the caller counts, on the loop's goroutine) and then
// stops the session.
type loopMeter struct {
	s          *session.Session
	from, to   int64
	n          int64
	m0, m1     runtime.MemStats
	cgo0, cgo1 int64
}

func (w *loopMeter) count() {
	w.n++
	switch w.n {
	case w.from:
		runtime.ReadMemStats(&w.m0)
		w.cgo0 = runtime.NumCgoCall()
	case w.to:
		w.cgo1 = runtime.NumCgoCall()
		runtime.ReadMemStats(&w.m1)
		w.s.Stop()
	}
}

// perEvent is the Go allocations and cgo calls per event between from and to.
func (w *loopMeter) perEvent(t *testing.T) (allocs, cgo float64) {
	t.Helper()
	require.GreaterOrEqual(t, w.n, w.to, "the loop stopped before the window closed")
	k := float64(w.to - w.from)
	return float64(w.m1.Mallocs-w.m0.Mallocs) / k, float64(w.cgo1-w.cgo0) / k
}

// The run loop's steady state allocates nothing per tick (Go side; the shim is checked by
// trt's tests) and makes one cgo call per tick.
func TestRunLoopSteadyStateAllocations(t *testing.T) {
	r := newRig(t, 24<<30, "")
	meter := &loopMeter{from: 20, to: 120}
	cfg := session.DefaultConfig()
	cfg.TickInterval = time.Millisecond // exercise the pacing timer too
	cfg.MaxCondLen = 128
	mgr := session.NewManager(cfg, r.dev, r.model, r.faults, nil, session.Hooks{Tick: func(float64, float64, bool) { meter.count() }})
	s, err := mgr.Create(t.Context(), request(""))
	require.NoError(t, err)
	meter.s = s
	require.NoError(t, s.Run(t.Context(), &countingOutput{s: s, want: 1 << 30}))
	perTick, cgo := meter.perEvent(t)
	t.Logf("run loop: %.2f Go allocations and %.2f cgo calls per tick over 100 ticks", perTick, cgo)
	if !asanBuild {
		assert.Less(t, perTick, 0.5, "steady-state ticks allocate nothing (ReadMemStats itself may count once)")
	}
	assert.InDelta(t, 1.0, cgo, 0.011, "one cgo call per tick")
}

func TestClosedWithoutRunning(t *testing.T) {
	r := newRig(t, 24<<30, "")
	s, err := r.mgr.Create(t.Context(), request(""))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Run(t.Context(), &countingOutput{s: s}), session.ErrClosed, "no run after close")
	require.ErrorIs(t, s.Do(context.Background(), func(*session.Runtime) error { return nil }), session.ErrClosed)
	trttest.RequireBaseline(t, r.dev, r.base)
}
