package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/fx"

	"github.com/demon-audio/demon/audio"
	"github.com/demon-audio/demon/session"
)

// SessionsService owns the session manager: created in OnStart once the model is loaded,
// it runs the boot warmup (whose failure is reported in readiness and logs but does not
// stop the daemon, as in DEMON) and opens admission. OnStop closes admission and waits for
// every session to be closed.
type SessionsService struct {
	cfg     Config
	log     *slog.Logger
	dev     *DeviceService
	faults  *FaultsService
	models  *ModelsService
	metrics *Metrics
	live    *Liveness
	warmed  *Condition
	admit   *Condition

	warmingUp atomic.Bool // the boot warmup is running (no other session can)

	mu     sync.Mutex
	mgr    *session.Manager
	warmup *session.WarmupResult
}

// SessionsParams are NewSessionsService's dependencies.
type SessionsParams struct {
	fx.In
	Config    Config
	Log       *slog.Logger
	Device    *DeviceService
	Faults    *FaultsService
	Models    *ModelsService
	Metrics   *Metrics
	Liveness  *Liveness
	Readiness *Readiness
	LC        fx.Lifecycle
}

// NewSessionsService registers the sessions lifecycle.
func NewSessionsService(p SessionsParams) *SessionsService {
	s := &SessionsService{
		cfg: p.Config, log: p.Log, dev: p.Device, faults: p.Faults, models: p.Models, metrics: p.Metrics,
		live: p.Liveness, warmed: p.Readiness.Condition(CondWarmupPassed), admit: p.Readiness.Condition(CondAdmissionOpen),
	}
	p.LC.Append(fx.StartStopHook(s.start, s.stop))
	return s
}

// Manager returns the session manager (nil before start).
func (s *SessionsService) Manager() *session.Manager {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mgr
}

// Warmup returns the boot warmup's result (nil while it has not run).
func (s *SessionsService) Warmup() *session.WarmupResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.warmup
}

func (s *SessionsService) sessionConfig() session.Config {
	c := session.DefaultConfig()
	c.IdlePause = s.cfg.IdlePause
	c.TickInterval = s.cfg.TickInterval
	c.Headroom = uint64(s.cfg.Headroom)
	c.DriverWait = s.cfg.AdmissionDriverWait
	return c
}

func (s *SessionsService) hooks() session.Hooks {
	m := s.metrics
	return session.Hooks{
		Started: func(_ string, latency time.Duration) {
			m.SessionsActive.Inc()
			m.SessionStart.Observe(latency.Seconds())
		},
		Ended: func(string) { m.SessionsActive.Dec() },
		Failed: func(err error) {
			if !s.warmingUp.Load() { // runWarmup counts the warmup's failure, under W0
				m.FailedStart(err)
			}
		},
		Refused: func() { m.SessionsRefused.Inc() },
		Tick: func(tickMs, decMs float64, decoded bool) {
			m.TickDuration.Observe(tickMs / 1000)
			if decoded {
				m.DecodeDuration.Observe(decMs / 1000)
			}
		},
		Heartbeat: func(name string) session.Heartbeat {
			// A tick loop silent for this long is hung: systemd's watchdog stops.
			return s.live.Register(name, s.cfg.TickStallTimeout)
		},
	}
}

func (s *SessionsService) start(ctx context.Context) error {
	mgr := session.NewManager(s.sessionConfig(), s.dev.Device(), s.models.Model(), s.faults.Faults(), s.log, s.hooks())
	s.mu.Lock()
	s.mgr = mgr
	s.mu.Unlock()
	if s.cfg.Warmup {
		res := s.runWarmup(ctx, mgr)
		s.mu.Lock()
		s.warmup = &res
		s.mu.Unlock()
		s.warmed.Set(res.Done)
	} else {
		s.warmed.Set(true)
	}
	s.admit.Set(true)
	return nil
}

func (s *SessionsService) runWarmup(ctx context.Context, mgr *session.Manager) session.WarmupResult {
	name := audio.Catalogue()[0]
	pcm, err := audio.SynthesizeDemo(name)
	if err != nil {
		msg := err.Error()
		return session.WarmupResult{Error: &msg}
	}
	s.warmingUp.Store(true)
	res, err := mgr.Warmup(ctx, session.CreateRequest{
		PCM: pcm, Channels: 2, FixtureName: name, CropSeconds: 10,
		Prompt: "ambient electronic, warm pads", Depth: 4,
	}, 2, 60*time.Second)
	s.warmingUp.Store(false)
	if err != nil && !errors.Is(err, session.ErrAdmission) { // a refusal counts as refused
		s.metrics.FailedWarmup(err)
	}
	return res
}

func (s *SessionsService) stop(ctx context.Context) error {
	s.admit.Set(false)
	mgr := s.Manager()
	if mgr == nil {
		return nil
	}
	for _, sess := range mgr.Drain() {
		if err := sess.Close(); err != nil {
			s.log.Error("close session at shutdown", "session", sess.ID, "err", err)
		}
	}
	if err := mgr.WaitIdle(ctx); err != nil {
		return fmt.Errorf("sessions still open at shutdown: %w", err)
	}
	return nil
}

// SessionsModule provides the SessionsService.
var SessionsModule = fx.Module("sessions",
	fx.Provide(NewSessionsService),
)
