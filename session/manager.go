package session

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/demon-audio/demon/internal/zerowait"
	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/trt"
)

// Manager creates sessions, keeps the registry of live ones and admits new ones only
// when the device has room for them.
type Manager struct {
	cfg    Config
	dev    *trt.Device
	model  *models.Model
	faults *trt.Faults
	log    *slog.Logger
	hooks  Hooks

	createMu sync.Mutex // creates are serialised: one admission decision at a time

	mu       sync.Mutex
	sessions map[string]*Session
	open     map[*Session]struct{} // created and not yet closed (registered or not)
	draining bool
	idle     zerowait.Signal // fired whenever open drops to zero
}

// NewManager makes a manager for sessions on dev running model. It allocates nothing.
func NewManager(cfg Config, dev *trt.Device, model *models.Model, faults *trt.Faults, log *slog.Logger, hooks Hooks) *Manager {
	if log == nil {
		log = discard
	}
	return &Manager{
		cfg: cfg, dev: dev, model: model, faults: faults, log: log, hooks: hooks,
		sessions: map[string]*Session{}, open: map[*Session]struct{}{},
	}
}

// Config returns the manager's configuration.
func (m *Manager) Config() Config { return m.cfg }

// Model returns the shared model.
func (m *Manager) Model() *models.Model { return m.model }

// Device returns the device sessions live on.
func (m *Manager) Device() *trt.Device { return m.dev }

// Faults returns the fault-point registry (may be nil).
func (m *Manager) Faults() *trt.Faults { return m.faults }

// NewID returns a fresh 8-character URL-safe session id.
func NewID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Register adds a session to the registry (the handshake calls it once the client has
// its initial buffer).
func (m *Manager) Register(s *Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sessions[s.ID] = s
}

// Unregister removes a session; unknown ids are a no-op.
func (m *Manager) Unregister(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sessions, id)
}

// Get returns a registered session.
func (m *Manager) Get(id string) (*Session, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	return s, ok
}

// List returns the registered sessions, newest first.
func (m *Manager) List() []*Session {
	m.mu.Lock()
	out := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		out = append(out, s)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.After(out[j].StartedAt) })
	return out
}

// Open returns the number of sessions created and not yet closed.
func (m *Manager) Open() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.open)
}

// OpenSessions returns the sessions created and not yet closed, in no particular order:
// the registered ones and those still in their handshake (not registered yet).
func (m *Manager) OpenSessions() []*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.openLocked()
}

// Drain stops admitting sessions and returns every open one (the caller tells their
// clients and closes them).
func (m *Manager) Drain() []*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.draining = true
	return m.openLocked()
}

func (m *Manager) openLocked() []*Session {
	out := make([]*Session, 0, len(m.open))
	for s := range m.open {
		out = append(out, s)
	}
	return out
}

// WaitIdle blocks until no session is open or ctx ends.
func (m *Manager) WaitIdle(ctx context.Context) error {
	return zerowait.Wait(ctx, func() (int, <-chan struct{}) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.open), m.idle.C()
	})
}

func (m *Manager) track(s *Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.open[s] = struct{}{}
}

func (m *Manager) untrack(s *Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.open, s)
	if len(m.open) == 0 {
		m.idle.Fire()
	}
}

// hit records a Go-side fault point.
func (m *Manager) hit(point string) error { return m.faults.Hit(point) }

// predictCost is the device memory a session's start will need at its peak. Create runs
// in two phases: source preparation (VAE encode, stems: each a transient context and its
// I/O buffers) before anything persistent exists, then the decoder context and stream
// (persistent) beside the source moments and the text encoder's transient context.
// Admission compares the larger phase with free memory.
func (m *Manager) predictCost(frames int, stems bool) uint64 {
	samples := uint64(frames) * models.Hop
	moments := 4 * 128 * uint64(frames)
	prepare := m.model.Engine(models.VAEEncode).ContextBytes() + 4*2*samples + moments
	if stems {
		prepare = max(prepare, m.model.Engine(models.StemSeparator).ContextBytes()+3*4*2*samples)
	}
	text := m.model.Engine(models.TextEncoder).ContextBytes() + 4*2048*uint64(m.cfg.MaxCondLen) + 4*512
	persistent := m.model.Engine(models.Decoder).ContextBytes() + streamBytes(m.cfg, frames)
	return max(prepare, persistent+moments+text)
}

// streamBytes estimates a stream's allocation (checked against the real figure by tests):
// the stream's own buffers plus the pipeline's slots and request pool.
func streamBytes(cfg Config, frames int) uint64 {
	T, L, D := uint64(frames), uint64(cfg.MaxCondLen), uint64(cfg.MaxDepth)
	own := 4 * (T*64*2 + T*128 + 4*L*2048 + T*1920*2 + 25*64 + 2*25*1920)
	// Per request in the pool (2·depth entries): context, source, conds (1 pos + 1 neg),
	// curves; per slot: latents, APG state, noise; plus the decoder batch buffers.
	pool := 2 * D * 4 * (T*128 + 4*T*64 + 2*L*2048 + 16*T)
	slots := D * 4 * (6 * T * 64)
	batch := 4 * (D*T*(64+128) + D*L*2048 + 2*D*T*64 + D)
	// The pipeline carves curves and per-request extras beyond these terms: a margin keeps
	// the estimate on the safe side (TestPredictedCostCoversRealUse holds it to that).
	sum := own + pool + slots + batch
	return sum + sum/8 + 1<<20
}

// ErrorWindow names the stage an error came from (the fault point, when injected), for
// metrics and logs.
func ErrorWindow(err error) string {
	var te *trt.Error
	if errorsAs(err, &te) && te.Code == trt.CodeFaultInjected {
		return te.Op
	}
	var se *StageError
	if errorsAs(err, &se) {
		return se.Stage
	}
	return "unknown"
}

// FailureWindow names the failure window of spec/lifecycle.md §2.2 that a failed start
// belongs to, from the stage or fault point it failed at (§8.2): W-1 for a request refused
// before anything was allocated, W2 for the engine session, W3 for the rest of create, W4
// for the handshake, W5 for the runner; "unknown" when neither says. W0, the boot warmup,
// is the caller's to say: a warmup fails at the same points as any session.
func FailureWindow(err error) string {
	var ri *RunnerInitError
	if errorsAs(err, &ri) {
		return "W5"
	}
	point := ErrorWindow(err)
	if errors.Is(err, ErrBadRequest) && (point == "create.source_prepare" || point == "unknown") {
		return "W-1" // request checks and normalisation run before admission and any allocation
	}
	var se *StageError
	if errorsAs(err, &se) {
		point = se.Stage // a device fault inside a stage fails that stage's window
	}
	return PointWindow(point)
}

// PointWindow maps a fault point or create stage to its failure window (spec/lifecycle.md
// §8.2); "unknown" for points outside a session's life (device.*).
func PointWindow(point string) string {
	for _, w := range pointWindows {
		if strings.HasPrefix(point, w.prefix) {
			return w.window
		}
	}
	return "unknown"
}

var pointWindows = []struct{ prefix, window string }{
	{"model.", "W1"}, {"session.init", "W2"}, {"create.", "W3"}, {"handshake", "W4"},
	{"run.runner_init", "W5"}, {"run.", "W6"}, {"close.", "W7"},
}

// StageError tags an error with the create stage it happened in.
type StageError struct {
	Stage string
	Err   error
}

// Error prefixes the stage, unless the wrapped error already starts with it (a fault
// point's error names its point, which is the stage).
func (e *StageError) Error() string {
	msg := e.Err.Error()
	if strings.HasPrefix(msg, e.Stage+": ") {
		return msg
	}
	return e.Stage + ": " + msg
}
func (e *StageError) Unwrap() error { return e.Err }

func stageErr(stage string, err error) error {
	if err == nil {
		return nil
	}
	return &StageError{Stage: stage, Err: err}
}

// describeAdmission formats a refusal.
func describeAdmission(cost, free, headroom uint64) error {
	return fmt.Errorf("%w: a session needs %s and %s must stay free; %s are free", ErrAdmission,
		human(cost), human(headroom), human(free))
}

func human(b uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	v := float64(b)
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.2f %s", v, units[i])
}
