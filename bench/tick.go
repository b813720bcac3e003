package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/trt"
)

// TickResult is the tick scenario: where a tick's time goes, and what it costs the Go
// side, for one stream built directly from the model's engines (the hot path alone) and
// for a whole session run loop (what demond actually runs per tick).
type TickResult struct {
	Frames  int    `json:"latent_frames"`
	Depth   int    `json:"depth"`
	Steps   int    `json:"steps"`
	Decoder string `json:"decoder"`
	Iters   int    `json:"iters"`

	// Direct stream.Tick calls.
	WallMs     Dist `json:"wall_ms"`     // Go wall time around Stream.Tick
	TickMs     Dist `json:"tick_ms"`     // the shim's DiT tick time
	EngineMs   Dist `json:"engine_ms"`   // of TickMs, inside the decoder engine
	DecMs      Dist `json:"dec_ms"`      // windowed VAE decode + patch (ticks that decoded)
	VAEMs      Dist `json:"vae_ms"`      // of DecMs, inside the windowed VAE engine (same ticks)
	OverheadMs Dist `json:"overhead_ms"` // wall − decoder engine − VAE engine, per tick
	// OverheadPct is the time outside engine execution as a share of the Go wall time per
	// tick, over whole emission cycles (trt.TickMeter: the same figure as trt's
	// BenchmarkStreamTick). The goal is ≤ 1 %.
	OverheadPct float64 `json:"overhead_pct"`
	// BoundaryUs is the mean Go-observed wall minus the shim's tick+dec (cgo and Go).
	BoundaryUs    float64 `json:"boundary_us"`
	CgoPerTick    float64 `json:"cgo_calls_per_tick"`
	AllocsPerTick float64 `json:"go_allocs_per_tick"` // testing.AllocsPerRun
	BytesPerTick  float64 `json:"go_bytes_per_tick"`
	// Decoded slices per tick and per wall second, over whole emission cycles, against what
	// real time needs (one slice per slice duration: 2.78/s at 0.36 s).
	DecodedPerTick float64 `json:"decoded_per_tick"`
	SlicesPerS     float64 `json:"slices_per_s"`
	NeedPerS       float64 `json:"need_slices_per_s"`
	RealtimeX      float64 `json:"realtime_x"`

	// Whole session run loop (TickInterval 0, session API).
	Loop *LoopResult `json:"run_loop,omitempty"`
}

// LoopResult is the per-tick cost of the session run loop around Stream.Tick.
type LoopResult struct {
	Ticks          int     `json:"ticks"`
	PeriodMs       float64 `json:"period_ms"`    // mean wall time between ticks
	NativeMs       float64 `json:"native_ms"`    // mean tick+dec reported by the shim
	LoopOverheadMs float64 `json:"overhead_ms"`  // period − native
	LoopOverhead   float64 `json:"overhead_pct"` // of the period
	CgoPerTick     float64 `json:"cgo_calls_per_tick"`
	AllocsPerTick  float64 `json:"go_allocs_per_tick"` // runtime.MemStats.Mallocs delta
	BytesPerTick   float64 `json:"go_bytes_per_tick"`
}

func runTick(ctx context.Context, cfg Config, env *Env) (*TickResult, error) {
	frames := env.Profile.DurationS * 25
	res := &TickResult{Frames: frames, Depth: cfg.Depth, Steps: cfg.Steps, Decoder: env.Spec.DecoderVariant, Iters: cfg.TickIters}
	st, cleanup, err := directStream(env, frames, cfg)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	slice := make([]float32, trt.MaxSliceFloats)
	p := &trt.TickParams{Submit: true, Seed: 42, Denoise: 0.5, HintStrength: 1, Guidance: 1, VelocityScale: 1, Shift: 3, Depth: cfg.Depth, Decode: true}
	tick := func() (trt.TickResult, error) {
		p.PlayheadS += 0.04
		if p.PlayheadS > float64(env.Profile.DurationS) {
			p.PlayheadS = 0
		}
		return st.Tick(p, slice)
	}
	for range 2 * cfg.Steps { // fill the ring: steady state, periodic emissions
		if _, err := tick(); err != nil {
			return nil, err
		}
	}
	n := cfg.TickIters
	wall, tms, ems, dms, vms, ovh := make([]float64, 0, n), make([]float64, 0, n), make([]float64, 0, n), make([]float64, 0, n), make([]float64, 0, n), make([]float64, 0, n)
	var sumWall, sumTick, sumDec float64
	meter := trt.TickMeter{Steps: cfg.Steps}
	bar := newProgress(cfg.Progress, "tick", n)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cgo0 := runtime.NumCgoCall()
	for i := range n {
		t0 := time.Now()
		r, err := tick()
		d := time.Since(t0)
		if err != nil {
			return nil, err
		}
		meter.Add(d, r)
		w := float64(d) / float64(time.Millisecond)
		wall = append(wall, w)
		tms = append(tms, float64(r.TickMs))
		ems = append(ems, float64(r.EngineMs))
		ovh = append(ovh, w-float64(r.EngineMs)-float64(r.VAEMs))
		sumWall += w
		sumTick += float64(r.TickMs)
		if r.Decoded {
			dms = append(dms, float64(r.DecMs))
			vms = append(vms, float64(r.VAEMs))
			sumDec += float64(r.DecMs)
		}
		bar.Set(i + 1)
	}
	cgo1 := runtime.NumCgoCall()
	runtime.ReadMemStats(&ms1)
	bar.Done()
	res.WallMs, res.TickMs, res.EngineMs, res.DecMs, res.VAEMs, res.OverheadMs = Summarize(wall), Summarize(tms), Summarize(ems), Summarize(dms), Summarize(vms), Summarize(ovh)
	f := meter.Figures()
	res.OverheadPct = f.OverheadPct
	res.DecodedPerTick, res.SlicesPerS, res.NeedPerS, res.RealtimeX = f.SlicesPerTick, f.SlicesPerS, f.NeedPerS, f.RealtimeX
	res.BoundaryUs = 1000 * (sumWall - sumTick - sumDec) / float64(n)
	res.CgoPerTick = float64(cgo1-cgo0) / float64(n)
	res.BytesPerTick = float64(ms1.TotalAlloc-ms0.TotalAlloc) / float64(n)
	var terr error
	res.AllocsPerTick = testing.AllocsPerRun(min(n, 20), func() {
		if _, err := tick(); err != nil {
			terr = err
		}
	})
	if terr != nil {
		return nil, terr
	}
	loop, err := runLoop(ctx, cfg, env)
	if err != nil {
		return res, fmt.Errorf("run loop: %w", err)
	}
	res.Loop = loop
	return res, nil
}

// directStream builds what a session owns (decoder context, stream, source, condition,
// playback) straight from the model's engines, as trt's BenchmarkStreamTick does.
func directStream(env *Env, frames int, cfg Config) (*trt.Stream, func(), error) {
	const owner = "bench:tick"
	var closers []func() error
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i]()
		}
	}
	fail := func(err error) (*trt.Stream, func(), error) { cleanup(); return nil, nil, err }
	dctx, err := env.Model.Engine(models.Decoder).NewContext(owner)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, dctx.Close)
	st, err := trt.NewStream(dctx, env.Model.Engine(models.VAEDecodeWindowed), owner, trt.StreamOptions{
		Frames: frames, MaxDepth: 8, Depth: cfg.Depth, Steps: cfg.Steps, Shift: 3, MaxCondLen: 64, VAEWindow: SliceSeconds, LeadS: 0.5,
	})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, st.Close)
	moments, err := env.Dev.Alloc(uint64(4*128*frames), owner)
	if err != nil {
		return fail(err)
	}
	defer moments.Close()
	m := make([]float32, 128*frames)
	for i := range m {
		m[i] = float32((i*7)%13-6) / 20
	}
	if err := moments.WriteFloat32(0, m); err != nil {
		return fail(err)
	}
	if err := st.SetSource(moments, frames); err != nil {
		return fail(err)
	}
	const condLen = 40
	cond := make([]float32, condLen*2048)
	for i := range cond {
		cond[i] = float32(i%29) / 290
	}
	cb, err := env.Dev.Alloc(uint64(4*len(cond)), owner)
	if err != nil {
		return fail(err)
	}
	defer cb.Close()
	if err := cb.WriteFloat32(0, cond); err != nil {
		return fail(err)
	}
	for _, slot := range []int{trt.CondPromptA, trt.CondPromptB, trt.CondNegative} {
		if err := st.SetCondition(slot, cb, condLen); err != nil {
			return fail(err)
		}
	}
	if err := st.SetPlayback(make([]float32, 2*frames*models.Hop)); err != nil {
		return fail(err)
	}
	return st, cleanup, nil
}

// runLoop measures the session run loop: TickInterval 0, ticks back to back, a window of
// TickIters ticks after a warm-up, bounded by the Tick hook.
func runLoop(ctx context.Context, cfg Config, env *Env) (*LoopResult, error) {
	warm := 2 * cfg.Steps
	want := warm + cfg.TickIters
	var mu sync.Mutex
	var n int
	var tStart, tEnd time.Time
	var native float64
	var cgo0, cgo1 int64
	var ms0, ms1 runtime.MemStats
	done := make(chan struct{})
	hooks := sessionHooksFunc(func(tickMs, decMs float64, decoded bool) {
		mu.Lock()
		defer mu.Unlock()
		n++
		switch {
		case n == warm:
			runtime.ReadMemStats(&ms0)
			cgo0 = runtime.NumCgoCall()
			tStart = time.Now()
		case n > warm && n <= want:
			native += tickMs
			if decoded {
				native += decMs
			}
			if n == want {
				tEnd = time.Now()
				cgo1 = runtime.NumCgoCall()
				runtime.ReadMemStats(&ms1)
				close(done)
			}
		}
	})
	mgr := env.NewManager(SessionConfig(0), hooks)
	s, err := mgr.Create(ctx, env.Request())
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	go func() {
		select {
		case <-done:
		case <-rctx.Done():
		}
		s.Stop()
	}()
	if err := s.Run(rctx, discardOutput{}); err != nil {
		return nil, err
	}
	select {
	case <-done:
	default:
		return nil, errors.New("the run loop stopped before the window closed")
	}
	k := float64(cfg.TickIters)
	period := float64(tEnd.Sub(tStart)) / float64(time.Millisecond) / k
	lr := &LoopResult{Ticks: cfg.TickIters, PeriodMs: period, NativeMs: native / k,
		CgoPerTick: float64(cgo1-cgo0) / k, AllocsPerTick: float64(ms1.Mallocs-ms0.Mallocs) / k,
		BytesPerTick: float64(ms1.TotalAlloc-ms0.TotalAlloc) / k}
	lr.LoopOverheadMs = lr.PeriodMs - lr.NativeMs
	if period > 0 {
		lr.LoopOverhead = 100 * lr.LoopOverheadMs / period
	}
	return lr, nil
}
