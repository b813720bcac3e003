package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/trt"
)

// FaultCase is one armed fault (point and hit number), repeated FaultRounds times, each
// failure followed by a retry with nothing armed.
type FaultCase struct {
	Point    string `json:"point"`
	Spec     string `json:"spec"`
	Path     string `json:"path"`
	Attempts int    `json:"attempts"`
	// Fired counts attempts that failed as injected (the start did not succeed).
	Fired int `json:"fired"`
	// LeakedBytes is the largest ledger excess over the baseline once cleanup had had
	// 5 s; LeakedHandles likewise for native handles; LeakedGoroutines after 2 s.
	LeakedBytes      uint64 `json:"leaked_bytes"`
	LeakedHandles    int64  `json:"leaked_handles"`
	LeakedGoroutines int    `json:"leaked_goroutines"`
	RetryOK          int    `json:"retry_ok"`
	Retries          int    `json:"retries"`
	FailMs           Dist   `json:"fail_ms"` // attempt start → failure seen by the caller
	// CleanupMs is the fault firing → the ledger back at its baseline, as a watcher
	// goroutine sees them (see cleanupWatch); ResidualMs is the failure seen by the caller
	// → the ledger back at its baseline (0 when the cleanup had finished before the caller
	// saw the failure, as it must: rollback is synchronous).
	CleanupMs  Dist     `json:"cleanup_ms"`
	ResidualMs Dist     `json:"residual_ms"`
	Windows    []string `json:"windows"` // error windows / close codes reported
	Errors     []string `json:"errors,omitempty"`
	// DriverLeakedBytes (cuda device only) is the driver's settled free memory before the
	// case minus after it, following a bounded poll: memory the ledger cannot see.
	DriverLeakedBytes int64 `json:"driver_leaked_bytes,omitempty"`
}

// FaultsResult is the faults scenario.
type FaultsResult struct {
	Cases            []FaultCase `json:"cases"`
	Attempts         int         `json:"attempts"`
	Fired            int         `json:"fired"`
	BytesLeaked      uint64      `json:"bytes_leaked"`
	HandlesLeaked    int64       `json:"handles_leaked"`
	GoroutinesLeaked int         `json:"goroutines_leaked"`
	Retries          int         `json:"retries"`
	RetryOK          int         `json:"retry_ok"`
	RetrySuccessRate float64     `json:"retry_success_rate"`
	CleanupMs        Dist        `json:"cleanup_ms"`
	ResidualMs       Dist        `json:"residual_ms"`
	FailMs           Dist        `json:"fail_ms"`
	// DriverChecked: the device is a GPU and each case also checked the driver's memory.
	DriverChecked    bool   `json:"driver_checked"`
	BaselineBytes    uint64 `json:"baseline_bytes"`
	AllocsPerSession int64  `json:"device_allocs_per_session"`
	ContextsPerStart int64  `json:"contexts_per_start"`
}

type faultSpec struct {
	point, spec string
	stems       string // StemMode for the failing attempt
	ws          bool
}

func runFaults(ctx context.Context, cfg Config, env *Env) (*FaultsResult, error) {
	mgr := env.NewManager(SessionConfig(0), sessionHooks{}.hooks())
	st, err := newWSStack(env, env.NewManager(SessionConfig(0), sessionHooks{}.hooks()), cfg)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	res := &FaultsResult{}

	// A good session first: it warms the path and counts allocations and contexts.
	env.Faults.Reset()
	if err := goodSession(ctx, mgr, env.Request()); err != nil {
		return nil, fmt.Errorf("good session: %w", err)
	}
	res.AllocsPerSession = env.Faults.Hits("device.alloc")
	res.ContextsPerStart = env.Faults.Hits("session.init.context")
	env.Faults.Reset()
	settle()
	base := env.Ledger()
	res.BaselineBytes = base.UsedBytes
	res.DriverChecked = env.Dev.Kind() == trt.DeviceCUDA

	var specs []faultSpec
	for _, p := range faultPoints() {
		switch {
		case p == "create.stems":
			specs = append(specs, faultSpec{point: p, spec: p + "=error", stems: "instruments"})
		case p == "session.init.context":
			for n := int64(1); n <= res.ContextsPerStart; n++ {
				specs = append(specs, faultSpec{point: p, spec: fmt.Sprintf("%s=error@%d", p, n)})
			}
		case p == "handshake.stem_payload":
			specs = append(specs, faultSpec{point: p, spec: p + "=error@1", stems: "full", ws: true},
				faultSpec{point: p, spec: p + "=error@2", stems: "full", ws: true})
		case strings.HasPrefix(p, "handshake."):
			specs = append(specs, faultSpec{point: p, spec: p + "=error", ws: true})
		default:
			specs = append(specs, faultSpec{point: p, spec: p + "=error"})
		}
	}
	for _, n := range oomPositions(res.AllocsPerSession, cfg.OOMPoints) {
		specs = append(specs, faultSpec{point: "device.alloc", spec: fmt.Sprintf("device.alloc=oom@%d", n)})
	}

	bar := newProgress(cfg.Progress, "faults", len(specs)*cfg.FaultRounds)
	var all, allResidual, allFail []float64
	var errs []error
	for i, fs := range specs {
		fc := FaultCase{Point: fs.point, Spec: fs.spec, Path: "in-process session API"}
		if fs.ws {
			fc.Path = st.Kind()
		}
		var driverBase uint64
		if res.DriverChecked {
			driverBase, _ = trt.SettledDriverFree(ctx, env.Dev, 2, 20*time.Millisecond, 2*time.Second)
		}
		var cleanup, residual, fail []float64
		for r := range cfg.FaultRounds {
			if ctx.Err() != nil {
				break
			}
			fc.Attempts++
			env.Faults.Reset()
			if err := env.Faults.Arm(fs.spec); err != nil {
				return nil, err
			}
			g0 := runtime.NumGoroutine()
			watch := watchCleanup(env, fs.point, armedHit(fs.spec), base)
			t0 := time.Now()
			var ferr error
			if fs.ws {
				ferr = wsAttempt(ctx, st, fs.stems)
			} else {
				req := env.Request()
				req.StemMode = fs.stems
				ferr = goodSession(ctx, mgr, req)
			}
			tFail := time.Now()
			if ferr != nil {
				fc.Fired++
				w := describeWindow(ferr)
				if !slices.Contains(fc.Windows, w) {
					fc.Windows = append(fc.Windows, w)
				}
			} else if len(fc.Errors) < 3 {
				fc.Errors = append(fc.Errors, "start succeeded: the armed fault did not fire")
			}
			fail = append(fail, msSince(t0, tFail))
			// Failure seen → back at baseline (what is left after the caller saw it).
			d, left := waitBaseline(env, base, 5*time.Second)
			residual = append(residual, ms(d.Seconds()))
			if span, ok := watch.finish(time.Second); ok {
				cleanup = append(cleanup, ms(span.Seconds()))
			} else if len(fc.Errors) < 3 {
				fc.Errors = append(fc.Errors, "the watcher did not see the fault fire and the ledger come back")
			}
			fc.LeakedBytes = max(fc.LeakedBytes, left.UsedBytes-min(left.UsedBytes, base.UsedBytes))
			fc.LeakedHandles = max(fc.LeakedHandles, left.DeviceHandles-base.DeviceHandles, left.GoHandles-base.GoHandles)
			fc.LeakedGoroutines = max(fc.LeakedGoroutines, waitGoroutines(g0, 2*time.Second))
			// Retry with nothing armed, on the same path.
			env.Faults.Reset()
			fc.Retries++
			var rerr error
			if fs.ws {
				rerr = wsAttempt(ctx, st, "")
			} else {
				rerr = goodSession(ctx, mgr, env.Request())
			}
			if rerr == nil {
				fc.RetryOK++
			} else if len(fc.Errors) < 3 {
				fc.Errors = append(fc.Errors, "retry: "+rerr.Error())
			}
			if _, left := waitBaseline(env, base, 5*time.Second); left != base {
				fc.LeakedBytes = max(fc.LeakedBytes, left.UsedBytes-min(left.UsedBytes, base.UsedBytes))
				if len(fc.Errors) < 3 {
					fc.Errors = append(fc.Errors, fmt.Sprintf("after the retry the ledger is %+v, baseline %+v", left, base))
				}
			}
			bar.Set(i*cfg.FaultRounds + r + 1)
		}
		if res.DriverChecked {
			// A bounded poll for the driver's memory to come back, then a settled reading.
			_, _ = trt.WaitDriverMemory(ctx, env.Dev, driverBase, 0, 2*time.Second)
			free, _ := trt.SettledDriverFree(ctx, env.Dev, 2, 20*time.Millisecond, 2*time.Second)
			fc.DriverLeakedBytes = int64(driverBase) - int64(free)
		}
		fc.FailMs, fc.CleanupMs, fc.ResidualMs = Summarize(fail), Summarize(cleanup), Summarize(residual)
		all = append(all, cleanup...)
		allResidual = append(allResidual, residual...)
		allFail = append(allFail, fail...)
		res.Attempts += fc.Attempts
		res.Fired += fc.Fired
		res.BytesLeaked += fc.LeakedBytes
		res.HandlesLeaked += fc.LeakedHandles
		res.GoroutinesLeaked += fc.LeakedGoroutines
		res.Retries += fc.Retries
		res.RetryOK += fc.RetryOK
		if fc.Fired < fc.Attempts || fc.RetryOK < fc.Retries || fc.LeakedBytes > 0 || fc.LeakedHandles > 0 {
			errs = append(errs, fmt.Errorf("%s: fired %d/%d, retries %d/%d, leaked %d bytes %d handles: %s",
				fc.Spec, fc.Fired, fc.Attempts, fc.RetryOK, fc.Retries, fc.LeakedBytes, fc.LeakedHandles, strings.Join(fc.Errors, "; ")))
		}
		res.Cases = append(res.Cases, fc)
	}
	bar.Done()
	env.Faults.Reset()
	res.CleanupMs, res.ResidualMs, res.FailMs = Summarize(all), Summarize(allResidual), Summarize(allFail)
	if res.Retries > 0 {
		res.RetrySuccessRate = float64(res.RetryOK) / float64(res.Retries)
	}
	return res, errors.Join(errs...)
}

// faultPoints are the session-start points: create.*, session.init.*, run.runner_init
// and handshake.* (device.alloc is added as OOM at chosen positions).
func faultPoints() []string {
	var out []string
	for _, p := range trt.FaultPoints() {
		if strings.HasPrefix(p, "create.") || strings.HasPrefix(p, "session.init.") || p == "run.runner_init" || strings.HasPrefix(p, "handshake.") {
			out = append(out, p)
		}
	}
	return out
}

// oomPositions spreads k allocation numbers over 1..n (first and last included).
func oomPositions(n int64, k int) []int64 {
	if n <= 0 || k <= 0 {
		return nil
	}
	var out []int64
	for i := range k {
		p := int64(1)
		if k > 1 {
			p = 1 + int64(i)*(n-1)/int64(k-1)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// goodSession creates a session, streams one slice and closes it (Run closes it).
func goodSession(ctx context.Context, mgr *session.Manager, req session.CreateRequest) error {
	s, err := mgr.Create(ctx, req)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out := &stopAfter{s: s, n: 1}
	if err := s.Run(rctx, out); err != nil {
		return err
	}
	if out.got < out.n {
		return errors.New("no slice within a minute")
	}
	return nil
}

type stopAfter struct {
	s      *session.Session
	n, got int
}

func (o *stopAfter) Slice(*session.SliceEvent) error {
	o.got++
	if o.got >= o.n {
		o.s.Stop()
	}
	return nil
}

// wsAttempt runs a WebSocket start to the first slice; a failure anywhere before it is
// returned.
func wsAttempt(ctx context.Context, st *wsStack, stems string) error {
	c := *st.client
	c.StemMode = stems
	l, err := c.Start(ctx)
	if err != nil {
		st.waitIdle()
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	got := false
	err = l.Stream(sctx, func(SliceRecord) bool { got = true; return false })
	cancel()
	_ = l.Close()
	st.waitIdle()
	if err == nil && !got {
		err = errors.New("session ended before its first slice")
	}
	return err
}

func describeWindow(err error) string {
	var es *ErrServer
	if errors.As(err, &es) {
		return fmt.Sprintf("%s/close %d", es.Code, es.Close)
	}
	var ri *session.RunnerInitError
	if errors.As(err, &ri) {
		return "runner_init"
	}
	return session.ErrorWindow(err)
}

// waitBaseline polls the ledger until it equals base; it returns how long that took and
// the last reading.
func waitBaseline(env *Env, base Ledger, limit time.Duration) (time.Duration, Ledger) {
	t0 := time.Now()
	for {
		l := env.Ledger()
		if l == base || time.Since(t0) > limit {
			return time.Since(t0), l
		}
		runtime.Gosched()
		time.Sleep(50 * time.Microsecond)
	}
}

// cleanupWatch follows one failing attempt from a goroutine of its own, polling (every
// ~0.1 ms: the resolution of its figures) the armed point's hit counter and the ledger: it
// notes when the fault fired (the counter reached the armed hit) and then the first moment
// the ledger is back at the baseline. Create rolls back synchronously before it returns,
// so on the session API this span is the rollback inside Create, which a clock started
// when the caller sees the failure cannot measure; on the WebSocket path it is the
// server's teardown of the created session.
type cleanupWatch struct {
	fired, clean time.Time
	stop, done   chan struct{}
}

func watchCleanup(env *Env, point string, hit int64, base Ledger) *cleanupWatch {
	w := &cleanupWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			if w.fired.IsZero() {
				if env.Faults.Hits(point) >= hit {
					w.fired = time.Now()
				}
			} else if env.Ledger() == base {
				w.clean = time.Now()
				return
			}
			time.Sleep(20 * time.Microsecond)
		}
	}()
	return w
}

// finish waits at most limit for the watch to see the ledger back, stops it, and returns
// the span from the fault firing to the ledger at baseline (ok false if it saw neither).
func (w *cleanupWatch) finish(limit time.Duration) (time.Duration, bool) {
	select {
	case <-w.done:
	case <-time.After(limit):
		close(w.stop)
		<-w.done
	}
	if w.fired.IsZero() || w.clean.IsZero() {
		return 0, false
	}
	return w.clean.Sub(w.fired), true
}

// armedHit is the hit at which spec's fault fires ("point=error@3" → 3; otherwise 1).
func armedHit(spec string) int64 {
	if _, n, ok := strings.Cut(spec, "@"); ok {
		if v, err := strconv.ParseInt(n, 10, 64); err == nil && v > 0 {
			return v
		}
	}
	return 1
}

// waitGoroutines waits for the goroutine count to fall to g0; it returns the excess left.
func waitGoroutines(g0 int, limit time.Duration) int {
	t0 := time.Now()
	for {
		n := runtime.NumGoroutine() - g0
		if n <= 0 {
			return 0
		}
		if time.Since(t0) > limit {
			return n
		}
		time.Sleep(5 * time.Millisecond)
	}
}
