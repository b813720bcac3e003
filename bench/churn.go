package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/demon-audio/demon/internal/procstat"
)

// ChurnSample is one reading of the resources a leak would grow.
type ChurnSample struct {
	Cycle         int     `json:"cycle"`
	T             float64 `json:"t_s"`
	LedgerBytes   float64 `json:"ledger_used_bytes"`
	LedgerHandles float64 `json:"ledger_live_handles"`
	GoHandles     float64 `json:"trt_live_handles"`
	RSSBytes      float64 `json:"rss_bytes"`
	HeapBytes     float64 `json:"heap_inuse_bytes"`
	Goroutines    float64 `json:"goroutines"`
	FDs           float64 `json:"fds"`
}

// ChurnResult is the churn scenario.
type ChurnResult struct {
	Path    string        `json:"path"`
	Source  string        `json:"source"` // where the readings come from
	Cycles  int           `json:"cycles"`
	Errors  int           `json:"errors"`
	CycleMs Dist          `json:"cycle_ms"`
	Before  ChurnSample   `json:"before"`
	After   ChurnSample   `json:"after"`
	Peak    ChurnSample   `json:"peak_during"` // over the idle and live samples
	Samples []ChurnSample `json:"samples"`     // between sessions (after a cycle's close)
	// LiveSamples are taken mid-session, while a session is streaming (after its first
	// slice), on the same cycles as Samples: what a live session costs.
	LiveSamples []ChurnSample `json:"live_samples"`
	// LiveLedgerBytes is each live sample's ledger minus the baseline (Before).
	LiveLedgerBytes Dist `json:"live_ledger_bytes_over_baseline"`
	// LedgerPeakBytes is the device ledger's own high-water mark (it sees every
	// allocation, not only the sampled moments); LedgerPeakSource says over what span.
	LedgerPeakBytes  float64 `json:"ledger_peak_bytes"`
	LedgerPeakSource string  `json:"ledger_peak_source"`
	// GrowthPer1000 is (after − before) / cycles × 1000 per metric; SlopePer1000 is the
	// least-squares slope over the samples taken during the run, × 1000.
	GrowthPer1000 map[string]float64 `json:"growth_per_1000_cycles"`
	SlopePer1000  map[string]float64 `json:"slope_per_1000_cycles"`
	// SpreadBetween is max − min per metric over the between-session samples: how far a
	// reading swings from cycle to cycle with nothing leaking (RSS does: the Go heap and the
	// C++ allocator hand pages back lazily). Growth extrapolated from a short run is only a
	// leak where it persists beyond this swing as the run grows.
	SpreadBetween map[string]float64 `json:"spread_between_sessions"`
}

// churnMetrics names the sample fields, in table order.
var churnMetrics = []string{"ledger_used_bytes", "ledger_live_handles", "trt_live_handles", "rss_bytes", "heap_inuse_bytes", "goroutines", "fds"}

func (s ChurnSample) get(name string) float64 {
	switch name {
	case "ledger_used_bytes":
		return s.LedgerBytes
	case "ledger_live_handles":
		return s.LedgerHandles
	case "trt_live_handles":
		return s.GoHandles
	case "rss_bytes":
		return s.RSSBytes
	case "heap_inuse_bytes":
		return s.HeapBytes
	case "goroutines":
		return s.Goroutines
	case "fds":
		return s.FDs
	}
	return 0
}

func localSample(env *Env) ChurnSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	l := env.Ledger()
	return ChurnSample{
		LedgerBytes: float64(l.UsedBytes), LedgerHandles: float64(l.DeviceHandles), GoHandles: float64(l.GoHandles),
		RSSBytes: float64(procstat.RSSBytes()), HeapBytes: float64(ms.HeapInuse), Goroutines: float64(runtime.NumGoroutine()), FDs: float64(procstat.OpenFDs()),
	}
}

func remoteSample(ctx context.Context, r *remoteTarget) ChurnSample {
	m, err := r.scrape(ctx)
	if err != nil {
		return ChurnSample{}
	}
	return ChurnSample{
		LedgerBytes: m["demon_device_memory_used_bytes"], RSSBytes: m["process_resident_memory_bytes"],
		HeapBytes: m["go_memstats_heap_inuse_bytes"], Goroutines: m["go_goroutines"], FDs: m["process_open_fds"],
		LedgerHandles: m["demon_device_live_handles"],
	}
}

// waitRemoteIdle polls the target until no session is active (or 10 s pass).
func waitRemoteIdle(ctx context.Context, r *remoteTarget) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m, err := r.scrape(ctx)
		if err != nil || m["demon_sessions_active"] == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runChurn(ctx context.Context, cfg Config, env *Env, remote *remoteTarget) (*ChurnResult, error) {
	var c Client
	var sample func() ChurnSample
	var idle func()
	// resetPeak starts the ledger's high-water mark at the baseline; ledgerPeak reads it.
	var resetPeak func()
	var ledgerPeak func() float64
	res := &ChurnResult{Cycles: cfg.Cycles}
	if remote != nil {
		c = remote.client
		sample = func() ChurnSample { return remoteSample(ctx, remote) }
		idle = func() { waitRemoteIdle(ctx, remote) }
		res.Source = "target /metrics (device ledger, process RSS/fds, Go runtime of demond)"
		resetPeak = func() {}
		ledgerPeak = func() float64 {
			m, err := remote.scrape(ctx)
			if err != nil {
				return 0
			}
			return m["demon_device_memory_peak_bytes"]
		}
		res.LedgerPeakSource = "the target's demon_device_memory_peak_bytes: since it started (or its last peak reset), not only these cycles"
	} else {
		resetPeak = env.Dev.ResetPeak
		ledgerPeak = func() float64 {
			t, err := env.Dev.Totals()
			if err != nil {
				return 0
			}
			return float64(t.PeakBytes)
		}
		res.LedgerPeakSource = "the device ledger's PeakBytes, reset at the baseline: the measured cycles only"
		st, err := newWSStack(env, env.NewManager(SessionConfig(0), sessionHooks{}.hooks()), cfg)
		if err != nil {
			return nil, err
		}
		defer st.Close()
		c = st
		sample = func() ChurnSample { return localSample(env) }
		idle = st.waitIdle
		res.Source = "this process (device ledger, /proc/self/statm, /proc/self/fd, runtime) — client and server share it"
	}
	res.Path = c.Kind()
	// cycle starts a session, streams ChurnSlices slices and closes it; live, if not nil,
	// is called once mid-session (after the first slice, the session still streaming).
	cycle := func(live func()) (time.Duration, error) {
		t0 := time.Now()
		l, err := c.Start(ctx)
		if err != nil {
			idle()
			return 0, err
		}
		n := 0
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		err = l.Stream(sctx, func(SliceRecord) bool {
			n++
			if n == 1 && live != nil {
				live()
			}
			return n < cfg.ChurnSlices
		})
		cancel()
		cerr := l.Close()
		idle()
		if err == nil && n < cfg.ChurnSlices {
			err = fmt.Errorf("%d of %d slices", n, cfg.ChurnSlices)
		}
		return time.Since(t0), errors.Join(err, cerr)
	}
	// Two warm cycles, then the baseline.
	for range 2 {
		if _, err := cycle(nil); err != nil {
			return nil, fmt.Errorf("warm cycle: %w", err)
		}
	}
	settle()
	res.Before = sample()
	resetPeak()
	t0 := time.Now()
	every := max(1, cfg.Cycles/60)
	var durs []float64
	var errs []error
	bar := newProgress(cfg.Progress, "churn", cfg.Cycles)
	for i := 1; i <= cfg.Cycles && ctx.Err() == nil; i++ {
		sampled := i%every == 0 || i == cfg.Cycles
		var live func()
		if sampled {
			live = func() {
				s := sample()
				s.Cycle, s.T = i, time.Since(t0).Seconds()
				res.LiveSamples = append(res.LiveSamples, s)
			}
		}
		d, err := cycle(live)
		if err != nil {
			res.Errors++
			if len(errs) < 5 {
				errs = append(errs, err)
			}
		} else {
			durs = append(durs, ms(d.Seconds()))
		}
		if sampled {
			s := sample()
			s.Cycle, s.T = i, time.Since(t0).Seconds()
			res.Samples = append(res.Samples, s)
		}
		bar.Set(i)
	}
	bar.Done()
	// After: collect, let goroutines of the last session finish.
	settle()
	deadline := time.Now().Add(2 * time.Second)
	res.After = sample()
	for res.After.Goroutines > res.Before.Goroutines && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		settle()
		res.After = sample()
	}
	res.After.Cycle, res.After.T = cfg.Cycles, time.Since(t0).Seconds()
	res.CycleMs = Summarize(durs)
	res.GrowthPer1000, res.SlopePer1000, res.SpreadBetween = map[string]float64{}, map[string]float64{}, map[string]float64{}
	x := make([]float64, len(res.Samples))
	for i, s := range res.Samples {
		x[i] = float64(s.Cycle)
	}
	for _, m := range churnMetrics {
		res.GrowthPer1000[m] = (res.After.get(m) - res.Before.get(m)) / float64(cfg.Cycles) * 1000
		y := make([]float64, len(res.Samples))
		for i, s := range res.Samples {
			y[i] = s.get(m)
		}
		res.SlopePer1000[m] = slope(x, y) * 1000
		if len(y) > 0 {
			res.SpreadBetween[m] = slices.Max(y) - slices.Min(y)
		}
	}
	res.LedgerPeakBytes = ledgerPeak()
	res.Peak = res.Before
	var live []float64
	for _, s := range res.Samples {
		res.Peak = maxSample(res.Peak, s)
	}
	for _, s := range res.LiveSamples {
		res.Peak = maxSample(res.Peak, s)
		live = append(live, s.LedgerBytes-res.Before.LedgerBytes)
	}
	res.LiveLedgerBytes = Summarize(live)
	if res.Errors > 0 {
		return res, fmt.Errorf("%d of %d cycles failed: %w", res.Errors, cfg.Cycles, errors.Join(errs...))
	}
	return res, nil
}

func maxSample(a, b ChurnSample) ChurnSample {
	return ChurnSample{Cycle: b.Cycle, T: b.T,
		LedgerBytes: max(a.LedgerBytes, b.LedgerBytes), LedgerHandles: max(a.LedgerHandles, b.LedgerHandles),
		GoHandles: max(a.GoHandles, b.GoHandles), RSSBytes: max(a.RSSBytes, b.RSSBytes), HeapBytes: max(a.HeapBytes, b.HeapBytes),
		Goroutines: max(a.Goroutines, b.Goroutines), FDs: max(a.FDs, b.FDs)}
}
