package daemon

// Health separates three questions (lifecycle.md §7.2 [RECO]: readiness separate from
// liveness):
//
//   - /healthz: is the process serving HTTP at all? 200 whenever it answers.
//   - /readyz: should a pool or load balancer send sessions here? 200 only when every
//     readiness condition holds (models loaded, warmup passed, admission open, plus any
//     a module registers), else 503 with the conditions in a JSON body.
//   - Liveness: are the real-time loops still turning? Tick loops register heartbeats;
//     the systemd watchdog pings only while every heartbeat is fresh, so a hung loop gets
//     the process restarted (systemd.go).

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/fx"
)

// The readiness conditions every demond has. Each starts false; the module that owns the
// fact sets it.
const (
	// CondModelsLoaded holds once the engines a session needs are loaded.
	CondModelsLoaded = "models_loaded"
	// CondWarmupPassed holds once the start-up warmup session (lifecycle.md §4) finished.
	CondWarmupPassed = "warmup_passed"
	// CondAdmissionOpen holds while new sessions are admitted (false while draining).
	CondAdmissionOpen = "admission_open"
)

// Readiness is the set of named conditions /readyz reports. Modules take their condition
// with Condition and set it; the process is ready when every registered condition holds.
// It is safe for concurrent use.
type Readiness struct {
	mu        sync.Mutex
	conds     map[string]*Condition
	listeners []func(ReadinessStatus)
}

// Condition is one named readiness condition.
type Condition struct {
	r    *Readiness
	name string
	ok   bool // guarded by r.mu
}

// ReadinessStatus is a snapshot of a Readiness.
type ReadinessStatus struct {
	// Ready is true when every condition holds.
	Ready bool `json:"ready"`
	// Conditions maps each registered condition to whether it holds.
	Conditions map[string]bool `json:"conditions"`
	// Failing lists the conditions that do not hold, sorted.
	Failing []string `json:"failing,omitempty"`
}

// NewReadiness returns a Readiness with the standard conditions registered, all false.
func NewReadiness() *Readiness {
	r := &Readiness{conds: map[string]*Condition{}}
	for _, n := range []string{CondModelsLoaded, CondWarmupPassed, CondAdmissionOpen} {
		r.Condition(n)
	}
	return r
}

// Condition returns the condition called name, registering it (false) the first time.
// Registering a condition makes the process not ready until it is set.
func (r *Readiness) Condition(name string) *Condition {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.conds[name]; ok {
		return c
	}
	c := &Condition{r: r, name: name}
	r.conds[name] = c
	return c
}

// Name returns the condition's name.
func (c *Condition) Name() string { return c.name }

// Set records whether the condition holds. Listeners (OnChange) run when the overall
// status changes, on the caller's goroutine, after the lock is released.
func (c *Condition) Set(ok bool) {
	r := c.r
	r.mu.Lock()
	if c.ok == ok {
		r.mu.Unlock()
		return
	}
	c.ok = ok
	st := r.statusLocked()
	ls := slices.Clone(r.listeners)
	r.mu.Unlock()
	for _, f := range ls {
		f(st)
	}
}

// Holds reports whether the condition holds.
func (c *Condition) Holds() bool {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	return c.ok
}

// OnChange registers f to be called with the new status whenever a condition changes.
func (r *Readiness) OnChange(f func(ReadinessStatus)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.listeners = append(r.listeners, f)
}

// Status returns a snapshot of every condition.
func (r *Readiness) Status() ReadinessStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.statusLocked()
}

// Ready reports whether every registered condition holds.
func (r *Readiness) Ready() bool { return r.Status().Ready }

func (r *Readiness) statusLocked() ReadinessStatus {
	st := ReadinessStatus{Ready: true, Conditions: make(map[string]bool, len(r.conds))}
	for n, c := range r.conds {
		st.Conditions[n] = c.ok
		if !c.ok {
			st.Ready = false
			st.Failing = append(st.Failing, n)
		}
	}
	sort.Strings(st.Failing)
	return st
}

// Liveness is the registry of real-time loops the watchdog watches. A loop registers a
// Heartbeat, calls Beat at least once per its max silence, and Closes it when the loop
// ends. Check fails while any registered loop is silent for longer than its limit.
// It is safe for concurrent use.
type Liveness struct {
	mu    sync.Mutex
	beats map[*Heartbeat]struct{}
	base  time.Time
	now   func() time.Duration // time since base (monotonic); replaced by tests
}

// Heartbeat is one loop's registration with a Liveness.
type Heartbeat struct {
	l          *Liveness
	name       string
	maxSilence time.Duration
	last       atomic.Int64 // l.now() at the last beat, in nanoseconds
}

// NewLiveness returns an empty registry (Check passes).
func NewLiveness() *Liveness {
	l := &Liveness{beats: map[*Heartbeat]struct{}{}, base: time.Now()}
	l.now = func() time.Duration { return time.Since(l.base) }
	return l
}

// Register adds a loop called name that must beat at least every maxSilence. The
// registration counts as a beat. Names are for messages; they need not be unique.
func (l *Liveness) Register(name string, maxSilence time.Duration) *Heartbeat {
	h := &Heartbeat{l: l, name: name, maxSilence: maxSilence}
	h.Beat()
	l.mu.Lock()
	l.beats[h] = struct{}{}
	l.mu.Unlock()
	return h
}

// Beat records that the loop is alive. It is cheap enough to call every tick.
func (h *Heartbeat) Beat() { h.last.Store(int64(h.l.now())) }

// Close unregisters the loop (a loop that ended on purpose is not hung). Idempotent.
func (h *Heartbeat) Close() {
	h.l.mu.Lock()
	delete(h.l.beats, h)
	h.l.mu.Unlock()
}

// Check returns nil when every registered loop beat within its limit, and otherwise an
// error naming each silent loop.
func (l *Liveness) Check() error {
	now := l.now()
	l.mu.Lock()
	var msgs []string
	for h := range l.beats {
		if silent := now - time.Duration(h.last.Load()); silent > h.maxSilence {
			msgs = append(msgs, fmt.Sprintf("%s silent for %s (limit %s)", h.name, silent.Round(time.Millisecond), h.maxSilence))
		}
	}
	l.mu.Unlock()
	if len(msgs) == 0 {
		return nil
	}
	sort.Strings(msgs)
	return errors.New("loops not beating: " + strings.Join(msgs, "; "))
}

func newHealthzRoute() Route {
	return RouteFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
}

func newReadyzRoute(r *Readiness) Route {
	return RouteFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := r.Status()
		code := http.StatusOK
		if !st.Ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, st)
	})
}

// writeJSON writes v as a JSON response with the given status.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// HealthModule provides the Readiness and Liveness registries and the /healthz and
// /readyz routes.
var HealthModule = fx.Module("health",
	fx.Provide(NewReadiness, NewLiveness),
	fx.Provide(AsRoute(newHealthzRoute), AsRoute(newReadyzRoute)),
)
